"""The study's evaluation: the model against cubic interpolation, per simulated slice thickness and slice axis."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from shared.metrics.epoch_report import EpochReport

__all__ = ["SuperResolutionReport", "METRICS"]

METRICS = ("psnr", "ssim", "nrmse", "mse")
AXIS_NAMES = {0: "sagittal (x)", 1: "coronal (y)", 2: "axial (z)"}


class SuperResolutionReport(EpochReport):
    """For every evaluated volume (a session simulated at one slice thickness along one axis): PSNR, SSIM (3D),
    NRMSE (``||x - y|| / ||y||``, scikit-image's default) and MSE of the model's output (``pred_key``) and of the
    cubic interpolation it started from (``baseline_key``) against the isotropic T2w (``label_key``), all on the
    normalised [0, 1] scale. Writes ``<name>.csv`` (one row a volume), ``<name>.json`` (means per thickness and
    axis, overall, and the rows) and ``<name>.md`` (the model card's table)."""

    csv_header = ("case", "session", "factor", "axis", *(f"{m}_{w}" for m in METRICS for w in ("model", "cubic")))

    def __init__(self, output_dir: str, name: str = "test_metrics", pred_key: str = "pred",
                 baseline_key: str = "cubic", label_key: str = "label", data_range: float = 1.0) -> None:
        super().__init__(output_dir, name)
        self.keys = {"model": pred_key, "cubic": baseline_key}
        self.label_key = label_key
        self.psnr = PSNRMetric(max_val=data_range)
        self.ssim = SSIMMetric(spatial_dims=3, data_range=data_range)
        self.rows: list[dict] = []

    def reset(self) -> None:
        self.rows.clear()

    def _scores(self, estimate: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
        mse = float(torch.mean((estimate - label) ** 2))
        return {"psnr": float(self.psnr(estimate, label).mean()), "ssim": float(self.ssim(estimate, label).mean()),
                "nrmse": float(torch.linalg.vector_norm(estimate - label) / torch.linalg.vector_norm(label)),
                "mse": mse}

    def update(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else []
        for item, out in zip(batch, engine.state.output):
            if self.label_key not in out:  # a failed case: CaseEvaluator reports it
                continue
            label = torch.as_tensor(out[self.label_key]).detach().float().cpu()[None]
            row = {"case": str(item.get("case")), "session": str(item.get("session", item.get("case"))),
                   "factor": int(item["factor"]), "axis": int(item["axis"])}
            for who, key in self.keys.items():
                estimate = torch.as_tensor(out[key]).detach().float().cpu()[None]
                row.update({f"{m}_{who}": v for m, v in self._scores(estimate, label).items()})
            self.rows.append(row)

    def compute(self) -> dict:
        groups: dict[tuple[int, int], list[dict]] = defaultdict(list)
        for row in self.rows:
            groups[(row["factor"], row["axis"])].append(row)

        def means(rows: list[dict]) -> dict:
            return {f"{m}_{w}": float(np.mean([r[f"{m}_{w}"] for r in rows])) for m in METRICS for w in ("model", "cubic")}

        by_group = [{"factor": f, "axis": a, "volumes": len(rows), **means(rows)} for (f, a), rows in sorted(groups.items())]
        by_factor = [{"factor": f, "volumes": sum(len(r) for (g, _), r in groups.items() if g == f),
                      **means([x for (g, _), r in groups.items() if g == f for x in r])}
                     for f in sorted({f for f, _ in groups})]
        return {"num_volumes": len(self.rows), "sessions": sorted({r["session"] for r in self.rows}),
                "overall": means(self.rows) if self.rows else {}, "by_factor": by_factor,
                "by_factor_and_axis": by_group, "items": self.rows}

    def csv_rows(self, result: dict):
        return ([r["case"], r["session"], r["factor"], r["axis"], *(f"{r[f'{m}_{w}']:.6g}" for m in METRICS
                                                                     for w in ("model", "cubic"))]
                for r in result["items"])

    @staticmethod
    def markdown(result: dict) -> str:
        header = ("| slices (x voxel) | axis | PSNR model | PSNR cubic | gain (dB) | SSIM model | SSIM cubic | "
                  "NRMSE model | NRMSE cubic |\n|---|---|---|---|---|---|---|---|---|\n")

        def line(row: dict, axis: str) -> str:
            return (f"| {row['factor']} | {axis} | {row['psnr_model']:.2f} | {row['psnr_cubic']:.2f} | "
                    f"{row['psnr_model'] - row['psnr_cubic']:+.2f} | {row['ssim_model']:.4f} | {row['ssim_cubic']:.4f} | "
                    f"{row['nrmse_model']:.4f} | {row['nrmse_cubic']:.4f} |")

        lines = [line(r, AXIS_NAMES.get(r["axis"], str(r["axis"]))) for r in result["by_factor_and_axis"]]
        lines += [line(r, "all") for r in result["by_factor"]]
        return (f"Measured by `configs/evaluate.json` on {len(result['sessions'])} held-out session(s), each simulated "
                f"at every slice thickness and axis ({result['num_volumes']} volumes; whole volumes, normalised "
                f"to [0, 1]):\n\n" + header + "\n".join(lines) + "\n")

    def summary(self, result: dict) -> str | None:
        if not self.rows:
            return None
        o = result["overall"]
        return (f"{self.name}: PSNR {o['psnr_model']:.2f} dB (cubic {o['psnr_cubic']:.2f}), SSIM {o['ssim_model']:.4f} "
                f"(cubic {o['ssim_cubic']:.4f}) over {len(self.rows)} volume(s)")
