"""Sliding-window inference that does not run the network on windows of pure background."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

__all__ = ["ForegroundSlidingWindowInferer", "skip_background_windows"]


def skip_background_windows(network: Callable[..., torch.Tensor], background: float = 0.0) -> Callable[..., torch.Tensor]:
    """``network`` applied only to the windows of a batch with at least one voxel other than ``background``; the
    others get zeros. A voxel of the foreground is covered only by windows that are run, so its result is the
    network's own."""

    def predict(windows: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        keep = (windows != background).flatten(1).any(dim=1)
        if bool(keep.all()):
            return network(windows, *args, **kwargs)
        if not bool(keep.any()):
            out = network(windows[:1], *args, **kwargs)  # for the output's channels and dtype
            return torch.zeros((windows.shape[0], *out.shape[1:]), dtype=out.dtype, device=out.device)
        kept = network(windows[keep], *args, **kwargs)
        out = torch.zeros((windows.shape[0], *kept.shape[1:]), dtype=kept.dtype, device=kept.device)
        out[keep] = kept
        return out

    return predict


class ForegroundSlidingWindowInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` (same arguments) that skips windows holding only background (value
    ``background`` in every input channel, e.g. outside a skull-stripped brain): those windows get zeros instead of
    a forward pass. Results inside the foreground are those of the plain inferer."""

    def __init__(self, *args: Any, background: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.background = background

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any):
        return super().__call__(inputs, skip_background_windows(network, self.background), *args, **kwargs)
