"""The noise of magnitude MR images around an autoencoder's mean image, so that its samples carry the noise that no
latent code holds.

A magnitude image is ``|A + N|``: the noiseless signal ``A`` plus complex Gaussian noise of standard deviation
``sigma`` in each channel, so that its background follows a Rayleigh and its tissue a near-Gaussian distribution (Rician
noise; Gudbjartsson and Patz 1995). An autoencoder trained with a mean squared error reconstructs the mean
``E|A + N|``, smooth, without noise. Images prepared by a per-image standardisation are ``c + |A + N| / s`` in
the autoencoder's units; per image, with ``a = sigma / s``:

- the background of the mean image lies at ``c + a sqrt(pi / 2)`` (the Rayleigh mean), and
- the noise relative to the image's bright level, ``a / (bright - c)``, is the acquisition's relative noise level.

:meth:`RicianNoiseModel.fit` measures that relative level on each training image (a robust standard deviation of
the pixel-to-pixel differences of its residual in the brighter part of the image); :meth:`RicianNoiseModel.sample`
draws one of these levels for each mean image, finds ``a`` and ``c`` from the mean image's background and bright
levels, inverts the Rician mean pixel by pixel (a table of ``E|A + N| / a`` against ``A / a``) and draws the
magnitude of ``A`` plus complex noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from shared.networks.recorded_settings import RecordedSettings

__all__ = ["RicianNoiseModel", "rice_mean"]

RAYLEIGH_MEAN = math.sqrt(math.pi / 2)


def rice_mean(snr: torch.Tensor) -> torch.Tensor:
    """``E|A + N| / sigma`` for ``snr = A / sigma``: ``sqrt(pi / 2) L_1/2(-snr^2 / 2)`` with the exponentially
    scaled Bessel functions (so that it stays finite at any ``snr``)."""
    x = snr.double() ** 2 / 4
    return RAYLEIGH_MEAN * ((1 + 2 * x) * torch.special.i0e(x) + 2 * x * torch.special.i1e(x))


class RicianNoiseModel(RecordedSettings, nn.Module):
    """The relative noise levels of up to ``max_images`` training images; draws Rician noise around mean images.

    ``background_quantile`` / ``bright_quantile`` of a mean image's pixels give its background and bright levels;
    ``tissue_quantile`` selects the pixels (brighter than it) whose residual measures the noise."""

    def __init__(self, max_images: int = 4096, background_quantile: float = 0.05, bright_quantile: float = 0.97,
                 tissue_quantile: float = 0.6) -> None:
        super().__init__()
        self.max_images = int(max_images)
        self.background_quantile, self.bright_quantile = float(background_quantile), float(bright_quantile)
        self.tissue_quantile = float(tissue_quantile)
        self.register_buffer("relative_noise", torch.zeros(self.max_images))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        snr = torch.cat((torch.linspace(0, 20, 20001, dtype=torch.float64)[:-1],
                         torch.logspace(math.log10(20), 4, 4001, dtype=torch.float64)))
        self._table = (rice_mean(snr).float(), snr.float())
        self.record_settings(max_images=self.max_images)

    def _levels(self, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = means.flatten(1).float()
        q = torch.tensor([self.background_quantile, self.bright_quantile], device=flat.device)
        background, bright = torch.quantile(flat, q, dim=1)
        return background, bright

    @torch.no_grad()
    def noise_levels(self, images: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """Each image's noise ``a`` (N,) in its own units: the median absolute pixel-to-pixel difference of its
        residual along the first spatial axis, over the pixels where the mean is brighter than its
        ``tissue_quantile``, / (0.6745 sqrt(2))."""
        residual = (images - means).float()
        differences = residual[:, :, 1:] - residual[:, :, :-1]
        threshold = torch.quantile(means.flatten(1).float(), self.tissue_quantile, dim=1)
        tissue = means[:, :, 1:] > threshold[:, None, None, None]
        return torch.stack([d[t].abs().median() for d, t in zip(differences, tissue)]) / (0.6745 * math.sqrt(2))

    @torch.no_grad()
    def fit(self, images: torch.Tensor, means: torch.Tensor) -> RicianNoiseModel:
        """Measure the relative noise level of each of ``images`` (N, 1, H, W) against its mean image ``means``."""
        if images.shape != means.shape or not 0 < len(images) <= self.max_images:
            raise ValueError(f"need 1 to {self.max_images} images and as many mean images of the same shape; got "
                             f"{tuple(images.shape)} and {tuple(means.shape)}.")
        noise = self.noise_levels(images, means)
        background, bright = self._levels(means)
        relative = noise / (bright - background + RAYLEIGH_MEAN * noise).clamp(min=1e-8)
        self.relative_noise.zero_()
        self.relative_noise[: len(images)] = relative.clamp(0.0, 0.5).to(self.relative_noise.device)
        self.count.fill_(len(images))
        return self

    @torch.no_grad()
    def sample(self, means: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy images around ``means`` (N, C, ...), a relative noise level drawn from the fitted ones for each."""
        if int(self.count) == 0:
            raise ValueError("the noise model holds no noise level: fit it first.")
        device = means.device
        drawn = torch.randint(0, int(self.count), (len(means),), generator=generator, device=device)
        relative = self.relative_noise[drawn].float()
        background, bright = self._levels(means)
        noise = relative * (bright - background) / (1 - RAYLEIGH_MEAN * relative)
        zero = background - RAYLEIGH_MEAN * noise  # the level of a noiseless zero signal
        shape = (-1,) + (1,) * (means.ndim - 1)
        noise, zero = noise.reshape(shape), zero.reshape(shape)
        table, snr = (t.to(device) for t in self._table)
        target = ((means.float() - zero) / noise).clamp(float(table[0]), float(table[-1])).contiguous()
        i = torch.searchsorted(table, target).clamp(1, len(table) - 1)
        fraction = (target - table[i - 1]) / (table[i] - table[i - 1]).clamp(min=1e-12)
        signal = (snr[i - 1] + fraction * (snr[i] - snr[i - 1])) * noise
        real = signal + noise * torch.randn(means.shape, generator=generator, device=device)
        imaginary = noise * torch.randn(means.shape, generator=generator, device=device)
        return zero + torch.sqrt(real**2 + imaginary**2)
