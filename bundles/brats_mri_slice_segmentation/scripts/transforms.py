"""The deterministic BraTS volume pipeline shared by training, validation, evaluation and inference."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    ConcatItemsd,
    CropForegroundd,
    DeleteItemsd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    Orientationd,
    Spacingd,
    Transform,
)

from shared.transforms.intensity import MaskedPercentileRescaled
from shared.transforms.validation import CheckImageContentd

__all__ = ["brats_volume_transforms"]


def brats_volume_transforms(
    image_keys: Sequence[str],
    label_key: str | None = None,
    pixdim: Sequence[float] = (1.0, 1.0, 1.0),
    crop_foreground: bool = False,
    percentiles: Sequence[float] = (0.5, 99.5),
    label_values: Sequence[int] = (0, 1, 2, 4),
) -> list[Transform]:
    """Load the modalities as channels of ``image`` (C, X, Y, Z) in RAS at ``pixdim`` mm, rescale each channel's
    brain (non-zero) ``percentiles`` to (-1, 1) and remap ``label_key``'s ``label_values`` (BraTS: background,
    necrotic / non-enhancing core, oedema, enhancing tumour) to 0, 1, 2, 3. A modality with NaN / infinite voxels or
    a blank one raises ``UnusableImageError`` naming its file.

    ``crop_foreground`` crops to the brain's bounding box (training caches less memory that way). Orientation and
    spacing are invertible, so ``monai.transforms.Invertd`` maps predictions back to each input's own grid.
    """
    image_keys = list(image_keys)
    spatial = ["image"] + ([label_key] if label_key else [])
    modes = ["bilinear"] + (["nearest"] if label_key else [])
    transforms: list[Transform] = [
        LoadImaged(
            image_keys + ([label_key] if label_key else []),
            reader="NibabelReader",
            image_only=True,
            ensure_channel_first=True,
        ),
        CheckImageContentd(image_keys),
        ConcatItemsd(image_keys, name="image", dim=0),
        DeleteItemsd(image_keys),
        Orientationd(spatial, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(spatial, pixdim=pixdim, mode=modes),
    ]
    if crop_foreground:
        transforms.append(CropForegroundd(spatial, source_key="image", allow_smaller=True))
    transforms.append(MaskedPercentileRescaled("image", lower=percentiles[0], upper=percentiles[1], b_min=-1.0, b_max=1.0))
    if label_key:
        training_values = list(range(len(label_values)))
        transforms.append(MapLabelValued(label_key, orig_labels=list(label_values), target_labels=training_values))
    transforms.append(EnsureTyped(spatial, dtype="float32", track_meta=True))
    return transforms
