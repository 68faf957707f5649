"""2D training items from the axial slices of cached 3D volumes that hold tumour: in-plane patches
(:class:`SlicePatchDataset`) or whole slices with a margin (:class:`TumourSliceDataset`), with no copy of the dataset
on disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import logging

import numpy as np
import torch
import torch.distributed as dist
from monai.data.utils import dense_patch_slices
from monai.transforms import Compose, Randomizable, apply_transform

from shared.data.screened_datasets import ScreenedCacheDataset
from shared.data.splits import add_excluded

__all__ = ["SlicePatchDataset", "TumourSliceDataset", "axial_tumour_slices", "plane_windows"]

logger = logging.getLogger(__name__)


def axial_tumour_slices(label: torch.Tensor) -> torch.Tensor:
    """Indices of the axial slices (last axis) of a (C, X, Y, Z) label that hold any non-zero voxel."""
    return torch.nonzero(torch.as_tensor(label)[0].flatten(0, 1).amax(0) > 0).flatten()


def plane_windows(shape: Sequence[int], patch: Sequence[int], overlap: float) -> list[tuple[int, int, int, int]]:
    """``(y, y_end, x, x_end)`` of the sliding windows over a 2D ``shape``, neighbours overlapping by ``overlap``,
    the last window of each row / column flush with the end, one window along a side shorter than the patch."""
    interval = [max(1, round(p * (1.0 - overlap))) for p in patch]
    return [(int(a.start), int(a.stop), int(b.start), int(b.stop))
            for a, b in dense_patch_slices(tuple(shape), tuple(patch), interval)]


class SlicePatchDataset(torch.utils.data.Dataset):
    """Axial ``patch_size`` patches (last spatial axis = axial, i.e. RAS volumes) that contain tumour.

    The 3D volumes go through ``volume_transform`` once and stay in memory (a :class:`ScreenedCacheDataset`, which
    sets aside the cases it cannot load, listed in ``set_aside``), so epoch 2+ reads no NIfTI. An index of
    (volume, slice, y, x) patches whose label has at least ``min_tumour_fraction`` non-zero pixels is built from the
    cache; each item is a fresh copy of that patch passed through ``transform`` (the random augmentation).

    Args:
        data: case dicts with ``image``-producing keys and ``label``, as in a MONAI datalist.
        transform: applied to each 2D patch dict ``{"image": (C, H, W), "label": (1, H, W)}`` on every access.
        volume_transform: deterministic loading/preprocessing to ``image`` (C, X, Y, Z) and ``label`` (1, X, Y, Z).
        patch_size: in-plane patch size.
        min_tumour_fraction: minimum fraction of label > 0 pixels for a patch to be kept.
        patch_overlap: overlap between neighbouring candidate patches in a slice (0 = a tiling).
        image_pad_value: value for image pixels outside the volume (the intensity-normalised background).
        num_workers: threads that cache the volumes.
        datalist_file, split: where the cases set aside are recorded (see :class:`ScreenedCacheDataset`).
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Callable | None,
        volume_transform: Callable,
        patch_size: Sequence[int] = (128, 128),
        min_tumour_fraction: float = 0.01,
        patch_overlap: float = 0.5,
        image_pad_value: float = -1.0,
        num_workers: int | None = 1,
        datalist_file: str | None = None,
        split: str | None = None,
    ) -> None:
        self.transform = transform
        self.patch_size = tuple(int(p) for p in patch_size)
        self.image_pad_value = image_pad_value
        self.volumes = ScreenedCacheDataset(data, volume_transform, num_workers=num_workers, copy_cache=False,
                                            datalist_file=datalist_file, split=split)
        self.data, self.set_aside = self.volumes.data, self.volumes.set_aside
        self.index = self._build_index(min_tumour_fraction, patch_overlap)
        if len(self.index) == 0:
            raise ValueError(
                f"no {self.patch_size} patch of the {len(data)} case(s) has a tumour fraction >= {min_tumour_fraction}."
            )

    def _build_index(self, min_fraction: float, overlap: float) -> np.ndarray:
        ph, pw = self.patch_size
        min_pixels = max(1, int(np.ceil(min_fraction * ph * pw)))
        rows = []
        for v in range(len(self.volumes)):
            tumour = torch.as_tensor(self.volumes[v]["label"])[0] > 0  # (X, Y, Z)
            # Integral image per slice: tumour pixels of every window in O(1).
            integral = torch.nn.functional.pad(tumour.permute(2, 0, 1).int().cumsum(1).cumsum(2), (1, 0, 1, 0))
            windows = plane_windows(tumour.shape[:2], self.patch_size, overlap)
            for z in axial_tumour_slices(tumour[None]).tolist():
                s = integral[z]
                for y, y1, x, x1 in windows:
                    if s[y1, x1] - s[y, x1] - s[y1, x] + s[y, x] >= min_pixels:
                        rows.append((v, z, y, x))
        return np.asarray(rows, dtype=np.int64).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.index)

    def _crop(self, volume: torch.Tensor, z: int, y: int, x: int, pad_value: float) -> torch.Tensor:
        ph, pw = self.patch_size
        crop = torch.as_tensor(volume)[:, y : y + ph, x : x + pw, z].as_subclass(torch.Tensor)
        out = torch.full((crop.shape[0], ph, pw), pad_value, dtype=crop.dtype)
        out[:, : crop.shape[1], : crop.shape[2]] = crop
        return out

    def __getitem__(self, i: int) -> dict:
        v, z, y, x = (int(t) for t in self.index[i])
        case = self.volumes[v]
        item = {
            "image": self._crop(case["image"], z, y, x, self.image_pad_value),
            "label": self._crop(case["label"], z, y, x, 0),
        }
        return apply_transform(self.transform, item) if self.transform is not None else item


