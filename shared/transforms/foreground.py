"""Zero an output outside its input's foreground (the voxels where any input channel is not zero)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor
from monai.utils.type_conversion import convert_to_dst_type

__all__ = ["ZeroOutsideForeground", "ZeroOutsideForegroundd"]


class ZeroOutsideForeground(Transform):
    """``img`` (channel-first) set to 0 wherever every channel of ``source`` (same spatial shape) is 0: e.g. a
    network's output outside a skull-stripped brain, where a window that overlaps the brain still gave values."""

    backend = [torch.Tensor]

    def __call__(self, img: NdarrayOrTensor, source: NdarrayOrTensor) -> NdarrayOrTensor:
        data = convert_to_tensor(img, track_meta=False)
        foreground = (convert_to_tensor(source, track_meta=False) != 0).any(dim=0, keepdim=True)
        if foreground.shape[1:] != data.shape[1:]:
            raise ValueError(f"source of spatial shape {tuple(foreground.shape[1:])} does not match the image's "
                             f"{tuple(data.shape[1:])}.")
        out, *_ = convert_to_dst_type(data * foreground.to(data.device, data.dtype), img)
        return out


class ZeroOutsideForegroundd(MapTransform):
    """Dictionary wrapper of :class:`ZeroOutsideForeground`; ``source_key`` names the input whose foreground counts."""

    backend = ZeroOutsideForeground.backend

    def __init__(self, keys: KeysCollection, source_key: str, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.mask = ZeroOutsideForeground()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.mask(d[key], d[self.source_key])
        return d
