"""Write synthetic image/mask pairs decoded from a multimodal VAE's latent prior."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from PIL import Image

__all__ = ["generate_pairs"]

logger = logging.getLogger(__name__)


def _to_uint8(channel: np.ndarray, is_mask: bool) -> np.ndarray:
    if is_mask:
        return (np.clip(channel, 0, 1) * 255).astype(np.uint8)
    lo, hi = np.percentile(channel, [1, 99])
    return (np.clip((channel - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def generate_pairs(
    vae: torch.nn.Module,
    output_dir: str,
    names: Sequence[str],
    num_samples: int = 16,
    image_size: Sequence[int] = (128, 128),
    seed: int = 0,
    device: torch.device | str = "cpu",
    sources: Sequence[torch.Tensor] | None = None,
    latent_noise_std: float = 0.5,
) -> list[str]:
    """Decode ``num_samples`` latents and save each channel (``names``, masks named ``"mask"``) as
    ``synthetic_<i>_<name>.nii.gz`` and as a side-by-side ``synthetic_<i>.png``, plus ``grid_preview.png``.

    With ``sources`` (real inputs (C, H, W), used in turn) each latent is a source's encoding plus
    N(0, ``latent_noise_std``) noise, the study's augmentation scheme; without, latents are drawn from N(0, I).
    Returns the written paths."""
    os.makedirs(output_dir, exist_ok=True)
    vae = vae.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        if sources:
            picked = torch.stack([torch.as_tensor(sources[i % len(sources)]) for i in range(num_samples)]).float()
            mu, _ = vae.encode(picked.to(device))
            z = mu + latent_noise_std * torch.randn(mu.shape, generator=generator).to(device)
        else:
            mu, _ = vae.encode(torch.zeros(1, len(names), *image_size, device=device))
            z = torch.randn((num_samples, *mu.shape[1:]), generator=generator).to(device)
        samples = vae.decode(z).float().cpu().numpy()
    if not np.isfinite(samples).all():
        raise ValueError("the VAE decoded non-finite values; check the checkpoint.")
    written, tiles = [], []
    for i, sample in enumerate(samples):
        row = []
        for name, channel in zip(names, sample):
            path = os.path.join(output_dir, f"synthetic_{i:03d}_{name}.nii.gz")
            nib.save(nib.Nifti1Image(channel.astype(np.float32), np.eye(4)), path)
            written.append(path)
            row.append(_to_uint8(channel.T[::-1], name == "mask"))
        tile = np.concatenate(row, axis=1)
        png = os.path.join(output_dir, f"synthetic_{i:03d}.png")
        Image.fromarray(tile).save(png)
        written.append(png)
        tiles.append(tile)
    columns = int(np.ceil(np.sqrt(len(tiles))))
    blank = np.zeros_like(tiles[0])
    rows = [np.concatenate((tiles[r * columns : (r + 1) * columns] + [blank] * columns)[:columns], axis=1)
            for r in range(int(np.ceil(len(tiles) / columns)))]
    grid = os.path.join(output_dir, "grid_preview.png")
    Image.fromarray(np.concatenate(rows, axis=0)).save(grid)
    written.append(grid)
    logger.info(f"wrote {num_samples} synthetic pairs and {grid}")
    return written
