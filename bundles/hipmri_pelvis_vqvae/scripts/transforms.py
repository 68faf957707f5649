"""The HipMRI study's own transforms: its slices stored as one-slice volumes, and its metrics' intensity range. The
slice preparation itself is a list of transforms in `train.json` (`train#preprocessing`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = ["DropTrailingSlice", "DropTrailingSliced", "RescaleToTargetRanged"]


class DropTrailingSlice(Transform):
    """A 2D slice stored as a one-slice volume, (C, X, Y, 1) -> (C, X, Y); other images unchanged."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image[..., 0] if image.ndim == 4 and image.shape[-1] == 1 else image


class DropTrailingSliced(MapTransform):
    """Dictionary-based :class:`DropTrailingSlice`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.drop = DropTrailingSlice()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.drop(d[key])
        return d


class RescaleToTargetRanged(MapTransform):
    """Map ``keys`` (a reconstruction and its target) to [0, 1] with the target's own minimum and maximum, so that
    SSIM and PSNR with a data range of 1 compare each image at its own contrast."""

    def __init__(self, keys: KeysCollection, target_key: str = "label") -> None:
        super().__init__(keys)
        self.target_key = target_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        target = torch.as_tensor(d[self.target_key])
        lo, hi = target.min(), target.max()
        for key in self.key_iterator(d):
            d[key] = (torch.as_tensor(d[key]) - lo) / torch.clamp(hi - lo, min=1e-8)
        return d
