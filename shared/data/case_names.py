"""Case names for logs, reports and output files."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

__all__ = ["case_name", "case_label", "checked_case_names", "plain_case_name"]

_SUFFIX = re.compile(r"(_(flair|t1ce|t1|t2|t2w|t1w|seg|image|img))?\.(nii\.gz|nii|nrrd|mha|png)$", re.IGNORECASE)


def case_name(filename: str) -> str:
    """``/x/BraTS20_Training_001_flair.nii.gz`` -> ``BraTS20_Training_001``."""
    return _SUFFIX.sub("", os.path.basename(str(filename)))


def case_label(item: object, index: int) -> str:
    """A datalist item's name: its ``case`` entry, else the case name of its first file, else ``case_<index>``."""
    if isinstance(item, Mapping):
        if item.get("case"):
            return str(item["case"])
        files = _files(item)
        if files:
            return case_name(files[0])
    return f"case_{index:03d}"


def plain_case_name(name: str, source: object = None) -> str:
    """``name`` if it can name output files inside an output folder (no folder part, not ``.`` or ``..``), else a
    ``ValueError`` naming ``source``."""
    if not name or name in (".", "..") or os.path.isabs(name) or "/" in name or "\\" in name:
        raise ValueError(f"case name {name!r}{f' of {source}' if source is not None else ''} cannot name output files: "
                         "a case name is a file name without a folder (no '/', '\\', '.' or '..'); give the case "
                         "another name.")
    return name


def checked_case_names(items: Sequence[Mapping]) -> list[dict]:
    """``items`` with every item's ``case`` set (see :func:`case_label`) and checked before a run: each must be a
    plain name (:func:`plain_case_name`) and no two items may share one, since their outputs would overwrite each
    other. A ``ValueError`` names the inputs that collide."""
    named = [{**item, "case": case_label(item, index)} for index, item in enumerate(items)]
    inputs: dict[str, list] = {}
    for item in named:
        plain_case_name(item["case"], _files(item) or item)
        inputs.setdefault(item["case"], []).append(_files(item) or item)
    collisions = {name: files for name, files in inputs.items() if len(files) > 1}
    if collisions:
        listed = "; ".join(f"{name!r}: {files}" for name, files in collisions.items())
        raise ValueError(f"{sum(map(len, collisions.values()))} inputs share a case name, so their outputs would "
                         f"overwrite each other: {listed}. Rename the files, or give each a distinct 'case' in the "
                         "datalist.")
    return named


def _files(item: Mapping) -> list[str]:
    return [str(v) for k, v in item.items() if k != "case" and isinstance(v, (str, os.PathLike))]
