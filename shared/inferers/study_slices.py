"""The I-SPY2 study's slice-by-slice inference on 3D volumes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Resize, ResizeWithPadOrCrop

__all__ = ["StudySliceInferer"]


class StudySliceInferer(Inferer):
    """Predict a (B, C, X, Y, Z) volume axial slice by axial slice with the I-SPY2 study's slice preparation
    (centre pad/crop to ``slice_size``, per-slice mean/std normalisation, bilinear resize to ``image_size``), then
    resize each prediction back and undo the pad/crop exactly, so the output lies on the input's grid.

    Slices outside ``slice_range`` (inclusive z indices, e.g. a precomputed tumour range) are not predicted and get
    ``background_logit``. ``batch_size`` slices go through the network at once, and are prepared and restored
    together (each still normalised on its own).
    """

    def __init__(
        self,
        slice_size: Sequence[int] = (512, 320),
        image_size: Sequence[int] = (128, 128),
        slice_range: Sequence[int] | None = None,
        batch_size: int = 32,
        background_logit: float = -20.0,
    ) -> None:
        super().__init__()
        self.pad_crop = ResizeWithPadOrCrop(slice_size)
        self.down = Resize(image_size, mode="bilinear", anti_aliasing=False)
        self.up = Resize(slice_size, mode="bilinear", anti_aliasing=False)
        self.slice_range = slice_range
        self.batch_size, self.background_logit = batch_size, background_logit

    def _prepare(self, slices: torch.Tensor) -> tuple[torch.Tensor, MetaTensor]:
        """(S, C, X, Y) slices padded/cropped, each normalised on its own and resized: all S in one call each."""
        n, channels = slices.shape[:2]
        padded = self.pad_crop(MetaTensor(slices.flatten(0, 1)))  # slices and channels as channels: one centre pad/crop
        x = padded.as_tensor().unflatten(0, (n, channels)).float()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), unbiased=False, keepdim=True)
        x = (x - mean) / torch.where(std == 0, torch.ones_like(std), std)  # NormalizeIntensity of each slice
        return self.down(x.flatten(0, 1)).unflatten(0, (n, channels)), padded

    def _restore(self, logits: torch.Tensor, padded: MetaTensor) -> torch.Tensor:
        """(S, K, x, y) logits resized back and the pad/crop undone: (S, K, X, Y) on the input's grid."""
        n, channels = logits.shape[:2]
        up = self.up(logits.float().flatten(0, 1))
        restored = self.pad_crop.inverse(MetaTensor(up, applied_operations=padded.applied_operations))
        return torch.as_tensor(restored).unflatten(0, (n, channels))

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        batch, _, nx, ny, nz = inputs.shape
        lo, hi = (0, nz - 1) if self.slice_range is None else (max(0, int(self.slice_range[0])), min(nz - 1, int(self.slice_range[1])))
        data = inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)
        out = None
        for b in range(batch):
            for start in range(lo, hi + 1, self.batch_size):
                stop = min(start + self.batch_size, hi + 1)
                prepared, padded = self._prepare(data[b, ..., start:stop].movedim(-1, 0))
                logits = network(prepared.to(inputs.device), *args, **kwargs)
                if out is None:
                    out = torch.full((batch, logits.shape[1], nx, ny, nz), self.background_logit, device=inputs.device)
                out[b, ..., start:stop] = self._restore(logits, padded).movedim(0, -1).to(out.device)
        if out is None:  # empty slice range
            out = torch.full((batch, 1, nx, ny, nz), self.background_logit, device=inputs.device)
        return out
