"""I-SPY2 breast MRI layouts: per-patient NIfTI (T2 + tumour mask) or the study's pickles; splits by patient.

NIfTI layout (patterns configurable): ``<dataset_dir>/<patient>/*_t2.nii.gz`` and ``*_mask.nii.gz``. The study's
pickles hold arrays (N, 320, 512) per modality and one patient id per slice (``patient_labels.pkl``); they are read
with an unpickler that builds NumPy arrays, numbers, strings and lists only (a pickle can run code otherwise).
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
from collections.abc import Mapping

import numpy as np

from shared.data.dicom_studies import is_dicom_folder, screened_dicom_studies
from shared.data.errors import InvalidInputError
from shared.data.nifti_checks import check_nifti_group
from shared.data.splits import fold_split, split_cases, write_datalist

__all__ = [
    "DEFAULT_PATTERNS",
    "discover_patients",
    "load_study_pickles",
    "patient_volumes",
    "build_ispy2_datalist",
]

logger = logging.getLogger(__name__)
DEFAULT_PATTERNS = {"t2": "*_t2.nii*", "mask": "*_mask.nii*"}


def discover_patients(
    dataset_dir: str, patterns: Mapping[str, str] = DEFAULT_PATTERNS, dicom_series: Mapping[str, str] | None = None
) -> tuple[list[dict], list[dict]]:
    """``(valid, rejected)`` patients under ``dataset_dir``: one file per pattern, on one voxel grid; or, for a
    folder of DICOM studies, each study's series chosen by ``dicom_series`` (key -> pattern of the series
    description, see ``shared.data.dicom_studies.find_dicom_studies``)."""
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist or is not a folder.")
    if dicom_series and is_dicom_folder(dataset_dir):
        return screened_dicom_studies(dataset_dir, dicom_series)
    valid, rejected = [], []
    for folder in sorted(d for d in glob.glob(os.path.join(dataset_dir, "*")) if os.path.isdir(d)):
        patient = {"case": os.path.basename(folder)}
        try:
            for key, pattern in patterns.items():
                matches = sorted(glob.glob(os.path.join(folder, pattern)))
                if len(matches) != 1:
                    raise InvalidInputError(f"{folder}: expected one {key} file matching {pattern!r}, found {len(matches)}.")
                patient[key] = matches[0]
            check_nifti_group({k: patient[k] for k in patterns}, list(patterns))
        except InvalidInputError as e:
            logger.error(f"patient {patient['case']} skipped: {e}")
            rejected.append({"case": patient["case"], "error": str(e)})
            continue
        valid.append(patient)
    if not valid and not rejected:
        raise FileNotFoundError(f"no patient folders under {dataset_dir}.")
    return valid, rejected


# what a pickle of NumPy arrays, numbers, strings and lists needs to build (NumPy 1.x and 2.x module names)
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds NumPy arrays, numbers, strings and containers; refuses every other class or function."""

    def __init__(self, file, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self.path}: refused to build {module}.{name}: the study's pickles hold only NumPy arrays, "
                f"numbers, strings and lists, so anything else is not loaded (unpickling can run code)."
            )
        return super().find_class(module, name)


def _load_array_pickle(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        try:
            return np.asarray(_ArrayUnpickler(f, path).load())
        except pickle.UnpicklingError:
            raise
        except Exception as e:
            raise InvalidInputError(f"{path}: not a readable pickle of arrays ({type(e).__name__}: {e}).") from e


def load_study_pickles(t2_file: str, mask_file: str, labels_file: str) -> list[dict]:
    """The study's processed arrays as slice items ``{"case", "t2", "mask"}`` (1, 512, 320) in the NIfTI slices'
    orientation (x = image columns, y = image rows from the bottom)."""
    arrays = {}
    for key, path in (("t2", t2_file), ("mask", mask_file), ("labels", labels_file)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist ({key} pickle).")
        arrays[key] = _load_array_pickle(path)
    t2, mask, labels = arrays["t2"], arrays["mask"], arrays["labels"]
    if t2.ndim != 3 or t2.shape != mask.shape:
        raise ValueError(f"{t2_file} {t2.shape} and {mask_file} {mask.shape} must be matching (N, H, W) arrays.")
    if len(labels) != len(t2):
        raise ValueError(f"{labels_file} has {len(labels)} patient ids for {len(t2)} slices.")
    return [
        {"case": str(labels[i]), "t2": t2[i][::-1].T[None].astype(np.float32).copy(),
         "mask": mask[i][::-1].T[None].astype(np.float32).copy()}
        for i in range(len(t2))
    ]


def patient_volumes(slices: list[dict], keys: tuple[str, ...] = ("t2", "mask")) -> list[dict]:
    """Slice items stacked per patient (in file order) into (1, X, Y, N) volumes, the form of a NIfTI patient."""
    patients: dict[str, list[dict]] = {}
    for item in slices:
        patients.setdefault(item["case"], []).append(item)
    return [{"case": case, **{k: np.stack([s[k] for s in items], axis=-1) for k in keys}}
            for case, items in sorted(patients.items())]


def build_ispy2_datalist(
    dataset_dir: str | None,
    datalist_file: str,
    val_fraction: float,
    test_fraction: float,
    seed: int = 0,
    patterns: Mapping[str, str] = DEFAULT_PATTERNS,
    pickles: Mapping[str, str] | None = None,
    folds: int | None = None,
    fold: int = 0,
) -> dict[str, list[dict]]:
    """Split by patient into training/validation/test and write the datalist JSON.

    The items are patients: file paths from NIfTI folders; from ``pickles`` (``{"t2", "mask", "labels"}`` paths)
    the patient's slices stacked into arrays (the JSON then lists patient ids per split). With ``folds``, the test
    patients are fold ``fold`` of a patient-grouped ``folds``-fold split (``test_fraction`` is then unused).
    """
    def split(patients: list[dict]) -> dict[str, list[dict]]:
        if folds:
            return fold_split(patients, folds, fold, val_fraction, seed)
        return split_cases(patients, val_fraction, test_fraction, seed)

    folding = {"folds": folds, "fold": fold} if folds else {}
    if pickles:
        volumes = split(patient_volumes(load_study_pickles(pickles["t2"], pickles["mask"], pickles["labels"])))
        write_datalist({k: [p["case"] for p in v] for k, v in volumes.items()} | {"source": dict(pickles), **folding},
                       datalist_file)
        return volumes
    valid, rejected = discover_patients(dataset_dir, patterns)
    if not valid:
        raise ValueError(f"no usable patient under {dataset_dir}; problems: {rejected}")
    patients = split(valid)
    write_datalist({"dataset_dir": os.path.abspath(dataset_dir), "seed": seed, **folding, **patients,
                    "excluded": rejected}, datalist_file)
    return patients
