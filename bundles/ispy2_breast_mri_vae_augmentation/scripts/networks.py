"""The I-SPY2 study's VAE weights, by name. The network is ``shared.networks.multimodal_vae.MultimodalVAE``, built in
the configs from ``vae_inputs`` and the preset ``vae_presets[vae_preset]`` (``study``: the study's 32x4x4 latent;
``fine``: one encoder stage and a 16x16x16 latent, 8x the elements for about the same parameter count, meant to keep
the tumour outlines that the 4x4 grid blurs)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["vae_checkpoint_name"]


def vae_checkpoint_name(inputs: Sequence[str], preset: str = "study") -> str:
    """``("t2", "mask")`` -> ``vae_t2_mask.pt`` (``vae_t2_mask_fine.pt`` for the ``fine`` preset): the weights file
    of the VAE over these inputs."""
    return "vae_" + "_".join(inputs) + ("" if preset == "study" else f"_{preset}") + ".pt"
