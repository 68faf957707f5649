"""The I-SPY2 study's preprocessing: volumes to a common resolution, then 2D slices as the study prepared them."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    ResizeWithPadOrCropd,
    Resized,
    Spacingd,
    Transform,
)

from shared.transforms.validation import CheckImageContentd

__all__ = ["ispy2_volume_transforms", "ispy2_slice_transforms"]


def ispy2_volume_transforms(
    keys: Sequence[str],
    pixdim: Sequence[float],
    image_keys: Sequence[str] = ("t2",),
    track_meta: bool = False,
    from_files: bool = True,
) -> list[Transform]:
    """Load the NIfTI volumes (channel first), refuse images with NaN / infinite voxels or a blank one, reorient to
    RAS and resample to ``pixdim`` (images bilinear, masks nearest). ``track_meta`` keeps the metadata that
    ``Invertd`` needs at inference. With ``from_files=False`` the items already hold the study's processed arrays
    (see ``layout.load_study_pickles``): they are only checked."""
    keys = list(keys)
    check = CheckImageContentd(list(image_keys))
    if not from_files:
        return [check, EnsureTyped(keys, dtype="float32", track_meta=False)]
    modes = ["bilinear" if k in image_keys else "nearest" for k in keys]
    return [
        LoadImaged(keys, reader="NibabelReader", image_only=True, ensure_channel_first=True),
        check,
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=pixdim, mode=modes),
        EnsureTyped(keys, dtype="float32", track_meta=track_meta),
    ]


def ispy2_slice_transforms(
    keys: Sequence[str],
    slice_size: Sequence[int] = (512, 320),
    image_size: Sequence[int] = (128, 128),
    image_keys: Sequence[str] = ("t2",),
) -> list[Transform]:
    """The study's slice preparation: centre crop/pad to ``slice_size`` (x, y), per-image mean/std normalisation of
    the images, then bilinear resizing of images and masks alike to ``image_size`` (masks become soft)."""
    keys = list(keys)
    return [
        ResizeWithPadOrCropd(keys, spatial_size=slice_size),
        NormalizeIntensityd(list(image_keys)),
        Resized(keys, spatial_size=image_size, mode="bilinear", anti_aliasing=False),
        EnsureTyped(keys, dtype="float32", track_meta=False),
    ]
