"""Deterministic case-level splits written to a datalist JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["split_cases", "write_datalist", "add_excluded"]


def split_cases(
    cases: Sequence[dict], val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, list[dict]]:
    """Shuffle cases (sorted by ``case`` first, so the split depends only on the names and the seed) and split them
    into ``training`` / ``validation`` / ``test``; validation and test get at least one case each when fractions > 0."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"need 0 <= val_fraction, test_fraction and a sum < 1; got {val_fraction}, {test_fraction}.")
    ordered = sorted(cases, key=lambda c: c["case"])
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val = max(1, round(val_fraction * len(ordered))) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * len(ordered))) if test_fraction > 0 else 0
    if n_val + n_test >= len(ordered):
        raise ValueError(f"{len(ordered)} case(s) are too few for a split with validation and test cases.")
    picked = [ordered[i] for i in order]
    split = {
        "validation": picked[:n_val],
        "test": picked[n_val : n_val + n_test],
        "training": picked[n_val + n_test :],
    }
    return {k: sorted(v, key=lambda c: c["case"]) for k, v in split.items()}


def write_datalist(datalist: dict, path: str) -> str:
    """Write ``datalist`` as JSON (creating folders, replacing the file atomically: torchrun ranks write it too);
    return ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        json.dump(datalist, f, indent=2)
    os.replace(partial, path)
    return path


def add_excluded(path: str, entries: Sequence[dict]) -> None:
    """Add ``entries`` (``{"case", "error", ...}``) to the ``excluded`` list of the datalist JSON at ``path``, once
    each: the cases set aside after the split was written (e.g. unusable content found when they were cached)."""
    with open(path) as f:
        datalist = json.load(f)
    excluded = datalist.setdefault("excluded", [])
    excluded += [e for e in entries if e not in excluded]
    write_datalist(datalist, path)
