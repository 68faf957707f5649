"""The Baby Open Brains (BIDS) layout: T1w / T2w pairs per session, a split by subject, inference pairs."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence

from shared.data.dicom_studies import is_dicom_folder, screened_dicom_studies
from shared.data.errors import InvalidInputError
from shared.data.nifti_checks import check_nifti_dims, check_nifti_group
from shared.data.splits import split_cases, write_datalist

__all__ = ["DEFAULT_T1W_PATTERN", "session_pairs", "build_babyai_datalist", "inference_pairs", "by_thickness_and_axis",
           "registration_atlas"]

logger = logging.getLogger(__name__)
DEFAULT_T1W_PATTERN = "sub-*/ses-*/anat/sub-*_ses-*_space-INFANTMNIacpc_T1w.nii.gz"
_SUBJECT = re.compile(r"sub-([A-Za-z0-9]+)")
_T1W_SUFFIX = re.compile(r"_T1w(\.nii(\.gz)?)$")
_T2W_SUFFIX = re.compile(r"_T2w(\.nii(\.gz)?)$")
_NIFTI = re.compile(r"\.nii(\.gz)?$")


def _entity_name(path: str) -> str:
    """``.../sub-01_ses-1mo_space-X_T1w.nii.gz`` -> ``sub-01_ses-1mo``: the subject and session entities."""
    name = os.path.basename(path)
    entities = [e for e in name.split("_") if e.startswith(("sub-", "ses-"))]
    return "_".join(entities) or _NIFTI.sub("", name)


def session_pairs(dataset_dir: str, t1w_pattern: str = DEFAULT_T1W_PATTERN) -> tuple[list[dict], list[dict]]:
    """``(pairs, set_aside)``: every T1w that ``t1w_pattern`` finds under ``dataset_dir`` with the T2w of the same
    name (``_T1w`` -> ``_T2w``) as ``{"case", "subject", "t1w", "t2w"}``. A session whose files are unreadable, not
    single 3D volumes, on different grids or without a T2w is set aside with the reason."""
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist.")
    t1w_files = sorted(glob.glob(os.path.join(dataset_dir, t1w_pattern)))
    if not t1w_files:
        raise FileNotFoundError(f"no T1w file matches {t1w_pattern!r} under {dataset_dir} (set --t1w_pattern).")
    pairs, set_aside = [], []
    for t1w in t1w_files:
        case = _entity_name(t1w)
        subject = _SUBJECT.search(os.path.basename(t1w))
        t2w = _T1W_SUFFIX.sub(r"_T2w\1", t1w)
        try:
            if t2w == t1w:
                raise InvalidInputError(f"{t1w}: the name does not end in _T1w.nii(.gz); cannot name its T2w.")
            check_nifti_group({"t1w": t1w, "t2w": t2w}, required=["t1w", "t2w"])
        except InvalidInputError as e:
            logger.error(f"{case} set aside: {e}")
            set_aside.append({"case": case, "error": str(e)})
            continue
        pairs.append({"case": case, "subject": subject.group(1) if subject else case, "t1w": t1w, "t2w": t2w})
    return pairs, set_aside


def _split_by_subject(pairs: Sequence[dict], val_fraction: float, test_fraction: float, seed: int) -> dict:
    subjects = sorted({p["subject"] for p in pairs})
    split = split_cases([{"case": s} for s in subjects], val_fraction, test_fraction, seed)
    part_of = {s["case"]: part for part, members in split.items() for s in members}
    return {part: [p for p in pairs if part_of[p["subject"]] == part] for part in ("training", "validation", "test")}


def build_babyai_datalist(
    dataset_dir: str,
    datalist_file: str,
    t1w_pattern: str = DEFAULT_T1W_PATTERN,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> dict:
    """Sessions split 70/15/15 by subject (all sessions of a subject in one part, as the study split), written to
    ``datalist_file`` with the sessions set aside under ``excluded``."""
    pairs, set_aside = session_pairs(dataset_dir, t1w_pattern)
    datalist = _split_by_subject(pairs, val_fraction, test_fraction, seed)
    datalist.update({"dataset_dir": os.path.abspath(dataset_dir), "seed": seed, "excluded": set_aside})
    write_datalist(datalist, datalist_file)
    return datalist


def _t1w_of(t2w: str) -> str:
    """The session's T1w of a T2w: the same name with ``_T1w``, or, for a simulated or reconstructed T2w
    (``acq-`` / ``rec-`` entities, as ``synthesize.json`` writes), the same name without them."""
    same = _T2W_SUFFIX.sub(r"_T1w\1", t2w)
    folder, name = os.path.split(same)
    plain = os.path.join(folder, re.sub(r"_(acq|rec)-[A-Za-z0-9]+", "", name))
    return same if os.path.isfile(same) or not os.path.isfile(plain) else plain


def _pair_name(item: object, index: int) -> str:
    """A pair's name: its ``case``, else its T2w file's name without the extension."""
    if isinstance(item, Mapping) and item.get("case"):
        return str(item["case"])
    if isinstance(item, Mapping) and item.get("t2w"):
        return _NIFTI.sub("", os.path.basename(str(item["t2w"])))
    return f"pair_{index}"


def _checked_pair(item: object, index: int) -> dict:
    """An explicit ``{"t1w", "t2w"}`` pair checked from the headers: both present, readable, single 3D volumes
    (the T2w may have another grid: it is resampled onto the T1w's)."""
    if not isinstance(item, Mapping) or "t2w" not in item or "t1w" not in item:
        raise InvalidInputError(f"pair {index}: expected {{'t1w': <file>, 't2w': <file>}}, got {item!r}.")
    for key in ("t1w", "t2w"):
        path = str(item[key])
        if not os.path.isfile(path):
            raise InvalidInputError(f"{path}: the {key[:2].upper()}{key[2:]} file of pair {index} does not exist.")
        check_nifti_dims(path, ndim=3)
    return {"case": _pair_name(item, index), "t1w": str(item["t1w"]), "t2w": str(item["t2w"])}


def inference_pairs(
    dataset_dir: str | None,
    pairs: Sequence[dict] | None = None,
    demo: Callable[[], str] | None = None,
    t2w_pattern: str = "sub-*/ses-*/anat/*_T2w.nii.gz",
    dicom_series: Mapping[str, str] | None = None,
) -> tuple[list[dict], list[dict]]:
    """``(valid, set_aside)`` pairs to super-resolve: the explicit ``pairs`` (``[{"t1w", "t2w"}]``) when given, else
    every T2w that ``t2w_pattern`` finds under ``dataset_dir`` with its session's T1w (``_T2w`` -> ``_T1w``), else
    (neither given) the test sessions of the demo set that ``demo()`` builds. A pair that cannot be used (a file
    missing, unreadable, 2D or 4D) is set aside with the reason, so the run reports it and exits non-zero.

    A ``dataset_dir`` of DICOM studies gives one pair a study: its series whose descriptions match
    ``dicom_series["t1w"]`` and ``dicom_series["t2w"]`` (see ``shared.data.dicom_studies.find_dicom_studies``; the
    two are on different grids, as acquired)."""
    if pairs is None and dicom_series and dataset_dir and os.path.isdir(dataset_dir) and is_dicom_folder(dataset_dir):
        return screened_dicom_studies(dataset_dir, {k: dicom_series[k] for k in ("t1w", "t2w")}, same_grid=False)
    if pairs is None and dataset_dir is None:
        if demo is None:
            raise ValueError("give --dataset_dir (a BIDS folder) or --datalist (a list of {'t1w', 't2w'} pairs).")
        root = demo()
        sessions, _ = session_pairs(root)
        pairs = _split_by_subject(sessions, 0.15, 0.15, 0)["test"]
        logger.info(f"no --dataset_dir or --datalist given: super-resolving the demo test sessions under {root}")
    elif pairs is None:
        if not os.path.isdir(str(dataset_dir)):
            raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist.")
        found = sorted(glob.glob(os.path.join(str(dataset_dir), t2w_pattern)))
        if not found:
            raise FileNotFoundError(f"no T2w file matches {t2w_pattern!r} under {dataset_dir} (set --t2w_pattern).")
        pairs = [{"t1w": _t1w_of(t2w), "t2w": t2w} for t2w in found]
    valid, set_aside = [], []
    for index, item in enumerate(pairs):
        try:
            valid.append(_checked_pair(item, index))
        except InvalidInputError as e:
            case = _pair_name(item, index)
            logger.error(f"{case} set aside: {e}")
            set_aside.append({"case": case, "error": str(e)})
    return valid, set_aside


def by_thickness_and_axis(items: Sequence[dict], factors: Sequence[int], axes: Sequence[int]) -> list[dict]:
    """Each item once per simulated slice thickness (``factor`` x the voxel size) and slice axis."""
    return [{**item, "case": f"{item['case']}_k{f}_axis{a}", "session": item["case"], "factor": int(f), "axis": int(a)}
            for item in items for f in factors for a in axes]


def registration_atlas(atlas: str | None, register: bool, fetch_published: Callable[[], str]) -> str | None:
    """The atlas to register to: ``atlas`` (a file) when given, else the study's ``infant_atlas.nii.gz`` fetched
    from the hub by ``fetch_published()`` (only when ``register``: no download otherwise)."""
    if not register:
        return None
    if atlas:
        if not os.path.isfile(atlas):
            raise FileNotFoundError(f"--atlas {atlas}: no such file.")
        return atlas
    return fetch_published()
