"""Rigid registration of a subject's images to a fixed space (an atlas) with ITK, resampling through a world
transform, and the way back to the subject's native grid.

ITK does the registration (images handed over by ``monai.data.itk_torch_bridge``), MONAI's ``SpatialResample`` the
resampling (spline orders 0, 1, 3 through ``scipy.ndimage``) and its inverse. What this module adds, because neither
library has it: the registration set up once with its checks (constant, non-finite or sheared images, ITK's errors
and a final field-of-view overlap check, each naming the moving file), and an invertible transform that resamples
through a world matrix, which ``ResampleToMatch`` cannot (it aligns the grids as they are in world space).

Conventions used throughout:

- images are channel-first MONAI ``MetaTensor`` s whose ``.affine`` maps voxel indices to world millimetres in RAS
  (what ``LoadImage`` gives; ``meta["space"] == "LPS"`` is honoured), or arrays given with such an affine;
- a *world transform* is a 4x4 matrix in RAS millimetres. The registration's matrix maps points of the **fixed**
  space to the corresponding points of the **moving** space (ITK's convention: ``p_moving = M @ p_fixed``), which is
  what resampling the moving image onto the fixed grid needs; ``inv(M)`` maps moving points to fixed points.

ITK works in LPS physical space: an RAS point ``(x, y, z)`` is the LPS point ``(-x, -y, z)``, so a RAS matrix is
``F @ M_lps @ F`` with ``F = diag(-1, -1, 1, 1)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.itk_torch_bridge import metatensor_to_itk_image
from monai.data.utils import orientation_ras_lps
from monai.transforms import InvertibleTransform, LoadImage, MapTransform, SpatialResample
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, TraceKeys, ensure_tuple_rep

__all__ = [
    "INTERPOLATION_ORDERS",
    "RegistrationError",
    "RigidRegister",
    "RigidRegisterd",
    "RigidResult",
    "image_name",
    "map_back",
    "resample_to_grid",
    "rigid_register",
]

# interpolation name -> spline order, MONAI's SpatialResample ``mode`` (MONAI's names are accepted too)
INTERPOLATION_ORDERS = {"nearest": 0, "linear": 1, "bilinear": 1, "trilinear": 1, "cubic": 3, "bicubic": 3,
                        "bspline": 3}
_RAS_LPS = orientation_ras_lps(np.eye(4))  # its own inverse
_INITIALIZERS = ("moments", "geometry", None)

ImageLike = MetaTensor | torch.Tensor | np.ndarray
# a grid: a MetaTensor (its spatial shape and affine) or (spatial shape, RAS affine)
Grid = MetaTensor | tuple[Sequence[int], Any]


class RegistrationError(ValueError):
    """The registration could not be run or gave no usable result; the message names the moving image."""


@dataclass(frozen=True)
class RigidResult:
    """Outcome of :func:`rigid_register`.

    ``matrix`` (4x4, RAS mm) maps fixed-space points to moving-space points: ``p_moving = matrix @ p_fixed``.
    ``metric_value`` is the final Mattes mutual information as ITK reports it (negative; lower is better),
    ``iterations`` the optimizer iterations summed over the resolution levels, ``stop_condition`` the optimizer's
    reason for stopping at the finest level, ``converged`` whether that reason was not the iteration limit, and
    ``overlap`` the fraction of the fixed image's foreground that maps inside the moving image's field of view.
    """

    matrix: np.ndarray
    metric_value: float
    iterations: int
    stop_condition: str
    converged: bool
    overlap: float

    @property
    def moving_to_fixed(self) -> np.ndarray:
        """The inverse matrix: moving-space points to fixed-space points."""
        return np.linalg.inv(self.matrix)

    @property
    def rotation_degrees(self) -> float:
        """The rotation angle of the transform, in degrees."""
        cos = (np.trace(self.matrix[:3, :3]) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


# ---------------------------------------------------------------------------------------------------------- helpers


def image_name(img: Any, default: str = "moving image") -> str:
    """The file an image was loaded from (``meta["filename_or_obj"]``), else ``default``."""
    meta = getattr(img, "meta", None) or {}
    name = meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(meta, Mapping) else None
    return str(name) if name not in (None, "") else default


def _as_matrix(matrix: Any) -> np.ndarray:
    """A 4x4 float64 numpy matrix from an array or tensor."""
    out = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if out.shape != (4, 4):
        raise ValueError(f"need a 4x4 matrix (3D images), got shape {out.shape}.")
    return out


def _ras_affine(img: Any, affine: Any = None) -> np.ndarray:
    """The voxel-to-RAS affine of ``img``: ``affine`` when given, else the MetaTensor's (converted from LPS when its
    ``meta["space"]`` says so)."""
    if affine is not None:
        return _as_matrix(affine)
    if not isinstance(img, MetaTensor):
        raise TypeError("an array needs its affine (voxel to RAS mm); give it, or pass a MetaTensor.")
    out = _as_matrix(img.affine)
    if str(img.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)).upper() == SpaceKeys.LPS.value:
        out = _RAS_LPS @ out
    return out


def _volume(img: ImageLike) -> np.ndarray:
    """The first channel of a channel-first image (or a plain 3D array) as a float32 numpy array."""
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim == 4:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"need a 3D image, channel first (C, X, Y, Z) or (X, Y, Z); got shape {arr.shape}.")
    return arr.astype(np.float32, copy=False)


def _grid(reference: Grid) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, str]:
    """(spatial shape, RAS affine, affine as given, its space) of a reference grid."""
    if isinstance(reference, torch.Tensor):
        if not isinstance(reference, MetaTensor):
            raise TypeError("a reference grid is a MetaTensor or (spatial shape, affine).")
        shape = tuple(int(s) for s in reference.shape[1:])
        raw = np.asarray(reference.affine.detach().cpu(), dtype=np.float64)
        space = str(reference.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)).upper()
        return shape, _ras_affine(reference), raw, space
    shape, affine = reference
    shape = tuple(int(s) for s in shape)
    raw = _as_matrix(affine)
    return shape, raw, raw, SpaceKeys.RAS.value


def _itk_image(volume: np.ndarray, ras_affine: np.ndarray, name: str):
    """An ``itk.Image[F, 3]`` with the geometry of ``ras_affine`` in ITK's LPS physical space."""
    linear = ras_affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(ras_affine)):
        raise RegistrationError(f"{name}: the affine is singular or not finite.")
    direction = _RAS_LPS[:3, :3] @ linear / spacing
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-3:
        raise RegistrationError(f"{name}: the affine has shear; ITK registration needs orthogonal voxel axes.")
    placed = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)),
                        affine=torch.as_tensor(ras_affine, dtype=torch.float64), meta={MetaKeys.SPACE: SpaceKeys.RAS})
    return metatensor_to_itk_image(placed, channel_dim=None)


