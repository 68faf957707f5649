"""The study's slice preparation, and what inference and metrics need around it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import (
    CopyItemsd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Resized,
    Transform,
)

from shared.transforms.validation import CheckImageContentd

__all__ = ["hipmri_slice_transforms", "DropTrailingSliced", "RescaleToTargetRanged"]


def hipmri_slice_transforms(
    keys: KeysCollection = "image", image_size: Sequence[int] = (256, 128), target_key: str | None = None
) -> list[Transform]:
    """Load a 2D slice (channel first), refuse NaN / infinite voxels or a blank slice, resize it to ``image_size``
    with anti-aliasing (a no-op for the study's 256x128 slices; the study resized the others the same way) and
    normalise it to zero mean and unit variance, as the study did per image. ``target_key`` gets a copy: the
    reconstruction target."""
    copy = [CopyItemsd(keys, names=target_key)] if target_key else []
    return [
        LoadImaged(keys, reader="NibabelReader", image_only=True, ensure_channel_first=True),
        DropTrailingSliced(keys),
        CheckImageContentd(keys),
        Resized(keys, spatial_size=image_size, mode="bilinear", anti_aliasing=True),
        NormalizeIntensityd(keys),
        EnsureTyped(keys, dtype="float32", track_meta=False),
        *copy,
    ]


class DropTrailingSliced(MapTransform):
    """(1, X, Y, 1) slices stored as one-slice volumes -> (1, X, Y)."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].ndim == 4 and d[key].shape[-1] == 1:
                d[key] = d[key][..., 0]
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
