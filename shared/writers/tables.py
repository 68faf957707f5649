"""The tables a run writes beside its outputs: CSV with a header row, and indented JSON."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["write_csv", "write_json"]


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """``header`` then ``rows`` to ``path`` (its folder is created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_json(path: str, content: Any) -> None:
    """``content`` as indented JSON to ``path`` (its folder is created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
