"""The study's training items: axial slices around each patient's tumour, from volumes cached once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from monai.transforms import Compose, Randomizable, apply_transform

from shared.data.screened_datasets import ScreenedCacheDataset
from shared.data.splits import add_excluded

__all__ = ["TumourSliceDataset"]

logger = logging.getLogger(__name__)


class TumourSliceDataset(torch.utils.data.Dataset):
    """Axial slices around each patient's tumour (its slices plus ``margin_slices`` each side) as items
    ``{"case", <keys>...}`` of (C, X, Y) slices passed through ``transform``.

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
            z = torch.nonzero(mask[0].flatten(0, 1).amax(0) > 0).flatten()
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
