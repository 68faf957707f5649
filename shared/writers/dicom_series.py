"""Writing a volume as a DICOM MR series: a derived series in the source study (a bundle's output), or a new study
(test and demo data made from NIfTI).

Geometry follows ``monai.data.PydicomReader``'s convention, so that reading the series back with it (or with
``shared.transforms.dicom_io.DicomSeriesReader``) gives the same array and the same RAS affine: array axis 0 runs
along a row (DICOM columns), axis 1 down the columns (rows), axis ``slice_axis`` across slices.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pydicom
from monai.config import KeysCollection
from monai.transforms import MapTransform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from shared.writers.naming import case_name_formatter, output_path

__all__ = ["STUDY_TAGS", "write_mr_series", "bundle_name_and_version", "SaveDicomSeriesd"]

# What a derived series copies from its source so that a viewer files it under the same patient and study.
STUDY_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
    "SpecificCharacterSet", "PatientPosition",
)
_LPS = np.diag([-1.0, -1.0, 1.0])


def _ds(value: float) -> str:
    return f"{value:.10g}"[:16]


def _pixels(volume: np.ndarray, integer: bool | None) -> tuple[np.ndarray, float, float]:
    """Stored pixels (uint16 or int16), slope and intercept: integer volumes exactly, others scaled to 16 bits."""
    finite = volume[np.isfinite(volume)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    fits = (low >= 0 and high <= 65535) or (low >= -32768 and high <= 32767)
    if integer is None:
        integer = bool(np.all(np.equal(np.mod(finite, 1), 0))) and fits
    if integer and not fits:
        raise ValueError(f"values {low:g}..{high:g} do not fit 16-bit integers; write them with integer=False")
    if integer:
        dtype = np.int16 if low < 0 else np.uint16
        return np.nan_to_num(volume).astype(dtype), 1.0, 0.0
    slope = (high - low) / 65535.0 or 1.0
    stored = np.rint((np.nan_to_num(volume, nan=low) - low) / slope)
    return np.clip(stored, 0, 65535).astype(np.uint16), slope, low


def write_mr_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: str,
    series_description: str,
    study: Dataset | Mapping | None = None,
    slice_axis: int = 2,
    series_number: int = 1,
    integer: bool | None = None,
    derived: bool = False,
    derivation: str | None = None,
    file_prefix: str = "IM",
) -> list[str]:
    """Write a 3D ``volume`` with RAS ``affine`` to ``folder`` as one MR Image Storage series, slicing across
    ``slice_axis`` (2: the third array axis; 0 writes a series whose slices are the first axis's planes, e.g.
    sagittal slices of an axial-first array). Return the files written, in slice order.

    Args:
        study: a source DICOM dataset or a mapping with the :data:`STUDY_TAGS` to copy (patient, study, frame of
            reference); missing ones are made (new UIDs, an anonymous patient).
        integer: store the values exactly as 16-bit integers (``True``), scale them to 16 bits with a rescale slope
            (``False``), or decide from the values (``None``).
        derived: ``ImageType`` DERIVED\\SECONDARY (a bundle's output) rather than ORIGINAL\\PRIMARY.
        derivation: the Derivation Description (what made the series).
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"write_mr_series needs a 3D volume, got shape {volume.shape}")
    order = [a for a in range(3) if a != slice_axis] + [slice_axis]
    volume = np.transpose(volume, order)
    affine = np.asarray(affine, float)
    lps = _LPS @ affine[:3, :3][:, order]
    origin = _LPS @ affine[:3, 3]
    spacing = np.linalg.norm(lps, axis=0)
    row_direction, column_direction = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    pixels, slope, intercept = _pixels(volume, integer)
    source = {tag: (study.get(tag) if isinstance(study, Mapping) else getattr(study, tag, None)) for tag in STUDY_TAGS}
    for tag in ("StudyInstanceUID", "FrameOfReferenceUID"):
        source[tag] = source[tag] or generate_uid()
        if isinstance(study, dict):
            study[tag] = source[tag]  # later series written with this dict join the same study
    now = datetime.datetime.now()
    series_uid = generate_uid()
    os.makedirs(folder, exist_ok=True)
    files = []
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if source["SpecificCharacterSet"]:
            ds.SpecificCharacterSet = source["SpecificCharacterSet"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = source["PatientName"] or "Anonymous^"
        ds.PatientID = source["PatientID"] or "anonymous"
        ds.PatientBirthDate = source["PatientBirthDate"] or ""
        ds.PatientSex = source["PatientSex"] or ""
        ds.StudyInstanceUID = source["StudyInstanceUID"]
        ds.StudyDate = source["StudyDate"] or now.strftime("%Y%m%d")
        ds.StudyTime = source["StudyTime"] or now.strftime("%H%M%S")
        ds.StudyID = source["StudyID"] or "1"
        ds.AccessionNumber = source["AccessionNumber"] or ""
        ds.ReferringPhysicianName = source["ReferringPhysicianName"] or ""
        if source["StudyDescription"]:
            ds.StudyDescription = source["StudyDescription"]
        ds.FrameOfReferenceUID = source["FrameOfReferenceUID"]
        ds.PositionReferenceIndicator = ""
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description[:64].strip()
        ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.Manufacturer = ""
        ds.ImageType = ["DERIVED", "SECONDARY"] if derived else ["ORIGINAL", "PRIMARY"]
        if derivation:
            ds.DerivationDescription = derivation[:1024]
        ds.InstanceNumber = k + 1
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
        ds.EchoTrainLength = 1
        ds.EchoTime, ds.RepetitionTime = "", ""  # type 2: unknown for a derived or converted image
        ds.PatientPosition = source["PatientPosition"] or ""
        ds.ImagePositionPatient = [_ds(v) for v in origin + lps[:, 2] * k]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(spacing[2])
        ds.SliceLocation = _ds(float(np.dot(np.cross(row_direction, column_direction), origin + lps[:, 2] * k)))
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        path = os.path.join(folder, f"{file_prefix}{k + 1:05d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def bundle_name_and_version(metadata_file: str) -> tuple[str, str]:
    """The ``name`` and ``version`` of a bundle's ``configs/metadata.json``: what made a DICOM output."""
    with open(metadata_file) as f:
        metadata = json.load(f)
    return str(metadata.get("name", "")), str(metadata.get("version", ""))


class SaveDicomSeriesd(MapTransform):
    """Write each of ``keys`` (a single-channel 3D ``MetaTensor`` with a RAS affine) as a derived MR series in the
    source series' study, to ``<output_dir>/<case>_<output_postfix>/``: a new Series Instance UID, the source's
    patient, study and frame of reference, ``ImageType`` DERIVED\\SECONDARY and ``series_description`` saying what
    made it (prefixed with the bundle's name and version when ``metadata_file``, its ``configs/metadata.json``, is
    given). The source is the DICOM file named by ``reference_key``'s ``filename_or_obj`` (the first input file
    of the case); an input that is not DICOM is refused with a ``ValueError`` naming it."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        series_description: str,
        metadata_file: str | None = None,
        reference_key: str = "image",
        output_postfix: str = "dicom",
        series_number: int = 9001,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if metadata_file:
            name, version = bundle_name_and_version(metadata_file)
            series_description = f"{name} {version}: {series_description}"
        self.output_dir, self.series_description = output_dir, series_description
        self.reference_key, self.output_postfix, self.series_number = reference_key, output_postfix, series_number

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            meta = getattr(image, "meta", {})
            source_file = str(getattr(d.get(self.reference_key), "meta", meta).get("filename_or_obj", ""))
            if not (os.path.isfile(source_file) and pydicom.misc.is_dicom(source_file)):
                raise ValueError(f"{source_file or 'the input'}: not a DICOM file, so there is no source study to "
                                 "write a DICOM series into; use output_format 'nifti' for NIfTI inputs.")
            source = pydicom.dcmread(source_file, stop_before_pixels=True)
            name = case_name_formatter(meta, None)["subject"]
            folder = output_path(self.output_dir, f"{name}_{self.output_postfix}")
            array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, np.float32)
            write_mr_series(array[0] if array.ndim == 4 else array, np.asarray(image.affine), folder,
                            self.series_description, study=source, series_number=self.series_number,
                            integer=False, derived=True, derivation=self.series_description)
        return d


def nifti_study_to_dicom(
    study_dir: str,
    series: Mapping[str, str],
    slice_axis: int = 2,
    patient_id: str | None = None,
    mixed: bool = False,
) -> dict[str, list[str]]:
    """Write NIfTI volumes as the MR series of one new DICOM study under ``study_dir``: ``series`` maps each series
    description to a NIfTI file, written in that order (series numbers 1, 2, ...) in a sub-folder each, or all in
    ``study_dir`` itself (``mixed``) as a PACS export may put them. Integer-valued volumes are stored exactly.
    Return description -> files."""
    import nibabel as nib

    patient = patient_id or os.path.basename(os.path.normpath(study_dir))
    study: dict = {"PatientID": patient, "PatientName": f"{patient}^"}
    written = {}
    for number, (description, path) in enumerate(series.items(), start=1):
        image = nib.load(path)
        folder = study_dir if mixed else os.path.join(study_dir, f"SE{number:03d}")
        written[description] = write_mr_series(
            np.asarray(image.dataobj), image.affine, folder, description, study=study, slice_axis=slice_axis,
            series_number=number, file_prefix=f"S{number:03d}_IM")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared.writers.dicom_series STUDY_DIR --series "AX FLAIR" flair.nii.gz --series ...``."""
    import argparse

    parser = argparse.ArgumentParser(description="Write NIfTI volumes as the MR series of one new DICOM study.")
    parser.add_argument("study_dir")
    parser.add_argument("--series", nargs=2, action="append", metavar=("DESCRIPTION", "NIFTI"), required=True)
    parser.add_argument("--slice_axis", type=int, default=2, help="array axis across slices (0 for sagittal slices "
                        "of an axial-first volume)")
    parser.add_argument("--patient_id", default=None)
    parser.add_argument("--mixed", action="store_true", help="all series in STUDY_DIR itself, not one folder each")
    args = parser.parse_args(argv)
    written = nifti_study_to_dicom(args.study_dir, dict(args.series), args.slice_axis, args.patient_id, args.mixed)
    for description, files in written.items():
        print(f"{description}: {len(files)} images in {os.path.dirname(files[0])}")


if __name__ == "__main__":
    main()
