"""A deterministic HipMRI-style demo set: 2D axial T2-weighted slices of the male pelvis, in the study's layout.

Each slice is drawn from a few anatomical parts whose presence and size follow the slice's level between the
ischial tuberosities (inferior) and the top of the bladder (superior): the body contour with subcutaneous fat,
muscle, pelvic fat around the organs, the femoral heads with a dark cortex and fatty marrow, the pubic bones, the
ischia and the sacrum, a bright bladder whose filling varies from week to week, the prostate with a brighter
peripheral zone, and the rectum with a dark wall and gas or fluid inside. Each case has its own body build, organ
sizes and positions, intensity scale, bias field and noise. Files, as in the study (labels as in its
``keras_slices_seg_*`` folders: 0 background, 1 body, 2 bone, 3 bladder, 4 rectum, 5 prostate)::

    <root>/keras_slices_{train,validate,test}/case_<NNN>_week_<W>_slice_<S>.nii.gz
    <root>/keras_slices_seg_{train,validate,test}/seg_case_<NNN>_week_<W>_slice_<S>.nii.gz

Most slices are 256x128; a few cases are stored at other sizes, as in the real set, so the resizing is exercised.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from shared.data.demo_cache import generate_once, save_nifti

__all__ = ["make_pelvis_slice", "ensure_hipmri_demo", "DEMO_SPLITS"]

logger = logging.getLogger(__name__)
GENERATOR_VERSION = 1
# (first case number, number of cases) of each folder; every case has WEEKS weeks of SLICES slices
DEMO_SPLITS = {"train": (1, 10), "validate": (21, 2), "test": (31, 3)}
WEEKS, SLICES = 2, 12
SPACING = (1.6, 1.6, 2.5)


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, wobble=None) -> np.ndarray:
    r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return r < (1.0 if wobble is None else 1.0 + wobble)


def case_anatomy(rng: np.random.Generator) -> dict:
    """One man's build: sizes and positions in pixels of a 256x128 slice, intensities relative to fat = 1."""
    return {
        "body": (rng.uniform(100, 122), rng.uniform(48, 60)),
        "fat": rng.uniform(5, 14),
        "femoral": (rng.uniform(58, 72), rng.uniform(12, 17)),
        "prostate": (rng.uniform(12, 19), rng.uniform(10, 14), rng.uniform(-4, 4)),
        "rectum": (rng.uniform(9, 14), rng.uniform(7, 11)),
        "bladder": (rng.uniform(22, 36), rng.uniform(14, 22)),
        "muscle": rng.uniform(0.3, 0.42),
        "scale": rng.uniform(700, 1400),
        "noise": rng.uniform(0.012, 0.025),
    }


