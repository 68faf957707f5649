"""Output file naming for ``SaveImage``."""

from __future__ import annotations

import os
import re

__all__ = ["case_name", "case_name_formatter"]

_SUFFIX = re.compile(r"(_(flair|t1ce|t1|t2|t2w|t1w|seg|image|img))?\.(nii\.gz|nii|nrrd|mha|png)$", re.IGNORECASE)


def case_name(filename: str) -> str:
    """``/x/BraTS20_Training_001_flair.nii.gz`` -> ``BraTS20_Training_001``."""
    return _SUFFIX.sub("", os.path.basename(str(filename)))


def case_name_formatter(metadict: dict, saver) -> dict:
    """``SaveImage(output_name_formatter=...)``: name outputs after the case, not the first modality's file."""
    return {"subject": case_name(metadict.get("filename_or_obj", "case")), "idx": metadict.get("patch_index")}
