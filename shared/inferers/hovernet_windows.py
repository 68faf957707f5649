"""HoVer-Net fast mode over an image in as few windows as cover it, each no larger than a chosen side.

MONAI's ``SlidingWindowHoVerNetInferer`` with 256x256 windows keeps each window's central 164x164 (41 % of the
compute). :class:`FittedHoVerNetInferer` is the same inferer (the same padding, stitching and cropping) with
windows fitted to each input: per axis, the fewest windows of at most ``max_window`` pixels whose outputs cover the
input, each the smallest side (a multiple of 8, ``shared.networks.hovernet``) that does, scanned without overlap.
A 2304-pixel region takes 3 x 3 windows of 864 pixels (80 % of their output kept) instead of 15 x 15 of 256.
The network must take windows of any such side (``shared.networks.hovernet.RecordedHoVerNet`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
from monai.apps.pathology.inferers import SlidingWindowHoVerNetInferer

from shared.networks.hovernet import FAST_MODE_BORDER, WINDOW_MULTIPLE, fast_output_size

__all__ = ["fitted_windows", "FittedHoVerNetInferer"]


def fitted_windows(side: int, max_window: int) -> tuple[int, int]:
    """``(count, window)`` for one axis of ``side`` pixels: the fewest windows of at most ``max_window`` pixels whose
    HoVer-Net fast outputs cover it, and the smallest window side (a multiple of 8) that does."""
    largest = fast_output_size(max_window // WINDOW_MULTIPLE * WINDOW_MULTIPLE)
    if largest < 1:
        raise ValueError(f"max_window must exceed {2 * FAST_MODE_BORDER} pixels; got {max_window}.")
    count = max(1, math.ceil(side / largest))
    window = math.ceil((math.ceil(side / count) + 2 * FAST_MODE_BORDER) / WINDOW_MULTIPLE) * WINDOW_MULTIPLE
    return count, window


class FittedHoVerNetInferer(SlidingWindowHoVerNetInferer):
    """MONAI's ``SlidingWindowHoVerNetInferer`` for HoVer-Net fast mode with windows fitted to each input
    (:func:`fitted_windows`): same outputs' layout (each branch stitched over the input, at its size).

    Args:
        max_window: the largest window side; larger windows waste less of their compute on the border HoVer-Net
            trims but need more memory (measured in the pathology bundle's ``docs/speed.md``).
        sw_batch_size, padding_mode, cval, sw_device, device, progress: as ``SlidingWindowHoVerNetInferer``'s.
    """

    def __init__(self, max_window: int = 1024, sw_batch_size: int = 1, padding_mode: str = "constant",
                 cval: float = 0.0, sw_device: torch.device | str | None = None,
                 device: torch.device | str | None = None, progress: bool = False) -> None:
        window = int(max_window) // WINDOW_MULTIPLE * WINDOW_MULTIPLE  # refitted to each input in __call__
        if fast_output_size(window) < 1:
            raise ValueError(f"max_window must exceed {2 * FAST_MODE_BORDER} pixels; got {max_window}.")
        super().__init__(roi_size=window, sw_batch_size=sw_batch_size, overlap=self._overlap(window),
                         padding_mode=padding_mode, cval=cval, sw_device=sw_device, device=device,
                         progress=progress, extra_input_padding=(FAST_MODE_BORDER,) * 4)
        self.max_window = int(max_window)

    @staticmethod
    def _overlap(window: int) -> float:
        # MONAI's scan step is int(window * (1 - overlap)): half a pixel above the output side rounds down onto it
        return 1.0 - (fast_output_size(window) + 0.5) / window

    def fit(self, spatial_size: Sequence[int]) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """``(roi_size, overlap)`` of the windows for an input of ``spatial_size`` (height, width)."""
        windows = [fitted_windows(int(side), self.max_window)[1] for side in spatial_size]
        return tuple(windows), tuple(self._overlap(w) for w in windows)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.roi_size, self.overlap = self.fit(inputs.shape[2:])
        return super().__call__(inputs, network, *args, **kwargs)
