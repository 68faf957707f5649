"""Datasets that set a bad case aside instead of stopping the run.

- :class:`ScreenedCacheDataset` (training and validation): a case whose deterministic transforms fail when it is
  cached (an unreadable file, NaN voxels, a blank image, ...) is logged once, listed in ``set_aside`` and in the
  datalist, and left out; the run goes on with the others.
- :class:`CaseDataset` (evaluation and inference over whole cases): a case that fails to load becomes an error
  record ``{"case": name, CASE_ERROR_KEY: reason}``, which ``shared.engines.case_evaluator.CaseEvaluator`` reports.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from monai.data import CacheDataset, Dataset, MetaTensor
from monai.transforms import apply_transform

from shared.data.case_names import case_label, checked_case_names
from shared.data.errors import root_cause
from shared.data.paths import absolute_file_paths
from shared.data.splits import add_excluded

__all__ = ["CASE_ERROR_KEY", "ScreenedCacheDataset", "CaseDataset", "single_case"]

logger = logging.getLogger(__name__)
CASE_ERROR_KEY = "case_error"


@dataclass
class _SetAside:
    case: str
    error: str


class ScreenedCacheDataset(CacheDataset):
    """``monai.data.CacheDataset`` that screens every case once, when it is cached, and sets aside the ones whose
    deterministic transforms fail (put a content check such as ``CheckImageContentd`` among them), with the reason
    logged once and kept in ``set_aside`` (``[{"case", "error", "split"}]``). ``data`` then holds the usable cases.

    Args:
        data, transform, num_workers, progress, copy_cache, as_contiguous: as ``CacheDataset``; every case is cached
            (screening needs each one loaded once).
        datalist_file: when given, the cases set aside are added to this datalist JSON's ``excluded`` list.
        split: the datalist section these cases come from (``"training"``, ``"validation"``, ...), for the record.

    Raises ``ValueError`` when there were cases and none is usable.
    """

    def __init__(
        self,
        data: Sequence,
        transform: Sequence[Callable] | Callable,
        num_workers: int | None = 1,
        progress: bool = True,
        copy_cache: bool = True,
        as_contiguous: bool = True,
        datalist_file: str | None = None,
        split: str | None = None,
    ) -> None:
        self.datalist_file, self.split = datalist_file, split
        self.set_aside: list[dict] = []
        data = [absolute_file_paths(item) for item in data]
        super().__init__(data, transform, cache_num=sys.maxsize, cache_rate=1.0, num_workers=num_workers,
                         progress=progress, copy_cache=copy_cache, as_contiguous=as_contiguous)

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except Exception as e:
            return _SetAside(case_label(self.data[idx], idx), root_cause(e))

    def set_data(self, data: Sequence) -> None:
        super().set_data(data)
        kept = [i for i, cached in enumerate(self._cache) if not isinstance(cached, _SetAside)]
        aside = [cached for cached in self._cache if isinstance(cached, _SetAside)]
        where = f" ({self.split})" if self.split else ""
        for a in aside:
            logger.error(f"case {a.case}{where} set aside: {a.error}")
        self.set_aside = [{"case": a.case, "error": a.error, **({"split": self.split} if self.split else {})}
                          for a in aside]
        self.data = [data[i] for i in kept]
        self._cache = [self._cache[i] for i in kept]
        self.cache_num = len(kept)
        if data and not kept:
            raise ValueError(f"no usable case left{where}: all {len(data)} were set aside: {self.set_aside}")
        if self.set_aside and self.datalist_file and (not dist.is_initialized() or dist.get_rank() == 0):
            add_excluded(self.datalist_file, self.set_aside)


class CaseDataset(Dataset):
    """``monai.data.Dataset`` of whole cases in which a case that fails to load or to preprocess becomes the record
    ``{"case": name, CASE_ERROR_KEY: reason}`` instead of an exception that would end the run (inside a DataLoader
    worker, it would end the loader too). Use it with ``batch_size=1``.

    Every item carries its ``case`` name, also in the metadata of its images (``meta["case"]``), where the output
    writers read it. The names are checked when the dataset is made (``shared.data.case_names.checked_case_names``):
    inputs that share a name stop the run before its first case, named, since their outputs would overwrite each
    other."""

    def __init__(self, data: Sequence, transform: Sequence[Callable] | Callable | None = None) -> None:
        super().__init__(checked_case_names([absolute_file_paths(item) for item in data]), transform)

    def _transform(self, index: int):
        item = dict(self.data[index])
        try:
            loaded = apply_transform(self.transform, item) if self.transform is not None else item
        except Exception as e:
            return {"case": item["case"], CASE_ERROR_KEY: root_cause(e)}
        for value in loaded.values() if isinstance(loaded, dict) else ():
            if isinstance(value, MetaTensor):
                value.meta["case"] = item["case"]
        return loaded


def single_case(items: list) -> Any:
    """A ``collate_fn`` for batches of one case that must not be stacked (an opened slide, say): the case itself."""
    if len(items) != 1:
        raise ValueError(f"single_case collates batches of one case, got {len(items)}: set batch_size to 1")
    return items[0]
