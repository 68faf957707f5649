"""A deterministic BraTS 2020-style demo dataset built from the MNI152 2009a template that nilearn ships.

Every case is the real template anatomy, deformed and re-weighted per case, with a synthetic glioma of three
compartments (necrotic core = 1, oedema = 2, enhancing rim = 4) whose contrast differs between FLAIR, T1, T1Gd and T2
the way it does in BraTS scans. Files follow the official layout::

    <root>/BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz

on a BraTS-like grid (240x240x155 at 1 mm, LPS-style affine) so the configs that read it run unchanged on the real data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from shared.data.demo_cache import generate_once, save_nifti
from shared.data.mni_template import MNITemplate, load_mni_template

__all__ = ["ensure_brats_demo", "make_brats_case", "BRATS_MODALITIES"]

logger = logging.getLogger(__name__)

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
GENERATOR_VERSION = 1
# BraTS volumes are 240x240x155 at 1 mm; the demo grid is centred on the template's brain.
BRATS_EXTENT_MM = np.array([240.0, 240.0, 155.0])
GRID_CENTRE_MM = np.array([0.0, -18.0, 5.0])

# Relative intensities (CSF, GM, WM) of healthy tissue; T1 and T1Gd use the template's real T1 contrast instead.
TISSUE_CONTRAST = {"t2": (1.0, 0.6, 0.42), "flair": (0.12, 0.62, 0.48)}
# Relative intensities of (oedema, enhancing rim, necrotic core) per modality.
TUMOUR_CONTRAST = {
    "flair": (0.95, 0.8, 0.45),
    "t1": (0.42, 0.55, 0.2),
    "t1ce": (0.45, 1.3, 0.2),
    "t2": (0.85, 0.7, 1.0),
}
# Scanner units differ between sequences in BraTS; so do ours.
INTENSITY_SCALE = {"flair": 600.0, "t1": 900.0, "t1ce": 1100.0, "t2": 1500.0}


def _grid_affine(shape: tuple[int, ...], voxel_size: float) -> np.ndarray:
    """An LPS-style affine (x and y flipped, as in BraTS files) centred on ``GRID_CENTRE_MM``."""
    affine = np.diag([-voxel_size, -voxel_size, voxel_size, 1.0])
    affine[:3, 3] = GRID_CENTRE_MM - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return affine


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 6) -> np.ndarray:
    """Zero-mean, unit-scale smooth noise: cubic upsampling of a coarse Gaussian grid."""
    grid = rng.standard_normal((coarse,) * len(shape)).astype(np.float32)
    # Cubic to a quarter of the grid, then linear: smooth enough, and ~10x faster than cubic at full size.
    quarter = [max(coarse, s // 4) for s in shape]
    smooth = ndimage.zoom(grid, [q / coarse for q in quarter], order=3, mode="nearest")
    return ndimage.zoom(smooth, [s / q for s, q in zip(shape, smooth.shape)], order=1, mode="nearest")


def _resample_template(template: MNITemplate, world: np.ndarray) -> dict[str, np.ndarray]:
    """Sample the template maps at world coordinates ``world`` (3, *shape), trilinearly."""
    inv = np.linalg.inv(template.affine)
    vox = np.tensordot(inv[:3, :3], world, axes=1) + inv[:3, 3].reshape(3, 1, 1, 1)
    maps = {"t1": template.t1, "gm": template.gm, "wm": template.wm, "brain": template.brain.astype(np.float32)}
    return {k: ndimage.map_coordinates(v, vox, order=1, mode="constant", cval=0.0) for k, v in maps.items()}


def _soft(distance: np.ndarray, radius: float, width_mm: float = 1.0) -> np.ndarray:
    """Partial-volume membership of ``distance < radius`` with a ``width_mm`` logistic edge."""
    return 1.0 / (1.0 + np.exp(np.clip((distance - radius) / width_mm, -30, 30)))


def make_brats_case(seed: int, voxel_size: float = 1.0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Build one case: ``({modality: image}, seg with labels {0, 1, 2, 4}, affine)``."""
    rng = np.random.default_rng(seed)
    template = load_mni_template()
    shape = tuple(int(round(e / voxel_size)) for e in BRATS_EXTENT_MM)
    affine = _grid_affine(shape, voxel_size)
    ijk = np.indices(shape, dtype=np.float32)
    world = np.tensordot(affine[:3, :3].astype(np.float32), ijk, axes=1) + affine[:3, 3].reshape(3, 1, 1, 1)
    del ijk

    # Per-case anatomy: a small rotation and scaling about the brain centre plus a smooth deformation (~3 mm).
    angles = np.deg2rad(rng.uniform(-5, 5, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rotation = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ) * rng.uniform(0.93, 1.07)
    centred = world - GRID_CENTRE_MM.reshape(3, 1, 1, 1)
    moved = np.tensordot(rotation.astype(np.float32), centred, axes=1) + GRID_CENTRE_MM.reshape(3, 1, 1, 1)
    moved += np.stack([3.0 * _smooth_noise(rng, shape) for _ in range(3)])
    tissue = _resample_template(template, moved)
    del moved
    brain = tissue["brain"] > 0.5
    gm, wm = tissue["gm"], tissue["wm"]
    csf = np.clip(tissue["brain"] - gm - wm, 0.0, 1.0)

    # A glioma: irregular ellipsoidal compartments centred deep in white matter.
    depth_mm = ndimage.distance_transform_edt(brain) * voxel_size
    candidates = np.argwhere((depth_mm > 22) & (wm > 0.6))
    centre = world[(slice(None), *candidates[rng.integers(len(candidates))])]
    axes = rng.uniform(0.8, 1.25, 3).astype(np.float32)
    distance = np.sqrt(sum(((world[i] - centre[i]) / axes[i]) ** 2 for i in range(3)))
    del world
    r_enh = rng.uniform(9.0, 20.0)
    r_nec = r_enh * rng.uniform(0.4, 0.7) if rng.random() > 0.2 else 0.0
    r_oed = r_enh + rng.uniform(6.0, 18.0)
    d_tumour = distance / (1.0 + 0.2 * _smooth_noise(rng, shape, coarse=8))
    d_oedema = distance / (1.0 + 0.35 * _smooth_noise(rng, shape, coarse=8))
    del distance

    seg = np.zeros(shape, np.uint8)
    seg[(d_oedema < r_oed) & brain] = 2
    seg[(d_tumour < r_enh) & brain] = 4
    seg[(d_tumour < r_nec) & brain] = 1
    soft = {
        "oedema": _soft(d_oedema, r_oed, 2.0) * tissue["brain"],
        "enhancing": _soft(d_tumour, r_enh) * tissue["brain"],
        "necrosis": _soft(d_tumour, r_nec) * tissue["brain"] if r_nec > 0 else np.zeros(shape, np.float32),
    }
    heterogeneity = 1.0 + 0.08 * _smooth_noise(rng, shape, coarse=12)
    detail = tissue["t1"] - ndimage.gaussian_filter(tissue["t1"], 2.0)

    images = {}
    for modality in BRATS_MODALITIES:
        if modality in TISSUE_CONTRAST:
            c_csf, c_gm, c_wm = TISSUE_CONTRAST[modality]
            image = c_csf * csf + c_gm * gm + c_wm * wm - 0.6 * detail
        else:
            image = tissue["t1"].copy()
        for weight, value in zip(soft.values(), TUMOUR_CONTRAST[modality]):
            image = image * (1.0 - weight) + value * heterogeneity * weight
        image *= np.exp(0.15 * _smooth_noise(rng, shape, coarse=4))  # scanner bias field
        image += rng.normal(0.0, 0.015, shape).astype(np.float32)
        image = np.clip(image, 0.0, None) * brain * INTENSITY_SCALE[modality] * rng.uniform(0.8, 1.2)
        images[modality] = image.astype(np.int16)
    return images, seg, affine


def ensure_brats_demo(root: str, num_cases: int = 10, voxel_size: float = 1.0, seed: int = 2020) -> str:
    """Generate the demo set into ``root`` unless it is already there with the same settings; return ``root``."""

    def build(staging: Path) -> None:
        logger.info(f"generating {num_cases} BraTS demo cases ({voxel_size} mm) into {root}")
        for index in range(1, num_cases + 1):
            case = f"BraTS20_Training_{index:03d}"
            (staging / case).mkdir()
            images, seg, affine = make_brats_case(seed + index, voxel_size)
            for modality, image in images.items():
                save_nifti(image, affine, staging / case / f"{case}_{modality}.nii.gz")
            save_nifti(seg, affine, staging / case / f"{case}_seg.nii.gz")

    settings = {"version": GENERATOR_VERSION, "num_cases": num_cases, "voxel_size": voxel_size, "seed": seed}
    return generate_once(root, settings, build)
