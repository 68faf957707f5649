"""A parameter-free stand-in network for geometry tests: its label is a voxel-wise function of the input."""

import torch


class FlairThreshold(torch.nn.Module):
    """Class 2 (oedema) where channel 0 (FLAIR, rescaled to [-1, 1]) is above ``threshold``, else background."""

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1] > self.threshold).float()
        zeros = torch.zeros_like(fg)
        return torch.cat([1 - fg, zeros, fg, zeros], dim=1)


class BrightSlice(torch.nn.Module):
    """One logit a pixel, positive where the (per-slice normalised) input is above ``threshold``."""

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x[:, :1] - self.threshold)


class IdentityReconstruction(torch.nn.Module):
    """A VQ-VAE stand-in that reconstructs its input exactly, with a zero quantization loss, like ``VQVAE``'s
    ``(reconstruction, quantization_loss)``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.clone(), torch.zeros(())


class T2wChannel(torch.nn.Module):
    """A super-resolution stand-in that returns its input's T2w channel (channel 1) unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:2].clone()
