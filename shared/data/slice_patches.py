"""2D tumour patches from axial slices of cached 3D volumes, with no copy of the dataset on disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data.utils import dense_patch_slices
from monai.transforms import apply_transform

from shared.data.screened_datasets import ScreenedCacheDataset

__all__ = ["SlicePatchDataset", "plane_windows"]


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
            for z in torch.nonzero(tumour.any(0).any(0)).flatten().tolist():
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
