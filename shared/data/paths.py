"""File paths in datalists: absolute, so that nothing depends on the working directory while a run lasts."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["absolute_file_paths"]


def absolute_file_paths(item: object) -> object:
    """``item`` with every string value (also inside lists) that names an existing file or folder relative to the
    working directory made absolute; anything else unchanged. Datasets and written datalists hold these, since a
    reader or library that changes the working directory (ITK does) would otherwise make other threads' relative
    paths point elsewhere."""
    if isinstance(item, Mapping):
        return {k: absolute_file_paths(v) if k != "case" else v for k, v in item.items()}
    if isinstance(item, list):
        return [absolute_file_paths(v) for v in item]
    if isinstance(item, str) and item and not os.path.isabs(item) and os.path.exists(item):
        return os.path.abspath(item)
    return item
