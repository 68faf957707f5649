"""Sample new slices from the prior and measure them honestly, with no network trained elsewhere.

What is measured, for the samples, for held-out real slices, and for a floor (the VQ-VAE decoding of uniformly random
codes): the codebook usage, each sample's SSIM to its nearest training slice (copies would score 1), the distance
between intensity histograms (1D Wasserstein, images on [0, 1]), the body area (share of the slice) and the number of
bright structures inside the body. FID would need an Inception network's weights, which are not available offline;
it is not computed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from monai.metrics import SSIMMetric
from PIL import Image
from scipy import ndimage
from scipy.stats import wasserstein_distance

from shared.metrics.codebook_usage import code_usage
from shared.inferers.code_prior import sample_codes

__all__ = ["generate_slices", "generation_report", "nearest_ssim", "shape_statistics"]

logger = logging.getLogger(__name__)


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Each (1, X, Y) image of a (N, 1, X, Y) batch mapped to [0, 1] by its own minimum and maximum."""
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - lo) / (hi - lo).clamp(min=1e-8)


def nearest_ssim(samples: torch.Tensor, references: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """For each sample, the highest SSIM to any reference (both on [0, 1])."""
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0)
    samples, references = _unit(samples.float()), _unit(references.float())
    best = torch.zeros(len(samples))
    for i, sample in enumerate(samples):
        for start in range(0, len(references), chunk):
            part = references[start : start + chunk]
            values = ssim(sample.expand_as(part), part).flatten()
            best[i] = max(best[i], float(values.max()))
    return best


def shape_statistics(images: torch.Tensor) -> dict[str, list[float]]:
    """Per image: the body's share of the slice (the largest bright region, holes filled) and the number of bright
    structures of at least 30 pixels inside it (above its 75th intensity percentile)."""
    area, blobs = [], []
    for image in _unit(images.float()).numpy()[:, 0]:
        foreground = image > 0.15
        labelled, n = ndimage.label(foreground)
        if n == 0:
            area.append(0.0)
            blobs.append(0)
            continue
        sizes = ndimage.sum(foreground, labelled, range(1, n + 1))
        body = ndimage.binary_fill_holes(labelled == 1 + int(np.argmax(sizes)))
        area.append(float(body.mean()))
        bright = body & (image > np.percentile(image[body], 75))
        parts, count = ndimage.label(bright)
        blobs.append(int((ndimage.sum(bright, parts, range(1, count + 1)) >= 30).sum()) if count else 0)
    return {"body_area": area, "bright_structures": blobs}


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values))}


def generation_report(samples: torch.Tensor, training: torch.Tensor, heldout: torch.Tensor,
                      floor: torch.Tensor, vqvae: torch.nn.Module) -> dict:
    """The statistics above for the samples, the held-out slices and the random-code floor (all (N, 1, X, Y))."""
    device = next(vqvae.parameters()).device
    reference = _unit(heldout.float()).flatten().numpy()
    report = {}
    for name, images in (("samples", samples), ("heldout", heldout), ("random_codes", floor)):
        with torch.no_grad():
            codes = vqvae.index_quantize(images.float().to(device)).cpu()
        usage, perplexity = code_usage(torch.bincount(codes.flatten(), minlength=vqvae.num_embeddings))
        shapes = shape_statistics(images)
        report[name] = {
            "count": len(images),
            "codebook_usage": usage,
            "codebook_perplexity": perplexity,
            "nearest_training_ssim": _summary(nearest_ssim(images, training).tolist()),
            "intensity_wasserstein_to_heldout": float(wasserstein_distance(_unit(images.float()).flatten().numpy(),
                                                                           reference)),
            "body_area": _summary(shapes["body_area"]),
            "bright_structures": _summary(shapes["bright_structures"]),
        }
    report["note"] = ("FID is not computed: it needs an Inception network's weights, which are not available "
                      "offline. 'heldout' compares real held-out slices with the training slices.")
    return report


def _images(data: Sequence) -> torch.Tensor:
    """The ``image`` of every item of a dataset, stacked."""
    return torch.stack([torch.as_tensor(data[i]["image"]) for i in range(len(data))])


def _png(images: torch.Tensor) -> np.ndarray:
    tiles = [(np.clip(i, 0, 1) * 255).astype(np.uint8).T[::-1] for i in _unit(images.float()).numpy()[:, 0]]
    columns = int(np.ceil(np.sqrt(len(tiles))))
    rows = [np.concatenate((tiles[r * columns : (r + 1) * columns] + [np.zeros_like(tiles[0])] * columns)[:columns],
                           axis=1) for r in range(int(np.ceil(len(tiles) / columns)))]
    return np.concatenate(rows, axis=0)


def generate_slices(
    vqvae: torch.nn.Module,
    prior: torch.nn.Module,
    ordering,
    latent_size: Sequence[int],
    output_dir: str,
    num_samples: int = 16,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    training: Sequence | None = None,
    heldout: Sequence | None = None,
    affine: Sequence[Sequence[float]] | None = None,
) -> dict:
    """Sample ``num_samples`` code grids from ``prior`` (begin-of-sequence token = the codebook size), decode them
    with ``vqvae`` and write ``sample_<i>.nii.gz`` (normalised intensities, on ``affine``), ``samples.png`` and, when
    ``training`` and ``heldout`` datasets (items with ``image``) are given, ``generation_metrics.json``."""
    os.makedirs(output_dir, exist_ok=True)
    device = next(vqvae.parameters()).device
    prior = prior.to(device).eval()
    torch.manual_seed(seed)
    samples = []
    with torch.inference_mode():
        for start in range(0, num_samples, batch_size):
            codes = sample_codes(prior, min(batch_size, num_samples - start), latent_size, ordering,
                                 bos=vqvae.num_embeddings, temperature=temperature, top_k=top_k)
            samples.append(vqvae.decode_samples(codes).float().cpu())
    samples = torch.cat(samples)
    if not torch.isfinite(samples).all():
        raise ValueError("the VQ-VAE decoded non-finite values; check the checkpoints.")
    matrix = np.asarray(affine, dtype=float) if affine is not None else np.eye(4)
    for i, sample in enumerate(samples.numpy()[:, 0]):
        nib.save(nib.Nifti1Image(sample.astype(np.float32), matrix), os.path.join(output_dir, f"sample_{i:03d}.nii.gz"))
    Image.fromarray(_png(samples)).save(os.path.join(output_dir, "samples.png"))
    report = {}
    if training is not None and heldout is not None:
        with torch.inference_mode():
            codes = torch.randint(0, vqvae.num_embeddings, (num_samples, *latent_size), device=device)
            floor = vqvae.decode_samples(codes).float().cpu()
        report = generation_report(samples, _images(training), _images(heldout), floor, vqvae)
        with open(os.path.join(output_dir, "generation_metrics.json"), "w") as f:
            json.dump(report, f, indent=2)
        logger.info("generation: " + ", ".join(
            f"{k} nearest-training SSIM {v['nearest_training_ssim']['mean']:.3f}, codebook usage {v['codebook_usage']:.2f}"
            for k, v in report.items() if isinstance(v, dict)))
    logger.info(f"wrote {num_samples} samples and samples.png to {output_dir}")
    return report
