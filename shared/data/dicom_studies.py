"""Finding DICOM studies in a folder and choosing each study's series for a bundle's input channels.

A folder of DICOM studies as a PACS or a scanner exports it: a study a folder, its series in sub-folders or mixed in
one, or a DICOMDIR export (``DICOM/ST000/SE000/...``); every file below the folder is looked at (headers only), and
files are grouped by Study and Series Instance UID, never by folder. Each input channel has a rule (a regular
expression matched, case-insensitively, against the Series Description, else the Protocol Name) that a config holds
and a user overrides by id. A study whose series cannot make the channels (none or two matching one channel, a
series that is not one regular volume, channels on different grids) becomes an item with an ``"error"`` naming the
study and the reason; the bundle's case checks set it aside and the run goes on with the other studies.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pydicom
from monai.utils import ensure_tuple

from shared.transforms.dicom_io import HEADER_TAGS, series_problem, sorted_by_position

__all__ = ["is_dicom_folder", "find_dicom_studies", "screened_dicom_studies", "series_geometry"]

logger = logging.getLogger(__name__)
_NOT_IMAGES = {"DICOMDIR"}
_SKIPPED_SUFFIXES = (".nii", ".nii.gz", ".json", ".txt", ".csv", ".md", ".png", ".jpg", ".npy", ".pt")


def _candidate_files(folder: str) -> list[str]:
    found = []
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            if name.upper() in _NOT_IMAGES or name.lower().endswith(_SKIPPED_SUFFIXES) or name.startswith("."):
                continue
            found.append(os.path.join(root, name))
    return sorted(found)


def is_dicom_folder(folder: str, look_at: int = 50) -> bool:
    """Whether ``folder`` (searched below) holds DICOM files and no NIfTI: the first ``look_at`` candidate files
    are checked for the DICOM preamble."""
    for root, _, names in os.walk(folder):
        if any(n.lower().endswith((".nii", ".nii.gz")) for n in names):
            return False
    return any(pydicom.misc.is_dicom(p) for p in _candidate_files(folder)[:look_at])


def series_geometry(headers: Sequence) -> tuple[tuple[int, int, int], np.ndarray]:
    """The (columns, rows, slices) shape and LPS affine of a checked series' headers, in reading order."""
    first, last = headers[0], headers[-1]
    row, column = np.asarray(first.ImageOrientationPatient[:3], float), np.asarray(first.ImageOrientationPatient[3:], float)
    spacing = [float(v) for v in first.PixelSpacing]
    affine = np.eye(4)
    affine[:3, 0] = row * spacing[1]
    affine[:3, 1] = column * spacing[0]
    affine[:3, 2] = (np.asarray(last.ImagePositionPatient, float) - np.asarray(first.ImagePositionPatient, float)) / (
        len(headers) - 1)
    affine[:3, 3] = np.asarray(first.ImagePositionPatient, float)
    return (int(first.Columns), int(first.Rows), len(headers)), affine


def _study_name(dataset_dir: str, files: Sequence[str]) -> str:
    """The top folder under ``dataset_dir`` that holds all of a study's files, or ``dataset_dir``'s own name when
    no sub-folder holds them all (one study, its series in sub-folders or mixed in ``dataset_dir``)."""
    root = os.path.abspath(dataset_dir)
    common = os.path.relpath(os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]), root)
    return os.path.basename(os.path.normpath(root)) if common == "." else common.split(os.sep)[0]


def _description(header) -> str:
    return str(getattr(header, "SeriesDescription", "") or getattr(header, "ProtocolName", "") or "")


