"""A deterministic BABY-AI-style demo set in the Baby Open Brains (BIDS) layout, made from real anatomy.

Every session is the MNI152 2009 template that nilearn ships (T1 and grey / white-matter maps, skull-stripped, 1 mm),
cropped to the study's 182x218x182 grid, with its own smooth deformation and head size (an infant brain is smaller),
bias field and Rician noise. The T1w is the template's T1; the T2w is an infant-like contrast built from the tissue
maps (bright CSF, grey matter in between, dark white matter) with a fine texture of its own, so the T1w carries most,
but not all, of the detail a thick-slice T2w loses. Files::

    <root>/sub-<id>/ses-<N>mo/anat/sub-<id>_ses-<N>mo_space-INFANTMNIacpc_{T1w,T2w}.nii.gz
    <root>/derivatives/atlas/infant_atlas.nii.gz     (the undeformed template T1, for registration)

Some subjects have two sessions, so that splits by subject differ from splits by session.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from shared.data.demo_cache import generate_once, save_nifti
from shared.data.mni_template import load_mni_template

__all__ = ["ensure_babyai_demo", "demo_sessions", "STUDY_GRID", "SPACE"]

logger = logging.getLogger(__name__)
GENERATOR_VERSION = 1
STUDY_GRID = (182, 218, 182)
SPACE = "INFANTMNIacpc"
# infant-like T2w intensities relative to CSF
T2W_CONTRAST = {"csf": 1.0, "gm": 0.55, "wm": 0.32}


def demo_sessions(num_subjects: int) -> list[tuple[str, str]]:
    """``(subject, session)`` of every demo session: subjects ``D01, D02, ...`` at 1 month, every third also at 6."""
    sessions = []
    for i in range(1, num_subjects + 1):
        sessions.append((f"D{i:02d}", "1mo"))
        if i % 3 == 0:
            sessions.append((f"D{i:02d}", "6mo"))
    return sessions


def _template_on_grid(voxel_size: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The template's maps cropped (centred in x and y, from the bottom in z, where the brain starts) to the study's
    grid, at ``voxel_size`` mm; and that grid's affine."""
    mni = load_mni_template()
    start = [(s - g) // 2 for s, g in zip(mni.t1.shape[:2], STUDY_GRID[:2])] + [0]
    crop = tuple(slice(a, a + g) for a, g in zip(start, STUDY_GRID))
    maps = {"t1": mni.t1[crop], "gm": mni.gm[crop], "wm": mni.wm[crop], "brain": mni.brain[crop].astype(np.float32)}
    maps["csf"] = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0.0, 1.0)
    affine = mni.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.asarray(start, dtype=float)
    if voxel_size != 1.0:
        shape = [max(8, round(g / voxel_size)) for g in STUDY_GRID]
        maps = {k: ndimage.zoom(v, [n / g for n, g in zip(shape, STUDY_GRID)], order=1) for k, v in maps.items()}
        affine[:3, :3] = affine[:3, :3] * voxel_size
        affine[:3, 3] += (voxel_size - 1.0) / 2.0  # the new voxels' centres cover the same field of view
    return maps, affine


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int) -> np.ndarray:
    """A smooth random field of unit standard deviation: noise on a coarse grid, interpolated up."""
    field = ndimage.zoom(rng.standard_normal((coarse,) * 3).astype(np.float32), [s / coarse for s in shape], order=1)
    return field / (field.std() + 1e-8)


def _session(maps: dict[str, np.ndarray], voxel_size: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One session's T1w and T2w: deformed, bias-corrupted, noisy, skull-stripped, in scanner-like units."""
    shape = maps["t1"].shape
    centre = (np.asarray(shape) - 1) / 2.0
    scale = rng.uniform(0.86, 1.0)  # head size relative to the adult template
    displacement = [rng.uniform(2.0, 3.5) / voxel_size * _smooth_field(rng, shape, 5) for _ in range(3)]
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = [(g - c) / scale + c + d for g, c, d in zip(grid, centre, displacement)]
    warped = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant") for k, v in maps.items()}
    brain = warped["brain"] > 0.5
    texture = 1.0 + 0.06 * _smooth_field(rng, shape, max(8, shape[0] // 3))
    t2w = sum(T2W_CONTRAST[t] * warped[t] for t in T2W_CONTRAST) * texture
    t1w = warped["t1"] ** rng.uniform(0.9, 1.1)
    volumes = []
    for image, level in ((t1w, rng.uniform(800, 1200)), (t2w, rng.uniform(1000, 1600))):
        bias = np.exp(0.12 * _smooth_field(rng, shape, 3))
        sigma = rng.uniform(0.012, 0.025)
        noisy = np.hypot(image * bias + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
        volumes.append(np.round(noisy * brain * level).astype(np.int16))
    return volumes[0], volumes[1]


def ensure_babyai_demo(root: str, num_subjects: int = 12, voxel_size: float = 1.0, seed: int = 0) -> str:
    """``root`` holding the demo set (generated on first use: about 10 s a session at 1 mm), in the BIDS layout of
    the Baby Open Brains repository. ``voxel_size`` > 1 gives a coarser grid over the same field of view (tests)."""
    settings = {"generator": GENERATOR_VERSION, "num_subjects": num_subjects, "voxel_size": voxel_size, "seed": seed}

    def build(staging: Path) -> None:
        maps, affine = _template_on_grid(voxel_size)
        sessions = demo_sessions(num_subjects)
        logger.info(f"generating {len(sessions)} demo sessions of {num_subjects} subjects in {root} (first use only)")
        for index, (subject, session) in enumerate(sessions):
            rng = np.random.default_rng([seed, index])
            t1w, t2w = _session(maps, voxel_size, rng)
            folder = staging / f"sub-{subject}" / f"ses-{session}" / "anat"
            folder.mkdir(parents=True)
            stem = f"sub-{subject}_ses-{session}_space-{SPACE}"
            save_nifti(t1w, affine, folder / f"{stem}_T1w.nii.gz")
            save_nifti(t2w, affine, folder / f"{stem}_T2w.nii.gz")
        atlas = staging / "derivatives" / "atlas"
        atlas.mkdir(parents=True)
        save_nifti(np.round(maps["t1"] * 1000).astype(np.int16), affine, atlas / "infant_atlas.nii.gz")
        (staging / "dataset_description.json").write_text(json.dumps(
            {"Name": "BABY-AI demo (MNI152 2009 template, synthetic infant-like T2w contrast)",
             "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "Apache-2.0"}, indent=2))
        (staging / "participants.tsv").write_text(
            "participant_id\n" + "".join(f"sub-D{i:02d}\n" for i in range(1, num_subjects + 1)))

    return generate_once(root, settings, build)
