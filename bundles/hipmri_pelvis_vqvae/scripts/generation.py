"""Fit the latent mixture prior, sample new slices from a prior, and measure samples against held-out real slices
with no network trained elsewhere.

``fit_latent_mixture`` fits ``shared.networks.latent_mixture.LatentGaussianMixture`` to the VQ-VAE's latents of the
training slices. ``generate_slices`` writes the samples of either prior (that mixture, or the code-grid
transformer). ``evaluate_generation`` measures a folder of samples (the prior's, or any
generator's 2D NIfTI slices) against held-out real slices and, as a ceiling, the VQ-VAE decoding of uniformly random
codes: a classifier two-sample test (``shared.metrics.two_sample_test``, with the same test on two disjoint sets of
held-out real slices as the floor, and the VQ-VAE's reconstructions of real slices as the best any prior over
its codes can do), memorisation (each image's SSIM to its nearest training slice; copies score 1),
and distribution statistics: codebook usage, the distance between intensity histograms (1D Wasserstein, images on
[0, 1]), the body area (share of the slice) and the number of bright structures inside the body. FID is not
computed: it needs an Inception network's weights, which are not available offline, and Inception features of
natural images say little about MR slices.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from monai.metrics import SSIMMetric
from PIL import Image
from scipy import ndimage
from scipy.stats import wasserstein_distance

from shared.data.integrity import save_with_sha256
from shared.inferers.code_grid_prior import sample_code_grids
from shared.metrics.codebook_usage import code_usage
from shared.metrics.two_sample_test import classifier_two_sample_test
from shared.networks.latent_mixture import LatentGaussianMixture

from .networks import frozen

__all__ = ["fit_latent_mixture", "generate_slices", "evaluate_generation", "read_samples", "distribution_statistics",
           "nearest_ssim", "shape_statistics", "COPY_SSIM"]

logger = logging.getLogger(__name__)
COPY_SSIM = 0.95  # an image this close (SSIM) to a training slice counts as a copy of it


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
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "max": float(np.max(values))}


def distribution_statistics(images: torch.Tensor, training: torch.Tensor, reference: torch.Tensor,
                            vqvae: torch.nn.Module) -> dict:
    """The statistics of the module docstring for ``images`` (N, 1, X, Y), against ``training`` slices (nearest
    SSIM) and ``reference`` slices (intensity histogram)."""
    device = next(vqvae.parameters()).device
    with torch.no_grad():
        codes = vqvae.index_quantize(images.float().to(device)).cpu()
    usage, perplexity = code_usage(torch.bincount(codes.flatten(), minlength=vqvae.num_embeddings))
    nearest = nearest_ssim(images, training)
    shapes = shape_statistics(images)
    return {
        "count": len(images),
        "nearest_training_ssim": _summary(nearest.tolist()),
        "copies": int((nearest > COPY_SSIM).sum()),
        "intensity_wasserstein_to_reference": float(wasserstein_distance(_unit(images.float()).flatten().numpy(),
                                                                         _unit(reference.float()).flatten().numpy())),
        "body_area": _summary(shapes["body_area"]),
        "bright_structures": _summary(shapes["bright_structures"]),
        "codebook_usage": usage,
        "codebook_perplexity": perplexity,
    }


def _images(data: Sequence) -> torch.Tensor:
    """The ``image`` of every item of a dataset, stacked."""
    return torch.stack([torch.as_tensor(data[i]["image"]).float() for i in range(len(data))])


def _grid(images: torch.Tensor, columns: int) -> np.ndarray:
    """Images (N, 1, X, Y) as one uint8 picture, ``columns`` a row, each shown with X down the page."""
    tiles = [(np.clip(i, 0, 1) * 255).astype(np.uint8).T[::-1] for i in _unit(images.float()).numpy()[:, 0]]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    return np.concatenate([np.concatenate(tiles[r : r + columns], axis=1) for r in range(0, len(tiles), columns)])


def _png(images: torch.Tensor) -> np.ndarray:
    return _grid(images, int(np.ceil(np.sqrt(len(images)))))


def fit_latent_mixture(vqvae: torch.nn.Module, prior: LatentGaussianMixture, dataset: Sequence, path: str,
                       spread: float = 1.0, max_slices: int | None = 2048, seed: int = 0,
                       batch_size: int = 32) -> dict:
    """Fit ``prior`` to ``vqvae``'s latents (before quantisation) of the ``image`` of each item of ``dataset`` (at
    most ``max_slices``, drawn under ``seed``), save it to ``path`` with a sha256 sidecar and write
    ``<path stem>.json`` (slices, explained variance, seconds)."""
    started = time.perf_counter()
    indices = list(range(len(dataset)))
    if max_slices is not None and len(indices) > max_slices:
        chosen = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:max_slices]
        indices = sorted(chosen.tolist())
    device = next(vqvae.parameters()).device
    with torch.inference_mode():
        batches = [torch.stack([dataset[i]["image"] for i in indices[start : start + batch_size]])
                   for start in range(0, len(indices), batch_size)]
        latents = torch.cat([vqvae.encode(batch.float().to(device)).cpu() for batch in batches])
    prior.cpu().fit(latents, spread=spread, seed=seed)
    save_with_sha256(prior.state_dict(), path)
    record = {"slices": len(indices), "num_components": prior.num_components, "num_mixtures": prior.num_mixtures,
              "spread": spread, "explained_variance": round(prior.explained_variance, 4),
              "seconds": round(time.perf_counter() - started, 2)}
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(record, f, indent=2)
    logger.info(f"fitted the latent mixture to {len(indices)} slices ({record['explained_variance']:.1%} of the "
                f"latents' variance in {prior.num_components} components) in {record['seconds']} s: {path}")
    return record


def _draw(vqvae: torch.nn.Module, prior: torch.nn.Module, count: int, temperature: float, top_k: int | None,
          generator: torch.Generator) -> torch.Tensor:
    """``count`` decoded samples of ``prior``: latents of a mixture, quantised; or codes of a code-grid prior."""
    if isinstance(prior, LatentGaussianMixture):
        if top_k is not None:
            raise ValueError("top_k applies to the code-grid prior (train_prior.json), not to the latent mixture.")
        quantised, _ = vqvae.quantize(prior.sample(count, temperature, generator))
        return vqvae.decode(quantised)
    return vqvae.decode_samples(sample_code_grids(prior, count, temperature, top_k, generator))


def generate_slices(vqvae: torch.nn.Module, prior: torch.nn.Module, checkpoint: str, output_dir: str,
                    num_samples: int = 16,
                    temperature: float = 1.0, top_k: int | None = None, seed: int = 0, batch_size: int = 64,
                    affine: Sequence[Sequence[float]] | None = None) -> dict:
    """Sample ``num_samples`` slices from ``prior`` (a ``LatentGaussianMixture``, or a ``CodeGridTransformer``
    whose code grids advance ``batch_size`` together; with the weights of ``checkpoint``), decode them with
    ``vqvae`` and write ``sample_<i>.nii.gz`` (normalised intensities, on ``affine``),
    ``samples.png`` and ``generation.json`` (settings, seconds and samples a second). Repeatable under ``seed``."""
    os.makedirs(output_dir, exist_ok=True)
    device = next(vqvae.parameters()).device
    prior = frozen(prior, checkpoint, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    started = time.perf_counter()
    samples = []
    with torch.inference_mode():
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            samples.append(_draw(vqvae, prior, count, temperature, top_k, generator).float().cpu())
    seconds = time.perf_counter() - started
    samples = torch.cat(samples)
    if not torch.isfinite(samples).all():
        raise ValueError("the VQ-VAE decoded non-finite values; check the checkpoints.")
    matrix = np.asarray(affine, dtype=float) if affine is not None else np.eye(4)
    for i, sample in enumerate(samples.numpy()[:, 0]):
        nib.save(nib.Nifti1Image(sample.astype(np.float32), matrix), os.path.join(output_dir, f"sample_{i:03d}.nii.gz"))
    Image.fromarray(_png(samples)).save(os.path.join(output_dir, "samples.png"))
    record = {"num_samples": num_samples, "seed": seed, "temperature": temperature, "top_k": top_k,
              "batch_size": batch_size, "device": str(device), "seconds": round(seconds, 2),
              "samples_per_second": round(num_samples / seconds, 3)}
    with open(os.path.join(output_dir, "generation.json"), "w") as f:
        json.dump(record, f, indent=2)
    logger.info(f"wrote {num_samples} samples and samples.png to {output_dir} ({record['samples_per_second']} "
                "samples/s)")
    return record


def read_samples(samples_dir: str) -> torch.Tensor:
    """The 2D NIfTI slices ``sample_*.nii.gz`` of ``samples_dir``, in name order, as (N, 1, X, Y)."""
    files = sorted(glob.glob(os.path.join(samples_dir, "sample_*.nii.gz")))
    if not files:
        raise FileNotFoundError(f"no sample_*.nii.gz in {samples_dir}; run generate.json first or give --samples_dir.")
    images = []
    for file in files:
        data = np.asarray(nib.load(file).dataobj, dtype=np.float32)
        if data.ndim != 2 or not np.isfinite(data).all():
            raise ValueError(f"{file}: a sample must be one finite 2D slice, not shape {data.shape}.")
        images.append(torch.from_numpy(data)[None])
    return torch.stack(images)


def _markdown(report: dict) -> str:
    tests = report["two_sample_test"]
    lines = ["# Generated vs held-out real slices", "",
             f"Classifier two-sample test ({report['settings']['folds']}-fold cross-validated accuracy of a CNN "
             "telling each set from held-out real slices; 0.5 = indistinguishable, 1.0 = always told apart):", "",
             "| set | n per set | accuracy | chance sd |", "|---|---|---|---|"]
    lines += [f"| {name} | {t['n']} | {t['accuracy']:.3f} | {t['chance_sd']:.3f} |" for name, t in tests.items()]
    rows = [("SSIM to the nearest training slice", lambda s: f"{s['nearest_training_ssim']['mean']:.3f} +- "
             f"{s['nearest_training_ssim']['sd']:.3f} (max {s['nearest_training_ssim']['max']:.3f})"),
            (f"copies (nearest SSIM > {COPY_SSIM})", lambda s: str(s["copies"])),
            ("intensity-histogram distance to the reference (Wasserstein, [0, 1])",
             lambda s: f"{s['intensity_wasserstein_to_reference']:.3f}"),
            ("body area (share of the slice)", lambda s: f"{s['body_area']['mean']:.2f} +- {s['body_area']['sd']:.2f}"),
            ("bright structures in the body",
             lambda s: f"{s['bright_structures']['mean']:.1f} +- {s['bright_structures']['sd']:.1f}"),
            ("codebook usage / perplexity", lambda s: f"{s['codebook_usage']:.2f} / {s['codebook_perplexity']:.0f}")]
    stats = report["statistics"]
    lines += ["", "| | " + " | ".join(stats) + " |", "|---|" + "---|" * len(stats)]
    lines += [f"| {label} | " + " | ".join(show(s) for s in stats.values()) + " |" for label, show in rows]
    lines += ["", f"![samples (left) beside held-out real slices (right)]({os.path.basename(report['grid'])})", ""]
    return "\n".join(lines)


def evaluate_generation(samples_dir: str, vqvae: torch.nn.Module, training: Sequence, heldout: Sequence,
                        output_dir: str, seed: int = 0, folds: int = 4, epochs: int = 15, grid_count: int = 16) -> dict:
    """Measure the samples of ``samples_dir`` against the ``heldout`` real slices (a dataset of ``image`` items)
    and the ``training`` ones, as the module docstring says; write ``report.json``, ``report.md`` and
    ``samples_vs_real.png`` (samples left, held-out real slices right) to ``output_dir``. The held-out slices are
    shuffled under ``seed``: as many as there are samples are the reference, the rest the real-vs-real floor."""
    os.makedirs(output_dir, exist_ok=True)
    samples = read_samples(samples_dir)
    pool = _images(heldout)
    if samples.shape[1:] != pool.shape[1:]:
        raise ValueError(f"the samples of {samples_dir} are {tuple(samples.shape[2:])}, the real slices "
                         f"{tuple(pool.shape[2:])}; sample at the configured image_size.")
    pool = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))]
    reference, others = pool[: len(samples)], pool[len(samples) :]
    if len(others) < folds:
        raise ValueError(f"{len(pool)} held-out real slices leave {len(others)} for the real-vs-real floor after "
                         f"{len(samples)} references; sample fewer or hold out more slices.")
    device = next(vqvae.parameters()).device
    with torch.inference_mode():
        codes = torch.randint(0, vqvae.num_embeddings, (len(samples), *vqvae.index_quantize(pool[:1].to(device)).shape[1:]),
                              generator=torch.Generator().manual_seed(seed)).to(device)
        random_codes = vqvae.decode_samples(codes).float().cpu()
        reconstructed = torch.cat([vqvae(part.to(device))[0].float().cpu() for part in others.split(16)])
    training_images = _images(training)
    settings = {"folds": folds, "epochs": epochs, "seed": seed}
    report = {
        "samples_dir": os.path.abspath(samples_dir),
        "settings": settings,
        "two_sample_test": {
            "samples": classifier_two_sample_test(samples, reference, folds, epochs, seed=seed, device=device),
            "held-out real (floor)": classifier_two_sample_test(others, reference, folds, epochs, seed=seed,
                                                                device=device),
            "VQ-VAE reconstructions of held-out real (the decoder's limit)": classifier_two_sample_test(
                reconstructed, reference, folds, epochs, seed=seed, device=device),
            "random codes (ceiling)": classifier_two_sample_test(random_codes, reference, folds, epochs, seed=seed,
                                                                 device=device),
        },
        "statistics": {name: distribution_statistics(images, training_images, reference, vqvae)
                       for name, images in (("samples", samples), ("held-out real", others),
                                            ("VQ-VAE reconstructions", reconstructed), ("random codes", random_codes))},
        "grid": os.path.join(output_dir, "samples_vs_real.png"),
    }
    count = min(grid_count, len(samples), len(reference))
    columns = int(np.ceil(np.sqrt(count)))
    left, right = _grid(samples[:count], columns), _grid(reference[:count], columns)
    Image.fromarray(np.concatenate((left, np.full((len(left), 8), 255, np.uint8), right), axis=1)).save(report["grid"])
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(_markdown(report))
    tests = report["two_sample_test"]
    logger.info("two-sample test accuracy: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in tests.items()) +
                f"; copies {report['statistics']['samples']['copies']} of {len(samples)}; report in {output_dir}")
    return report
