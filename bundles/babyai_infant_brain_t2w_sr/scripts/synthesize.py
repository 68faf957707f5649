"""Thick-slice versions of a dataset's T2w volumes, as the study's tool made them, in the same BIDS layout."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from shared.data.demo_cache import save_nifti
from shared.data.errors import InvalidInputError, root_cause
from shared.data.nifti_checks import check_nifti_dims
from shared.engines.case_evaluator import CasesFailedError
from shared.transforms.anisotropy import SimulateAnisotropy, kept_slices

__all__ = ["thick_slice_volume", "acquisition_label", "synthesize_anisotropic"]

logger = logging.getLogger(__name__)
AXIS_LABELS = {0: "sagittal", 1: "coronal", 2: "axial"}


def acquisition_label(factor: int, axis: int) -> str:
    """The BIDS ``acq`` label of a simulated acquisition: ``k4axial`` = every 4th slice along voxel axis 2."""
    return f"k{factor}{AXIS_LABELS[axis]}"


def thick_slice_volume(data: np.ndarray, affine: np.ndarray, factor: int, axis: int, offset: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Every ``factor``-th slice (from ``offset``) along voxel ``axis``, with the affine of that thicker grid: the
    file a ``factor`` times thicker acquisition would have written. Resampled back onto the original grid with a
    cubic B-spline (MONAI ``ResampleToMatch(mode=3, padding_mode="border")``), it equals
    ``shared.transforms.anisotropy.SimulateAnisotropy(factor, axis, offset)`` of the original."""
    kept = kept_slices(data.shape[axis], factor, offset)
    thick = np.take(data, kept, axis=axis)
    new_affine = np.array(affine, dtype=float)
    new_affine[:3, 3] = affine[:3, :3] @ np.eye(3)[axis] * offset + affine[:3, 3]
    new_affine[:3, axis] = affine[:3, axis] * factor
    return thick, new_affine


def _with_acquisition(name: str, label: str) -> str:
    """``sub-1_ses-2_space-X_T2w.nii.gz`` -> ``sub-1_ses-2_acq-<label>_space-X_T2w.nii.gz`` (BIDS entity order)."""
    entities = name.split("_")
    at = next((i for i, e in enumerate(entities) if not e.startswith(("sub-", "ses-", "task-"))), len(entities) - 1)
    return "_".join(entities[:at] + [f"acq-{label}"] + entities[at:])


def synthesize_anisotropic(
    dataset_dir: str,
    output_dir: str,
    factors: Sequence[int] = (4,),
    axes: Sequence[int] = (2,),
    t2w_pattern: str = "sub-*/ses-*/anat/*_T2w.nii.gz",
    offset: int = 0,
    write_interpolated: bool = False,
    copy_t1w: bool = True,
    allow_partial: bool = False,
) -> dict:
    """For every T2w under ``dataset_dir`` and every slice ``factor`` and voxel ``axis``, write the thick-slice file
    (``acq-k<factor><axis name>`` added to its name, same folders) under ``output_dir``; with ``write_interpolated``
    also the cubic interpolation back onto the original grid (``rec-cubic``). The session's T1w is copied beside
    them (``copy_t1w``), so ``inference.json --dataset_dir <output_dir>`` finds its pairs. A T2w that cannot be used
    is reported and skipped; ``synthesis_report.json`` lists every file, and the run ends with
    :class:`CasesFailedError` (a non-zero exit) when any failed, unless ``allow_partial``."""
    found = sorted(glob.glob(os.path.join(dataset_dir, t2w_pattern)))
    if not found:
        raise FileNotFoundError(f"no T2w file matches {t2w_pattern!r} under {dataset_dir}.")
    report: dict = {"succeeded": [], "failed": [], "written": []}
    for t2w in found:
        relative = os.path.relpath(t2w, dataset_dir)
        try:
            check_nifti_dims(t2w, ndim=3)
            image = nib.load(t2w)
            data = np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:3])
            if not np.isfinite(data).all():
                raise InvalidInputError(f"{t2w}: has NaN or infinite voxels.")
            folder = os.path.join(output_dir, os.path.dirname(relative))
            os.makedirs(folder, exist_ok=True)
            for factor in factors:
                for axis in axes:
                    name = _with_acquisition(os.path.basename(t2w), acquisition_label(int(factor), int(axis)))
                    thick, affine = thick_slice_volume(data, image.affine, int(factor), int(axis), offset)
                    save_nifti(thick, affine, os.path.join(folder, name))
                    report["written"].append(os.path.join(os.path.dirname(relative), name))
                    if write_interpolated:
                        interpolated = SimulateAnisotropy(int(factor), int(axis), offset)(data[None])[0]
                        cubic = name.replace(f"acq-{acquisition_label(int(factor), int(axis))}_",
                                             f"acq-{acquisition_label(int(factor), int(axis))}_rec-cubic_")
                        save_nifti(interpolated, image.affine, os.path.join(folder, cubic))
                        report["written"].append(os.path.join(os.path.dirname(relative), cubic))
            t1w = re.sub(r"_T2w(\.nii(\.gz)?)$", r"_T1w\1", t2w)
            if copy_t1w and os.path.isfile(t1w):
                shutil.copyfile(t1w, os.path.join(folder, os.path.basename(t1w)))
            report["succeeded"].append(relative)
        except Exception as e:  # one bad file must not stop the others
            logger.error(f"{relative} failed, going on with the next: {root_cause(e)}")
            report["failed"].append({"case": relative, "error": root_cause(e)})
    os.makedirs(output_dir, exist_ok=True)
    report_file = os.path.join(output_dir, "synthesis_report.json")
    with open(report_file, "w") as f:
        json.dump(report, f, indent=2)
    logger.info(f"{len(report['written'])} file(s) written for {len(report['succeeded'])} T2w volume(s), "
                f"{len(report['failed'])} failed (report: {report_file})")
    if report["failed"] and not (allow_partial and report["succeeded"]):
        raise CasesFailedError(f"{len(report['failed'])} T2w volume(s) failed: "
                               f"{[f['case'] for f in report['failed']]}; see {report_file}.")
    return report
