"""A second synthetic set for BABY-AI, made another way than the training demo (``scripts/demo.py``): subjects for
model selection and testing that no training session resembles by construction.

It differs from the demo where real cohorts differ from each other:

- **head shape and grid**: each head rotated (up to 6 degrees about each axis), scaled per axis (0.80-1.00) and
  shifted in a field of view of another size (168x204x172 at 1 mm instead of 182x218x182), with a coarser, stronger
  smooth deformation (3-5 mm instead of 2-3.5);
- **contrast**: a T2w tissue-to-intensity mapping drawn per subject (CSF 0.85-1.0, grey matter 0.42-0.68, white
  matter 0.15-0.40, then a power 0.75-1.35) instead of the demo's fixed 1.0 / 0.55 / 0.32, and another texture;
  a T1w half template, half tissue contrast, instead of the template's own T1;
- **noise and bias**: Rician noise of 1-3.5 % instead of 1.2-2.5 %, a stronger bias field;
- **acquisition**: real thick-slice files, each slice integrating the isotropic T2w (its noise included, as a
  simulation study acquires it) over its thickness (a box, or a Gaussian of that full width at half maximum, computed
  on a 4x finer sampling along the slice axis), some with a gap between slices, on its own grid: 4 mm axial (box),
  5 mm sagittal (Gaussian) and 3 mm coronal slices 0.5 mm apart (Gaussian);
- **alignment**: the T2w moved against the T1w by a small rigid motion (up to 1.5 degrees and 1 mm), as between
  two scans of a session. The isotropic T2w that the output is measured against is the moved one.

Files (the isotropic T2w is the reference, never an input)::

    <root>/sub-H<NN>/ses-1mo/anat/sub-H<NN>_ses-1mo_{T1w,T2w}.nii.gz
    <root>/sub-H<NN>/ses-1mo/anat/sub-H<NN>_ses-1mo_acq-<t>mm<axis>_T2w.nii.gz
    <root>/heldout.json        {"validation": [items], "test": [items]}; an item: case, session, t1w, t2w (the
                               thick-slice file), label (the isotropic T2w), factor (thickness, mm), axis, profile
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from shared.data.demo_cache import generate_once, save_nifti
from shared.data.mni_template import load_mni_template

__all__ = ["ensure_babyai_heldout", "heldout_items", "ACQUISITIONS", "GRID"]

logger = logging.getLogger(__name__)
GENERATOR_VERSION = 2
GRID = (168, 204, 172)
AXIS_NAMES = ("sagittal", "coronal", "axial")
# thickness (mm), slice axis, profile, gap between slices (mm)
ACQUISITIONS = ((4, 2, "box", 0.0), (5, 0, "gaussian", 0.0), (3, 1, "gaussian", 0.5))
SUPERSAMPLING = 4


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], coarse: int) -> np.ndarray:
    field = ndimage.zoom(rng.standard_normal((coarse,) * 3), [s / coarse for s in shape], order=3)
    return (field / (field.std() + 1e-8)).astype(np.float32)


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    return np.hypot(image + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))


def _head(rng: np.random.Generator, grid: tuple[int, ...], voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) mapping a voxel of the subject's grid to template voxels: x_template = A x + b (rotation, per-axis
    scale, shift)."""
    rotation = Rotation.from_euler("xyz", rng.uniform(-6, 6, 3), degrees=True).as_matrix()
    scale = rng.uniform(0.80, 1.00, 3)
    matrix = rotation @ np.diag(voxel / scale)
    template_centre = np.array([98.0, 116.0, 80.0]) + rng.uniform(-3, 3, 3)  # the brain's centre, template voxels
    return matrix, template_centre - matrix @ ((np.asarray(grid) - 1) / 2.0)


def _warp(maps: dict, matrix: np.ndarray, shift: np.ndarray, displacement: list[np.ndarray]) -> dict:
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in displacement[0].shape], indexing="ij")
    coords = [sum(matrix[i, j] * grid[j] for j in range(3)) + shift[i] + displacement[i] for i in range(3)]
    return {k: ndimage.map_coordinates(v, coords, order=1, mode="constant") for k, v in maps.items()}


