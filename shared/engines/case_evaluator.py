"""An evaluator over whole cases that goes on past a bad one, reports every case and exits non-zero if any failed."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence

from monai.engines import SupervisedEvaluator

from shared.data.errors import root_cause
from shared.data.screened_datasets import CASE_ERROR_KEY

__all__ = ["CaseEvaluator", "CasesFailedError"]

logger = logging.getLogger(__name__)


class CasesFailedError(RuntimeError):
    """Some cases failed; the others were processed and every case is listed in the report."""


class _FailedCaseOutput(dict):
    """The output of a case that failed: every key reads as an empty list, so metrics (``from_engine`` gives
    ``[]``), reports and other handlers see no item of it."""

    def __missing__(self, key):
        return []


class CaseEvaluator(SupervisedEvaluator):
    """``monai.engines.SupervisedEvaluator`` (same arguments) that survives a case that fails to load (see
    ``shared.data.screened_datasets.CaseDataset``) or to infer, post-process or save: the case's reason is logged
    once, its outputs are skipped, and the run goes on. Errors that are not about one case, such as weights that
    cannot be loaded (``CheckpointLoader``) or a network that cannot be built, stop the run at once.

    After the run, ``report_file`` lists every case, ``{"succeeded": [...], "failed": [{"case", "error"}]}``, and
    :class:`CasesFailedError` is raised (a non-zero exit) when any case failed, unless ``allow_partial`` is set and
    at least one case succeeded. Before the run, the report's folder is checked to be writable.

    Args:
        report_file: where the report is written (its folder is the outputs' folder).
        set_aside: cases rejected before the run (header checks, content screening), reported as failed.
        allow_partial: exit normally when some (not all) cases failed.
    """

    def __init__(
        self,
        *args,
        report_file: str | None = None,
        set_aside: Sequence[Mapping] = (),
        allow_partial: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.report_file, self.set_aside, self.allow_partial = report_file, list(set_aside), allow_partial
        self.succeeded: list[str] = []
        self.failed: list[dict] = []

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        if self.report_file:
            _check_writable(os.path.dirname(os.path.abspath(self.report_file)))
        self.succeeded, self.failed = [], [{"case": c["case"], "error": c["error"]} for c in self.set_aside]
        super().run(global_epoch)
        self.write_report()
        if self.failed and not (self.allow_partial and self.succeeded):
            where = f"; see {self.report_file}" if self.report_file else ""
            raise CasesFailedError(
                f"{len(self.failed)} of {len(self.failed) + len(self.succeeded)} case(s) failed: "
                f"{[f['case'] for f in self.failed]}{where}. The other cases' outputs are written"
                + ("; --allow_partial True accepts a partial run." if self.succeeded else ".")
            )

    def write_report(self) -> dict:
        report = {"succeeded": self.succeeded, "failed": self.failed}
        if self.report_file:
            with open(self.report_file, "w") as f:
                json.dump(report, f, indent=2)
        logger.info(f"{len(self.succeeded)} case(s) done, {len(self.failed)} failed"
                    + (f" (report: {self.report_file})" if self.report_file else ""))
        return report

    def _iteration(self, engine, batchdata):
        names = _case_names(batchdata, engine.state.iteration)
        errors = batchdata.get(CASE_ERROR_KEY) if isinstance(batchdata, Mapping) else None
        if errors is not None:
            errors = errors if isinstance(errors, list) else [errors]
            self._record_failure(names, "; ".join(dict.fromkeys(map(str, errors))))
            return _FailedCaseOutput()
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as e:
            logger.debug("case failure", exc_info=e)
            self._record_failure(names, root_cause(e))
            return _FailedCaseOutput()
        failed = {f["case"] for f in self.failed}
        self.succeeded += [n for n in names if n not in self.succeeded and n not in failed]
        return output

    def _record_failure(self, names: list[str], error: str) -> None:
        for name in names:
            logger.error(f"case {name} failed, going on with the next: {error}")
            self.failed.append({"case": name, "error": error})
            if name in self.succeeded:
                self.succeeded.remove(name)


def _case_names(batch, iteration: int) -> list[str]:
    """The case names of a collated batch, once each: its ``case`` entry, else the image files' names."""
    names: list = [f"batch_{iteration}"]
    if isinstance(batch, Mapping):
        meta = getattr(batch.get("image"), "meta", {}) or {}
        found = batch.get("case", meta.get("filename_or_obj"))
        if found is not None:
            names = list(found) if isinstance(found, (list, tuple)) else [found]
            names = names if "case" in batch else [os.path.basename(str(f)) for f in names]
    return list(dict.fromkeys(str(n) for n in names))


def _check_writable(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PermissionError(f"{folder}: outputs cannot be written there ({e}); choose another --output_dir.") from e
