"""Deterministic case-level splits written to a datalist JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["split_cases", "write_datalist"]


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
    """Write ``datalist`` as JSON (creating folders); return ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(datalist, f, indent=2)
    return path
