"""A deterministic I-SPY2-style breast MRI demo set: T2-weighted volumes and tumour masks per patient.

Axial anatomy per slice (RAS; x left-right, y posterior-anterior): dark lungs and heart behind a dark pectoral
muscle band, two breasts as ellipsoids on the chest wall, bright fat with darker fibroglandular tissue of varying
density, a thin skin line, and one or two irregular tumours of heterogeneous high T2 signal (above fat, as in
oedematous or necrotic tumours) inside the fibroglandular region. Files::

    <root>/ISPY2-<id>/ISPY2-<id>_t2.nii.gz, ISPY2-<id>/ISPY2-<id>_mask.nii.gz
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from shared.data.demo_cache import generate_once, save_nifti

__all__ = ["make_breast_case", "ensure_breast_demo"]

logger = logging.getLogger(__name__)
GENERATOR_VERSION = 3


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-8)


def make_breast_case(
    seed: int, shape: tuple[int, int, int] = (256, 160, 24), spacing: tuple[float, float, float] = (1.4, 1.4, 3.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One patient: ``(t2, mask, affine)``; t2 in scanner-like units, mask in {0, 1}."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing)), indexing="ij")
    x -= nx * spacing[0] / 2
    z -= nz * spacing[2] / 2
    chest_y = ny * spacing[1] * rng.uniform(0.33, 0.4)  # anterior surface of the chest wall, mm
    half_height = nz * spacing[2] / 2 * rng.uniform(1.0, 1.2)

    thorax_rx, thorax_ry = 0.45 * nx * spacing[0], chest_y + rng.uniform(30, 50)
    thorax = ((x / thorax_rx) ** 2 + ((y - chest_y + thorax_ry) / thorax_ry) ** 2) < 1
    body = thorax & (y < chest_y + 2 * _noise(rng, shape, 6))
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        lungs |= (((x - side * 0.45 * thorax_rx) / (0.35 * thorax_rx)) ** 2
                  + ((y - chest_y + 0.55 * thorax_ry) / (0.4 * thorax_ry)) ** 2) < 1
    heart = ((x + 10) / 45) ** 2 + ((y - chest_y + 40) / 35) ** 2 < 1
    muscle = (y >= chest_y - 12) & (y < chest_y)
    breasts = np.zeros(shape, bool)
    fgt = np.zeros(shape, np.float32)
    density = rng.uniform(0.25, 0.6)
    for side in (-1, 1):
        cx = side * rng.uniform(55, 75)
        rx, ry = rng.uniform(45, 65), rng.uniform(45, 70)
        r = ((x - cx) / rx) ** 2 + ((y - chest_y) / ry) ** 2 + (z / half_height) ** 2
        breast = (r < 1) & (y >= chest_y)
        breasts |= breast
        # fibroglandular tissue: a textured cone towards the nipple, denser near the centre of the breast
        texture = _noise(rng, shape, 2.5) + 2.5 * (1 - np.sqrt(np.clip(r, 0, 1))) - 1.2 + 2 * density
        fgt = np.maximum(fgt, (breast & (texture > 1.0)).astype(np.float32))
    body |= breasts
    skin = body & ~ndimage.binary_erosion(body, iterations=2)

    # tumours inside the fibroglandular region
    mask = np.zeros(shape, bool)
    candidates = np.argwhere(ndimage.binary_erosion(fgt > 0, iterations=3))
    for _ in range(1 if rng.random() < 0.7 else 2):
        c = candidates[rng.integers(len(candidates))] * np.asarray(spacing) + [x.min(), 0, z.min()]
        radius = rng.uniform(12, 25)  # I-SPY2 enrols locally advanced tumours (>= 2.5 cm)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 * rng.uniform(0.7, 1.3))
        mask |= d < radius * (1 + 0.25 * _noise(rng, shape, 3))
    mask &= breasts

    t2 = np.zeros(shape, np.float32)
    t2[body] = 0.85  # fat: bright on non-fat-suppressed T2
    t2[breasts] = 0.85 - 0.5 * fgt[breasts]  # fibroglandular tissue darker
    t2[muscle & body] = 0.25
    t2[lungs & body] = 0.03
    t2[heart & body] = 0.35
    t2[skin] = 0.6
    smooth_mask = ndimage.gaussian_filter(mask.astype(np.float32), 0.8)
    # version 2 drew tumours at 0.6-0.75, between fibroglandular tissue and fat: under the coil field they were
    # indistinguishable from fat and no U-Net passed Dice 0.4; now they are hyperintense and heterogeneous
    t2 = t2 * (1 - smooth_mask) + rng.uniform(1.3, 1.6) * smooth_mask * (1 + 0.15 * _noise(rng, shape, 1.5))
    t2 *= np.exp(0.25 * _noise(rng, shape, 20))  # coil sensitivity
    t2 += np.abs(rng.normal(0, 0.02, shape)).astype(np.float32)  # Rician-like floor
    t2 = (t2 * rng.uniform(700, 1300)).astype(np.int16)
    affine = np.diag([*spacing, 1.0])
    return t2, mask.astype(np.uint8), affine


def ensure_breast_demo(root: str, num_patients: int = 16, seed: int = 6698) -> str:
    """Generate the demo set into ``root`` unless it is already there with the same settings; return ``root``."""

    def build(staging: Path) -> None:
        logger.info(f"generating {num_patients} I-SPY2-style demo patients into {root}")
        for index in range(1, num_patients + 1):
            patient = f"ISPY2-{100000 + index}"
            (staging / patient).mkdir()
            t2, mask, affine = make_breast_case(seed + index)
            save_nifti(t2, affine, staging / patient / f"{patient}_t2.nii.gz")
            save_nifti(mask, affine, staging / patient / f"{patient}_mask.nii.gz")

    settings = {"version": GENERATOR_VERSION, "num_patients": num_patients, "seed": seed}
    return generate_once(root, settings, build)