class TumourSliceDataset(torch.utils.data.Dataset):
    """Whole axial slices around each patient's tumour (its slices plus ``margin_slices`` each side) as items
    ``{"case", <keys>...}`` of (C, X, Y) slices passed through ``transform`` (the I-SPY2 study's training items).

    Patient volumes (NIfTI paths, or the study's pickled slices stacked per patient) go through
    ``volume_transform`` once and stay in memory. A patient that cannot be loaded, whose image is unusable, or whose
    tumour mask is empty is set aside with the reason (``set_aside``, and the datalist's ``excluded`` when
    ``datalist_file`` is given); only "no usable patient" is an error.

    Args:
        data: patient items, e.g. ``{"case", "t2", "mask"}``.
        transform: the slice preparation and augmentation, applied on every access.
        volume_transform: deterministic loading / preprocessing of a patient to (1, X, Y, Z) volumes.
        keys: the item keys to slice; ``mask_key`` finds the tumour.
        margin_slices: slices kept on each side of the tumour.
        num_workers: threads that cache the volumes.
        cache_slices: keep the transformed slices in memory when ``transform`` has no random transform (the study's
            preparation is deterministic), so each slice is prepared once, not once an epoch.
        datalist_file, split: where the patients set aside are recorded, and the datalist section they came from.
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Callable | None,
        volume_transform: Callable,
        keys: Sequence[str] = ("t2", "mask"),
        mask_key: str = "mask",
        margin_slices: int = 2,
        num_workers: int | None = 1,
        datalist_file: str | None = None,
        split: str | None = None,
        cache_slices: bool = True,
    ) -> None:
        self.keys, self.transform = list(keys), transform
        self.volumes = ScreenedCacheDataset(data, volume_transform, num_workers=num_workers, copy_cache=False,
                                            datalist_file=datalist_file, split=split)
        self.set_aside = list(self.volumes.set_aside)
        empty, index = [], []
        for v in range(len(self.volumes)):
            patient = self.volumes.data[v].get("case", str(v))
            mask = torch.as_tensor(self.volumes[v][mask_key])
            z = axial_tumour_slices(mask)
            if len(z) == 0:
                source = self.volumes.data[v].get(mask_key)
                name = source if isinstance(source, str) else mask_key
                error = f"{name}: the tumour mask is empty (patient {patient})."
                logger.error(f"case {patient} set aside: {error}")
                empty.append({"case": patient, "error": error, **({"split": split} if split else {})})
                continue
            lo, hi = max(0, int(z.min()) - margin_slices), min(mask.shape[-1] - 1, int(z.max()) + margin_slices)
            index += [(v, s) for s in range(lo, hi + 1)]
        self.set_aside += empty
        if empty and datalist_file and (not dist.is_initialized() or dist.get_rank() == 0):
            add_excluded(datalist_file, empty)
        if data and not index:
            raise ValueError(f"no usable patient left{f' ({split})' if split else ''}: {self.set_aside}")
        self.index = index
        random = transform is not None and any(
            isinstance(t, Randomizable) for t in (transform.flatten().transforms if isinstance(transform, Compose)
                                                  else [transform]))
        self.cached = [self._prepare(i) for i in range(len(index))] if cache_slices and not random else None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return dict(self.cached[i]) if self.cached is not None else self._prepare(i)

    def _prepare(self, i: int) -> dict:
        v, z = self.index[i]
        volume = self.volumes[v]
        item = {"case": self.volumes.data[v].get("case", str(v))}
        for key in self.keys:
            item[key] = torch.as_tensor(volume[key])[..., z].as_subclass(torch.Tensor).clone()
        return apply_transform(self.transform, item) if self.transform is not None else item
