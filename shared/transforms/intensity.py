"""Percentile intensity rescaling computed inside a mask (TorchIO's ``RescaleIntensity(masking_method=...)``)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor
from monai.utils.type_conversion import convert_to_dst_type

__all__ = ["MaskedPercentileRescale", "MaskedPercentileRescaled"]


class MaskedPercentileRescale(Transform):
    """Map each channel's ``[lower, upper]`` percentiles, taken over the masked voxels, to ``[b_min, b_max]`` and clip.

    With no mask, the mask is the channel's non-zero voxels (the brain in skull-stripped MRI). The whole channel is
    rescaled, so background maps to ``b_min`` when it lies below the lower percentile. A channel with no masked voxel,
    or a constant one, is set to ``b_min``.
    """

    backend = [torch.Tensor]

    def __init__(self, lower: float = 0.5, upper: float = 99.5, b_min: float = -1.0, b_max: float = 1.0) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}.")
        self.lower, self.upper, self.b_min, self.b_max = lower, upper, b_min, b_max

    def percentiles(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None) -> list[tuple[float, float] | None]:
        """Each channel's ``(lower, upper)`` percentiles over its masked voxels (None: no masked voxel, or equal)."""
        data = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        mask_t = None if mask is None else convert_to_tensor(mask, track_meta=False).bool()
        q = torch.tensor([self.lower / 100.0, self.upper / 100.0], dtype=torch.float64)
        bounds: list[tuple[float, float] | None] = []
        for c in range(data.shape[0]):
            channel = data[c]
            selected = channel[channel != 0] if mask_t is None else channel[mask_t[c if mask_t.shape[0] > 1 else 0]]
            lo, hi = torch.quantile(selected.double(), q).tolist() if selected.numel() else (0.0, 0.0)
            bounds.append((lo, hi) if hi > lo else None)
        return bounds

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None,
                 bounds: list[tuple[float, float] | None] | None = None) -> NdarrayOrTensor:
        """``img`` rescaled by its own percentiles, or by ``bounds`` (:meth:`percentiles` of another image)."""
        data = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        bounds = self.percentiles(data, mask) if bounds is None else bounds
        out = torch.full_like(data, self.b_min)
        for c in range(data.shape[0]):
            bound = bounds[c if len(bounds) > 1 else 0]
            if bound is None:
                continue
            lo, hi = bound
            scaled = (data[c] - lo) / (hi - lo) * (self.b_max - self.b_min) + self.b_min
            out[c] = scaled.clamp(self.b_min, self.b_max)
        result, *_ = convert_to_dst_type(out, img, dtype=torch.float32)
        return result


class MaskedPercentileRescaled(MapTransform):
    """Dictionary wrapper of :class:`MaskedPercentileRescale`; ``mask_key`` names an optional mask in the data.
    With ``reference_key``, every key is rescaled by the reference's percentiles (taken before any key changes),
    e.g. an isotropic reference in the units of the thick-slice input it is compared with."""

    backend = MaskedPercentileRescale.backend

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        b_min: float = -1.0,
        b_max: float = 1.0,
        mask_key: str | None = None,
        reference_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.rescaler = MaskedPercentileRescale(lower, upper, b_min, b_max)
        self.mask_key, self.reference_key = mask_key, reference_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        mask = d[self.mask_key] if self.mask_key is not None else None
        bounds = None if self.reference_key is None else self.rescaler.percentiles(d[self.reference_key], mask)
        for key in self.key_iterator(d):
            d[key] = self.rescaler(d[key], mask, bounds)
        return d
