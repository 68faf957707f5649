"""Fit the HipMRI priors and the decoder's noise, sample new slices, and measure them with a calibrated test.

``fit_latent_mixture`` fits ``shared.networks.latent_mixture.LatentGaussianMixture`` to the VQ-VAE's latents of the
training slices; ``fit_deformed_codes`` stores them for ``shared.networks.deformed_codes.DeformedCodePrior``;
``fit_noise_model`` fits the decoder's Rician noise (``shared.networks.rician_noise``) to the training residuals.
``generate_slices`` writes the samples of any prior (with the decoder's noise when given). ``evaluate_generation``
measures a folder of samples (the prior's, or any generator's 2D NIfTI slices) against the training slices with a
classifier two-sample test (``shared.metrics.two_sample_test``, a man's slices never in two folds) that is shown to
work before it is believed: known-bad references (``shared.metrics.reference_sets``: blends of two training slices,
shifted or blurred real slices, decoded random codes) must be told apart, held-out real slices of other men must not.
It also reports memorisation (each image's SSIM to its nearest training slice; copies score 1) and distribution
statistics: codebook usage, the distance between intensity histograms (1D Wasserstein, images on [0, 1]), the body
area and the number of bright structures inside the body. FID is not computed: it needs an Inception network's
weights, which are not available offline, and Inception features of natural images say little about MR slices.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections.abc import Callable, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics.regression import _gaussian_kernel
from monai.transforms import GaussianSmooth
from PIL import Image
from scipy import ndimage
from scipy.stats import wasserstein_distance

from shared.data.integrity import save_with_sha256
from shared.inferers.code_grid_prior import sample_code_grids
from shared.metrics.codebook_usage import code_usage
from shared.metrics.reference_sets import blend_pairs, blurred, latent_blends, pixel_blends, shifted, standardised
from shared.metrics.two_sample_test import classifier_two_sample_test
from shared.networks.deformed_codes import DeformedCodePrior
from shared.networks.latent_mixture import LatentGaussianMixture
from shared.networks.rician_noise import RicianNoiseModel

from .networks import frozen

__all__ = ["fit_latent_mixture", "generate_slices", "evaluate_generation", "read_samples", "distribution_statistics",
           "nearest_ssim", "shape_statistics", "COPY_SSIM"]

logger = logging.getLogger(__name__)
COPY_SSIM = 0.95  # an image this close (SSIM) to a training slice counts as a copy of it
_LIMIT = "VQ-VAE reconstructions of held-out real, with the decoder's noise (the decoder's limit)"


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Each (1, X, Y) image of a (N, 1, X, Y) batch mapped to [0, 1] by its own minimum and maximum."""
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - lo) / (hi - lo).clamp(min=1e-8)


def nearest_ssim(samples: torch.Tensor, references: torch.Tensor, chunk: int = 64, smooth: float = 1.0
                 ) -> torch.Tensor:
    """For each sample, the highest SSIM to any reference (both on [0, 1], both smoothed by a Gaussian of ``smooth``
    pixels first, so that independent noise does not hide a copy of a reference's anatomy). The SSIM is MONAI's
    (``SSIMMetric(spatial_dims=2, data_range=1)``); each image's local means and variances are computed once, so
    that a pair costs one convolution instead of five."""
    samples, references = _unit(samples.float()), _unit(references.float())
    if smooth:
        blur = GaussianSmooth(smooth)
        samples, references = (torch.stack([torch.as_tensor(blur(i)) for i in x]) for x in (samples, references))
    kernel = _gaussian_kernel(2, 1, (11, 11), (1.5, 1.5))
    c1, c2 = 0.01**2, 0.03**2

    def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = F.conv2d(x, kernel)
        return mean, F.conv2d(x * x, kernel) - mean * mean

    ref_mean, ref_var = moments(references)
    best = torch.zeros(len(samples))
    for i, sample in enumerate(samples):
        mean, var = moments(sample[None])
        for start in range(0, len(references), chunk):
            part = slice(start, start + chunk)
            covariance = F.conv2d(sample[None] * references[part], kernel) - mean * ref_mean[part]
            ssim = ((2 * mean * ref_mean[part] + c1) / (mean**2 + ref_mean[part] ** 2 + c1)
                    * (2 * covariance + c2) / (var + ref_var[part] + c2))
            best[i] = max(best[i], float(ssim.mean(dim=(1, 2, 3)).max()))
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


