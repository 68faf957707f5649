"""What a weights file records about the network it fits, read before that network is built: the size settings of a
``shared.networks.recorded_settings.RecordedSettings`` network, the preset of a BABY-AI U-Net. A file with a sha256
sidecar is checked against it first, so a damaged file is named as such rather than failing to unpickle."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from shared.data.integrity import recorded_sha256, verify_sha256
from shared.networks.recorded_settings import EXTRA_STATE_KEY, settings_differences

__all__ = ["weights_extra_state", "recorded_settings", "network_settings", "preset_of_weights"]


def weights_extra_state(path: str | os.PathLike | None, prefix: str = "") -> dict[str, Any]:
    """The extra state (``_extra_state``) of the network whose weights are at ``path``: ``{}`` when there is none
    or no file. The file is memory-mapped, not read; ``prefix`` is the network's key prefix in the state dict."""
    if not path or not os.path.isfile(path):
        return {}
    if recorded_sha256(path) is not None:
        verify_sha256(path)
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot read these weights ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
                           "the file is damaged, truncated or not PyTorch weights: copy or download it again.") from e
    if isinstance(state, Mapping) and "model" in state and EXTRA_STATE_KEY not in state:
        state = state["model"]  # saved as {"model": state dict}
    extra = state.get(prefix + EXTRA_STATE_KEY) if isinstance(state, Mapping) else None
    return dict(extra) if isinstance(extra, Mapping) else {}


def recorded_settings(path: str | os.PathLike | None, prefix: str = "") -> dict[str, Any]:
    """The size settings recorded in the weights at ``path`` (``{}`` for none)."""
    return dict(weights_extra_state(path, prefix).get("settings", {}))


def network_settings(path: str | os.PathLike | None, given: Mapping[str, Any], fallback: Mapping[str, Any]
                     ) -> dict[str, Any]:
    """The settings to build a network with for the weights at ``path``: each ``given`` value that is not ``None``,
    else the one the weights record, else ``fallback``'s. A given value that differs from the recorded one is a
    ``ValueError`` naming the file and every difference (the weights could not load into that network)."""
    recorded = recorded_settings(path)
    differ = settings_differences(recorded, given)
    if differ:
        raise ValueError(f"{path}: these weights were saved by a network with other settings ({differ}); leave "
                         "those settings out to build the network the weights fit, or load other weights.")
    return {k: given.get(k) if given.get(k) is not None else recorded.get(k, fallback.get(k))
            for k in {**fallback, **recorded, **given}}


def preset_of_weights(path: str | None, preset: str | None = None, default: str = "published") -> str:
    """The network preset to build (``shared.networks.babyai_unet``): ``preset`` when given; else the one recorded
    in the weights at ``path``; for weights without a record (the study's plain state dict), or no weights yet,
    ``default``."""
    if preset:
        return preset
    return str(weights_extra_state(path).get("preset", default))
