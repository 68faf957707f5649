"""Content checks that fail with an error naming the offending file: NaN / infinite voxels, no voxels, a blank image."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform

__all__ = ["UnusableImageError", "CheckImageContent", "CheckImageContentd", "source_name"]


class UnusableImageError(ValueError):
    """An image's content cannot be used: NaN / infinite voxels, no voxels at all, or one value everywhere."""


def source_name(img: NdarrayOrTensor, default: str = "<in-memory image>") -> str:
    """The file an image was loaded from, when its metadata says so."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or default)


class CheckImageContent(Transform):
    """Pass the image on unchanged, or raise :class:`UnusableImageError` naming its source file when it has NaN or
    infinite voxels, no voxels, or (unless ``allow_constant``) the same value in every voxel, e.g. an all-zero scan.

    A blank image normalises to garbage without any error further down the pipeline, so it is refused here, where
    the file is still known.
    """

    backend = [torch.Tensor]

    def __init__(self, allow_constant: bool = False) -> None:
        self.allow_constant = allow_constant

    def __call__(self, img: NdarrayOrTensor, name: str | None = None) -> NdarrayOrTensor:
        data = torch.as_tensor(img)
        name = name or source_name(img)
        if data.numel() == 0:
            raise UnusableImageError(f"{name}: the image has no voxels (shape {tuple(data.shape)}).")
        if data.is_floating_point():
            bad = int((~torch.isfinite(data)).sum())
            if bad:
                raise UnusableImageError(f"{name}: {bad} voxel(s) are NaN or infinite.")
        if not self.allow_constant:
            lo, hi = data.min(), data.max()
            if lo == hi:
                raise UnusableImageError(f"{name}: every voxel is {float(lo):g}: the image is blank.")
        return img


class CheckImageContentd(MapTransform):
    """Dictionary wrapper of :class:`CheckImageContent`."""

    backend = CheckImageContent.backend

    def __init__(self, keys: KeysCollection, allow_constant: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckImageContent(allow_constant)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        for key in self.key_iterator(data):
            self.checker(data[key], source_name(data[key], default=str(key)))
        return data
