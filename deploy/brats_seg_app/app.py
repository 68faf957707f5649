"""BraTS brain tumour segmentation as a MONAI Deploy application.

    python -m deploy.brats_seg_app -i <DICOM study folder> -o <output folder> [-m <weights .pt>]

DICOM loader -> series selector (the bundle's ``dicom_series`` patterns as selection rules) -> the bundle's own
``inference.json`` on the FLAIR, T1Gd and T2 series (``BundleSegmentationOperator``) -> DICOM SEG writer (on the
FLAIR series' frames, the bundle's segments and codes, its name and version). ``-m`` names the weights, a file or a folder holding
``model.pt`` (default: the bundle's ``models/model.pt``); ``BRATS_APP_OVERRIDES`` (a JSON object of config ids) overrides the bundle's config.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from holoscan.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_utils import ModelInfo
from pydicom.sr.codedict import codes

from deploy.brats_seg_app.bundle_operator import (BundleSegmentationOperator, bundle_settings, default_bundle_root,
                                                  selection_rules)

__all__ = ["BraTSSegmentationApp", "main"]


class BraTSSegmentationApp(Application):
    """DICOM MR study -> the BraTS bundle -> DICOM Segmentation."""

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        bundle_root = default_bundle_root()
        dicom_series, modalities, _, segments, metadata = bundle_settings(bundle_root)
        model = str(context.model_path or "")
        weights = model if model and Path(model).is_file() else None
        if model and Path(model).is_dir() and (Path(model) / "model.pt").is_file():  # a packaged app's models folder
            weights = str(Path(model) / "model.pt")
        overrides = json.loads(os.environ.get("BRATS_APP_OVERRIDES", "{}"))
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(context.input_path),
                                         name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=selection_rules(dicom_series, modalities), all_matched=True,
                                               name="series_selector")
        bundle = BundleSegmentationOperator(self, bundle_root=bundle_root, weights=weights, overrides=overrides,
                                            name="brats_bundle")
        descriptions = [
            SegmentDescription(segment_label=s["label"],
                               segmented_property_category=getattr(codes.SCT, s.get("category",
                                                                                  "MorphologicallyAbnormalStructure")),
                               segmented_property_type=getattr(codes.SCT, s["type"]),
                               algorithm_name=metadata["name"], algorithm_version=metadata["version"])
            for s in segments]
        writer = DICOMSegmentationWriterOperator(
            self, segment_descriptions=descriptions, output_folder=Path(context.output_path),
            model_info=ModelInfo(creator="MONAI bundle", name=metadata["name"], version=metadata["version"]),
            omit_empty_frames=False, name="seg_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, bundle, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(bundle, writer, {("seg_image", "seg_image")})
        self.add_flow(bundle, writer, {("study_selected_series_list", "study_selected_series_list")})


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    BraTSSegmentationApp().run()


if __name__ == "__main__":
    main()
