"""Early stopping whose patience count is part of the training state."""

from __future__ import annotations

from collections.abc import Mapping

from monai.handlers import EarlyStopHandler

__all__ = ["ResumableEarlyStopHandler"]


class ResumableEarlyStopHandler(EarlyStopHandler):
    """``monai.handlers.EarlyStopHandler`` with ``state_dict`` / ``load_state_dict`` (the epochs without improvement
    and the best score), so that ``TrainingState`` saves and restores them: a resumed run stops when the
    uninterrupted one would have."""

    def state_dict(self) -> dict:
        return dict(self._handler.state_dict()) if self._handler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        if state:
            if self._handler is None:
                raise RuntimeError("set the trainer (set_trainer) before loading the early-stopping state.")
            self._handler.load_state_dict(state)