def find_dicom_studies(
    dataset_dir: str,
    series_rules: Mapping[str, str],
    modality: str = "MR",
    same_grid: bool = True,
) -> list[dict]:
    """One item a study under ``dataset_dir``: ``{"case": name, <channel>: [files of its series, by position]...}``,
    or ``{"case": name, "error": reason}``.

    Args:
        dataset_dir: a folder of studies (a study a sub-folder, or mixed), or one study's folder.
        series_rules: channel -> regular expression searched (case-insensitive) in each series' description
            (Series Description, else Protocol Name), e.g. ``{"flair": "flair", "t2": "^(?!.*flair).*t2"}``.
        modality: only series of this Modality are candidates.
        same_grid: the channels must share one grid (shape, orientation, spacing, origin), as a network that
            stacks them as channels needs.

    The case is named after the top folder holding the study's files (``dataset_dir``'s name for a single study);
    several studies in one folder are told apart by a suffix (Study ID, else a counter).
    """
    headers: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    names: dict[tuple[str, str], list[str]] = defaultdict(list)
    unreadable = []
    for path in _candidate_files(dataset_dir):
        if not pydicom.misc.is_dicom(path):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        except Exception as e:  # a damaged file is reported with its study when the study can be told
            unreadable.append(f"{path} ({type(e).__name__}: {e})")
            continue
        study, series = str(getattr(header, "StudyInstanceUID", "")), str(getattr(header, "SeriesInstanceUID", ""))
        if not study or not series:
            unreadable.append(f"{path} (no Study or Series Instance UID)")
            continue
        headers[study][series].append(header)
        names[(study, series)].append(path)
    for line in unreadable:
        logger.warning(f"DICOM file skipped: {line}")
    if not headers:
        raise FileNotFoundError(f"no DICOM studies under {dataset_dir}"
                                + (f"; unreadable DICOM files: {'; '.join(unreadable[:5])}" if unreadable else ""))
    items, used = [], defaultdict(int)
    for study_uid, series in headers.items():
        name = _study_name(dataset_dir, [f for uid in series for f in names[(study_uid, uid)]])
        used[name] += 1
        items.append((name, study_uid, series))
    study_ids: dict[str, list[str]] = defaultdict(list)
    for name, _, series in items:
        study_ids[name].append(str(getattr(next(iter(series.values()))[0], "StudyID", "") or ""))
    seen: dict[str, int] = defaultdict(int)
    cases = []
    for name, study_uid, series in sorted(items, key=lambda t: (t[0], t[1])):
        if used[name] > 1:  # several studies in one folder: their Study IDs where those tell them apart
            seen[name] += 1
            ids = study_ids[name]
            study_id = str(getattr(next(iter(series.values()))[0], "StudyID", "") or "")
            unique = all(ids) and len(set(ids)) == len(ids)
            name = f"{name}_{study_id if unique else seen[name]}"
        cases.append(_choose_series(name, study_uid, series, names, series_rules, modality, same_grid))
    return cases


def screened_dicom_studies(dataset_dir: str, series_rules: Mapping[str, str], modality: str = "MR",
                           same_grid: bool = True) -> tuple[list[dict], list[dict]]:
    """:func:`find_dicom_studies` as ``(valid, rejected)``, each rejected study logged with its reason: what a
    bundle's discovery returns for a DICOM folder."""
    studies = find_dicom_studies(dataset_dir, series_rules, modality, same_grid)
    for study in studies:
        if "error" in study:
            logger.error(f"case {study['case']} skipped: {study['error']}")
    return [s for s in studies if "error" not in s], [s for s in studies if "error" in s]


def _is_localizer(headers: Sequence) -> bool:
    return any("LOCALIZER" in [str(t).upper() for t in ensure_tuple(getattr(h, "ImageType", None) or [])]
               for h in headers)


def _choose_series(name, study_uid, series, names, rules, modality, same_grid) -> dict:
    case: dict = {"case": name}
    chosen, problems = {}, []
    listed = "; ".join(
        f"{getattr(h[0], 'SeriesNumber', '?')} '{_description(h[0])}' ({len(h)} images)" for h in series.values())
    for channel, pattern in rules.items():
        matches = [uid for uid, h in series.items()
                   if str(getattr(h[0], "Modality", "")).upper() == modality.upper()
                   and re.search(pattern, _description(h[0]), flags=re.IGNORECASE)]
        localizers = [uid for uid in matches if _is_localizer(series[uid])]
        usable = [uid for uid in matches if uid not in localizers]
        if not usable:
            problems.append(f"no {modality} series for '{channel}' (description matching '{pattern}')"
                            + (" other than a localizer" if localizers else ""))
            continue
        if len(usable) > 1:
            both = ", ".join(f"{getattr(series[u][0], 'SeriesNumber', '?')} '{_description(series[u][0])}'"
                             for u in usable)
            problems.append(f"{len(usable)} series match '{channel}' ('{pattern}'): {both}; set a pattern that "
                            "picks one")
            continue
        chosen[channel] = usable[0]
    if not problems:
        for channel, uid in chosen.items():
            folder = os.path.dirname(names[(study_uid, uid)][0])
            problem = series_problem(series[uid], folder)
            if problem:
                problems.append(f"'{channel}': {problem}")
    if not problems and same_grid and len(chosen) > 1:
        grids = {}
        for channel, uid in chosen.items():
            ordered, _ = sorted_by_position(series[uid])
            grids[channel] = series_geometry(ordered)
        reference = next(iter(grids))
        for channel, (shape, affine) in grids.items():
            ref_shape, ref_affine = grids[reference]
            if shape != ref_shape or not np.allclose(affine, ref_affine, atol=1e-3):
                problems.append(f"'{channel}' ({'x'.join(map(str, shape))}) is not on the grid of '{reference}' "
                                f"({'x'.join(map(str, ref_shape))}, orientation, spacing and origin); the network needs "
                                "co-registered series on one grid: resample them onto one before the run")
                break
    if problems:
        case["error"] = f"DICOM study {name} (Study Instance UID {study_uid}): " + "; ".join(problems) + \
            f". Series in the study: {listed}."
        return case
    for channel, uid in chosen.items():
        _, files = sorted_by_position(series[uid], names[(study_uid, uid)])
        case[channel] = files
    return case
