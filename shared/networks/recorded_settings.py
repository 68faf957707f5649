"""A network's size settings recorded in its weights, so that loading code can build the network the weights fit.

A network class that mixes in :class:`RecordedSettings` keeps its constructor's size settings in ``self.settings``;
its state dict then carries them (PyTorch's module extra state, ``_extra_state``), loading weights recorded with
other settings is refused naming each difference, and weights without a record (older files, third parties' files)
load as before. ``shared.data.weights_record.network_settings`` reads a weights file's record before the network is
built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["EXTRA_STATE_KEY", "RecordedSettings", "settings_differences"]

EXTRA_STATE_KEY = "_extra_state"


class RecordedSettings:
    """Mixin for a ``torch.nn.Module`` subclass: call :meth:`record_settings` at the end of ``__init__`` with the
    settings that decide its parameters' shapes (kept in ``self.settings``; no class annotation, which TorchScript
    would try to compile)."""

    def record_settings(self, **settings: Any) -> None:
        self.settings = dict(settings)
        self._register_load_state_dict_pre_hook(self._accept_unrecorded_settings)  # type: ignore[attr-defined]

    def get_extra_state(self) -> dict[str, Any]:
        return {"settings": dict(self.settings)}

    def set_extra_state(self, state: Any) -> None:
        recorded = state.get("settings", {}) if isinstance(state, Mapping) else {}
        differ = settings_differences(recorded, self.settings)
        if differ:
            raise ValueError(f"these weights were saved by a {type(self).__name__} with other settings ({differ}); "
                             "build the network with the weights' settings (the inference configs read them from "
                             "the weights unless they are given).")

    def _accept_unrecorded_settings(self, state_dict: dict, prefix: str, *args: Any) -> None:
        state_dict.setdefault(prefix + EXTRA_STATE_KEY, self.get_extra_state())


def settings_differences(recorded: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """``"<name> <recorded> in the weights, <given> here; ..."`` for each recorded setting ``given`` sets otherwise."""
    return "; ".join(f"{k} {recorded[k]!r} in the weights, {given[k]!r} here" for k in recorded
                     if k in given and given[k] is not None and _plain(given[k]) != _plain(recorded[k]))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
