"""A prior over a VQ-VAE's code grids that varies the shapes of the training images instead of blending them.

A draw decodes the code grid of a training image and moves the decoded image by a random smooth deformation (a
displacement on a coarse grid of control points, interpolated bicubically, and a random scale about the centre), so
that every edge moves once: no edge of one image is drawn over another's, as a linear prior over the latents draws it
(a latent Gaussian mixture blends the training latents of one component). It composes no new anatomy: it is a kernel
density estimate with deformations for kernels, the training set's augmentation turned into a sampler. Fitted in a
second (it stores the codes); its weights hold the training images' code grids (``max_images`` of them at most, as
16-bit integers). Deforming the latents themselves and quantising them again was measured to give worse images (the
interpolated latents quantise to codes of other structures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shared.networks.recorded_settings import RecordedSettings

__all__ = ["DeformedCodePrior", "smooth_displacement", "deform"]


def smooth_displacement(count: int, size: Sequence[int], control_points: Sequence[int], amplitude: float,
                        generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(count, 2, H, W) displacements in pixels: independent normal draws of standard deviation ``amplitude`` on a
    ``control_points`` grid, interpolated bicubically to ``size``."""
    coarse = torch.randn(count, 2, *control_points, generator=generator, device=device) * amplitude
    return F.interpolate(coarse, size=tuple(size), mode="bicubic", align_corners=True)


def deform(images: torch.Tensor, displacement: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``images`` (N, C, H, W) resampled (bilinear, edges replicated) at each pixel plus ``displacement``
    (N, 2, H, W; pixels along H, W), the grid first scaled about the centre by ``scale`` (N, 2)."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=images.device),
                            torch.linspace(-1, 1, w, device=images.device), indexing="ij")
    grid = torch.stack((xs, ys), dim=-1).expand(n, h, w, 2)  # grid_sample reads (x along W, y along H)
    if scale is not None:
        grid = grid * scale.flip(-1)[:, None, None, :]
    shift = torch.stack((displacement[:, 1] * 2 / max(w - 1, 1), displacement[:, 0] * 2 / max(h - 1, 1)), dim=-1)
    return F.grid_sample(images, grid + shift, mode="bilinear", padding_mode="border", align_corners=True)


class DeformedCodePrior(RecordedSettings, nn.Module):
    """The code grids (``grid_size``) of up to ``max_images`` training images; :meth:`sample` draws one uniformly,
    decodes it and deforms the image: ``displacement`` pixels (standard deviation at the ``control_points``) and a
    scale uniform in ``1 +- scale`` along each axis."""

    def __init__(self, grid_size: Sequence[int], max_images: int = 2048, control_points: Sequence[int] = (4, 2),
                 displacement: float = 6.0, scale: float = 0.1) -> None:
        super().__init__()
        self.grid_size, self.max_images = [int(s) for s in grid_size], int(max_images)
        self.control_points = [int(c) for c in control_points]
        self.displacement, self.scale = float(displacement), float(scale)
        self.register_buffer("codes", torch.zeros(self.max_images, *self.grid_size, dtype=torch.int16))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.record_settings(grid_size=self.grid_size, max_images=self.max_images)

    @torch.no_grad()
    def fit(self, codes: torch.Tensor) -> DeformedCodePrior:
        """Keep ``codes`` (N, *grid_size), N <= max_images."""
        if tuple(codes.shape[1:]) != tuple(self.grid_size):
            raise ValueError(f"code grids of shape {tuple(codes.shape[1:])} do not fit a prior over {self.grid_size}.")
        if not 0 < len(codes) <= self.max_images:
            raise ValueError(f"{len(codes)} code grids: the prior keeps 1 to {self.max_images} (max_images).")
        if codes.min() < 0 or codes.max() > torch.iinfo(torch.int16).max:
            raise ValueError("codes must lie in [0, 32767].")
        self.codes.zero_()
        self.codes[: len(codes)] = codes.to(self.codes.device, torch.int16)
        self.count.fill_(len(codes))
        return self

    @torch.no_grad()
    def sample(self, count: int, decode: Callable[[torch.Tensor], torch.Tensor], temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` deformed images (count, C, H, W): training code grids decoded by ``decode`` (indices ->
        images, e.g. a MONAI VQVAE's ``decode_samples``), the deformation scaled by ``temperature``."""
        if int(self.count) == 0:
            raise ValueError("the prior holds no code grid: fit it first.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, not {temperature}.")
        device = self.codes.device
        which = torch.randint(0, int(self.count), (count,), generator=generator, device=device)
        images = decode(self.codes[which].long()).float()
        displacement = smooth_displacement(count, images.shape[2:], self.control_points,
                                           self.displacement * temperature, generator, device)
        scale = 1 + self.scale * temperature * (2 * torch.rand(count, 2, generator=generator, device=device) - 1)
        return deform(images, displacement, scale)
