"""Input checks that fail with an error naming the offending file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform

__all__ = ["CheckFinite", "CheckFinited", "source_name"]


def source_name(img: NdarrayOrTensor, default: str = "<in-memory image>") -> str:
    """The file an image was loaded from, when its metadata says so."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or default)


class CheckFinite(Transform):
    """Raise ``ValueError`` naming the source file when the image has NaN or infinite voxels; else pass it on."""

    backend = [torch.Tensor]

    def __call__(self, img: NdarrayOrTensor, name: str | None = None) -> NdarrayOrTensor:
        data = torch.as_tensor(img)
        if data.is_floating_point():
            bad = int((~torch.isfinite(data)).sum())
            if bad:
                raise ValueError(f"{name or source_name(img)}: {bad} voxel(s) are NaN or infinite.")
        return img


class CheckFinited(MapTransform):
    """Dictionary wrapper of :class:`CheckFinite`."""

    backend = CheckFinite.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckFinite()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        for key in self.key_iterator(data):
            self.checker(data[key], source_name(data[key], default=str(key)))
        return data
