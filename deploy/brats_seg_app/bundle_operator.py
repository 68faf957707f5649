"""The operator that runs the BraTS bundle's own ``inference.json`` on the series a study's selector chose."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigParser
from monai.deploy.core import Fragment, Image, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.utils import ensure_tuple

from shared.data.dicom_studies import series_geometry
from shared.transforms.dicom_io import sorted_by_position
from shared.writers.dicom_seg import labels_on_source_frames

__all__ = ["BundleSegmentationOperator", "selection_rules"]

logger = logging.getLogger(__name__)


def selection_rules(dicom_series: Mapping[str, str], modalities: Sequence[str]) -> str:
    """The SDK's ``DICOMSeriesSelectorOperator`` rules for the bundle's ``dicom_series`` patterns: one named
    selection a modality, in the bundle's channel order (the first is the series the SEG references)."""
    return json.dumps({"selections": [
        {"name": m, "conditions": {"Modality": "(?i)^MR$", "SeriesDescription": dicom_series[m]}} for m in modalities]})


def bundle_settings(bundle_root: Path) -> tuple[dict, list[str], list[int], list[dict], dict]:
    """``dicom_series``, ``modalities``, the DICOM label values, the segments and the metadata of the bundle."""
    config = json.loads((bundle_root / "configs" / "inference.json").read_text())
    metadata = json.loads((bundle_root / "configs" / "metadata.json").read_text())
    return (config["dicom_series"], config["modalities"], config["save_dicom_seg"]["label_values"],
            config["segments"], metadata)


class BundleSegmentationOperator(Operator):
    """Stack the selected series into the bundle's input and run its ``inference.json`` (preprocessing, network,
    inverse) on them; emit the label map on the frames of the first selection's series, as segment numbers
    (``label_values`` 1..N), for the SDK's ``DICOMSegmentationWriterOperator``.

    One study a run, as the SDK's writer writes one. A modality with no series, or several (other than
    localizers), is an error naming the study and the series.

    Named input: ``study_selected_series_list``. Named outputs: ``seg_image``, and ``study_selected_series_list``
    holding the chosen series only (the first-selection series first), for the SEG writer to reference.
    """

    def __init__(self, fragment: Fragment, *args, bundle_root: Path, weights: str | None = None,
                 overrides: Mapping | None = None, **kwargs) -> None:
        self.bundle_root = Path(bundle_root)
        self.weights = weights
        self.overrides = dict(overrides or {})
        _, self.modalities, self.label_values, _, _ = bundle_settings(self.bundle_root)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("seg_image")
        spec.output("study_selected_series_list")

    def compute(self, op_input, op_output, context) -> None:
        studies = op_input.receive("study_selected_series_list")
        if not studies:
            raise ValueError("no DICOM study with MR series matching the bundle's dicom_series patterns in the input")
        study = studies[0]
        name = str(getattr(study.study, "StudyInstanceUID", "study"))
        series = self.chosen_series(study, name)
        case = {"case": "study", **{m: [str(i.get_native_sop_instance().filename) for i in s.get_sop_instances()]
                                    for m, s in series.items()}}
        labels, affine = self.infer(case, name)
        sources = [i.get_native_sop_instance() for i in series[self.modalities[0]].get_sop_instances()]
        frames = labels_on_source_frames(labels, affine, sources)
        segments = np.zeros(frames.shape, np.uint8)
        for number, value in enumerate(self.label_values, start=1):
            segments[frames == value] = number
        chosen = StudySelectedSeries(study.study)
        for modality in self.modalities:
            chosen.add_selected_series(SelectedSeries(modality, series[modality]))
        op_output.emit(Image(segments), "seg_image")
        op_output.emit([chosen], "study_selected_series_list")

    def chosen_series(self, study, name: str) -> dict:
        chosen = {}
        for modality in self.modalities:
            matches = [s.series for s in study.selected_series if s.selection_name == modality
                       and not _is_localizer(s.series)]
            if len(matches) != 1:
                found = ", ".join(f"'{getattr(s, 'SeriesDescription', '')}'" for s in matches) or "none"
                raise ValueError(f"DICOM study {name}: {len(matches)} MR series for '{modality}' ({found}); the "
                                 "bundle needs exactly one: set its dicom_series pattern to pick one")
            chosen[modality] = matches[0]
        grids = {m: series_geometry(sorted_by_position([i.get_native_sop_instance() for i in s.get_sop_instances()])[0])
                 for m, s in chosen.items()}
        (first, (shape, affine)), *others = grids.items()
        for modality, (other_shape, other_affine) in others:
            if other_shape != shape or not np.allclose(other_affine, affine, atol=1e-3):
                raise ValueError(f"DICOM study {name}: '{modality}' is not on the grid of '{first}' (shape, "
                                 "orientation, spacing and origin); the network needs co-registered series")
        return chosen

    def infer(self, case: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
        if str(self.bundle_root) not in sys.path:
            sys.path.insert(0, str(self.bundle_root))  # the bundle's scripts, as monai.bundle run does
        with tempfile.TemporaryDirectory(prefix="brats_seg_app_") as out:
            parser = ConfigParser()
            parser.read_config(str(self.bundle_root / "configs" / "inference.json"))
            parser.update({"bundle_root": str(self.bundle_root), "datalist": [case], "output_dir": out,
                           "output_format": "nifti", **({"checkpoint": self.weights} if self.weights else {}),
                           **self.overrides})
            try:
                parser.get_parsed_content("run")
            except Exception as e:  # the evaluator's CasesFailedError: the reason is in its report
                report_file = Path(out) / "inference_report.json"
                failed = json.loads(report_file.read_text()).get("failed") if report_file.is_file() else None
                if failed:
                    raise ValueError(f"DICOM study {name}: {failed[0]['error']}") from e
                raise
            prediction = nib.load(Path(out) / "study_pred.nii.gz")
            return np.asarray(prediction.dataobj), prediction.affine


def _is_localizer(series) -> bool:
    instances = series.get_sop_instances()
    image_type = getattr(instances[0].get_native_sop_instance(), "ImageType", None) if instances else None
    return "LOCALIZER" in [str(t).upper() for t in ensure_tuple(image_type or [])]


def default_bundle_root() -> Path:
    """``BRATS_BUNDLE_ROOT``, else a ``bundle`` folder beside this app (a packaged copy), else this repository's."""
    if os.environ.get("BRATS_BUNDLE_ROOT"):
        return Path(os.environ["BRATS_BUNDLE_ROOT"])
    beside = Path(__file__).parent / "bundle"
    return beside if beside.is_dir() else Path(__file__).resolve().parents[2] / "bundles" / "brats_mri_slice_segmentation"
