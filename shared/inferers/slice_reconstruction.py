"""Reconstruct 2D slices or every axial slice of 3D volumes, batched, in each input's own size and intensity scale."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Resize
from monai.utils import convert_to_dst_type

__all__ = ["SliceReconstructionInferer"]


class SliceReconstructionInferer(Inferer):
    """Reconstruct (B, 1, X, Y) slices or (B, 1, X, Y, Z) volumes slice by slice with the study's preparation: each
    slice resized to ``image_size`` (anti-aliased when it shrinks), normalised to zero mean and unit variance, then
    ``batch_size`` slices at a time through the network; each reconstruction is de-normalised with its slice's own
    mean and standard deviation and resized back, so the output has the input's shape and intensity scale.

    A blank slice (one value everywhere, e.g. outside the body in a volume) is returned as it is. The network may
    return a tuple (``VQVAE`` returns the reconstruction and its quantization loss): its first item is used.
    """

    def __init__(self, image_size: Sequence[int] = (256, 128), batch_size: int = 32) -> None:
        super().__init__()
        self.image_size, self.batch_size = tuple(image_size), batch_size
        self.down = Resize(self.image_size, mode="bilinear", anti_aliasing=True)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        data = inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)
        volume = data.ndim == 5
        slices = (data.movedim(-1, 1).flatten(0, 1) if volume else data).float()  # (B*Z, 1, X, Y)
        out = slices.clone()
        mean = slices.mean(dim=(1, 2, 3), keepdim=True)
        std = slices.std(dim=(1, 2, 3), keepdim=True)
        todo = torch.nonzero(std.flatten() > 0).flatten()
        up = Resize(tuple(slices.shape[2:]), mode="bilinear", anti_aliasing=False)
        for start in range(0, len(todo), self.batch_size):
            index = todo[start : start + self.batch_size]
            # the batch's slices as the channels of one image: one resize each way for all of them
            prepared = torch.as_tensor(self.down(((slices[index] - mean[index]) / std[index])[:, 0]))[:, None]
            reconstruction = network(prepared.to(inputs.device), *args, **kwargs)
            reconstruction = reconstruction[0] if isinstance(reconstruction, (tuple, list)) else reconstruction
            restored = torch.as_tensor(up(reconstruction.float()[:, 0]))[:, None].to(out.device)
            out[index] = restored * std[index] + mean[index]
        if volume:
            out = out.unflatten(0, (data.shape[0], data.shape[-1])).movedim(1, -1)
        return convert_to_dst_type(out, inputs, dtype=torch.float32)[0]  # with the inputs' metadata, for writing
