"""Dice per case (patient) over all of its slices, as an ignite handler writing CSV/JSON."""

from __future__ import annotations

from collections import defaultdict

import torch
from ignite.metrics import Metric

from shared.metrics.epoch_report import EpochReport

__all__ = ["PerCaseDice", "PatientMeanDice"]


def _add_overlap(counts: dict, case: str, pred, label) -> None:
    """Add one slice's intersection, predicted and true voxels (binarised at 0.5) to ``counts[case]``."""
    pred = torch.as_tensor(pred).detach().cpu() > 0.5
    label = torch.as_tensor(label).detach().cpu() > 0.5
    c = counts[case]
    c[0] += float((pred & label).sum())
    c[1] += float(pred.sum())
    c[2] += float(label.sum())


def _case_dice(counts: dict) -> dict[str, float]:
    return {k: (2 * i / (p + l) if p + l > 0 else 1.0) for k, (i, p, l) in sorted(counts.items())}


class PerCaseDice(EpochReport):
    """Accumulate binary overlap per ``case_key`` over an evaluation (pred/label binarised at 0.5) and write
    ``<name>.json`` / ``<name>.csv``: Dice per case (over all its slices), their mean, and the micro Dice; and
    ``<name>.md``, the same as a model-card table."""

    def __init__(self, output_dir: str, name: str = "per_patient_dice", case_key: str = "case",
                 pred_key: str = "pred", label_key: str = "label") -> None:
        super().__init__(output_dir, name)
        self.case_key, self.pred_key, self.label_key = case_key, pred_key, label_key
        self.counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # intersection, pred, label

    csv_header = ("case", "dice")

    def reset(self) -> None:
        self.counts.clear()

    def update(self, engine) -> None:
        for item, out in zip(engine.state.batch, engine.state.output):
            _add_overlap(self.counts, str(item[self.case_key]), out[self.pred_key], out[self.label_key])

    def compute(self) -> dict:
        per_case = _case_dice(self.counts)
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

    def csv_rows(self, result: dict):
        return [*([k, f"{v:.4f}"] for k, v in result["per_case"].items()), ["mean", f"{result['mean_dice']:.4f}"]]

    def summary(self, result: dict) -> str:
        return (f"{self.name}: mean Dice {result['mean_dice']:.4f} over {result['num_cases']} case(s), "
                f"micro Dice {result['micro_dice']:.4f}")


class PatientMeanDice(Metric):
    """The mean over patients of each patient's Dice over all of its slices: the test metric of ``PerCaseDice``, as
    an ignite metric for validation (a per-slice mean is dominated by the small tumour sections at the tumour's ends,
    and picks other epochs). Reads the patient of each item from the engine's (decollated) batch; sums the counts of
    all ranks when validation is sharded."""

    def __init__(self, case_key: str = "case", pred_key: str = "pred", label_key: str = "label") -> None:
        self.case_key, self.pred_key, self.label_key = case_key, pred_key, label_key
        super().__init__()

    def reset(self) -> None:
        self.counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def update(self, output) -> None:  # the items come with their patients in iteration_completed
        raise NotImplementedError

    def iteration_completed(self, engine) -> None:
        for item, out in zip(engine.state.batch, engine.state.output):
            _add_overlap(self.counts, str(item[self.case_key]), out[self.pred_key], out[self.label_key])

    def compute(self) -> float:
        counts = self.counts
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # validation sharded by rank
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, dict(counts))
            counts = defaultdict(lambda: [0.0, 0.0, 0.0])
            for part in gathered:
                for case, values in part.items():
                    counts[case] = [a + b for a, b in zip(counts[case], values)]
        per_case = _case_dice(counts)
        return sum(per_case.values()) / len(per_case) if per_case else float("nan")
