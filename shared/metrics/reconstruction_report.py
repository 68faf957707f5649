"""SSIM, PSNR and MSE of each reconstructed image against its target, as an ignite handler writing tables."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from shared.metrics.epoch_report import EpochReport

__all__ = ["ReconstructionReport"]


class ReconstructionReport(EpochReport):
    """Per item of an evaluation (decollated outputs with ``pred_key`` / ``label_key`` on one scale, e.g. both on
    [0, 1]): SSIM, PSNR and MSE with the given ``data_range``. Writes ``<name>.csv`` (one row an item, named by the
    batch's ``case``), ``<name>.json`` (mean and standard deviation of each metric, and the rows) and ``<name>.md``
    (the summary as a model-card table)."""

    def __init__(self, output_dir: str, spatial_dims: int = 2, data_range: float = 1.0, name: str = "test_metrics",
                 pred_key: str = "pred", label_key: str = "label", case_key: str = "case") -> None:
        super().__init__(output_dir, name)
        self.data_range = data_range
        self.pred_key, self.label_key, self.case_key = pred_key, label_key, case_key
        self.ssim = SSIMMetric(spatial_dims=spatial_dims, data_range=data_range)
        self.psnr = PSNRMetric(max_val=data_range)
        self.rows: list[dict] = []

    csv_header = ("case", "ssim", "psnr", "mse")

    def reset(self) -> None:
        self.rows.clear()

    def update(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(engine.state.output)
        for item, out in zip(batch, engine.state.output):
            pred = torch.as_tensor(out[self.pred_key]).detach().float().cpu()[None]
            label = torch.as_tensor(out[self.label_key]).detach().float().cpu()[None]
            self.rows.append({"case": str(item.get(self.case_key, len(self.rows))),
                              "ssim": float(self.ssim(pred, label).mean()),
                              "psnr": float(self.psnr(pred, label).mean()),
                              "mse": float(torch.mean((pred - label) ** 2))})

    def compute(self) -> dict:
        summary = {m: {"mean": float(np.mean([r[m] for r in self.rows])), "sd": float(np.std([r[m] for r in self.rows]))}
                   for m in ("ssim", "psnr", "mse")} if self.rows else {}
        return {"num_items": len(self.rows), "data_range": self.data_range, **summary, "items": self.rows}

    @staticmethod
    def markdown(result: dict) -> str:
        rows = [f"| {m.upper()} | {result[m]['mean']:.4f} | {result[m]['sd']:.4f} |" for m in ("ssim", "psnr", "mse")
                if m in result]
        return (f"Measured by `configs/evaluate.json` on {result['num_items']} test image(s) (data range "
                f"{result['data_range']:g}):\n\n| | mean | sd |\n|---|---|---|\n" + "\n".join(rows) + "\n")

    def csv_rows(self, result: dict):
        return ([r["case"], f"{r['ssim']:.4f}", f"{r['psnr']:.3f}", f"{r['mse']:.6f}"] for r in result["items"])

    def summary(self, result: dict) -> str | None:
        if not self.rows:
            return None
        return (f"{self.name}: SSIM {result['ssim']['mean']:.4f}, PSNR {result['psnr']['mean']:.2f} dB, "
                f"MSE {result['mse']['mean']:.5f} over {len(self.rows)} image(s)")
