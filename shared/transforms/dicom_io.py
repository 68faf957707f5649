"""Reading one DICOM series as one volume, with the series checked first.

MONAI's ``PydicomReader`` reads a folder as one series: every DICOM file in it, stacked in Instance Number order.
A hospital export mixes series in a folder, numbers instances in acquisition order rather than by position, and
carries localizers, multi-frame objects and series with a slice missing. :class:`DicomSeriesReader` (a
``PydicomReader``) reads the files of one series, named as a list (or a folder holding only them), stacks them by
position along the slice normal and refuses, naming the series and the reason, whatever would not make one regular
volume. :func:`series_problem` is that check on the headers alone, for discovery before any pixel is read.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import numpy as np
import pydicom
from monai.config import PathLike
from monai.data import PydicomReader
from monai.utils import MetaKeys, ensure_tuple

from shared.transforms.io import UnreadableImageError

__all__ = [
    "ENHANCED_MR_STORAGE",
    "HEADER_TAGS",
    "slice_normal",
    "sorted_by_position",
    "series_problem",
    "dicom_files",
    "DicomSeriesReader",
]

ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
# The tags discovery reads (pydicom ``specific_tags``): identity, description and geometry, no pixels.
HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "ProtocolName", "Modality", "ImageType", "NumberOfFrames", "Rows", "Columns", "PixelSpacing",
    "ImageOrientationPatient", "ImagePositionPatient", "InstanceNumber", "PatientID", "StudyDate", "StudyID",
    "AccessionNumber", "FrameOfReferenceUID",
]
_ORIENTATION_TOLERANCE = 1e-4
_SPACING_TOLERANCE = 1e-3


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """The unit normal of slices with ``ImageOrientationPatient`` ``orientation`` (row x column direction)."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def _position(ds) -> float:
    return float(np.dot(slice_normal(ds.ImageOrientationPatient), np.asarray(ds.ImagePositionPatient, float)))


def sorted_by_position(datasets: Sequence, names: Sequence[str] | None = None) -> tuple[list, list]:
    """``datasets`` (and their file ``names``) in order of position along the slice normal."""
    names = list(names) if names is not None else [""] * len(datasets)
    order = sorted(range(len(datasets)), key=lambda i: _position(datasets[i]))
    return [datasets[i] for i in order], [names[i] for i in order]


def _describe(ds, where: str) -> str:
    number = getattr(ds, "SeriesNumber", None)
    description = getattr(ds, "SeriesDescription", "") or getattr(ds, "ProtocolName", "")
    label = f"series {number} " if number is not None else "series "
    return f"{label}'{description}' ({where})"


def series_problem(datasets: Sequence, where: str = "") -> str | None:
    """Why the headers ``datasets`` of one series cannot be stacked into one regular volume, as one line naming the
    series (``where``: its folder); ``None`` when they can: a multi-frame object (an enhanced MR), a localizer,
    fewer than two slices, a missing geometry tag, mixed orientations, pixel spacings or matrix sizes, two slices at
    one position, or unevenly spaced slices (a missing slice)."""
    if not datasets:
        return f"no DICOM images ({where})"
    first = datasets[0]
    name = _describe(first, where)
    if str(getattr(first, "SOPClassUID", "")) == ENHANCED_MR_STORAGE or int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        return (f"{name} is a multi-frame (enhanced) object, which this reader does not read: export the series as "
                "classic single-frame MR images (MR Image Storage).")
    if any("LOCALIZER" in [str(t).upper() for t in ensure_tuple(getattr(ds, "ImageType", None) or [])]
           for ds in datasets):
        return f"{name} is a localizer (ImageType LOCALIZER), not an imaging series."
    if len(datasets) < 2:
        return f"{name} has a single slice; a volume needs at least two."
    for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        missing = [ds for ds in datasets if getattr(ds, tag, None) is None]
        if missing:
            example = getattr(missing[0], "filename", None)
            return (f"{name}: {len(missing)} of {len(datasets)} images have no {tag}"
                    + (f" (e.g. {example})" if isinstance(example, str) else "")
                    + ", so the volume's geometry is unknown: a damaged file or an incomplete export.")
    series_uids = {str(ds.SeriesInstanceUID) for ds in datasets if getattr(ds, "SeriesInstanceUID", None)}
    if len(series_uids) > 1:
        return f"{name}: the files belong to {len(series_uids)} series (Series Instance UIDs); give one series."
    orientations = np.array([np.asarray(ds.ImageOrientationPatient, float) for ds in datasets])
    if np.abs(orientations - orientations[0]).max() > _ORIENTATION_TOLERANCE:
        distinct = len({tuple(np.round(o, 3)) for o in orientations})
        return f"{name} mixes {distinct} slice orientations; a volume needs one (a localizer or a multi-plane series)."
    spacings = np.array([np.asarray(ds.PixelSpacing, float) for ds in datasets])
    if np.abs(spacings - spacings[0]).max() > _SPACING_TOLERANCE:
        return f"{name} mixes pixel spacings {sorted({tuple(s) for s in spacings.round(4).tolist()})}."
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        return f"{name} mixes matrix sizes {sorted(sizes)} (rows, columns)."
    positions = np.sort([_position(ds) for ds in datasets])
    steps = np.diff(positions)
    if (steps < _SPACING_TOLERANCE).any():
        at = positions[1:][steps < _SPACING_TOLERANCE][0]
        return (f"{name} has two images at one slice position ({at:.3f} mm along the normal): several echoes, "
                "phases or repeats in one series; export them as separate series.")
    step = float(np.median(steps))
    uneven = np.abs(steps - step) > max(0.01 * step, _SPACING_TOLERANCE)
    if uneven.any():
        i = int(np.argmax(uneven))
        gap = "a missing slice" if steps[i] > 1.5 * step else "uneven slice spacing"
        return (f"{name}: {gap} between positions {positions[i]:.3f} and {positions[i + 1]:.3f} mm along the normal "
                f"(step {steps[i]:.3f} mm, elsewhere {step:.3f} mm).")
    return None