def _check_content(volume: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(volume)):
        raise RegistrationError(f"{name}: the image has NaN or infinite voxels; cannot register it.")
    if volume.size == 0 or float(volume.max()) == float(volume.min()):
        raise RegistrationError(f"{name}: the image is constant (blank); there is nothing to register.")


def _itk_message(error: Exception) -> str:
    """The description of an ITK exception, without its source file and object address."""
    text = str(error)
    if "ITK ERROR:" in text:
        text = text.split("ITK ERROR:", 1)[1]
        if "):" in text:
            text = text.split("):", 1)[1]
    return " ".join(text.split())


def _foreground(volume: np.ndarray) -> np.ndarray:
    """Voxels brighter than 10% of the robust range (head or brain, not background)."""
    low, high = np.percentile(volume, [1.0, 99.0])
    if high <= low:
        return volume > low
    return volume > low + 0.1 * (high - low)


def _overlap(fixed: np.ndarray, fixed_affine: np.ndarray, moving_shape: Sequence[int], moving_affine: np.ndarray,
             matrix: np.ndarray, max_points: int = 200_000) -> float:
    """Fraction of the fixed foreground whose points map (through ``matrix``) inside the moving field of view."""
    stride = max(1, math.ceil((fixed.size / max_points) ** (1.0 / 3.0)))
    mask = _foreground(fixed[::stride, ::stride, ::stride])
    index = np.argwhere(mask).T.astype(np.float64) * stride
    if index.shape[1] == 0:
        return 0.0
    points = np.vstack([index, np.ones(index.shape[1])])
    moving_index = (np.linalg.inv(moving_affine) @ matrix @ fixed_affine @ points)[:3]
    upper = np.asarray(moving_shape, dtype=np.float64)[:, None] - 0.5
    inside = np.all((moving_index >= -0.5) & (moving_index <= upper), axis=0)
    return float(inside.mean())


