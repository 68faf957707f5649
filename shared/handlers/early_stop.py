"""Early stopping whose patience count is part of the training state."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ignite.engine import Engine
from monai.handlers import EarlyStopHandler

__all__ = ["ResumableEarlyStopHandler"]


class ResumableEarlyStopHandler(EarlyStopHandler):
    """``monai.handlers.EarlyStopHandler`` with ``state_dict`` / ``load_state_dict`` (the epochs without improvement
    and the best score), so that ``TrainingState`` saves and restores them: a resumed run stops when the
    uninterrupted one would have.

    ``enabled=False`` attaches nothing: a config stacked on one with early stopping turns it off by id, since a
    reference to a ``_disabled_`` component resolves to ``None``, which a handler list cannot hold.
    """

    def __init__(self, patience: int, score_function: Callable, trainer: Engine | None = None,
                 min_delta: float = 0.0, cumulative_delta: bool = False, epoch_level: bool = True,
                 enabled: bool = True) -> None:
        super().__init__(patience, score_function, trainer, min_delta, cumulative_delta, epoch_level)
        self.enabled = enabled

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            super().attach(engine)

    def state_dict(self) -> dict:
        return dict(self._handler.state_dict()) if self._handler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        if state:
            if self._handler is None:
                raise RuntimeError("set the trainer (set_trainer) before loading the early-stopping state.")
            self._handler.load_state_dict(state)
