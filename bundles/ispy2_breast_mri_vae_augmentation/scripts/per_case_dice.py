"""Dice per case (patient) over all of its slices, as an ignite handler writing CSV/JSON."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import defaultdict

import torch

__all__ = ["PerCaseDice"]


class PerCaseDice:
    """Accumulate binary overlap per ``case_key`` over an evaluation (pred/label binarised at 0.5) and write
    ``<name>.json`` / ``<name>.csv``: Dice per case (over all its slices), their mean, and the micro Dice; and
    ``<name>.md``, the same as a model-card table."""

    def __init__(self, output_dir: str, name: str = "per_patient_dice", case_key: str = "case",
                 pred_key: str = "pred", label_key: str = "label") -> None:
        self.output_dir, self.name = output_dir, name
        self.case_key, self.pred_key, self.label_key = case_key, pred_key, label_key
        self.counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # intersection, pred, label
        self.logger = logging.getLogger(__name__)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.counts.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.write())

    def update(self, engine) -> None:
        for item, out in zip(engine.state.batch, engine.state.output):
            pred = torch.as_tensor(out[self.pred_key]).detach().cpu() > 0.5
            label = torch.as_tensor(out[self.label_key]).detach().cpu() > 0.5
            c = self.counts[str(item[self.case_key])]
            c[0] += float((pred & label).sum())
            c[1] += float(pred.sum())
            c[2] += float(label.sum())

    def compute(self) -> dict:
        per_case = {k: (2 * i / (p + l) if p + l > 0 else 1.0) for k, (i, p, l) in sorted(self.counts.items())}
        totals = [sum(c[j] for c in self.counts.values()) for j in range(3)]
        micro = 2 * totals[0] / (totals[1] + totals[2]) if totals[1] + totals[2] > 0 else 1.0
        mean = sum(per_case.values()) / len(per_case) if per_case else float("nan")
        return {"per_case": per_case, "mean_dice": mean, "micro_dice": micro, "num_cases": len(per_case)}

    @staticmethod
    def markdown(result: dict) -> str:
        rows = [f"| {case} | {dice:.3f} |" for case, dice in result["per_case"].items()]
        return (f"Measured by `configs/evaluate.json`: mean Dice {result['mean_dice']:.3f} over "
                f"{result['num_cases']} test patient(s) (micro Dice {result['micro_dice']:.3f}).\n\n"
                "| test patient | Dice |\n|---|---|\n" + "\n".join(rows) + "\n")

    def write(self) -> dict:
        result = self.compute()
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, f"{self.name}.json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(self.output_dir, f"{self.name}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["case", "dice"])
            writer.writerows([k, f"{v:.4f}"] for k, v in result["per_case"].items())
            writer.writerow(["mean", f"{result['mean_dice']:.4f}"])
        with open(os.path.join(self.output_dir, f"{self.name}.md"), "w") as f:
            f.write(self.markdown(result))
        self.logger.info(f"{self.name}: mean Dice {result['mean_dice']:.4f} over {result['num_cases']} case(s), "
                         f"micro Dice {result['micro_dice']:.4f} ({self.output_dir}/{self.name}.csv)")
        return result
