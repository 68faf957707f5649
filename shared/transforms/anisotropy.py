"""Simulated thick-slice acquisition: keep every k-th slice along one axis, then interpolate back to the full grid.

This is how super-resolution training pairs are made from isotropic volumes. The interpolation is a cubic B-spline
with edge replication (scipy's ``map_coordinates(order=3, mode="nearest")``), which is what MONAI's
``ResampleToMatch(mode=3, padding_mode="border")`` applies to a real thick-slice file. A simulated volume and a
resampled thick-slice file made from the same slices therefore match.
"""

from __future__ import annotations

import functools

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import convert_to_numpy
from monai.utils.type_conversion import convert_to_dst_type
from scipy import ndimage

__all__ = [
    "interpolation_matrix",
    "kept_slices",
    "SimulateAnisotropy",
    "SimulateAnisotropyd",
    "RandSimulateAnisotropy",
    "RandSimulateAnisotropyd",
]


def kept_slices(size: int, factor: int, offset: int = 0) -> np.ndarray:
    """Indices of the slices a ``factor``-times thicker acquisition keeps: ``offset, offset + factor, ...``."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}.")
    if not 0 <= offset < max(factor, 1) or offset >= size:
        raise ValueError(f"offset must be in [0, min(factor, size)); got offset={offset}, factor={factor}, size={size}.")
    return np.arange(offset, size, factor)


@functools.lru_cache(maxsize=64)
def interpolation_matrix(size: int, factor: int, offset: int, order: int = 3) -> np.ndarray:
    """The linear map (``size`` x number of kept slices) from the kept slices to every slice along the axis:
    ``map_coordinates`` of each unit vector. Every other axis is sampled at its own voxels, where a B-spline
    interpolates its data exactly, so ``map_coordinates`` over the whole volume reduces to this 1D map along the
    axis (up to rounding), and one matrix product replaces the 3D spline evaluation."""
    kept = kept_slices(size, factor, offset)
    positions = ((np.arange(size, dtype=np.float64) - offset) / factor)[None]
    unit = np.eye(len(kept), dtype=np.float64)
    return np.stack([ndimage.map_coordinates(u, positions, order=order, mode="nearest") for u in unit], axis=1)


class SimulateAnisotropy(Transform):
    """Keep every ``factor``-th slice (from ``offset``) along spatial ``axis`` (0, 1 or 2 of a channel-first image)
    and interpolate back onto the original grid with ``order`` (3: cubic B-spline). Output shape = input shape;
    the kept slices are reproduced exactly; metadata are kept."""

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, factor: int = 4, axis: int = 2, offset: int = 0, order: int = 3) -> None:
        self.factor, self.axis, self.offset, self.order = factor, axis, offset, order

    def __call__(
        self, img: NdarrayOrTensor, factor: int | None = None, axis: int | None = None, offset: int | None = None
    ) -> NdarrayOrTensor:
        factor = int(self.factor if factor is None else factor)
        axis = int(self.axis if axis is None else axis)
        offset = int(self.offset if offset is None else offset)
        data = convert_to_numpy(img, dtype=np.float32)
        spatial_dims = data.ndim - 1
        if not 0 <= axis < spatial_dims:
            raise ValueError(f"axis must be in [0, {spatial_dims}) for a {spatial_dims}D image, got {axis}.")
        size = data.shape[axis + 1]
        kept = kept_slices(size, factor, offset)
        if factor == 1:
            return img
        thick = np.take(data, kept, axis=axis + 1)
        weights = interpolation_matrix(size, factor, offset, self.order).astype(np.float32)  # (size, len(kept))
        out = np.moveaxis(np.tensordot(weights, np.moveaxis(thick, axis + 1, 0), axes=1), 0, axis + 1)
        result, *_ = convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)
        return result


class SimulateAnisotropyd(MapTransform):
    """Dictionary wrapper of :class:`SimulateAnisotropy`. ``factor_key`` / ``axis_key`` (optional) name entries of
    the data that give a case its own factor / axis (an evaluation over several slice thicknesses and axes)."""

    backend = SimulateAnisotropy.backend

    def __init__(
        self,
        keys: KeysCollection,
        factor: int = 4,
        axis: int = 2,
        offset: int = 0,
        order: int = 3,
        factor_key: str | None = None,
        axis_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.simulate = SimulateAnisotropy(factor, axis, offset, order)
        self.factor_key, self.axis_key = factor_key, axis_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        factor = int(d[self.factor_key]) if self.factor_key else None
        axis = int(d[self.axis_key]) if self.axis_key else None
        for key in self.key_iterator(d):
            d[key] = self.simulate(d[key], factor=factor, axis=axis)
        return d


class RandSimulateAnisotropy(RandomizableTransform):
    """:class:`SimulateAnisotropy` with the factor drawn from ``factors``, the axis from ``axes`` and the first kept
    slice from ``[0, factor)`` each call (with probability ``prob``; otherwise the image is returned as it is)."""

    backend = SimulateAnisotropy.backend

    def __init__(
        self, factors: Sequence[int] = (2, 3, 4, 5), axes: Sequence[int] = (0, 1, 2), prob: float = 1.0, order: int = 3
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.factors, self.axes = list(factors), list(axes)
        self.simulate = SimulateAnisotropy(order=order)
        self.factor, self.axis, self.offset = self.factors[0], self.axes[0], 0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.factor = int(self.R.choice(self.factors))
        self.axis = int(self.R.choice(self.axes))
        self.offset = int(self.R.randint(self.factor))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        offset = min(self.offset, img.shape[self.axis + 1] - 1)
        return self.simulate(img, factor=self.factor, axis=self.axis, offset=offset)


class RandSimulateAnisotropyd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandSimulateAnisotropy`: one draw per call, applied to every key (so the
    channels of a multi-contrast input share the simulated acquisition)."""

    backend = SimulateAnisotropy.backend

    def __init__(
        self,
        keys: KeysCollection,
        factors: Sequence[int] = (2, 3, 4, 5),
        axes: Sequence[int] = (0, 1, 2),
        prob: float = 1.0,
        order: int = 3,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.rand_simulate = RandSimulateAnisotropy(factors, axes, prob=1.0, order=order)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.rand_simulate.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.rand_simulate.randomize()
        for key in self.key_iterator(d):
            d[key] = self.rand_simulate(d[key], randomize=False)
        return d
