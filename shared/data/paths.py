"""File paths: absolute in datalists, so that nothing depends on the working directory while a run lasts; and the
paths a bundle config builds from its ``bundle_root`` (components instead of ``$`` string concatenation)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

__all__ = ["absolute_file_paths", "join_path", "timestamped_dir"]


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


def join_path(base: str, name: str) -> str:
    """``name`` inside ``base`` (``os.path.join``): ``{"_target_": "shared.data.paths.join_path", "base":
    "@bundle_root", "name": "models"}``."""
    return os.path.join(str(base), str(name))


def timestamped_dir(base: str, name: str) -> str:
    """``base/name/<YYYYmmdd-HHMMSS>``: one folder a run (e.g. of TensorBoard logs), named by its start time."""
    return os.path.join(str(base), str(name), time.strftime("%Y%m%d-%H%M%S"))
