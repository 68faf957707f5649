"""Per-class and per-region segmentation tables (micro-aggregated over all voxels), as an ignite handler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines import Workflow
from monai.metrics import ConfusionMatrixMetric

from shared.metrics.epoch_report import EpochReport

__all__ = ["SegmentationReport"]

METRICS = {"dice": "f1 score", "iou": "threat score", "precision": "precision", "recall": "recall", "accuracy": "accuracy"}


class SegmentationReport(EpochReport):
    """Accumulate confusion matrices over an evaluation and write ``<name>.csv`` / ``.json``, ``<name>.md`` (the same
    as a model-card table) and a log table.

    Expects ``engine.state.output`` to be decollated items whose ``pred_key``/``label_key`` are one-hot (C, ...).

    Args:
        output_dir: where the tables go.
        class_names: name of each one-hot channel after the background (channel 0 is skipped).
        regions: ``{name: [channel, ...]}`` unions of channels, e.g. BraTS whole tumour / tumour core / enhancing.
        name: file stem of the tables.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        regions: Mapping[str, Sequence[int]] | None = None,
        name: str = "metrics",
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        super().__init__(output_dir, name)
        self.class_names, self.regions = list(class_names), dict(regions or {})
        self.pred_key, self.label_key = pred_key, label_key
        names = list(METRICS.values())
        self.class_metric = ConfusionMatrixMetric(include_background=False, metric_name=names, reduction="sum_batch")
        self.region_metric = ConfusionMatrixMetric(include_background=True, metric_name=names, reduction="sum_batch")
        self.region_case_dice = ConfusionMatrixMetric(include_background=True, metric_name="f1 score", reduction="none")

    csv_header = ("kind", "name", *METRICS, "dice_mean_over_cases")

    def reset(self) -> None:
        for m in (self.class_metric, self.region_metric, self.region_case_dice):
            m.reset()

    def _regions(self, onehot: torch.Tensor) -> torch.Tensor:
        return torch.stack([onehot[list(chs)].amax(0) for chs in self.regions.values()])

    def update(self, engine: Workflow) -> None:
        for item in engine.state.output:
            pred, label = item[self.pred_key].detach().cpu(), item[self.label_key].detach().cpu()
            self.class_metric(y_pred=pred[None], y=label[None])
            if self.regions:
                rp, rl = self._regions(pred)[None], self._regions(label)[None]
                self.region_metric(y_pred=rp, y=rl)
                self.region_case_dice(y_pred=rp, y=rl)

    def compute(self) -> dict:
        table: dict = {"classes": {}, "regions": {}}
        for target, metric, names in (
            ("classes", self.class_metric, self.class_names),
            ("regions", self.region_metric, list(self.regions)),
        ):
            if not names:
                continue
            values = metric.aggregate()  # one (C,) tensor per metric, summed confusion matrices = micro-aggregation
            for i, row in enumerate(names):
                table[target][row] = {k: float(v[i]) for k, v in zip(METRICS, values)}
        if self.regions:
            per_case = self.region_case_dice.aggregate()[0]  # (cases, regions); NaN where both are empty
            for i, row in enumerate(self.regions):
                table["regions"][row]["dice_mean_over_cases"] = float(torch.nanmean(per_case[:, i]))
            table["num_cases"] = int(per_case.shape[0])
        return table

    @staticmethod
    def markdown(table: dict) -> str:
        """``table`` (as :meth:`compute` gives it) as Markdown: one row per class and region."""
        rows = ["| | Dice | IoU | precision | recall |", "|---|---|---|---|---|"]
        for kind in ("classes", "regions"):
            for name, m in table.get(kind, {}).items():
                rows.append(f"| {name} | {m['dice']:.3f} | {m['iou']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} |")
        return (f"Measured by `configs/evaluate.json` on {table.get('num_cases', '?')} test case(s), "
                "micro-aggregated:\n\n" + "\n".join(rows) + "\n")

    def csv_rows(self, table: dict):
        columns = self.csv_header[2:]
        return ([kind, row, *(f"{values[c]:.4f}" if c in values else "" for c in columns)]
                for kind in ("classes", "regions") for row, values in table[kind].items())

    def summary(self, table: dict) -> str:
        lines = [f"{'':>10} " + " ".join(f"{c:>9}" for c in METRICS)]
        for kind in ("classes", "regions"):
            for row, values in table[kind].items():
                lines.append(f"{row:>10} " + " ".join(f"{values[c]:9.4f}" for c in METRICS))
        return "segmentation report:\n" + "\n".join(lines) + "\n"
