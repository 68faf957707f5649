"""Content checks that fail with an error naming the offending file: NaN / infinite voxels, no voxels, a blank image,
too few intensity levels (a mask given as a scan), an image smaller than the patches taken from it, two images of a
case that hardly overlap in space."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform

__all__ = ["UnusableImageError", "CheckImageContent", "CheckImageContentd", "CheckSpatialSized", "CheckOverlapd",
           "source_name"]


class UnusableImageError(ValueError):
    """An image's content cannot be used: NaN / infinite voxels, no voxels at all, or one value everywhere."""


def source_name(img: NdarrayOrTensor, default: str = "<in-memory image>") -> str:
    """The file an image was loaded from, when its metadata says so."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or default)


class CheckImageContent(Transform):
    """Pass the image on unchanged, or raise :class:`UnusableImageError` naming its source file when it has NaN or
    infinite voxels, no voxels, or (unless ``allow_constant``) the same value in every voxel, e.g. an all-zero scan;
    with ``min_distinct_values``, fewer distinct values than that (among up to a million voxels), e.g. a binary mask
    given where a scan is expected.

    A blank image normalises to garbage without any error further down the pipeline, so it is refused here, where
    the file is still known.
    """

    backend = [torch.Tensor]

    def __init__(self, allow_constant: bool = False, min_distinct_values: int = 0) -> None:
        self.allow_constant, self.min_distinct_values = allow_constant, min_distinct_values

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
        if self.min_distinct_values:
            sample = data.reshape(-1)[:: max(1, data.numel() // 1_000_000)]
            levels = torch.unique(sample)
            if len(levels) < self.min_distinct_values:
                raise UnusableImageError(
                    f"{name}: only {len(levels)} distinct intensity value(s) ({levels[:8].tolist()}); a scan with at "
                    f"least {self.min_distinct_values} is expected here (is this a mask or a label map?).")
        return img


class CheckImageContentd(MapTransform):
    """Dictionary wrapper of :class:`CheckImageContent`."""

    backend = CheckImageContent.backend

    def __init__(self, keys: KeysCollection, allow_constant: bool = False, min_distinct_values: int = 0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckImageContent(allow_constant, min_distinct_values)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        for key in self.key_iterator(data):
            self.checker(data[key], source_name(data[key], default=str(key)))
        return data


class CheckSpatialSized(MapTransform):
    """Pass the data on unchanged, or raise :class:`UnusableImageError` naming the file when an image's spatial size
    is smaller than ``min_size`` in some axis: patches of that size cannot be cut from it, and the batch it would join
    could not be collated. Put it among the cached (deterministic) transforms so that such a case is set aside."""

    def __init__(self, keys: KeysCollection, min_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_size = tuple(int(s) for s in min_size)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        for key in self.key_iterator(data):
            size = tuple(data[key].shape[1:])
            if len(size) != len(self.min_size) or any(s < m for s, m in zip(size, self.min_size)):
                raise UnusableImageError(
                    f"{source_name(data[key], default=str(key))}: its spatial size after preprocessing is {size}, "
                    f"smaller than the {self.min_size} patches taken from it; use a larger field of view or smaller "
                    "patches (--patch_size).")
        return data


def _world_box(img) -> tuple[np.ndarray, np.ndarray]:
    """The world-space bounding box of an image's voxel centres, from its affine (``meta['affine']``)."""
    affine = np.asarray(img.affine, float)
    size = np.asarray(img.shape[1:], float)
    corners = np.array(np.meshgrid(*[[0.0, s - 1] for s in size], indexing="ij")).reshape(len(size), -1)
    world = affine[: len(size), : len(size)] @ corners + affine[: len(size), -1:]
    return world.min(1), world.max(1)


class CheckOverlapd(MapTransform):
    """Pass the data on unchanged, or raise :class:`UnusableImageError` naming both files when the images of
    ``keys`` (two or more, channel first, with affines) share less than ``min_fraction`` of the first one's
    world-space bounding box: a pair from different sessions, or a header that places an image elsewhere, would
    give a blank or garbage result without any other error."""

    def __init__(self, keys: KeysCollection, min_fraction: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_fraction = min_fraction

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        keys = list(self.key_iterator(data))
        low, high = _world_box(data[keys[0]])
        extent = np.maximum(high - low, 1e-6)
        for key in keys[1:]:
            other_low, other_high = _world_box(data[key])
            shared = np.clip(np.minimum(high, other_high) - np.maximum(low, other_low), 0, None)
            fraction = float(np.prod(np.where(high - low > 0, shared / extent, (shared >= 0).astype(float))))
            if fraction < self.min_fraction:
                raise UnusableImageError(
                    f"{source_name(data[key], default=str(key))} covers {fraction:.0%} of the space of "
                    f"{source_name(data[keys[0]], default=str(keys[0]))} (at least {self.min_fraction:.0%} is "
                    "needed): the two images are not of the same region; check the pair and their headers.")
        return data
