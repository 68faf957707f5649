"""Zero mean and unit variance for each channel, invertibly: MONAI's ``NormalizeIntensity(channel_wise=True)`` with
the statistics kept in the image's ``applied_operations``, so that ``inverse`` (and ``Invertd``) maps an output in
the normalised space (a reconstruction, say) back to each channel's own intensities. Slices batched as the channels
of one image are each normalised on their own."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TraceKeys, convert_to_tensor

__all__ = ["NormalizeChannels", "NormalizeChannelsd"]


class NormalizeChannels(InvertibleTransform, Transform):
    """``(x - mean) / std`` for each channel (population std, as ``NormalizeIntensity``); a constant channel becomes
    0 and its inverse is the constant again, whatever the output there."""

    backend = [torch.Tensor]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        image = convert_to_tensor(img, track_meta=True, dtype=torch.float32)
        flat = image.as_tensor().flatten(1) if isinstance(image, MetaTensor) else image.flatten(1)
        mean = flat.mean(dim=1)
        std = flat.std(dim=1, unbiased=False)
        constant = std == 0
        shape = (-1,) + (1,) * (image.ndim - 1)
        out = (image - mean.view(shape)) / torch.where(constant, torch.ones_like(std), std).view(shape)
        self.push_transform(out, extra_info={"mean": mean.tolist(), "std": std.tolist()})
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        transform = self.pop_transform(data)
        mean = torch.as_tensor(transform[TraceKeys.EXTRA_INFO]["mean"], dtype=data.dtype, device=data.device)
        std = torch.as_tensor(transform[TraceKeys.EXTRA_INFO]["std"], dtype=data.dtype, device=data.device)
        if data.shape[0] != len(mean):
            raise ValueError(f"NormalizeChannels.inverse: {data.shape[0]} channels, normalised {len(mean)}")
        shape = (-1,) + (1,) * (data.ndim - 1)
        restored = data * std.view(shape) + mean.view(shape)
        return torch.where((std == 0).view(shape), mean.view(shape).expand_as(data), restored)


class NormalizeChannelsd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`NormalizeChannels`."""

    backend = NormalizeChannels.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeChannels()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer.inverse(d[key])
        return d
