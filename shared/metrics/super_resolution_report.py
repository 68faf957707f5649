"""The study's evaluation: the model against cubic interpolation, per simulated slice thickness and slice axis."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

from shared.metrics.epoch_report import EpochReport

__all__ = ["SuperResolutionReport", "METRICS"]

METRICS = ("psnr", "ssim", "nrmse", "mse")
AXIS_NAMES = {0: "sagittal (x)", 1: "coronal (y)", 2: "axial (z)"}


class SuperResolutionReport(EpochReport):
    """For every evaluated volume (a session at one slice thickness along one axis): PSNR, SSIM (3D, MONAI's
    Gaussian window of 11 voxels), NRMSE (``||x - y|| / ||y||``, scikit-image's default) and MSE of the model's
    output (``pred_key``) and of the cubic interpolation it started from (``baseline_key``) against the isotropic
    T2w (``label_key``), all on the normalised [0, 1] scale, over the voxels where some channel of ``mask_key`` is
    not zero (the brain; every voxel when ``mask_key`` is None). Writes ``<name>.csv`` (one row a volume),
    ``<name>.json`` (means per thickness and axis, overall, and the rows) and ``<name>.md`` (the model card's
    table, titled ``title``)."""

    csv_header = ("case", "session", "factor", "axis", *(f"{m}_{w}" for m in METRICS for w in ("model", "cubic")))

    def __init__(self, output_dir: str, name: str = "test_metrics", pred_key: str = "pred",
                 baseline_key: str = "cubic", label_key: str = "label", mask_key: str | None = None,
                 data_range: float = 1.0, title: str | None = None) -> None:
        super().__init__(output_dir, name)
        self.keys = {"model": pred_key, "cubic": baseline_key}
        self.label_key, self.mask_key, self.data_range, self.title = label_key, mask_key, data_range, title
        self.rows: list[dict] = []

    def reset(self) -> None:
        self.rows.clear()

    def _scores(self, estimate: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        """The metrics of (1, 1, X, Y, Z) ``estimate`` against ``label`` over the voxels of ``mask`` (same shape)."""
        error = (estimate - label)[mask]
        mse = float(torch.mean(error**2))
        ssim_map, _ = compute_ssim_and_cs(estimate, label, spatial_dims=3, kernel_size=[11] * 3,
                                          kernel_sigma=[1.5] * 3, data_range=self.data_range)
        inner = mask[(..., *(slice(5, s - 5) for s in mask.shape[2:]))]  # the centres of the full windows
        ssim = float(ssim_map[inner].mean()) if inner.any() else float(ssim_map.mean())
        return {"psnr": float(10 * np.log10(self.data_range**2 / max(mse, 1e-12))), "ssim": ssim,
                "nrmse": float(torch.linalg.vector_norm(error) / torch.linalg.vector_norm(label[mask])), "mse": mse}

    def update(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else []
        for item, out in zip(batch, engine.state.output):
            if self.label_key not in out:  # a failed case: CaseEvaluator reports it
                continue
            label = torch.as_tensor(out[self.label_key]).detach().float().cpu()[None]
            mask = (torch.ones_like(label, dtype=torch.bool) if self.mask_key is None else
                    (torch.as_tensor(out[self.mask_key]).detach().cpu() != 0).any(dim=0, keepdim=True)[None])
            row = {"case": str(item.get("case")), "session": str(item.get("session", item.get("case"))),
                   "factor": int(item["factor"]), "axis": int(item["axis"])}
            for who, key in self.keys.items():
                estimate = torch.as_tensor(out[key]).detach().float().cpu()[None]
                row.update({f"{m}_{who}": v for m, v in self._scores(estimate, label, mask).items()})
            self.rows.append(row)

    def compute(self) -> dict:
        groups: dict[tuple[int, int], list[dict]] = defaultdict(list)
        for row in self.rows:
            groups[(row["factor"], row["axis"])].append(row)

        def means(rows: list[dict]) -> dict:
            return {f"{m}_{w}": float(np.mean([r[f"{m}_{w}"] for r in rows])) for m in METRICS for w in ("model", "cubic")}

        by_group = [{"factor": f, "axis": a, "volumes": len(rows), **means(rows),
                     "min_psnr_gain": float(min(r["psnr_model"] - r["psnr_cubic"] for r in rows))}
                    for (f, a), rows in sorted(groups.items())]
        by_factor = [{"factor": f, "volumes": sum(len(r) for (g, _), r in groups.items() if g == f),
                      **means([x for (g, _), r in groups.items() if g == f for x in r])}
                     for f in sorted({f for f, _ in groups})]
        return {"title": self.title or f"`configs/evaluate.json`, {self.name}",
                "region": "the brain" if self.mask_key else "whole volumes",
                "num_volumes": len(self.rows), "sessions": sorted({r["session"] for r in self.rows}),
                "overall": means(self.rows) if self.rows else {}, "by_factor": by_factor,
                "by_factor_and_axis": by_group, "items": self.rows}

    def csv_rows(self, result: dict):
        return ([r["case"], r["session"], r["factor"], r["axis"], *(f"{r[f'{m}_{w}']:.6g}" for m in METRICS
                                                                     for w in ("model", "cubic"))]
                for r in result["items"])

    @staticmethod
    def markdown(result: dict) -> str:
        header = ("| slices (x voxel) | axis | PSNR model | PSNR cubic | gain (dB) | lowest gain | SSIM model | "
                  "SSIM cubic | NRMSE model | NRMSE cubic |\n|---|---|---|---|---|---|---|---|---|---|\n")

        def line(row: dict, axis: str) -> str:
            lowest = f"{row['min_psnr_gain']:+.2f}" if "min_psnr_gain" in row else ""
            return (f"| {row['factor']} | {axis} | {row['psnr_model']:.2f} | {row['psnr_cubic']:.2f} | "
                    f"{row['psnr_model'] - row['psnr_cubic']:+.2f} | {lowest} | {row['ssim_model']:.4f} | "
                    f"{row['ssim_cubic']:.4f} | {row['nrmse_model']:.4f} | {row['nrmse_cubic']:.4f} |")

        lines = [line(r, AXIS_NAMES.get(r["axis"], str(r["axis"]))) for r in result["by_factor_and_axis"]]
        lines += [line(r, "all") for r in result["by_factor"]]
        return (f"Measured by {result['title']} on {len(result['sessions'])} session(s) ({result['num_volumes']} "
                f"volumes; {result['region']}, normalised to [0, 1]; lowest gain: the session with the smallest PSNR "
                "gain):\n\n" + header + "\n".join(lines) + "\n")

    def summary(self, result: dict) -> str | None:
        if not self.rows:
            return None
        o = result["overall"]
        return (f"{self.name}: PSNR {o['psnr_model']:.2f} dB (cubic {o['psnr_cubic']:.2f}), SSIM {o['ssim_model']:.4f} "
                f"(cubic {o['ssim_cubic']:.4f}) over {len(self.rows)} volume(s)")