def make_pelvis_slice(rng: np.random.Generator, anatomy: dict, level: float, filling: float,
                      shape: tuple[int, int] = (256, 128)) -> tuple[np.ndarray, np.ndarray]:
    """One slice at ``level`` (0 = inferior, 1 = superior) with the bladder ``filling`` (0..1): ``(image, labels)``,
    image in scanner-like units (int16), labels as in the study's segmentation folders."""
    nx, ny = shape
    x, y = np.meshgrid(np.arange(nx) * 256.0 / nx, np.arange(ny) * 128.0 / ny, indexing="ij")
    cx, cy = 128.0 + rng.normal(0, 2), 62.0 + rng.normal(0, 2)
    image = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)

    ax, ay = anatomy["body"]
    body = _ellipse(x, y, cx, cy, ax * (0.92 + 0.08 * level), ay, 0.03 * _smooth(rng, shape, 12))
    inner = ndimage.binary_erosion(body, iterations=max(1, int(anatomy["fat"] * nx / 256)))
    image[body] = 1.0  # subcutaneous fat: bright on T2
    image[inner] = anatomy["muscle"]
    pelvic_fat = _ellipse(x, y, cx, cy - 2, 48, 34, 0.08 * _smooth(rng, shape, 8)) & inner
    image[pelvic_fat] = 0.8
    labels[body] = 1

    def put(mask: np.ndarray, value: float, label: int) -> None:
        mask &= inner
        image[mask] = value
        labels[mask] = label

    # bones: femoral heads (upper half), pubic bones (middle), ischia (lower), sacrum (top, posterior)
    fx, fr = anatomy["femoral"]
    if 0.3 < level < 0.9:
        radius = fr * np.sqrt(max(0.0, 1 - ((level - 0.6) / 0.32) ** 2))
        for side in (-1, 1):
            head = _ellipse(x, y, cx + side * fx, cy + 4, radius, radius)
            put(head, 0.12, 2)
            put(_ellipse(x, y, cx + side * fx, cy + 4, radius * 0.8, radius * 0.8), 0.55, 2)
    if 0.15 < level < 0.6:
        for side in (-1, 1):
            put(_ellipse(x, y, cx + side * 13, cy + 38, 9, 5), 0.1, 2)
    if level < 0.4:
        for side in (-1, 1):
            put(_ellipse(x, y, cx + side * 45, cy - 20, 11, 8), 0.12, 2)
    if level > 0.75:
        put(_ellipse(x, y, cx, cy - 42, 16, 6), 0.12, 2)

    # organs
    bx, by = anatomy["bladder"]
    bladder_size = np.clip((level - 0.45) / 0.5, 0, 1) * (0.5 + 0.5 * filling)
    if bladder_size > 0.05:
        put(_ellipse(x, y, cx, cy + 10, bx * bladder_size, by * bladder_size, 0.05 * _smooth(rng, shape, 6)), 0.95, 3)
    px, py, pdx = anatomy["prostate"]
    prostate_size = np.clip(1 - abs(level - 0.35) / 0.3, 0, 1)
    if prostate_size > 0.1:
        gland = _ellipse(x, y, cx + pdx, cy + 4, px * prostate_size, py * prostate_size, 0.06 * _smooth(rng, shape, 5))
        put(gland, 0.6, 5)  # peripheral zone: brighter on T2
        put(_ellipse(x, y, cx + pdx, cy + 6, px * prostate_size * 0.65, py * prostate_size * 0.6), 0.32, 5)
    rx, ry = anatomy["rectum"]
    if level < 0.8:
        wall = _ellipse(x, y, cx, cy - 16, rx, ry, 0.08 * _smooth(rng, shape, 5))
        put(wall, 0.22, 4)
        lumen = _ellipse(x, y, cx, cy - 16, rx * 0.6, ry * 0.6)
        put(lumen, 0.05 if rng.random() < 0.5 else 0.9, 4)

    image = ndimage.gaussian_filter(image, 0.7)  # the scanner's point spread
    image *= np.exp(0.15 * _smooth(rng, shape, 30))  # coil sensitivity
    image = np.abs(image + rng.normal(0, anatomy["noise"], shape) + 1j * rng.normal(0, anatomy["noise"], shape))
    return (image * anatomy["scale"]).astype(np.int16), labels


def ensure_hipmri_demo(root: str, seed: int = 2404) -> str:
    """Generate the demo set into ``root`` unless it is already there; return ``root``."""

    def build(staging: Path) -> None:
        logger.info(f"generating the HipMRI-style demo slices into {root}")
        for split, (first, count) in DEMO_SPLITS.items():
            (staging / f"keras_slices_{split}").mkdir()
            (staging / f"keras_slices_seg_{split}").mkdir()
            for case in range(first, first + count):
                rng = np.random.default_rng(seed + case)
                anatomy = case_anatomy(rng)
                shape = (256, 128) if case % 4 else (240, 112)  # some cases stored at another size
                affine = np.diag([*SPACING, 1.0])
                for week in range(WEEKS):
                    filling = rng.uniform(0, 1)
                    for index in range(SLICES):
                        level = (index + rng.uniform(0.2, 0.8)) / SLICES
                        image, labels = make_pelvis_slice(rng, anatomy, level, filling, shape)
                        name = f"case_{case:03d}_week_{week}_slice_{index}.nii.gz"
                        save_nifti(image, affine, staging / f"keras_slices_{split}" / name)
                        save_nifti(labels, affine, staging / f"keras_slices_seg_{split}" / f"seg_{name}")

    settings = {"version": GENERATOR_VERSION, "splits": DEMO_SPLITS, "weeks": WEEKS, "slices": SLICES, "seed": seed}
    return generate_once(root, settings, build)
