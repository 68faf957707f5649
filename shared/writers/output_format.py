"""Choosing a bundle's output format (``--output_format nifti|dicom|both``) in the config, by id."""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["OUTPUT_FORMATS", "SaveInFormatd"]

OUTPUT_FORMATS = ("nifti", "dicom", "both")


class SaveInFormatd:
    """Apply the ``nifti`` writer, the ``dicom`` writer or both (in that order) to a case, as ``output_format``
    says; the writers are dictionary transforms (e.g. ``SaveImaged`` and
    ``shared.writers.dicom_seg.SaveDicomSegd``). An unknown format is refused when the config is parsed."""

    def __init__(self, output_format: str, nifti: Callable[[Mapping], Mapping],
                 dicom: Callable[[Mapping], Mapping]) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format {output_format!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
        self.output_format = output_format
        self.writers = [w for f, w in (("nifti", nifti), ("dicom", dicom)) if output_format in (f, "both")]

    def __call__(self, data: Mapping) -> Mapping:
        for writer in self.writers:
            data = writer(data)
        return data
