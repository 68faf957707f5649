"""2D networks on the slices of 2D or 3D images, each slice prepared by transforms a config lists and restored by
their inverses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Compose
from monai.utils import convert_to_dst_type

__all__ = ["PreparedSliceInferer"]


class PreparedSliceInferer(Inferer):
    """Predict (B, C, X, Y) slices or (B, C, X, Y, Z) volumes axial slice by axial slice.

    ``preparation`` is the slice preparation of the training config written with MONAI's array transforms (e.g.
    ``ResizeWithPadOrCrop``, ``NormalizeIntensity(channel_wise=True)``, ``Resize``). ``batch_size`` slices are
    prepared together as the channels of one image, so a channel-wise transform treats each slice on its own; the
    network's output is restored by the inverse of every invertible transform of ``preparation``, newest first
    (spatial ones put it back on the input's grid; ``NormalizeChannels`` back to each slice's intensities, which
    needs as many output channels as input channels), as ``Invertd`` would.

    A slice with one value everywhere (outside the body, say) is not predicted, nor a slice of a volume outside
    ``slice_range`` (inclusive z indices): the output there is ``background``, a value (a background logit) or
    ``"input"`` (the slice itself, for a reconstruction). The network may return a tuple (``VQVAE``: the
    reconstruction and its quantization loss): its first item is the output.
    """

    def __init__(self, preparation: Sequence[Callable] | Compose, batch_size: int = 16,
                 slice_range: Sequence[int] | None = None, background: float | str = "input") -> None:
        super().__init__()
        self.preparation = preparation if isinstance(preparation, Compose) else Compose(list(preparation))
        self.batch_size, self.slice_range, self.background = batch_size, slice_range, background

    def _predict(self, slices: torch.Tensor, network: Callable, device: torch.device, *args, **kwargs) -> torch.Tensor:
        """(S, C, X, Y) slices -> (S, K, X, Y) outputs on their grid."""
        n, channels = slices.shape[:2]
        prepared = self.preparation(MetaTensor(slices.flatten(0, 1)))
        output = network(prepared.as_tensor().unflatten(0, (n, channels)).to(device), *args, **kwargs)
        output = output[0] if isinstance(output, (tuple, list)) else output
        k = output.shape[1]
        flat = MetaTensor(output.float().flatten(0, 1).to(slices.device),
                          applied_operations=prepared.applied_operations)
        return torch.as_tensor(self.preparation.inverse(flat)).unflatten(0, (n, k))

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        data = (inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)).float()
        volume = data.ndim == 5
        nz = data.shape[-1] if volume else 1
        lo, hi = (0, nz - 1) if self.slice_range is None or not volume else (
            max(0, int(self.slice_range[0])), min(nz - 1, int(self.slice_range[1])))
        slices = data.movedim(-1, 1).flatten(0, 1) if volume else data  # (B*Z, C, X, Y)
        z_of = torch.arange(slices.shape[0]) % nz
        flat = slices.flatten(1)
        todo = torch.nonzero((z_of >= lo) & (z_of <= hi) & (flat.amax(1) > flat.amin(1))).flatten()
        out = None
        for start in range(0, len(todo), self.batch_size):
            index = todo[start : start + self.batch_size]
            predicted = self._predict(slices[index], network, inputs.device, *args, **kwargs)
            if out is None:
                out = self._background(slices, predicted.shape[1])
            out[index] = predicted.to(out.device)
        if out is None:  # nothing predicted: the network's channel count is unknown, so the input's
            out = self._background(slices, slices.shape[1])
        if volume:
            out = out.unflatten(0, (data.shape[0], nz)).movedim(1, -1)
        return convert_to_dst_type(out, inputs, dtype=torch.float32)[0]  # with the inputs' metadata, for writing

    def _background(self, slices: torch.Tensor, channels: int) -> torch.Tensor:
        if self.background == "input":
            if channels != slices.shape[1]:
                raise ValueError(f"background 'input' needs as many output channels as input ({channels} != "
                                 f"{slices.shape[1]})")
            return slices.clone()
        return torch.full((slices.shape[0], channels, *slices.shape[2:]), float(self.background), device=slices.device)
