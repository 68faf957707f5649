"""The multimodal VAE objective (``shared.networks.multimodal_vae``): reconstruction per output group plus the
Gaussian KL."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceLoss
from torch import nn

__all__ = ["MultimodalVAELoss", "gaussian_kl"]


def gaussian_kl(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent elements, averaged over the batch.

    ``0.5 * sum(mu^2 + sigma^2 - 1 - 2 log sigma)``; it is 0 exactly when mu = 0 and log sigma = 0.
    """
    kl = 0.5 * (mu.pow(2) + torch.exp(2.0 * log_sigma) - 1.0 - 2.0 * log_sigma)
    return kl.flatten(1).sum(1).mean()


class MultimodalVAELoss(nn.Module):
    """``MSE(images) + Dice(masks) + kl_weight * KL`` for ``(reconstruction, mu, log_sigma, z)`` network outputs.

    ``image_channels`` / ``mask_channels`` index the reconstruction and the target alike (the target is the input
    stack, e.g. [T2, mask]). The study weighted all three terms 1. The reconstruction terms are per-pixel means,
    so by default the KL is the per-latent-element mean too (``kl_reduction="mean"``); ``"sum"`` sums it over the
    latent (512 elements for the study's 32x4x4), which at weight 1 outweighs the reconstruction ~500-fold.
    """

    def __init__(
        self,
        image_channels: Sequence[int] = (0,),
        mask_channels: Sequence[int] = (1,),
        image_weight: float = 1.0,
        mask_weight: float = 1.0,
        kl_weight: float = 1.0,
        kl_reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.image_channels, self.mask_channels = list(image_channels), list(mask_channels)
        self.image_weight, self.mask_weight, self.kl_weight = image_weight, mask_weight, kl_weight
        if kl_reduction not in ("mean", "sum"):
            raise ValueError(f"kl_reduction must be 'mean' or 'sum', got {kl_reduction!r}.")
        self.kl_reduction = kl_reduction
        self.dice = DiceLoss(sigmoid=False)

    def forward(self, output: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        reconstruction, mu, log_sigma = output[0], output[1], output[2]
        kl = gaussian_kl(mu, log_sigma)
        if self.kl_reduction == "mean":
            kl = kl / mu[0].numel()
        loss = self.kl_weight * kl
        if self.image_channels:
            loss = loss + self.image_weight * nn.functional.mse_loss(
                reconstruction[:, self.image_channels], target[:, self.image_channels]
            )
        if self.mask_channels:
            loss = loss + self.mask_weight * self.dice(reconstruction[:, self.mask_channels], target[:, self.mask_channels])
        return loss