def dicom_files(folder: str) -> list[str]:
    """The DICOM files directly in ``folder`` (a DICOMDIR excluded), sorted by name."""
    return sorted(p for p in glob.glob(os.path.join(folder, "*"))
                  if os.path.isfile(p) and os.path.basename(p).upper() != "DICOMDIR" and pydicom.misc.is_dicom(p))


class DicomSeriesReader(PydicomReader):
    """``monai.data.PydicomReader`` (same arguments) that reads the files of ONE series, given as a list of files or
    a folder holding only that series, as one volume: slices stacked by position along the slice normal (not by
    Instance Number), the series first checked with :func:`series_problem` (an ``UnreadableImageError`` naming the series
    and the reason). The affine and metadata are ``PydicomReader``'s: RAS, first two axes swapped (column, row, slice).

    Use it as ``LoadImaged``'s reader for datalist entries that are lists of DICOM files, e.g. those found by
    ``shared.data.dicom_studies.find_dicom_studies``."""

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        names = [str(f) for f in ensure_tuple(filename)]
        if len(names) > 1 or (names and os.path.isdir(names[0])):
            return True
        return bool(names) and (names[0].lower().endswith(".dcm") or
                                (os.path.isfile(names[0]) and pydicom.misc.is_dicom(names[0])))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs):
        names = [str(f) for f in ensure_tuple(data)]
        if len(names) == 1 and os.path.isdir(names[0]):
            names = dicom_files(names[0])
        where = os.path.dirname(names[0]) if names else str(data)
        options = {**self.kwargs, **kwargs}
        datasets = []
        for name in names:
            try:
                datasets.append(pydicom.dcmread(name, **options))
            except Exception as e:
                raise UnreadableImageError(f"{name}: not a readable DICOM file ({type(e).__name__}: {e}); export "
                                           "the series again.") from e
        problem = series_problem(datasets, where)
        if problem:
            raise UnreadableImageError(problem)
        datasets, names = sorted_by_position(datasets, names)
        self.filenames = [names]
        self.has_series = True
        return datasets

    def _combine_dicom_series(self, data, filenames):
        arrays = []
        for ds, name in zip(data, filenames):
            try:
                arrays.append(self._get_array_data(ds, name))
            except Exception as e:
                raise UnreadableImageError(f"{name}: its pixels cannot be read ({type(e).__name__}: {e}); the file is "
                                 "truncated or damaged: export the series again.") from e
        first, last = data[0], data[-1]
        metadata = self._get_meta_dict(first)
        metadata["spacing"] = np.asarray([float(v) for v in first.PixelSpacing])
        metadata["lastImagePositionPatient"] = np.asarray(last.ImagePositionPatient, float)
        metadata[MetaKeys.SPATIAL_SHAPE] = arrays[0].shape + (len(arrays),)
        return np.stack(arrays, axis=-1), metadata
