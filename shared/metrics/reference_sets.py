"""Known-bad reference sets for a generative model's evaluation: images a two-sample test must tell from real ones
before its verdict on a generator's samples is believed.

- :func:`pixel_blends`: the mean of two real images, where their edges differ a contour shows twice (what a linear
  prior such as a latent Gaussian mixture draws);
- :func:`latent_blends`: the same blend made in an autoencoder's latent space, then decoded;
- :func:`shifted`: real images moved by a fraction of a pixel (the interpolation smooths their noise);
- :func:`blurred`: real images smoothed by a small Gaussian.

Every image of every set is standardised (zero mean, unit variance), as the real slices are prepared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.transforms import GaussianSmooth

__all__ = ["standardised", "blend_pairs", "pixel_blends", "latent_blends", "shifted", "blurred"]


def standardised(images: torch.Tensor) -> torch.Tensor:
    """Each image of a (N, C, ...) batch at zero mean and unit variance."""
    dims = tuple(range(1, images.ndim))
    mean, std = images.mean(dim=dims, keepdim=True), images.std(dim=dims, keepdim=True)
    return (images - mean) / std.clamp(min=1e-6)


def blend_pairs(count: int, groups: list, generator: torch.Generator) -> torch.Tensor:
    """``count`` pairs (count, 2) of indices of items with different ``groups`` (two people), drawn at random."""
    if len(set(groups)) < 2:
        raise ValueError("blends need images of at least two groups.")
    pairs = []
    while len(pairs) < count:
        i, j = torch.randint(0, len(groups), (2,), generator=generator).tolist()
        if groups[i] != groups[j]:
            pairs.append((i, j))
    return torch.tensor(pairs)


def pixel_blends(images: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The mean of the two images of each pair, standardised."""
    return standardised(0.5 * images[pairs[:, 0]] + 0.5 * images[pairs[:, 1]])


@torch.inference_mode()
def latent_blends(vqvae: torch.nn.Module, images: torch.Tensor, pairs: torch.Tensor, batch_size: int = 16
                  ) -> torch.Tensor:
    """The mean of the two images' latents (before quantisation) of each pair, quantised and decoded by a MONAI
    ``VQVAE``, standardised."""
    device = next(vqvae.parameters()).device
    decoded = []
    for part in pairs.split(batch_size):
        first, second = (vqvae.encode(images[part[:, k]].float().to(device)) for k in (0, 1))
        quantised, _ = vqvae.quantize(0.5 * first + 0.5 * second)
        decoded.append(vqvae.decode(quantised).float().cpu())
    return standardised(torch.cat(decoded))


def shifted(images: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """2D images (N, C, H, W) moved by ``fraction`` of a pixel along both axes (bilinear, edges replicated),
    standardised."""
    n, _, h, w = images.shape
    theta = torch.tensor([[1.0, 0.0, 2.0 * fraction / w], [0.0, 1.0, 2.0 * fraction / h]]).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return standardised(F.grid_sample(images.float(), grid, align_corners=False, padding_mode="border"))


def blurred(images: torch.Tensor, sigma: float = 0.6) -> torch.Tensor:
    """Images smoothed by a Gaussian of ``sigma`` pixels (MONAI's ``GaussianSmooth``), standardised."""
    smooth = GaussianSmooth(sigma)
    return standardised(torch.stack([torch.as_tensor(smooth(image)) for image in images.float()]))
