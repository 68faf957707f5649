"""Writing a label map as a DICOM Segmentation (highdicom) on the frames of the series it was inferred from.

A viewer (OHIF, 3D Slicer, a PACS) overlays a SEG on its source series: the SEG references each source instance and
holds one frame per source frame and segment, on that frame's geometry. :class:`SaveDicomSegd` samples the label
map, which is on the source grid after the bundle's ``Invertd``, at the centre of every source pixel through the
two affines, so the frames land on the source geometry whatever the series' orientation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
import pydicom
from monai.config import KeysCollection
from monai.transforms import MapTransform
from pydicom.sr.codedict import codes

from shared.transforms.dicom_io import dicom_files, sorted_by_position
from shared.writers.dicom_series import bundle_name_and_version
from shared.writers.naming import case_name_formatter, output_path

__all__ = ["segment_descriptions", "labels_on_source_frames", "SaveDicomSegd"]

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied DICOM module otherwise


def _code(name: str):
    try:
        return getattr(codes.SCT, name)
    except AttributeError as e:
        raise ValueError(f"{name!r} is not a SNOMED CT keyword pydicom knows (pydicom.sr.codedict codes.SCT), e.g. "
                         "'Neoplasm', 'Necrosis', 'Edema'") from e


def segment_descriptions(segments: Sequence[Mapping], algorithm: str, version: str) -> list:
    """highdicom ``SegmentDescription``s, numbered 1.. in order, from ``segments``: each ``{"label": text,
    "category": SCT keyword (default "MorphologicallyAbnormalStructure"), "type": SCT keyword, "region": optional
    SCT keyword of the anatomic region}``, all made by ``algorithm`` ``version``."""
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm, version=version, family=codes.cid7162.ArtificialIntelligence)
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(segment["label"])[:64],
            segmented_property_category=_code(segment.get("category", "MorphologicallyAbnormalStructure")),
            segmented_property_type=_code(segment["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            anatomic_regions=[_code(segment["region"])] if segment.get("region") else None,
        )
        for number, segment in enumerate(segments, start=1)
    ]


def labels_on_source_frames(labels: np.ndarray, affine_ras: np.ndarray, sources: Sequence) -> np.ndarray:
    """(frames, rows, columns) of ``labels`` (a 3D map with RAS ``affine_ras``) at the centre of every pixel of the
    ``sources`` (DICOM datasets of single frames), nearest voxel; 0 outside the map."""
    to_voxel = np.linalg.inv(_LPS @ np.asarray(affine_ras, float))
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), labels.dtype)
    for f, ds in enumerate(sources):
        rows, columns = int(ds.Rows), int(ds.Columns)
        row_direction = np.asarray(ds.ImageOrientationPatient[:3], float)
        column_direction = np.asarray(ds.ImageOrientationPatient[3:], float)
        spacing = [float(v) for v in ds.PixelSpacing]
        pixel_to_world = np.eye(4)
        pixel_to_world[:3, 0] = column_direction * spacing[0]  # along rows (r)
        pixel_to_world[:3, 1] = row_direction * spacing[1]  # along columns (c)
        pixel_to_world[:3, 3] = np.asarray(ds.ImagePositionPatient, float)
        r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
        points = np.stack([r.ravel(), c.ravel(), np.zeros(r.size), np.ones(r.size)])
        voxels = np.rint((to_voxel @ pixel_to_world @ points)[:3]).astype(np.int64)
        inside = np.all((voxels >= 0) & (voxels < np.asarray(labels.shape)[:, None]), axis=0)
        values = np.zeros(r.size, labels.dtype)
        values[inside] = labels[voxels[0, inside], voxels[1, inside], voxels[2, inside]]
        frames[f] = values.reshape(rows, columns)
    return frames


class SaveDicomSegd(MapTransform):
    """Write each of ``keys`` (a single-channel label map with values ``label_values``, on the source grid) as a
    DICOM Segmentation at ``<output_dir>/<case>_seg.dcm``: one segment per label value (``segments``, in the same
    order: name and SNOMED CT codes, see :func:`segment_descriptions`), referencing every instance of the source
    series and on its frames' geometry, made by ``algorithm`` ``version`` (by default the ``name`` and ``version``
    in ``metadata_file``, the bundle's ``configs/metadata.json``).

    The source series is the one of the DICOM file that ``reference_key``'s ``filename_or_obj`` names (the first
    file of the case's first channel): its folder's files of that Series Instance UID. A NIfTI input is refused
    with a ``ValueError`` naming it."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        label_values: Sequence[int],
        segments: Sequence[Mapping],
        metadata_file: str | None = None,
        algorithm: str | None = None,
        version: str | None = None,
        reference_key: str = "image",
        output_postfix: str = "seg",
        series_number: int = 9000,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(label_values) != len(segments):
            raise ValueError(f"{len(label_values)} label values but {len(segments)} segments: give one segment "
                             "(label and codes) per label value")
        if metadata_file:
            name, bundle_version = bundle_name_and_version(metadata_file)
            algorithm, version = algorithm or name, version or bundle_version
        if not algorithm or not version:
            raise ValueError("SaveDicomSegd needs the algorithm's name and version: give metadata_file (the bundle's "
                             "configs/metadata.json) or algorithm and version")
        self.output_dir, self.label_values = output_dir, [int(v) for v in label_values]
        self.descriptions = segment_descriptions(segments, algorithm, version)
        self.algorithm, self.version = algorithm, version
        self.reference_key, self.output_postfix, self.series_number = reference_key, output_postfix, series_number

    def source_series(self, source_file: str) -> list:
        """The datasets of ``source_file``'s series in its folder, by position along the slice normal."""
        if not (os.path.isfile(source_file) and pydicom.misc.is_dicom(source_file)):
            raise ValueError(f"{source_file or 'the input'}: not a DICOM file, so there is no source series for a "
                             "DICOM SEG to reference; use output_format 'nifti' for NIfTI inputs.")
        series_uid = pydicom.dcmread(source_file, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        series = []
        for path in dicom_files(os.path.dirname(source_file)):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if getattr(ds, "SeriesInstanceUID", None) == series_uid.SeriesInstanceUID:
                series.append(ds)
        return sorted_by_position(series)[0]

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            meta = getattr(pred, "meta", {})
            reference = getattr(d.get(self.reference_key), "meta", meta)
            sources = self.source_series(str(reference.get("filename_or_obj", meta.get("filename_or_obj", ""))))
            labels = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
            labels = labels[0] if labels.ndim == 4 else labels
            frames = labels_on_source_frames(labels, np.asarray(pred.affine), sources)
            segment_numbers = np.zeros_like(frames, dtype=np.uint8)
            for number, value in enumerate(self.label_values, start=1):
                segment_numbers[frames == value] = number
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=segment_numbers,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=self.descriptions,
                series_instance_uid=hd.UID(),
                series_number=self.series_number,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="MONAI bundle",
                manufacturer_model_name=self.algorithm[:64],
                software_versions=self.version,
                device_serial_number="0",
                series_description=f"{self.algorithm} {self.version} segmentation"[:64],
                omit_empty_frames=False,
            )
            name = case_name_formatter(meta, None)["subject"]
            os.makedirs(self.output_dir, exist_ok=True)
            seg.save_as(output_path(self.output_dir, f"{name}_{self.output_postfix}.dcm"))
        return d
