"""The pattern of an evaluation report: accumulate over an evaluator's run, then write JSON, CSV and a Markdown table."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from shared.writers.tables import write_csv, write_json

__all__ = ["EpochReport"]


class EpochReport:
    """Base of the handlers that accumulate results over one run of an evaluator and write ``<name>.json`` (what
    ``compute`` returns), ``<name>.csv`` (``csv_header`` and ``csv_rows``) and ``<name>.md`` (``markdown``, the model
    card's table) to ``output_dir`` when it ends, and log ``summary``. Subclasses implement ``reset``,
    ``update(engine)`` (called after each iteration), ``compute`` and the four writers' methods."""

    csv_header: Sequence[str] = ()

    def __init__(self, output_dir: str, name: str) -> None:
        self.output_dir, self.name = output_dir, name
        self.logger = logging.getLogger(type(self).__module__)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.write())

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, engine) -> None:
        raise NotImplementedError

    def compute(self) -> dict:
        raise NotImplementedError

    def csv_rows(self, result: dict) -> Iterable[Sequence]:
        raise NotImplementedError

    @staticmethod
    def markdown(result: dict) -> str:
        raise NotImplementedError

    def summary(self, result: dict) -> str | None:
        """The log line (None: nothing to log)."""
        return None

    def write(self) -> dict:
        result = self.compute()
        write_json(os.path.join(self.output_dir, f"{self.name}.json"), result)
        write_csv(os.path.join(self.output_dir, f"{self.name}.csv"), self.csv_header, self.csv_rows(result))
        with open(os.path.join(self.output_dir, f"{self.name}.md"), "w") as f:
            f.write(self.markdown(result))
        line = self.summary(result)
        if line:
            self.logger.info(f"{line} ({self.output_dir}/{self.name}.csv)")
        return result
