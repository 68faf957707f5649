"""Checking the stained images a translation pair is made of, among the cached transforms, so that a bad
pair is set aside (training) or reported (evaluation) with the file it comes from.

MONAI's own transforms do the rest of the study's preprocessing in the configs: ``shared.transforms.io.StrictLoadImaged``
(``LoadImaged`` with ``PILReader`` only), ``EnsureChannelFirstd``, ``shared.transforms.validation.CheckImageContentd``,
:class:`CheckRGBPaird`, ``GridSplitd`` (each image cut into a grid of tiles), ``Resized`` (each tile to the network's
input size) and ``ScaleIntensityRanged`` (0..255 to the generators' -1..1).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform

from shared.transforms.validation import UnusableImageError, source_name

__all__ = ["CheckRGBPaird"]


class CheckRGBPaird(MapTransform):
    """Pass a pair of channel-first images on unchanged, or raise ``UnusableImageError`` naming the file when an
    image does not have ``num_channels`` channels (a grayscale or RGBA PNG among RGB tiles: the generators take
    exactly 3), or when the images of the pair differ in size (an IHC image and its H&E partner are pixel-aligned
    scans of one section, and the tiles cut from them must stay aligned).

    Args:
        keys: keys of the images of a pair, e.g. ``["A", "B"]``.
        num_channels: channels every image must have.
        same_size: whether the images of a pair must have the same spatial size.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = [torch.Tensor]

    def __init__(self, keys: KeysCollection, num_channels: int = 3, same_size: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_channels, self.same_size = num_channels, same_size

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        sizes: dict[str, tuple[int, ...]] = {}
        for key in self.key_iterator(data):
            image, name = data[key], source_name(data[key], default=str(key))
            channels = image.shape[0] if image.ndim == 3 else 1
            if image.ndim not in (2, 3) or channels != self.num_channels:
                raise UnusableImageError(
                    f"{name}: an image of shape {tuple(image.shape)} (channel first) has {channels} channel(s); "
                    f"a {self.num_channels}-channel (RGB) 2D image is expected.")
            sizes[name] = tuple(image.shape[1:])
        if self.same_size and len(set(sizes.values())) > 1:
            shown = ", ".join(f"{name} is {'x'.join(map(str, size))}" for name, size in sizes.items())
            raise UnusableImageError(f"the images of a pair differ in size ({shown}); they must be pixel-aligned.")
        return data
