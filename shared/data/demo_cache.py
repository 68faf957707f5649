"""Generate a demo dataset once: a file lock, a settings manifest, and an atomic move into place."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from filelock import FileLock

__all__ = ["generate_once", "save_nifti"]


def generate_once(root: str, settings: dict, build: Callable[[Path], None]) -> str:
    """Return ``root``, first running ``build(staging_folder)`` unless ``root`` holds a dataset made with the same
    ``settings``. Safe across processes (e.g. torchrun ranks): generation holds a file lock, and a half-written
    dataset never appears at ``root``."""
    root_path = Path(root)
    manifest = root_path / "demo_manifest.json"
    settings = json.loads(json.dumps(settings))  # as the manifest stores them: tuples become lists
    root_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{root_path}.lock"):
        if manifest.is_file() and json.loads(manifest.read_text()) == settings:
            return str(root_path)
        shutil.rmtree(root_path, ignore_errors=True)
        staging = root_path.with_name(root_path.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        build(staging)
        (staging / manifest.name).write_text(json.dumps(settings, indent=2))
        staging.rename(root_path)
    return str(root_path)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save with the affine as both qform and sform, in millimetres."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