# ----------------------------------------------------------------------------------------------------- registration


def rigid_register(
    fixed: ImageLike,
    moving: ImageLike,
    *,
    fixed_affine: Any = None,
    moving_affine: Any = None,
    initializer: str | None = "moments",
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
    histogram_bins: int = 32,
    sampling_percentage: float = 0.1,
    max_samples: int = 50_000,
    iterations: int = 200,
    learning_rate: float = 1.0,
    min_step: float = 1e-3,
    seed: int = 20240725,
    min_overlap: float = 0.5,
) -> RigidResult:
    """Rigidly register ``moving`` to ``fixed`` (Mattes mutual information, versor rigid transform, multi-resolution).

    Args:
        fixed, moving: channel-first MetaTensors (or arrays with ``fixed_affine`` / ``moving_affine``, voxel to RAS
            mm); the first channel is registered.
        initializer: ``"moments"`` (align centres of mass, the default: subjects may sit anywhere in scanner
            coordinates), ``"geometry"`` (align the grids' centres) or ``None`` (start from the identity: the images
            must already overlap).
        shrink_factors, smoothing_sigmas: one per resolution level, sigmas in voxels of the fixed image.
        histogram_bins: bins of the mutual-information histograms.
        sampling_percentage, max_samples: the metric uses a random (seeded, so repeatable) subset of the fixed
            voxels at each level: ``sampling_percentage`` of them, at most ``max_samples``.
        iterations, learning_rate, min_step: regular-step gradient descent per level; steps are scaled so that
            ``learning_rate`` is roughly the first step in millimetres, and each level stops below ``min_step``.
        min_overlap: least fraction of the fixed foreground that must fall in the moving field of view after
            registration; less means the optimizer drifted away.

    Returns:
        a :class:`RigidResult` whose ``matrix`` maps fixed-space RAS points to moving-space RAS points.

    Raises:
        RegistrationError: bad input (constant, not finite, sheared), ITK failure (e.g. no overlap, too few
            samples in the overlap) or a result that leaves the images apart; the message names the moving file.
    """
    import itk

    name = image_name(moving)
    fixed_name = image_name(fixed, "the fixed image")
    if initializer not in _INITIALIZERS:
        raise ValueError(f"initializer must be one of {_INITIALIZERS}, got {initializer!r}.")
    if len(shrink_factors) != len(smoothing_sigmas) or not shrink_factors:
        raise ValueError("need one smoothing sigma per shrink factor (at least one level).")
    fixed_vol, moving_vol = _volume(fixed), _volume(moving)
    fixed_aff, moving_aff = _ras_affine(fixed, fixed_affine), _ras_affine(moving, moving_affine)
    _check_content(fixed_vol, fixed_name)
    _check_content(moving_vol, name)
    fixed_itk = _itk_image(fixed_vol, fixed_aff, fixed_name)
    moving_itk = _itk_image(moving_vol, moving_aff, name)

    image_type = itk.Image[itk.F, 3]
    transform_type = itk.VersorRigid3DTransform[itk.D]
    transform = transform_type.New()
    transform.SetIdentity()
    metric = itk.MattesMutualInformationImageToImageMetricv4[image_type, image_type].New()
    metric.SetNumberOfHistogramBins(int(histogram_bins))
    # central differences at the sampled points instead of gradient images of the whole volumes: faster when sampling
    metric.SetUseMovingImageGradientFilter(False)
    metric.SetUseFixedImageGradientFilter(False)
    optimizer = itk.RegularStepGradientDescentOptimizerv4[itk.D].New()
    optimizer.SetLearningRate(float(learning_rate))
    optimizer.SetMinimumStepLength(float(min_step))
    optimizer.SetNumberOfIterations(int(iterations))
    optimizer.SetRelaxationFactor(0.5)
    optimizer.SetGradientMagnitudeTolerance(1e-8)
    scales = itk.RegistrationParameterScalesFromPhysicalShift[type(metric)].New()
    scales.SetMetric(metric)
    optimizer.SetScalesEstimator(scales)
    optimizer.SetDoEstimateLearningRateOnce(False)
    optimizer.SetDoEstimateLearningRateAtEachIteration(False)
    count = [0]
    optimizer.AddObserver(itk.IterationEvent(), lambda: count.__setitem__(0, count[0] + 1))

    registration = itk.ImageRegistrationMethodv4[image_type, image_type].New()
    registration.SetFixedImage(fixed_itk)
    registration.SetMovingImage(moving_itk)
    registration.SetMetric(metric)
    registration.SetOptimizer(optimizer)
    registration.SetNumberOfLevels(len(shrink_factors))
    registration.SetShrinkFactorsPerLevel([int(f) for f in shrink_factors])
    registration.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_sigmas])
    registration.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(False)
    registration.SetMetricSamplingStrategy(itk.ImageRegistrationMethodv4Enums.MetricSamplingStrategy_RANDOM)
    voxels = [max(1, int(np.prod(np.asarray(fixed_vol.shape) // max(1, int(f))))) for f in shrink_factors]
    registration.SetMetricSamplingPercentagePerLevel(
        [float(min(sampling_percentage, max(max_samples / v, 1e-6), 1.0)) for v in voxels])
    registration.MetricSamplingReinitializeSeed(int(seed))
    try:
        if initializer is not None:
            init = itk.CenteredTransformInitializer[transform_type, image_type, image_type].New()
            init.SetTransform(transform)
            init.SetFixedImage(fixed_itk)
            init.SetMovingImage(moving_itk)
            init.MomentsOn() if initializer == "moments" else init.GeometryOn()
            init.InitializeTransform()
        registration.SetInitialTransform(transform)
        registration.InPlaceOn()
        registration.Update()
    except RuntimeError as error:
        raise RegistrationError(
            f"{name}: rigid registration to {fixed_name} failed: {_itk_message(error)}") from error

    lps = np.eye(4)
    lps[:3, :3] = itk.array_from_matrix(transform.GetMatrix())
    lps[:3, 3] = np.asarray([transform.GetOffset()[i] for i in range(3)], dtype=np.float64)
    matrix = _RAS_LPS @ lps @ _RAS_LPS
    metric_value = float(optimizer.GetValue())
    stop = str(optimizer.GetStopConditionDescription())
    if not (np.all(np.isfinite(matrix)) and math.isfinite(metric_value)):
        raise RegistrationError(f"{name}: rigid registration to {fixed_name} gave a non-finite result ({stop}).")
    overlap = _overlap(fixed_vol, fixed_aff, moving_vol.shape, moving_aff, matrix)
    if overlap < min_overlap:
        raise RegistrationError(
            f"{name}: rigid registration to {fixed_name} did not converge to an overlapping position: only "
            f"{overlap:.0%} of the fixed image's foreground falls in the moving image (need {min_overlap:.0%}).")
    return RigidResult(matrix=matrix, metric_value=metric_value, iterations=int(count[0]), stop_condition=stop,
                       converged="Maximum number of iterations" not in stop, overlap=overlap)


# ------------------------------------------------------------------------------------------------------- resampling


def _placed(image: ImageLike, ras_affine: np.ndarray) -> MetaTensor:
    """``image`` (channel first, or a 3D array) as a MetaTensor whose affine is ``ras_affine`` (in RAS), keeping its
    meta data and applied operations."""
    data = torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"need a channel-first 3D image (C, X, Y, Z), got shape {tuple(data.shape)}.")
    meta = deepcopy(dict(image.meta)) if isinstance(image, MetaTensor) else {}
    meta.pop(MetaKeys.AFFINE, None)
    meta[MetaKeys.SPACE] = SpaceKeys.RAS.value
    applied = deepcopy(image.applied_operations) if isinstance(image, MetaTensor) else None
    # MONAI's spline orders run scipy (cupy on a GPU, which we do not require): resample on the CPU
    return MetaTensor(data.cpu(), affine=torch.as_tensor(ras_affine, dtype=torch.float64), meta=meta,
                      applied_operations=applied)


def _on_grid(out: MetaTensor, raw_affine: np.ndarray, space: str) -> MetaTensor:
    """``out`` with the grid's affine as given (``raw_affine``, in ``space``) and its voxel sizes in ``pixdim``."""
    out.affine = torch.as_tensor(raw_affine, dtype=torch.float64)
    out.meta[MetaKeys.SPACE] = space
    if "pixdim" in out.meta:
        pixdim = np.array(out.meta["pixdim"], dtype=np.float64).reshape(-1)
        if pixdim.size >= 4:
            pixdim[1:4] = np.linalg.norm(raw_affine[:3, :3], axis=0)
            out.meta["pixdim"] = pixdim
    return out


def _resample(resampler: SpatialResample, placed: MetaTensor, grid: tuple, mode: str, padding_value: float
              ) -> MetaTensor:
    """``placed`` resampled by MONAI onto ``grid`` (``_grid``'s tuple) with the spline order of ``mode``, outside
    voxels ``padding_value``; nearest neighbour keeps the dtype (labels), the other orders give float32."""
    shape, ras, raw, space = grid
    order = INTERPOLATION_ORDERS[mode]
    dtype = placed.dtype if order == 0 else torch.float32
    source = placed if order == 0 else placed.float()
    if padding_value:  # MONAI pads with zeros; interpolation commutes with a constant shift
        source = source - padding_value
    out = resampler(source, dst_affine=torch.as_tensor(ras, dtype=torch.float64), spatial_size=shape, mode=order,
                    padding_mode="zeros")
    if padding_value:
        out = out + padding_value
    return _on_grid(out.to(dtype), raw, space)


def resample_to_grid(
    image: ImageLike,
    reference: Grid,
    transform: Any = None,
    *,
    mode: str = "linear",
    padding_value: float = 0.0,
    image_affine: Any = None,
) -> MetaTensor:
    """Resample ``image`` onto the ``reference`` grid through a world transform.

    Args:
        image: channel-first MetaTensor (or array with ``image_affine``, voxel to RAS mm); every channel is resampled.
        reference: the output grid: a MetaTensor (its spatial shape and affine) or ``(spatial shape, RAS affine)``.
        transform: 4x4 RAS matrix mapping reference-space points to image-space points (``p_image = T @ p_ref``;
            a registration's fixed-to-moving matrix when ``image`` is the moving image); ``None`` is the identity.
        mode: ``"linear"``, ``"cubic"`` (``"bspline"``, cubic B-spline) or ``"nearest"`` (keeps the dtype: labels).
        padding_value: value of output voxels that fall outside the image.

    Returns:
        a MetaTensor on the reference grid (shape and affine, in the reference's space) carrying the image's meta
        data and applied operations (this function adds none); float32 unless ``mode="nearest"``.
    """
    if mode not in INTERPOLATION_ORDERS:
        raise ValueError(f"mode must be one of {sorted(INTERPOLATION_ORDERS)}, got {mode!r}.")
    world = np.eye(4) if transform is None else _as_matrix(transform)
    # the image's voxels placed in the reference's world: p_ref = inv(T) @ p_image
    placed = _placed(image, np.linalg.inv(world) @ _ras_affine(image, image_affine))
    resampler = SpatialResample()
    with resampler.trace_transform(False):
        out = _resample(resampler, placed, _grid(reference), mode, padding_value)
    out = out[0] if np.ndim(image) == 3 else out
    return out.to(image.device) if isinstance(image, torch.Tensor) else out


def map_back(
    image: ImageLike,
    matrix: Any,
    native_reference: Grid,
    *,
    mode: str = "linear",
    padding_value: float = 0.0,
    image_affine: Any = None,
) -> MetaTensor:
    """Resample an image in fixed (atlas) space back onto a subject's native grid.

    ``matrix`` is the registration's fixed-to-moving RAS matrix (:attr:`RigidResult.matrix`); ``native_reference``
    is the native grid, usually the moving input itself (a MetaTensor) or ``(spatial shape, RAS affine)``. ``image``
    may be on any grid of the fixed space (e.g. a network output at another resolution): its own affine is used.
    The output has the native grid's shape and affine.
    """
    # native point p -> fixed point inv(matrix) @ p, where the fixed-space image is read
    inverse = np.linalg.inv(_as_matrix(matrix))
    out = resample_to_grid(image, native_reference, inverse, mode=mode, padding_value=padding_value,
                           image_affine=image_affine)
    out.meta.pop(RigidRegister.matrix_meta_key, None)
    return out


# ------------------------------------------------------------------------------------------------------- transforms


class RigidRegister(InvertibleTransform):
    """Register a moving image rigidly to a fixed one and resample it onto the fixed grid.

    ``__call__(moving, fixed)`` returns ``moving`` on ``fixed``'s grid (shape and affine), with the fixed-to-moving
    RAS matrix (see :func:`rigid_register`) in ``meta["rigid_to_fixed"]``. The resampling is MONAI's
    ``SpatialResample`` of the moving image placed in the fixed world (its affine moved by the inverse matrix), and it
    is recorded in the applied operations with this transform's own record (the native affine), so that
    :meth:`inverse` (or ``Invertd``, whose ``nearest_interp`` applies to MONAI's record) maps an image of the fixed
    space back to the moving image's native grid. Give ``matrix`` to apply a known registration instead of computing
    one. Keyword arguments other than ``mode`` and ``padding_value`` go to :func:`rigid_register`.
    """

    backend = [torch.Tensor, np.ndarray]
    matrix_meta_key = "rigid_to_fixed"

    def __init__(self, mode: str = "linear", padding_value: float = 0.0, **registration_options: Any) -> None:
        if mode not in INTERPOLATION_ORDERS:
            raise ValueError(f"mode must be one of {sorted(INTERPOLATION_ORDERS)}, got {mode!r}.")
        self.mode, self.padding_value = mode, padding_value
        self.registration_options = registration_options
        self.resampler = SpatialResample()

    def register(self, moving: ImageLike, fixed: ImageLike) -> RigidResult:
        """The rigid registration of ``moving`` to ``fixed``, without resampling."""
        return rigid_register(fixed, moving, **self.registration_options)

    def __call__(
        self, moving: MetaTensor, fixed: MetaTensor, matrix: Any = None, mode: str | None = None
    ) -> MetaTensor:
        if not isinstance(moving, MetaTensor) or not isinstance(fixed, MetaTensor):
            raise TypeError("RigidRegister needs MetaTensors (images with their affines); use rigid_register and "
                             "resample_to_grid for arrays.")
        if matrix is None:
            matrix = self.register(moving, fixed).matrix
        matrix = _as_matrix(matrix)
        native_shape, native_ras, native_raw, native_space = _grid(moving)
        placed = _placed(moving, np.linalg.inv(matrix) @ native_ras)
        out = _resample(self.resampler, placed, _grid(fixed), mode or self.mode, self.padding_value).to(moving.device)
        out.meta[self.matrix_meta_key] = torch.as_tensor(matrix, dtype=torch.float64)
        extra = {"matrix": torch.as_tensor(matrix, dtype=torch.float64),
                 "native_affine": torch.as_tensor(native_raw, dtype=torch.float64), "native_space": native_space,
                 "padding_value": self.padding_value}
        self.push_transform(out, orig_size=native_shape, extra_info=extra)
        return out

    def inverse(self, data: torch.Tensor) -> MetaTensor:
        """Map ``data`` (an image of the fixed space, e.g. the network output) back to the native grid: float32,
        or ``data``'s own dtype where the recorded interpolation is nearest neighbour (labels, as ``Invertd``'s
        ``nearest_interp`` makes it). ``data`` itself is left as it is."""
        device = data.device
        data = data.to("cpu", copy=True)  # a copy (not the caller's tensor), on the CPU for MONAI's spline orders
        extra = self.pop_transform(data)[TraceKeys.EXTRA_INFO]
        nearest = data.applied_operations[-1][TraceKeys.EXTRA_INFO]["mode"] in (0, "nearest")
        data.affine = torch.as_tensor(_ras_affine(data), dtype=torch.float64)  # MONAI resamples in RAS
        data.meta[MetaKeys.SPACE] = SpaceKeys.RAS.value
        dtype, padding = data.dtype, float(extra.get("padding_value", 0.0))
        out = self.resampler.inverse(data - padding if padding else data)
        out = (out + padding if padding else out).to(dtype if nearest else torch.float32)
        out.meta.pop(self.matrix_meta_key, None)
        native = np.asarray(torch.as_tensor(extra["native_affine"]), dtype=np.float64)
        return _on_grid(out, native, str(extra.get("native_space", SpaceKeys.RAS.value))).to(device)


class RigidRegisterd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`RigidRegister`: one registration, computed from ``reference_key``, applied to
    every key.

    The fixed image is ``data[fixed_key]`` or ``fixed`` given at construction (an atlas MetaTensor or a file, loaded
    once). The moving image ``data[reference_key]`` (default: the first key, e.g. ``t1w``) is registered to it and
    every key in ``keys`` (e.g. ``t1w``, ``t2w``, already aligned with each other in scanner space) is resampled onto
    the fixed grid with the same matrix; the matrix (4x4 float64 numpy, fixed-to-moving, RAS) is stored in
    ``data[matrix_key]`` (not under a ``<key>_`` name: MONAI's spatial transforms take those for metadata).
    ``mode`` is one interpolation or one per key. The inverse maps images of the fixed space back to each key's
    native grid.
    """

    backend = RigidRegister.backend

    def __init__(
        self,
        keys: KeysCollection,
        fixed_key: str | None = None,
        fixed: MetaTensor | str | os.PathLike | None = None,
        reference_key: str | None = None,
        mode: str | Sequence[str] = "linear",
        padding_value: float = 0.0,
        matrix_key: str = "rigid_to_fixed",
        allow_missing_keys: bool = False,
        **registration_options: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if (fixed_key is None) == (fixed is None):
            raise ValueError("give exactly one of fixed_key (the fixed image in the data) and fixed (an atlas).")
        self.fixed_key, self._fixed = fixed_key, fixed
        self.reference_key = reference_key if reference_key is not None else self.keys[0]
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        for m in self.mode:
            if m not in INTERPOLATION_ORDERS:
                raise ValueError(f"mode must be one of {sorted(INTERPOLATION_ORDERS)}, got {m!r}.")
        self.matrix_key = matrix_key
        self.registerer = RigidRegister(mode=self.mode[0], padding_value=padding_value, **registration_options)

    def fixed_image(self, data: Mapping[Hashable, Any]) -> MetaTensor:
        """The fixed image: from the data, or the atlas (loaded on first use when given as a file)."""
        if self.fixed_key is not None:
            return data[self.fixed_key]
        if isinstance(self._fixed, (str, os.PathLike)):
            path = Path(self._fixed)
            if not path.is_file():
                raise FileNotFoundError(f"the fixed image {path} does not exist.")
            self._fixed = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
        return self._fixed

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        fixed = self.fixed_image(d)
        matrix = self.registerer.register(d[self.reference_key], fixed).matrix
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = self.registerer(d[key], fixed, matrix=matrix, mode=mode)
        d[self.matrix_key] = matrix.copy()
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.registerer.inverse(d[key])
        return d
