"""2D tumour patches from axial slices of cached 3D volumes, with no copy of the dataset on disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import apply_transform

__all__ = ["SlicePatchDataset", "patch_starts"]


def patch_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Sliding-window starts along one axis: stride ``patch * (1 - overlap)``, the last window flush with the end;
    a single start 0 when the axis is shorter than the patch (the patch is then padded)."""
    if size <= patch:
        return [0]
    stride = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


class SlicePatchDataset(torch.utils.data.Dataset):
    """Axial ``patch_size`` patches (last spatial axis = axial, i.e. RAS volumes) that contain tumour.

    The 3D volumes go through ``volume_transform`` once and stay in memory (``monai.data.CacheDataset``), so epoch 2+
    reads no NIfTI. An index of (volume, slice, y, x) patches whose label has at least ``min_tumour_fraction``
    non-zero pixels is built from the cache; each item is a fresh copy of that patch passed through ``transform``
    (the random augmentation).

    Args:
        data: case dicts with ``image``-producing keys and ``label``, as in a MONAI datalist.
        transform: applied to each 2D patch dict ``{"image": (C, H, W), "label": (1, H, W)}`` on every access.
        volume_transform: deterministic loading/preprocessing to ``image`` (C, X, Y, Z) and ``label`` (1, X, Y, Z).
        patch_size: in-plane patch size.
        min_tumour_fraction: minimum fraction of label > 0 pixels for a patch to be kept.
        patch_overlap: overlap between neighbouring candidate patches in a slice (0 = a tiling).
        image_pad_value: value for image pixels outside the volume (the intensity-normalised background).
        cache_rate, num_workers: as ``CacheDataset``.
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
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
    ) -> None:
        self.data = data
        self.transform = transform
        self.patch_size = tuple(int(p) for p in patch_size)
        self.image_pad_value = image_pad_value
        self.volumes = CacheDataset(
            data, transform=volume_transform, cache_rate=cache_rate, num_workers=num_workers, copy_cache=False
        )
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
            size_y, size_x = tumour.shape[:2]
            for z in torch.nonzero(tumour.any(0).any(0)).flatten().tolist():
                for y in patch_starts(size_y, ph, overlap):
                    for x in patch_starts(size_x, pw, overlap):
                        y1, x1 = min(y + ph, size_y), min(x + pw, size_x)
                        s = integral[z]
                        count = s[y1, x1] - s[y, x1] - s[y1, x] + s[y, x]
                        if count >= min_pixels:
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
