"""The I-SPY2 study's slice-by-slice inference on 3D volumes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import NormalizeIntensity, Resize, ResizeWithPadOrCrop

__all__ = ["StudySliceInferer"]


class StudySliceInferer(Inferer):
    """Predict a (B, C, X, Y, Z) volume axial slice by axial slice with the I-SPY2 study's slice preparation
    (centre pad/crop to ``slice_size``, per-slice mean/std normalisation, bilinear resize to ``image_size``), then
    resize each prediction back and undo the pad/crop exactly, so the output lies on the input's grid.

    Slices outside ``slice_range`` (inclusive z indices, e.g. a precomputed tumour range) are not predicted and get
    ``background_logit``. ``batch_size`` slices go through the network at once.
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
        self.normalize = NormalizeIntensity()
        self.down = Resize(image_size, mode="bilinear", anti_aliasing=False)
        self.up = Resize(slice_size, mode="bilinear", anti_aliasing=False)
        self.slice_range = slice_range
        self.batch_size, self.background_logit = batch_size, background_logit

    def _prepare(self, image: torch.Tensor) -> tuple[torch.Tensor, MetaTensor]:
        padded = self.pad_crop(MetaTensor(image))
        return self.down(self.normalize(padded.as_tensor())), padded

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        batch, _, nx, ny, nz = inputs.shape
        lo, hi = (0, nz - 1) if self.slice_range is None else (max(0, int(self.slice_range[0])), min(nz - 1, int(self.slice_range[1])))
        out = None
        jobs = [(b, z) for b in range(batch) for z in range(lo, hi + 1)]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            prepared = [self._prepare(torch.as_tensor(inputs[b, ..., z])) for b, z in chunk]
            logits = network(torch.stack([p[0] for p in prepared]).to(inputs.device), *args, **kwargs)
            if out is None:
                out = torch.full((batch, logits.shape[1], nx, ny, nz), self.background_logit, device=inputs.device)
            for (b, z), (_, padded), logit in zip(chunk, prepared, logits):
                restored = self.pad_crop.inverse(
                    MetaTensor(self.up(logit.float()), applied_operations=padded.applied_operations))
                out[b, ..., z] = torch.as_tensor(restored).to(out.device)
        if out is None:  # empty slice range
            out = torch.full((batch, 1, nx, ny, nz), self.background_logit, device=inputs.device)
        return out
