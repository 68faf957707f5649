"""Running MONAI engines over many cases without losing the run to one bad case."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence

from monai.data import DataLoader
from monai.engines import Evaluator

__all__ = ["run_over_cases", "root_cause"]

logger = logging.getLogger(__name__)


def run_over_cases(evaluator: Evaluator, rejected: Sequence[dict] = (), report_file: str | None = None) -> dict:
    """Run ``evaluator`` (batch size 1, unshuffled) over its dataset; when a case fails to load or infer, log the
    error, record it, and go on with the cases after it. Cases already written stay written.

    ``rejected`` are cases set aside before the run (e.g. by header checks); they go in the report too, which is
    written to ``report_file`` as ``{"succeeded": [...], "failed": [{"case", "error"}]}``.
    """
    loader = evaluator.data_loader
    if getattr(loader, "batch_size", 1) != 1:
        raise ValueError("run_over_cases needs a data loader with batch_size 1, to know which case failed.")
    dataset = loader.dataset
    pending = list(range(len(dataset)))
    succeeded, failed = [], list(rejected)
    while pending:
        subset = _Subset(dataset, pending)
        evaluator.data_loader = DataLoader(subset, batch_size=1, num_workers=loader.num_workers, shuffle=False)
        evaluator.state.epoch_length = len(subset)
        # After a failure ignite keeps its dead run generator and data iterator; start afresh.
        evaluator._internal_run_generator = None
        evaluator._dataloader_iter = None
        try:
            evaluator.run()
            succeeded.extend(_name(dataset, i) for i in pending)
            pending = []
        except Exception as e:
            # ignite clears state.batch before each fetch: with no batch, the fetch (loading) failed.
            done = evaluator.state.iteration if evaluator.state.batch is None else evaluator.state.iteration - 1
            succeeded.extend(_name(dataset, i) for i in pending[:done])
            bad = pending[done]
            reason = root_cause(e)
            logger.error(f"case {_name(dataset, bad)} failed, continuing with the next: {reason}")
            failed.append({"case": _name(dataset, bad), "error": reason})
            pending = pending[done + 1 :]
    evaluator.data_loader = loader
    report = {"succeeded": succeeded, "failed": failed}
    if report_file:
        os.makedirs(os.path.dirname(os.path.abspath(report_file)), exist_ok=True)
        with open(report_file, "w") as f:
            json.dump(report, f, indent=2)
    if failed:
        logger.warning(f"{len(failed)} case(s) failed: {[f['case'] for f in failed]} (details in {report_file})")
    logger.info(f"{len(succeeded)} case(s) done")
    return report


def root_cause(error: BaseException) -> str:
    """``Type: message`` of the innermost cause; DataLoader workers pass it on only inside a traceback string."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error)
    if "Traceback (most recent call last)" in text:
        causes = re.findall(r"^(\w+(?:Error|Exception)): (.+)$", text, flags=re.MULTILINE)
        if causes:
            return f"{causes[0][0]}: {causes[0][1]}"
    return f"{type(error).__name__}: {text}"


def _name(dataset, index: int) -> str:
    item = dataset.data[index] if hasattr(dataset, "data") else {}
    return str(item.get("case", index)) if isinstance(item, dict) else str(index)


class _Subset:
    """A view of some items of a MONAI dataset that keeps ``data`` for naming."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.data = [dataset.data[i] for i in self.indices] if hasattr(dataset, "data") else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]
