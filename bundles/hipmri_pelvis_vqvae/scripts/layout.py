"""The HipMRI layout: 2D NIfTI slices in ``keras_slices_{train,validate,test}/`` named
``case_<NNN>_week_<W>_slice_<S>.nii.gz``; splits by case, so that no man's slices are in two of them."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping, Sequence

from shared.data.dicom_studies import is_dicom_folder, screened_dicom_studies
from shared.data.errors import InvalidInputError
from shared.data.nifti_checks import check_nifti_dims
from shared.data.splits import split_cases, write_datalist

__all__ = ["DEFAULT_FOLDERS", "slice_items", "build_hipmri_datalist", "inference_items"]

logger = logging.getLogger(__name__)
DEFAULT_FOLDERS = {"training": "keras_slices_train", "validation": "keras_slices_validate",
                   "test": "keras_slices_test"}
_SLICE = re.compile(r"^(case_\d+)_week_(\d+)_slice_(\d+)$")
_NIFTI = re.compile(r"\.nii(\.gz)?$")


def _order(path: str) -> tuple:
    match = _SLICE.match(_NIFTI.sub("", os.path.basename(path)))
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else (os.path.basename(path), 0, 0)


def slice_items(folder: str) -> tuple[list[dict], list[dict]]:
    """``(valid, rejected)`` slice items ``{"case", "patient", "image"}`` of a folder, in case / week / slice order.
    A file that is not a readable 2D NIfTI slice is rejected with the reason; ``patient`` groups a man's slices."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} does not exist or is not a folder.")
    files = sorted((p for p in glob.glob(os.path.join(folder, "*")) if _NIFTI.search(p)), key=_order)
    if not files:
        raise FileNotFoundError(f"no NIfTI slices (*.nii, *.nii.gz) in {folder}.")
    valid, rejected = [], []
    for path in files:
        name = _NIFTI.sub("", os.path.basename(path))
        match = _SLICE.match(name)
        try:
            check_nifti_dims(path, ndim=2)
        except InvalidInputError as e:
            logger.error(f"slice {name} set aside: {e}")
            rejected.append({"case": name, "error": str(e)})
            continue
        valid.append({"case": name, "patient": match.group(1) if match else name, "image": path})
    return valid, rejected


def build_hipmri_datalist(
    dataset_dir: str,
    datalist_file: str,
    folders: Mapping[str, str | None] = DEFAULT_FOLDERS,
    val_fraction: float = 0.094,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Training, validation and test slices, written to the datalist JSON.

    Each split comes from its folder (``folders``, relative to ``dataset_dir``). When the validation folder is
    ``None`` or missing, ``val_fraction`` of the training folder's men (the study: 1080 of 11,460 slices) become the
    validation split, drawn deterministically (``seed``). Unreadable or non-2D files are listed under ``excluded``.
    """
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist or is not a folder.")
    folder = {k: os.path.join(dataset_dir, v) if v else None for k, v in folders.items()}
    split: dict[str, list[dict]] = {}
    excluded: list[dict] = []
    for section in ("training", "validation", "test"):
        if folder.get(section) and os.path.isdir(folder[section]):
            split[section], rejected = slice_items(folder[section])
            excluded += [{**r, "split": section} for r in rejected]
    if "training" not in split:
        raise FileNotFoundError(f"no training folder {folder.get('training')}: expected {DEFAULT_FOLDERS['training']}/ "
                                f"under {dataset_dir} (set --folders#training otherwise).")
    if "validation" not in split:
        patients = sorted({s["patient"] for s in split["training"]})
        drawn = split_cases([{"case": p} for p in patients], val_fraction, 0.0, seed)
        held = {p["case"] for p in drawn["validation"]}
        split["validation"] = [s for s in split["training"] if s["patient"] in held]
        split["training"] = [s for s in split["training"] if s["patient"] not in held]
    split.setdefault("test", [])
    write_datalist({"dataset_dir": os.path.abspath(dataset_dir), "seed": seed, **split, "excluded": excluded},
                   datalist_file)
    logger.info(f"datalist {datalist_file}: " + ", ".join(f"{len(v)} {k}" for k, v in split.items())
                + f" slice(s), {len(excluded)} excluded")
    return split


def inference_items(
    dataset_dir: str, ndim: int | Sequence[int] = (2, 3), dicom_series: str | None = None
) -> tuple[list[dict], list[dict]]:
    """``(valid, rejected)`` items ``{"case", "image"}`` for inference: ``dataset_dir`` is a NIfTI file or a folder
    of them (2D slices and / or 3D volumes, as ``ndim`` allows). Every other file of the folder (hidden ones aside)
    is rejected with the reason, so a run over the folder reports it; an empty folder is an error. A folder of DICOM
    studies gives one item a study: its series whose description matches ``dicom_series`` (see
    ``shared.data.dicom_studies.find_dicom_studies``)."""
    if dicom_series and os.path.isdir(dataset_dir) and is_dicom_folder(dataset_dir):
        return screened_dicom_studies(dataset_dir, {"image": dicom_series})
    if os.path.isfile(dataset_dir):
        files = [dataset_dir]
    elif os.path.isdir(dataset_dir):
        files = sorted(p for p in glob.glob(os.path.join(dataset_dir, "*"))
                       if (os.path.isfile(p) or os.path.islink(p)) and not os.path.basename(p).startswith("."))
        if not files:
            raise FileNotFoundError(f"{dataset_dir} holds no files: expected 2D slices or 3D volumes as NIfTI.")
    else:
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist.")
    valid, rejected = [], []
    for path in sorted(files, key=_order):
        name = _NIFTI.sub("", os.path.basename(path))
        try:
            if not _NIFTI.search(path):
                raise InvalidInputError(f"{path}: not a NIfTI file (.nii or .nii.gz).")
            check_nifti_dims(path, ndim=tuple(ndim) if not isinstance(ndim, int) else ndim)
        except InvalidInputError as e:
            logger.error(f"{name} set aside: {e}")
            rejected.append({"case": name, "error": str(e)})
            continue
        valid.append({"case": name, "image": path})
    return valid, rejected
