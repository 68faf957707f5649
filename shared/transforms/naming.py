"""Name an output after another input of the case (``SaveImage`` names files after ``filename_or_obj``)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ImageMetaKey

__all__ = ["NameAfterd"]


class NameAfterd(MapTransform):
    """Set ``keys``' ``filename_or_obj`` to that of ``source_key``: e.g. a super-resolved T2w, whose geometry comes
    from the T1w, saved under the name of the T2w it came from."""

    def __init__(self, keys: KeysCollection, source_key: str, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        name = d[self.source_key].meta[ImageMetaKey.FILENAME_OR_OBJ]
        for key in self.key_iterator(d):
            d[key].meta[ImageMetaKey.FILENAME_OR_OBJ] = name
        return d
