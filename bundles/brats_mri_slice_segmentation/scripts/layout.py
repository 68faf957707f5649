"""BraTS 2020 layout: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii(.gz)``, discovery, checks and splits."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.data.dicom_studies import find_dicom_studies, is_dicom_folder
from shared.data.errors import InvalidInputError
from shared.data.nifti_checks import check_nifti_group
from shared.data.splits import split_cases, write_datalist

__all__ = [
    "MODALITIES",
    "find_case_files",
    "discover_cases",
    "CheckedCases",
    "check_cases",
    "build_datalist",
]

logger = logging.getLogger(__name__)

# The study drops T1; the network sees FLAIR, T1Gd and T2 in this channel order.
MODALITIES = ("flair", "t1ce", "t2")
_NIFTI = re.compile(r"\.nii(\.gz)?$")


def _nifti_files(folder: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(folder, "*")) if _NIFTI.search(p))


def find_case_files(case_dir: str, modalities: Sequence[str] = MODALITIES) -> dict[str, str]:
    """Files of one case folder: ``{"case", <modality>..., "label"?}``.

    A modality is ``<anything>_<modality>.nii(.gz)``. The label is ``*_seg.nii(.gz)``, or else the one remaining
    ``*seg*`` NIfTI in the folder: the official release names case 355's label ``W39_1998.09.19_Segm.nii``.
    Missing modalities are left out here and reported by :func:`check_cases`.
    """
    files = _nifti_files(case_dir)
    found: dict[str, str] = {"case": os.path.basename(os.path.normpath(case_dir))}
    suffix = {p: _NIFTI.sub("", os.path.basename(p)).lower() for p in files}
    for modality in modalities:
        matches = [p for p in files if suffix[p].endswith(f"_{modality}")]
        if matches:
            found[modality] = matches[0]
    labels = [p for p in files if suffix[p].endswith("_seg")]
    if not labels:
        known = {f"_{m}" for m in ("flair", "t1", "t1ce", "t2")}
        labels = [p for p in files if "seg" in suffix[p] and not any(suffix[p].endswith(k) for k in known)]
    if len(labels) == 1:
        found["label"] = labels[0]
    return found


def discover_cases(
    dataset_dir: str, modalities: Sequence[str] = MODALITIES, dicom_series: Mapping[str, str] | None = None
) -> list[dict]:
    """Cases under ``dataset_dir``: a folder of case folders, or a single case folder, of NIfTI files; or a folder
    of DICOM studies, each study's series chosen for the modalities by ``dicom_series`` (modality -> pattern of
    the series description, see ``shared.data.dicom_studies.find_dicom_studies``)."""
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist or is not a folder.")
    if dicom_series and is_dicom_folder(dataset_dir):
        missing = [m for m in modalities if m not in dicom_series]
        if missing:
            raise ValueError(f"dicom_series has no series pattern for {missing}: add one per modality")
        return find_dicom_studies(dataset_dir, {m: dicom_series[m] for m in modalities})
    if _nifti_files(dataset_dir):
        return [find_case_files(dataset_dir, modalities)]
    cases = [find_case_files(d, modalities) for d in sorted(glob.glob(os.path.join(dataset_dir, "*"))) if os.path.isdir(d)]
    if not cases:
        raise FileNotFoundError(
            f"no BraTS cases under {dataset_dir}: expected <case>/<case>_{{{','.join(modalities)}}}.nii.gz folders."
        )
    return cases


@dataclass
class CheckedCases:
    """Cases that passed the header checks (``valid``) and those that did not, with the reason (``rejected``)."""

    valid: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)


def check_cases(
    cases: Sequence[dict], modalities: Sequence[str] = MODALITIES, require_label: bool = False
) -> CheckedCases:
    """Header-check each case (files exist, are single-channel 3D NIfTI on one grid); log and set aside bad ones."""
    result = CheckedCases()
    for index, case in enumerate(cases):
        case = dict(case)
        if not case.get("case"):
            case["case"] = _case_name(case, modalities, index)
        if case.get("error"):  # a DICOM study whose series cannot make the modalities
            logger.error(f"case {case['case']} skipped: {case['error']}")
            result.rejected.append({"case": case["case"], "error": case["error"]})
            continue
        if any(isinstance(case.get(m), list) for m in modalities):  # DICOM series, checked when found
            result.valid.append(case)
            continue
        required = list(modalities) + (["label"] if require_label else [])
        files = {k: case[k] for k in [*modalities, "label"] if case.get(k)}
        try:
            check_nifti_group({**{k: case.get(k) for k in required}, **files}, required)
        except InvalidInputError as e:
            logger.error(f"case {case['case']} skipped: {e}")
            result.rejected.append({"case": case["case"], "error": str(e)})
            continue
        result.valid.append(case)
    return result


def _case_name(case: dict, modalities: Sequence[str], index: int) -> str:
    for key in modalities:
        if isinstance(case.get(key), list):  # a DICOM series: named after its study's folder
            return os.path.basename(os.path.dirname(os.path.dirname(case[key][0])))
        if case.get(key):
            stem = _NIFTI.sub("", os.path.basename(case[key]))
            return re.sub(rf"_{key}$", "", stem, flags=re.IGNORECASE)
    return f"case_{index:03d}"


def build_datalist(
    dataset_dir: str,
    datalist_file: str,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    modalities: Sequence[str] = MODALITIES,
) -> dict[str, list[dict]]:
    """Discover and check labelled cases, split them by case and write the datalist JSON; return the datalist.

    Cases that fail the checks are logged and listed under ``"excluded"`` rather than stopping the run.
    """
    checked = check_cases(discover_cases(dataset_dir, modalities), modalities, require_label=True)
    if not checked.valid:
        raise ValueError(f"no usable labelled case under {dataset_dir}; problems: {checked.rejected}")
    datalist = split_cases(checked.valid, val_fraction, test_fraction, seed)
    datalist["excluded"] = checked.rejected
    write_datalist({"dataset_dir": os.path.abspath(dataset_dir), "seed": seed, **datalist}, datalist_file)
    logger.info(
        f"datalist {datalist_file}: {len(datalist['training'])} training, {len(datalist['validation'])} validation, "
        f"{len(datalist['test'])} test, {len(checked.rejected)} excluded case(s)"
    )
    return datalist
