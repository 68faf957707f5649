"""Slice-by-slice inference of a 2D network over the foreground's bounding box only, each slice in one pass."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.transforms.utils import generate_spatial_bounding_box

__all__ = ["ForegroundSliceInferer", "foreground_box"]


def foreground_box(image: torch.Tensor, background: float) -> tuple[slice, ...] | None:
    """The bounding box (one slice per spatial axis) of the voxels of ``image`` (C, *spatial) that differ from
    ``background`` in any channel (MONAI's ``generate_spatial_bounding_box``), or None when there are none."""
    start, end = generate_spatial_bounding_box(image, select_fn=lambda x: x != background)
    if any(e <= s for s, e in zip(start, end)):
        return None
    return tuple(slice(int(s), int(e)) for s, e in zip(start, end))


class ForegroundSliceInferer(Inferer):
    """A 2D ``network`` on every slice along ``spatial_dim`` of a (N, C, *3D) volume, where the slice is cut to the
    volume's foreground box (voxels other than ``background``) grown to a multiple of ``k_divisible`` and run whole,
    ``batch_size`` slices a forward pass.

    A fully convolutional network then processes the anatomy once, without the overlap of sliding windows, and no
    slice or border that holds only background. Outside the box, where the input is pure background, the output is
    zero (for logits: the first class after argmax).

    Args:
        spatial_dim: the slice axis among the three spatial axes (2: axial for RAS volumes).
        batch_size: slices a forward pass.
        k_divisible: in-plane sizes the network needs a multiple of (32 for a five-level encoder); the box is grown
            about its centre and the volume padded with ``background`` where the grown box passes its edge.
        background: the input value outside the anatomy (after intensity preprocessing).
    """

    def __init__(self, spatial_dim: int = 2, batch_size: int = 8, k_divisible: int = 32,
                 background: float = 0.0) -> None:
        super().__init__()
        if spatial_dim not in (0, 1, 2):
            raise ValueError(f"spatial_dim must be 0, 1 or 2, got {spatial_dim}")
        self.spatial_dim, self.batch_size, self.k_divisible, self.background = spatial_dim, batch_size, k_divisible, background

    def _grown(self, box: slice, size: int, axis_is_slice: bool) -> tuple[int, int]:
        if axis_is_slice:
            return box.start, box.stop
        length = math.ceil((box.stop - box.start) / self.k_divisible) * self.k_divisible
        start = box.start - (length - (box.stop - box.start)) // 2
        start = max(0, min(start, size - length)) if length <= size else (size - length) // 2
        return start, start + length

    def _one_volume(self, volume: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        spatial = volume.shape[1:]
        box = foreground_box(volume, self.background)
        if box is None:  # only background: zeros, with the channels and dtype of the network's output
            tile = volume.new_full((1, volume.shape[0], self.k_divisible, self.k_divisible), self.background)
            probe = network(tile, *args, **kwargs)
            return probe.new_zeros((probe.shape[1], *spatial))
        grown = [self._grown(b, n, axis == self.spatial_dim) for axis, (b, n) in enumerate(zip(box, spatial))]
        # pad where the grown box passes the volume's edge, then cut the box out of the padded volume
        before = [max(0, -start) for start, _ in grown]
        after = [max(0, stop - n) for (_, stop), n in zip(grown, spatial)]
        pad = [p for axis in reversed(range(3)) for p in (before[axis], after[axis])]
        padded = F.pad(volume, pad, value=self.background) if any(pad) else volume
        crop = padded[(slice(None),) + tuple(slice(start + b, stop + b) for (start, stop), b in zip(grown, before))]
        slices = crop.movedim(self.spatial_dim + 1, 0)  # (S, C, H, W)
        outputs = [network(slices[i:i + self.batch_size], *args, **kwargs) for i in range(0, len(slices), self.batch_size)]
        predicted = torch.cat(outputs).movedim(0, self.spatial_dim + 1)  # (C_out, *crop)
        out = predicted.new_zeros((predicted.shape[0], *(n + b + a for n, b, a in zip(spatial, before, after))))
        out[(slice(None),) + tuple(slice(start + b, stop + b) for (start, stop), b in zip(grown, before))] = predicted
        return out[(slice(None),) + tuple(slice(b, b + n) for b, n in zip(before, spatial))]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"expected a batch of 3D volumes (N, C, X, Y, Z), got shape {tuple(inputs.shape)}")
        return torch.stack([self._one_volume(volume, network, *args, **kwargs) for volume in inputs])
