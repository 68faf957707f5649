"""The study's VQ-VAE as MONAI's VQVAE, and loading a frozen network (the prior over its codes is
``shared.networks.code_grid_transformer.CodeGridTransformer``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import VQVAE

from shared.handlers.weights_loader import load_weights

__all__ = ["hipmri_vqvae", "latent_size", "frozen"]


def hipmri_vqvae(
    channels: Sequence[int] = (64, 128),
    num_res_layers: int = 2,
    num_res_channels: Sequence[int] = (32, 32),
    num_embeddings: int = 512,
    embedding_dim: int = 64,
    commitment_cost: float = 0.25,
    decay: float = 0.99,
) -> VQVAE:
    """``monai.networks.nets.VQVAE`` set as close to the study's network as MONAI allows (the model card maps each
    setting): two stride-2 k4 convolutions (64, 128 channels) with residual units of 32 hidden channels, a codebook
    of 512 x 64 and commitment 0.25; a 1x256x128 slice gives a 64x32 grid of codes and a same-size reconstruction.
    MONAI updates the codebook by exponential moving averages (``decay``) where the study used gradients."""
    return VQVAE(
        spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(channels), num_res_layers=num_res_layers,
        num_res_channels=tuple(num_res_channels), downsample_parameters=((2, 4, 1, 1),) * len(channels),
        upsample_parameters=((2, 4, 1, 1, 0),) * len(channels), num_embeddings=num_embeddings,
        embedding_dim=embedding_dim, commitment_cost=commitment_cost, decay=decay,
    )


def latent_size(image_size: Sequence[int], downsamplings: int = 2) -> list[int]:
    """The code grid of an image: 256x128 -> 64x32."""
    return [int(s) // 2**downsamplings for s in image_size]


def frozen(network: torch.nn.Module, checkpoint: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """``network`` with the state dict of ``checkpoint``, on ``device``, in eval mode and without gradients."""
    load_weights(network, checkpoint, map_location=device)
    network.to(device).eval().requires_grad_(False)
    return network