def _drawn(count: int, max_slices: int | None, seed: int) -> list[int]:
    """Indices of at most ``max_slices`` of ``count`` items, drawn under ``seed``, in order (all when fewer)."""
    if max_slices is None or count <= max_slices:
        return list(range(count))
    return sorted(torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:max_slices].tolist())


def _encoded(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Sequence, indices: Sequence[int],
             batch_size: int, device: torch.device) -> torch.Tensor:
    """``encode`` (a VQ-VAE's ``encode`` or ``index_quantize``) of the ``image`` of the items ``indices``, batched."""
    with torch.inference_mode():
        return torch.cat([encode(torch.stack([dataset[i]["image"] for i in indices[start : start + batch_size]])
                                 .float().to(device)).cpu() for start in range(0, len(indices), batch_size)])


def _save_fitted(module: torch.nn.Module, path: str, record: dict, started: float) -> dict:
    """Save ``module``'s state dict to ``path`` with a sha256 sidecar and ``record`` (with the seconds since
    ``started``) to ``<path stem>.json``."""
    save_with_sha256(module.state_dict(), path)
    record["seconds"] = round(time.perf_counter() - started, 2)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(record, f, indent=2)
    return record


def fit_latent_mixture(vqvae: torch.nn.Module, prior: LatentGaussianMixture, dataset: Sequence, path: str,
                       spread: float = 1.0, max_slices: int | None = 2048, seed: int = 0,
                       batch_size: int = 32) -> dict:
    """Fit ``prior`` to ``vqvae``'s latents (before quantisation) of the ``image`` of each item of ``dataset`` (at
    most ``max_slices``, drawn under ``seed``), save it to ``path`` with a sha256 sidecar and write
    ``<path stem>.json`` (slices, explained variance, seconds)."""
    started = time.perf_counter()
    indices = _drawn(len(dataset), max_slices, seed)
    latents = _encoded(vqvae.encode, dataset, indices, batch_size, next(vqvae.parameters()).device)
    prior.cpu().fit(latents, spread=spread, seed=seed)
    record = _save_fitted(prior, path, {"slices": len(indices), "num_components": prior.num_components,
                                        "num_mixtures": prior.num_mixtures, "spread": spread,
                                        "explained_variance": round(prior.explained_variance, 4)}, started)
    logger.info(f"fitted the latent mixture to {len(indices)} slices ({record['explained_variance']:.1%} of the "
                f"latents' variance in {prior.num_components} components) in {record['seconds']} s: {path}")
    return record


def fit_deformed_codes(vqvae: torch.nn.Module, prior: DeformedCodePrior, dataset: Sequence, path: str,
                       max_slices: int | None = 2048, seed: int = 0, batch_size: int = 32) -> dict:
    """Keep ``vqvae``'s code grids of the ``image`` of each item of ``dataset`` (at most ``max_slices``, drawn
    under ``seed``) in ``prior``, save it to ``path`` with a sha256 sidecar and write ``<path stem>.json``."""
    started = time.perf_counter()
    indices = _drawn(len(dataset), max_slices, seed)
    codes = _encoded(vqvae.index_quantize, dataset, indices, batch_size, next(vqvae.parameters()).device)
    prior.cpu().fit(codes)
    record = _save_fitted(prior, path, {"slices": len(indices), "grid_size": prior.grid_size}, started)
    logger.info(f"kept the code grids of {len(indices)} slices for the deformed-code prior in {record['seconds']} s: "
                f"{path}")
    return record


