"""Output file naming: after the case, and always inside the output folder."""

from __future__ import annotations

import os

from monai.data.folder_layout import default_name_formatter

from shared.data.case_names import case_name, plain_case_name

__all__ = ["case_name_formatter", "source_name_formatter", "output_path"]


def case_name_formatter(metadict: dict, saver) -> dict:
    """``SaveImage(output_name_formatter=...)``: name outputs after the case (``meta["case"]``, set by
    ``shared.data.screened_datasets.CaseDataset``; else the case name of ``filename_or_obj``), not after the first
    modality's file. A name with a folder part is refused (see ``plain_case_name``)."""
    name = metadict.get("case") or case_name(metadict.get("filename_or_obj", "case"))
    return {"subject": plain_case_name(str(name), metadict.get("filename_or_obj")), "idx": metadict.get("patch_index")}


def source_name_formatter(metadict: dict, saver) -> dict:
    """``SaveImage(output_name_formatter=...)``: name an output after its source file, as MONAI does by default, but
    after the case when the source is a DICOM series (one file of many, whose name says nothing)."""
    source = str(metadict.get("filename_or_obj", ""))
    if source.lower().endswith((".nii", ".nii.gz")) or not metadict.get("case"):
        return default_name_formatter(metadict, saver)
    return case_name_formatter(metadict, saver)


def output_path(output_dir: str, file_name: str) -> str:
    """``output_dir/file_name``, refused with a ``ValueError`` if it would lie outside ``output_dir`` (a name with
    ``..``, an absolute path or a link out)."""
    folder = os.path.realpath(output_dir)
    path = os.path.realpath(os.path.join(folder, file_name))
    if os.path.commonpath([folder, path]) != folder or path == folder:
        raise ValueError(f"output {file_name!r} would be written outside the output folder {output_dir}; "
                         "outputs are named after the case, which must be a plain file name.")
    return path
