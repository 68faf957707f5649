"""The study's VQ-VAE as MONAI's VQVAE, and the autoregressive prior over its codes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import VQVAE

from shared.networks.grid_code_prior import GridCodePrior

__all__ = ["hipmri_vqvae", "code_prior", "latent_size", "frozen"]


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


def code_prior(num_embeddings: int = 512, latent_size: Sequence[int] = (64, 32), window: int = 256, dim: int = 96,
               depth: int = 4, heads: int = 4) -> GridCodePrior:
    """The prior over the VQ-VAE's codes (+1 begin-of-sequence token): a ``DecoderOnlyTransformer`` that attends to
    the last ``window`` codes (256 = 8 rows of a 64x32 grid, what a CPU trains and samples in minutes; the whole grid,
    2048, on a GPU) and knows each code's place in the ``latent_size`` grid."""
    return GridCodePrior(num_tokens=num_embeddings + 1, grid_len=int(math.prod(latent_size)), window=window,
                         attn_layers_dim=dim, attn_layers_depth=depth, attn_layers_heads=heads)


def frozen(network: torch.nn.Module, checkpoint: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """``network`` with the state dict of ``checkpoint``, on ``device``, in eval mode and without gradients."""
    network.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True))
    network.to(device).eval().requires_grad_(False)
    return network