def _means(vqvae: torch.nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """The VQ-VAE's reconstructions (its decoder's mean images) of ``images``."""
    device = next(vqvae.parameters()).device
    with torch.inference_mode():
        return torch.cat([vqvae(part.float().to(device))[0].float().cpu() for part in images.split(batch_size)])


def fit_noise_model(vqvae: torch.nn.Module, noise_model: RicianNoiseModel, dataset: Sequence, path: str) -> dict:
    """Fit ``noise_model`` to the residuals of ``vqvae``'s reconstructions of the ``image`` of every item of
    ``dataset`` (the training slices), save it to ``path`` with a sha256 sidecar and write ``<path stem>.json``
    (slices, the relative noise levels' median and range, seconds)."""
    started = time.perf_counter()
    images = _images(dataset)
    noise_model.cpu().fit(images, _means(vqvae, images))
    levels = noise_model.relative_noise[: int(noise_model.count)]
    record = _save_fitted(noise_model, path, {
        "slices": len(images), "relative_noise_median": round(float(levels.median()), 5),
        "relative_noise_range": [round(float(levels.min()), 5), round(float(levels.max()), 5)]}, started)
    logger.info(f"fitted the decoder's noise model to {len(images)} slices (relative noise median "
                f"{record['relative_noise_median']}) in {record['seconds']} s: {path}")
    return record


def _draw(vqvae: torch.nn.Module, prior: torch.nn.Module, count: int, temperature: float, top_k: int | None,
          generator: torch.Generator) -> torch.Tensor:
    """``count`` decoded samples of ``prior`` (the decoder's mean images): latents of a mixture, quantised; decoded
    training codes, deformed; or codes of a code-grid prior."""
    if isinstance(prior, (LatentGaussianMixture, DeformedCodePrior)) and top_k is not None:
        raise ValueError("top_k applies to the code-grid prior (train_prior.json), not to fitted priors.")
    if isinstance(prior, LatentGaussianMixture):
        quantised, _ = vqvae.quantize(prior.sample(count, temperature, generator))
        return vqvae.decode(quantised)
    if isinstance(prior, DeformedCodePrior):
        return prior.sample(count, vqvae.decode_samples, temperature, generator)
    return vqvae.decode_samples(sample_code_grids(prior, count, temperature, top_k, generator))


def generate_slices(vqvae: torch.nn.Module, prior: torch.nn.Module, checkpoint: str, output_dir: str,
                    num_samples: int = 16, noise_model: RicianNoiseModel | None = None,
                    temperature: float = 1.0, top_k: int | None = None, seed: int = 0, batch_size: int = 64,
                    affine: Sequence[Sequence[float]] | None = None) -> dict:
    """Sample ``num_samples`` slices from ``prior`` (a ``LatentGaussianMixture``, a ``DeformedCodePrior``, or a
    ``CodeGridTransformer`` whose code grids advance ``batch_size`` together; with the weights of ``checkpoint``),
    decode them with ``vqvae``, draw the decoder's noise around them (``noise_model``; none when None) and write
    ``sample_<i>.nii.gz`` (normalised intensities, on ``affine``), ``samples.png`` and ``generation.json``
    (settings, seconds and samples a second). Repeatable under ``seed``."""
    os.makedirs(output_dir, exist_ok=True)
    device = next(vqvae.parameters()).device
    prior = frozen(prior, checkpoint, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    started = time.perf_counter()
    samples = []
    with torch.inference_mode():
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            means = _draw(vqvae, prior, count, temperature, top_k, generator).float()
            samples.append((means if noise_model is None else noise_model.sample(means, generator)).cpu())
    seconds = time.perf_counter() - started
    samples = torch.cat(samples)
    if not torch.isfinite(samples).all():
        raise ValueError("the VQ-VAE decoded non-finite values; check the checkpoints.")
    matrix = np.asarray(affine, dtype=float) if affine is not None else np.eye(4)
    for i, sample in enumerate(samples.numpy()[:, 0]):
        nib.save(nib.Nifti1Image(sample.astype(np.float32), matrix), os.path.join(output_dir, f"sample_{i:03d}.nii.gz"))
    Image.fromarray(_png(samples)).save(os.path.join(output_dir, "samples.png"))
    record = {"num_samples": num_samples, "seed": seed, "temperature": temperature, "top_k": top_k,
              "noise_model": noise_model is not None,
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
    tests, calibration = report["two_sample_test"], report["calibration"]
    verdict = ("calibrated: the known-bad blends are told apart and real slices of other men are not, so the samples' "
               "score is the result" if calibration["calibrated"] else
               "NOT calibrated (" + "; ".join(calibration["failures"]) + "): the samples' score says nothing yet")
    lines = ["# Generated vs real training slices", "",
             f"Classifier two-sample test ({report['settings']['folds']}-fold cross-validated balanced accuracy of a "
             "CNN telling each set from the training slices, a man's slices never in two folds; 0.5 = "
             "indistinguishable, 1.0 = always told apart). Test " + verdict + ".", "",
             "| set | role | images | accuracy | chance sd |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {t['role']} | {t['sizes'][0]} | {t['accuracy']:.3f} | {t['chance_sd']:.3f} |"
              for name, t in tests.items()]
    rows = [("SSIM to the nearest training slice", lambda s: f"{s['nearest_training_ssim']['mean']:.3f} +- "
             f"{s['nearest_training_ssim']['sd']:.3f} (max {s['nearest_training_ssim']['max']:.3f})"),
            (f"copies (nearest SSIM > {COPY_SSIM})", lambda s: str(s["copies"])),
            ("intensity-histogram distance to held-out real (Wasserstein, [0, 1])",
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


def _groups(dataset: Sequence) -> list[str]:
    """The ``patient`` of every item of a dataset (each item its own group where there is none)."""
    return [str(dataset[i].get("patient", f"item {i}")) for i in range(len(dataset))]


def evaluate_generation(samples_dir: str, vqvae: torch.nn.Module, training: Sequence, heldout: Sequence,
                        output_dir: str, noise_model: RicianNoiseModel | None = None, seed: int = 0, folds: int = 5,
                        epochs: int = 30,
                        channels: Sequence[int] = (8, 16, 32, 64), lr: float = 2e-3, blend_goal: float = 0.9,
                        grid_count: int = 16) -> dict:
    """Measure the samples of ``samples_dir`` against the ``training`` slices (datasets of ``image`` items with a
    ``patient``), as the module docstring says, beside known-bad references that the test must catch first
    (``shared.metrics.reference_sets``: blends of two training slices of different men in pixel space and in the
    VQ-VAE's latent space, held-out slices shifted half a pixel or blurred) and the ``heldout`` real slices of other
    men (the floor). The test is *calibrated* when both blends score at least ``blend_goal`` and the floor is within
    three chance standard deviations of 0.5 (or below). The VQ-VAE's images (reconstructions, latent blends, random
    codes) carry the decoder's noise (``noise_model``) as its samples do; the reconstructions are also tested
    without it. Writes ``report.json``, ``report.md`` and
    ``samples_vs_real.png`` (samples left, held-out real slices right) to ``output_dir``; every draw under ``seed``."""
    os.makedirs(output_dir, exist_ok=True)
    samples = standardised(read_samples(samples_dir))
    training_images, training_groups = _images(training), _groups(training)
    real, real_groups = _images(heldout), _groups(heldout)
    if samples.shape[1:] != real.shape[1:]:
        raise ValueError(f"the samples of {samples_dir} are {tuple(samples.shape[2:])}, the real slices "
                         f"{tuple(real.shape[2:])}; sample at the configured image_size.")
    generator = torch.Generator().manual_seed(seed)
    pairs = blend_pairs(len(real), training_groups, generator)
    device = next(vqvae.parameters()).device
    noise = torch.Generator(device=device).manual_seed(seed + 1)

    def noisy(means: torch.Tensor) -> torch.Tensor:
        return standardised(means if noise_model is None else noise_model.sample(means.to(device), noise).cpu())

    with torch.inference_mode():
        codes = torch.randint(0, vqvae.num_embeddings, (len(real), *vqvae.index_quantize(real[:1].to(device)).shape[1:]),
                              generator=generator).to(device)
        random_codes = vqvae.decode_samples(codes).float().cpu()
    means = _means(vqvae, real)
    sets = {
        "samples": ("result", samples, None),
        "held-out real slices of other men (floor)": ("floor", real, real_groups),
        _LIMIT: ("limit", noisy(means), real_groups),
        "VQ-VAE reconstructions of held-out real, mean images": ("limit", standardised(means), real_groups),
        "blends of two training slices, pixels (known bad)": ("known bad", pixel_blends(training_images, pairs), None),
        "blends of two training slices, VQ-VAE latents (known bad)": (
            "known bad", noisy(latent_blends(vqvae, training_images, pairs)), None),
        "held-out real shifted half a pixel": ("sensitivity", shifted(real, 0.5), real_groups),
        "held-out real blurred (sigma 0.6 pixel)": ("sensitivity", blurred(real, 0.6), real_groups),
        "decoded random codes (ceiling)": ("ceiling", noisy(random_codes), None),
    }
    settings = {"folds": folds, "epochs": epochs, "channels": list(channels), "lr": lr, "seed": seed}
    tests = {}
    for name, (role, images, groups) in sets.items():
        started = time.perf_counter()
        tests[name] = {"role": role, **classifier_two_sample_test(
            images, training_images, folds, epochs, lr=lr, channels=channels, first_groups=groups,
            second_groups=training_groups, seed=seed, device=device),
            "seconds": round(time.perf_counter() - started, 1)}
        logger.info(f"two-sample test, {name}: {tests[name]['accuracy']:.3f} ({tests[name]['seconds']} s)")
    floor = tests["held-out real slices of other men (floor)"]
    failures = [f"{name} scored {t['accuracy']:.3f} < {blend_goal}" for name, t in tests.items()
                if t["role"] == "known bad" and t["accuracy"] < blend_goal]
    if floor["accuracy"] > 0.5 + 3 * floor["chance_sd"]:
        failures.append(f"real slices of other men scored {floor['accuracy']:.3f} > 0.5 + 3 chance sd")
    report = {
        "samples_dir": os.path.abspath(samples_dir),
        "settings": settings,
        "calibration": {"calibrated": not failures, "failures": failures, "blend_goal": blend_goal},
        "two_sample_test": tests,
        "statistics": {name: distribution_statistics(images, training_images, real, vqvae)
                       for name, images in (("samples", samples), ("held-out real", real),
                                            ("VQ-VAE reconstructions", sets[_LIMIT][1]),
                                            ("random codes", sets["decoded random codes (ceiling)"][1]))},
        "grid": os.path.join(output_dir, "samples_vs_real.png"),
    }
    count = min(grid_count, len(samples), len(real))
    columns = int(np.ceil(np.sqrt(count)))
    left, right = _grid(samples[:count], columns), _grid(real[:count], columns)
    Image.fromarray(np.concatenate((left, np.full((len(left), 8), 255, np.uint8), right), axis=1)).save(report["grid"])
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(_markdown(report))
    logger.info(f"two-sample test {'calibrated' if not failures else 'NOT calibrated: ' + '; '.join(failures)}; "
                f"samples {tests['samples']['accuracy']:.3f}; copies {report['statistics']['samples']['copies']} of "
                f"{len(samples)}; report in {output_dir}")
    return report
