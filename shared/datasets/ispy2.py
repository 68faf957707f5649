"""I-SPY2 breast MRI: per-patient NIfTI (T2 + tumour mask) or the study's pickles, as 2D axial tumour slices.

NIfTI layout (patterns configurable): ``<dataset_dir>/<patient>/*_t2.nii.gz`` and ``*_mask.nii.gz``. The study's
pickles hold arrays (N, 320, 512) per modality and one patient id per slice (``patient_labels.pkl``).
Splits are always by patient.
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from monai.data import CacheDataset

from shared.datasets.nifti_checks import InvalidInputError, check_nifti_group
from shared.datasets.splits import split_cases, write_datalist

__all__ = [
    "DEFAULT_PATTERNS",
    "discover_patients",
    "load_study_pickles",
    "build_ispy2_datalist",
    "TumourSliceDataset",
    "ispy2_slice_dataset",
]

logger = logging.getLogger(__name__)
DEFAULT_PATTERNS = {"t2": "*_t2.nii*", "mask": "*_mask.nii*"}


def discover_patients(dataset_dir: str, patterns: Mapping[str, str] = DEFAULT_PATTERNS) -> tuple[list[dict], list[dict]]:
    """``(valid, rejected)`` patients under ``dataset_dir``: one file per pattern, on one voxel grid."""
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist or is not a folder.")
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


def load_study_pickles(t2_file: str, mask_file: str, labels_file: str) -> list[dict]:
    """The study's processed arrays as slice items ``{"case", "t2", "mask"}`` (1, 512, 320) in the NIfTI slices'
    orientation (x = image columns, y = image rows from the bottom)."""
    arrays = {}
    for key, path in (("t2", t2_file), ("mask", mask_file), ("labels", labels_file)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist ({key} pickle).")
        with open(path, "rb") as f:
            arrays[key] = np.asarray(pickle.load(f))
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


def build_ispy2_datalist(
    dataset_dir: str | None,
    datalist_file: str,
    val_fraction: float,
    test_fraction: float,
    seed: int = 0,
    patterns: Mapping[str, str] = DEFAULT_PATTERNS,
    pickles: Mapping[str, str] | None = None,
) -> dict[str, list[dict]]:
    """Split by patient into training/validation/test and write the datalist JSON.

    From NIfTI folders the items are patients (file paths); from ``pickles`` (``{"t2", "mask", "labels"}`` paths)
    they are slices, grouped by patient for the split (the JSON then lists patient ids per split).
    """
    if pickles:
        slices = load_study_pickles(pickles["t2"], pickles["mask"], pickles["labels"])
        patients = sorted({s["case"] for s in slices})
        split = split_cases([{"case": p} for p in patients], val_fraction, test_fraction, seed)
        write_datalist({k: [p["case"] for p in v] for k, v in split.items()} | {"source": dict(pickles)}, datalist_file)
        members = {k: {p["case"] for p in v} for k, v in split.items()}
        return {k: [s for s in slices if s["case"] in members[k]] for k in split}
    valid, rejected = discover_patients(dataset_dir, patterns)
    if not valid:
        raise ValueError(f"no usable patient under {dataset_dir}; problems: {rejected}")
    split = split_cases(valid, val_fraction, test_fraction, seed)
    write_datalist({"dataset_dir": os.path.abspath(dataset_dir), "seed": seed, **split, "excluded": rejected},
                   datalist_file)
    return split


class TumourSliceDataset(torch.utils.data.Dataset):
    """Axial slices around each patient's tumour (the tumour's slices plus ``margin_slices`` each side), from
    volumes preprocessed once by ``volume_transform`` and cached in memory; each item is ``{"case", <keys>...}``
    with (C, X, Y) slices, passed through ``transform``. A patient whose mask is empty is an error naming the file."""

    def __init__(
        self,
        data: Sequence[dict],
        volume_transform: Callable,
        transform: Callable | None,
        keys: Sequence[str] = ("t2", "mask"),
        mask_key: str = "mask",
        margin_slices: int = 2,
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
    ) -> None:
        self.data, self.keys, self.transform = data, list(keys), transform
        self.volumes = CacheDataset(data, transform=volume_transform, cache_rate=cache_rate, num_workers=num_workers,
                                    copy_cache=False)
        index = []
        for v in range(len(self.volumes)):
            mask = torch.as_tensor(self.volumes[v][mask_key])[0]
            z = torch.nonzero(mask.flatten(0, 1).amax(0) > 0).flatten()
            if len(z) == 0:
                raise ValueError(f"{data[v][mask_key]}: the tumour mask is empty (patient {data[v].get('case')}).")
            lo, hi = max(0, int(z.min()) - margin_slices), min(mask.shape[-1] - 1, int(z.max()) + margin_slices)
            index += [(v, s) for s in range(lo, hi + 1)]
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        from monai.transforms import apply_transform

        v, z = self.index[i]
        volume = self.volumes[v]
        item = {"case": self.data[v].get("case", str(v))}
        for key in self.keys:
            item[key] = torch.as_tensor(volume[key])[..., z].as_subclass(torch.Tensor).clone()
        return apply_transform(self.transform, item) if self.transform is not None else item


def ispy2_slice_dataset(
    items: Sequence[dict],
    volume_transform: Callable,
    transform: Callable,
    keys: Sequence[str] = ("t2", "mask"),
    margin_slices: int = 2,
    cache_rate: float = 1.0,
    num_workers: int | None = 1,
) -> torch.utils.data.Dataset:
    """Slices from patient NIfTI items (file paths) or from the study's pickled slices (arrays), cached either way."""
    if items and not isinstance(items[0].get(keys[0]), str):
        return CacheDataset(list(items), transform=transform, cache_rate=cache_rate, num_workers=num_workers)
    return TumourSliceDataset(items, volume_transform, transform, keys, keys[-1], margin_slices, cache_rate, num_workers)
