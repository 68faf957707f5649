"""Case names for logs, reports and output files."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = ["case_name", "case_label"]

_SUFFIX = re.compile(r"(_(flair|t1ce|t1|t2|t2w|t1w|seg|image|img))?\.(nii\.gz|nii|nrrd|mha|png)$", re.IGNORECASE)


def case_name(filename: str) -> str:
    """``/x/BraTS20_Training_001_flair.nii.gz`` -> ``BraTS20_Training_001``."""
    return _SUFFIX.sub("", os.path.basename(str(filename)))


def case_label(item: object, index: int) -> str:
    """A datalist item's name: its ``case`` entry, else the case name of its first file, else ``case_<index>``."""
    if isinstance(item, Mapping):
        if item.get("case"):
            return str(item["case"])
        files = [v for v in item.values() if isinstance(v, (str, os.PathLike))]
        if files:
            return case_name(str(files[0]))
    return f"case_{index:03d}"
