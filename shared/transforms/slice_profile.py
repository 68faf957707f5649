"""A thick-slice acquisition with a slice profile, then the cubic interpolation back that inference applies.

A real thick-slice T2w does not keep every k-th slice of an isotropic volume: each of its slices integrates the
signal over the slice thickness (the slice profile), slices may be spaced further apart than they are thick (a gap)
and the stack starts anywhere. Along one axis, slice ``k`` is centred at ``offset + k * spacing`` voxels and is the
profile-weighted sum of the voxels around it:

- ``"box"``: the exact overlap of each voxel ``[i - 1/2, i + 1/2]`` with the slice ``[c - t/2, c + t/2]``;
- ``"gaussian"``: a Gaussian of the full width at half maximum ``sqrt(t^2 - 1)``, the blur that a slice of
  thickness ``t`` adds to voxels that are already one voxel thick (none for ``t = 1``);
- ``"point"``: the value at the centre (linear interpolation), whatever the thickness: "keep every k-th slice", the
  simulation of ``shared.transforms.anisotropy`` when the spacing is a whole number of voxels.

All profiles of thickness 1 at integer centres keep the slices as they are. The thick slices are then interpolated
back onto the full grid by a cubic B-spline with edge replication, as MONAI's ``ResampleToMatch(mode=3,
padding_mode="border")`` resamples a thick-slice file onto the T1w's grid (scipy's ``map_coordinates(order=3,
mode="nearest")``). Everything is linear along the axis, so one ``size x size`` matrix does both steps.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import convert_to_numpy
from monai.utils.type_conversion import convert_to_dst_type
from scipy import ndimage

__all__ = ["PROFILES", "slice_centres", "slice_profile_matrix", "acquisition_matrix", "SimulateThickSlices",
           "RandSimulateThickSlicesd"]

PROFILES = ("box", "gaussian", "point")
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def slice_centres(size: int, spacing: float, offset: float = 0.0) -> np.ndarray:
    """The centres (in voxels) of the slices of a stack that starts at ``offset`` with ``spacing``, inside ``size``."""
    if spacing <= 0 or not 0 <= offset < size:
        raise ValueError(f"need spacing > 0 and 0 <= offset < size; got spacing={spacing}, offset={offset}, size={size}.")
    return offset + spacing * np.arange(int(np.floor((size - 1 - offset) / spacing)) + 1)


def slice_profile_matrix(size: int, thickness: float, spacing: float, offset: float = 0.0,
                         profile: str = "box") -> np.ndarray:
    """The linear map (number of slices x ``size``) from the voxels along an axis to the thick slices' values, each
    row a slice profile summing to 1 (cut at the volume's edges and renormalised)."""
    if thickness < 1:
        raise ValueError(f"a slice is at least one voxel thick, got thickness={thickness}.")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}.")
    centres = slice_centres(size, spacing, offset)[:, None]
    voxels = np.arange(size, dtype=np.float64)[None]
    if profile == "box":
        low, high = np.maximum(voxels - 0.5, centres - thickness / 2), np.minimum(voxels + 0.5, centres + thickness / 2)
        weights = np.clip(high - low, 0.0, None)
    else:
        sigma = np.sqrt(max(thickness**2 - 1.0, 0.0)) * FWHM_TO_SIGMA
        if profile == "point" or sigma < 1e-3:  # a delta: linear interpolation at the centre
            weights = np.clip(1.0 - np.abs(voxels - centres), 0.0, None)
        else:
            weights = np.exp(-0.5 * ((voxels - centres) / sigma) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def _spline_back(size: int, spacing: float, offset: float, count: int, order: int) -> np.ndarray:
    """(``size`` x ``count``): a cubic (``order``) B-spline through ``count`` slices at ``offset + k * spacing``,
    evaluated at every voxel, edges replicated."""
    positions = ((np.arange(size, dtype=np.float64) - offset) / spacing)[None]
    unit = np.eye(count, dtype=np.float64)
    return np.stack([ndimage.map_coordinates(u, positions, order=order, mode="nearest") for u in unit], axis=1)


def acquisition_matrix(size: int, thickness: float, spacing: float | None = None, offset: float = 0.0,
                       profile: str = "box", order: int = 3) -> np.ndarray:
    """(``size`` x ``size``): the thick slices of :func:`slice_profile_matrix` (``spacing`` defaults to
    ``thickness``: no gap), interpolated back onto every voxel by a B-spline of ``order``."""
    spacing = float(thickness if spacing is None else spacing)
    slices = slice_profile_matrix(size, thickness, spacing, offset, profile)
    if len(slices) == 1:
        return np.repeat(slices, size, axis=0)
    return _spline_back(size, spacing, offset, len(slices), order) @ slices


def _along(data: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` applied along spatial ``axis`` of channel-first ``data``."""
    return np.moveaxis(np.tensordot(matrix.astype(np.float32), np.moveaxis(data, axis + 1, 0), axes=1), 0, axis + 1)


class SimulateThickSlices(Transform):
    """A thick-slice acquisition of a channel-first image along spatial ``axis`` (slices ``thickness`` voxels thick,
    ``spacing`` apart from ``offset``, with ``profile``), interpolated back onto the image's grid (see the module).
    Output shape = input shape; metadata are kept."""

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, thickness: float = 4.0, axis: int = 2, spacing: float | None = None, offset: float = 0.0,
                 profile: str = "box", order: int = 3) -> None:
        self.thickness, self.axis, self.spacing, self.offset = thickness, axis, spacing, offset
        self.profile, self.order = profile, order

    def __call__(self, img: NdarrayOrTensor, thickness: float | None = None, axis: int | None = None,
                 spacing: float | None = None, offset: float | None = None, profile: str | None = None
                 ) -> NdarrayOrTensor:
        thickness = float(self.thickness if thickness is None else thickness)
        axis = int(self.axis if axis is None else axis)
        spacing = self.spacing if spacing is None else spacing
        data = convert_to_numpy(img, dtype=np.float32)
        if not 0 <= axis < data.ndim - 1:
            raise ValueError(f"axis must be in [0, {data.ndim - 1}) for a {data.ndim - 1}D image, got {axis}.")
        matrix = acquisition_matrix(data.shape[axis + 1], thickness, spacing, float(self.offset if offset is None
                                                                                      else offset),
                                    profile or self.profile, self.order)
        result, *_ = convert_to_dst_type(_along(data, matrix, axis), img, dtype=torch.float32
                                         if isinstance(img, torch.Tensor) else np.float32)
        return result


class RandSimulateThickSlicesd(RandomizableTransform, MapTransform):
    """:class:`SimulateThickSlices` with a random acquisition each call, the same for every key: the thickness
    uniform in ``thickness_range`` (voxels), a gap of ``gap_range`` times the thickness, the axis from ``axes``,
    the profile from ``profiles`` and the stack's start uniform in ``[0, spacing)``. With probability ``1 - prob``
    the data are returned as they are."""

    backend = SimulateThickSlices.backend

    def __init__(self, keys: KeysCollection, thickness_range: Sequence[float] = (2.0, 6.0),
                 gap_range: Sequence[float] = (0.0, 0.0), axes: Sequence[int] = (0, 1, 2),
                 profiles: Sequence[str] = PROFILES, prob: float = 1.0, order: int = 3,
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 1 <= thickness_range[0] <= thickness_range[1]:
            raise ValueError(f"thickness_range must be [low, high] with 1 <= low <= high, got {thickness_range}.")
        if any(p not in PROFILES for p in profiles):
            raise ValueError(f"profiles must be among {PROFILES}, got {profiles}.")
        self.thickness_range, self.gap_range = [float(t) for t in thickness_range], [float(g) for g in gap_range]
        self.axes, self.profiles = [int(a) for a in axes], list(profiles)
        self.simulate = SimulateThickSlices(order=order)
        self.acquisition: dict = {}

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        thickness = self.R.uniform(*self.thickness_range)
        spacing = thickness * (1.0 + self.R.uniform(*self.gap_range))
        self.acquisition = {"thickness": thickness, "spacing": spacing, "axis": int(self.R.choice(self.axes)),
                            "profile": str(self.R.choice(self.profiles)), "start": self.R.uniform(0.0, 1.0)}

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        a = self.acquisition
        for key in self.key_iterator(d):
            size = d[key].shape[a["axis"] + 1]
            offset = min(a["start"] * a["spacing"], size - 1)
            d[key] = self.simulate(d[key], a["thickness"], a["axis"], a["spacing"], offset, a["profile"])
        return d