def _rigid(rng: np.random.Generator, grid: tuple[int, ...], degrees: float, mm: float, voxel: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """A rigid motion about the grid's centre, as (A, b) on voxel coordinates."""
    rotation = Rotation.from_rotvec(rng.uniform(-1, 1, 3) * np.deg2rad(degrees) / np.sqrt(3)).as_matrix()
    centre = (np.asarray(grid) - 1) / 2.0
    return rotation, centre - rotation @ centre + rng.uniform(-1, 1, 3) * mm / voxel / np.sqrt(3)


def thick_slices(volume: np.ndarray, affine: np.ndarray, thickness: float, axis: int, profile: str, gap: float,
                 offset: float, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """The thick-slice file of ``volume``: slices ``thickness`` mm thick, ``thickness + gap`` apart from ``offset``
    voxels along ``axis``, each the mean of the signal over the slice (``box``) or weighted by a Gaussian of that
    full width at half maximum, computed on a ``SUPERSAMPLING`` times finer linear sampling along the axis; and
    the affine of that grid."""
    size = volume.shape[axis]
    fine = np.arange(size * SUPERSAMPLING) / SUPERSAMPLING - 0.5 + 0.5 / SUPERSAMPLING  # sub-voxel centres
    spacing = (thickness + gap) / voxel
    centres = offset + spacing * np.arange(int((size - 1 - offset) // spacing) + 1)
    width = thickness / voxel
    distance = fine[None] - centres[:, None]
    if profile == "box":
        weights = (np.abs(distance) <= width / 2).astype(np.float64)
    else:
        weights = np.exp(-0.5 * (distance / (width / 2.3548)) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    samples = ndimage.zoom(volume, [SUPERSAMPLING if a == axis else 1 for a in range(3)], order=1, mode="nearest",
                           grid_mode=True)
    thick = np.moveaxis(np.tensordot(weights, np.moveaxis(samples, axis, 0), axes=1), 0, axis)
    new_affine = np.array(affine, dtype=float)
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * offset
    new_affine[:3, axis] = affine[:3, axis] * spacing
    return thick.astype(np.float32), new_affine


def _subject(maps: dict, rng: np.random.Generator, grid: tuple[int, ...], voxel: float) -> dict:
    matrix, shift = _head(rng, grid, voxel)
    displacement = [rng.uniform(3.0, 5.0) * _smooth(rng, grid, 4) for _ in range(3)]
    warped = _warp(maps, matrix, shift, displacement)
    moved = _rigid(rng, grid, 1.5, 1.0, voxel)  # the T2w scan against the T1w scan
    warped_t2 = _warp(maps, matrix @ moved[0], matrix @ moved[1] + shift,
                      [ndimage.affine_transform(d, moved[0], moved[1], order=1, mode="nearest") for d in displacement])
    while True:
        csf, gm, wm = rng.uniform(0.85, 1.0), rng.uniform(0.42, 0.68), rng.uniform(0.15, 0.40)
        if gm - wm >= 0.1:
            break
    texture = 1.0 + rng.uniform(0.03, 0.08) * _smooth(rng, grid, max(6, grid[0] // 4))
    t2 = ((csf * warped_t2["csf"] + gm * warped_t2["gm"] + wm * warped_t2["wm"]) * texture) ** rng.uniform(0.75, 1.35)
    t2 *= np.exp(rng.uniform(0.1, 0.25) * _smooth(rng, grid, 4))
    tissue_t1 = (rng.uniform(0.75, 1.0) * warped["wm"] + rng.uniform(0.45, 0.65) * warped["gm"]
                 + rng.uniform(0.08, 0.25) * warped["csf"])
    t1 = (0.5 * warped["t1"] + 0.5 * tissue_t1) ** rng.uniform(0.8, 1.25)
    t1 *= np.exp(rng.uniform(0.1, 0.25) * _smooth(rng, grid, 4))
    brain, brain_t2 = warped["brain"] > 0.5, warped_t2["brain"] > 0.5
    return {"t1": _rician(rng, t1, rng.uniform(0.01, 0.035)) * brain,
            "t2": _rician(rng, t2, rng.uniform(0.01, 0.035)) * brain_t2, "levels": rng.uniform(600, 1800, 2)}


def ensure_babyai_heldout(root: str, num_subjects: int = 6, validation_subjects: int = 2, voxel_size: float = 1.0,
                          seed: int = 7) -> str:
    """``root`` holding the held-out set (generated on first use): ``num_subjects`` subjects, the first
    ``validation_subjects`` for model selection, the rest for testing. ``voxel_size`` > 1 gives a coarser grid over
    the same field of view (tests)."""
    settings = {"generator": GENERATOR_VERSION, "num_subjects": num_subjects, "validation_subjects": validation_subjects,
                "voxel_size": voxel_size, "seed": seed}

    def build(staging: Path) -> None:
        template = load_mni_template()
        maps = {"t1": template.t1, "gm": template.gm, "wm": template.wm, "csf": template.csf,
                "brain": template.brain.astype(np.float32)}
        grid = tuple(max(16, round(g / voxel_size)) for g in GRID)
        affine = np.diag([voxel_size] * 3 + [1.0])
        affine[:3, 3] = -voxel_size * (np.asarray(grid) - 1) / 2.0
        logger.info(f"generating the held-out set ({num_subjects} subjects of another generator) in {root} "
                    "(first use only)")
        splits: dict[str, list] = {"validation": [], "test": []}
        for index in range(num_subjects):
            rng = np.random.default_rng([seed, index])
            subject = _subject(maps, rng, grid, voxel_size)
            session = f"sub-H{index + 1:02d}_ses-1mo"
            folder = staging / f"sub-H{index + 1:02d}" / "ses-1mo" / "anat"
            folder.mkdir(parents=True)
            t1_level, t2_level = subject["levels"]
            save_nifti(np.round(subject["t1"] * t1_level).astype(np.int16), affine, folder / f"{session}_T1w.nii.gz")
            save_nifti(np.round(subject["t2"] * t2_level).astype(np.int16), affine, folder / f"{session}_T2w.nii.gz")
            for thickness, axis, profile, gap in ACQUISITIONS:
                offset = rng.uniform(0, (thickness + gap) / voxel_size)
                thick, thick_affine = thick_slices(subject["t2"], affine, thickness, axis, profile, gap, offset,
                                                   voxel_size)
                name = f"{session}_acq-{thickness}mm{AXIS_NAMES[axis]}_T2w.nii.gz"
                save_nifti(np.round(thick * t2_level).astype(np.int16), thick_affine, folder / name)
                part = "validation" if index < validation_subjects else "test"
                splits[part].append({"case": f"{session}_acq-{thickness}mm{AXIS_NAMES[axis]}", "session": session,
                                     "t1w": os.path.join(folder.relative_to(staging), f"{session}_T1w.nii.gz"),
                                     "t2w": os.path.join(folder.relative_to(staging), name),
                                     "label": os.path.join(folder.relative_to(staging), f"{session}_T2w.nii.gz"),
                                     "factor": thickness, "axis": axis, "profile": profile, "gap": gap})
        (staging / "heldout.json").write_text(json.dumps(splits, indent=2))

    return generate_once(root, settings, build)


def heldout_items(root: str, part: str, factors: list | None = None, axes: list | None = None) -> list[dict]:
    """The ``part`` (``validation`` or ``test``) items of the held-out set at ``root``, with absolute paths; only
    the acquisitions of the given slice ``factors`` (thickness in mm) and ``axes`` when these are given."""
    with open(os.path.join(root, "heldout.json")) as f:
        items = json.load(f)[part]
    chosen = [i for i in items if (factors is None or i["factor"] in factors) and (axes is None or i["axis"] in axes)]
    return [{**i, **{k: os.path.join(root, i[k]) for k in ("t1w", "t2w", "label")}} for i in chosen]
