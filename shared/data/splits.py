"""Deterministic case-level splits written to a datalist JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from shared.data.paths import absolute_file_paths

__all__ = ["split_cases", "fold_split", "write_datalist", "add_excluded"]


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


def fold_split(
    cases: Sequence[dict], folds: int, fold: int, val_fraction: float, seed: int = 0
) -> dict[str, list[dict]]:
    """Fold ``fold`` of ``folds``-fold cross-validation by case: the cases (sorted by ``case``, shuffled by ``seed``)
    are dealt into ``folds`` groups of nearly equal size; group ``fold`` is the ``test`` set, and ``validation`` takes
    ``val_fraction`` (at least one) of the other cases, drawn by ``seed`` and ``fold``. Every case is tested in exactly
    one fold; the folds depend only on the case names, ``folds`` and ``seed``."""
    if not 2 <= folds <= len(cases):
        raise ValueError(f"need 2 <= folds <= the number of cases ({len(cases)}); got folds={folds}.")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}; got {fold}.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"need 0 <= val_fraction < 1; got {val_fraction}.")
    ordered = sorted(cases, key=lambda c: c["case"])
    order = np.random.default_rng(seed).permutation(len(ordered))
    test = [ordered[i] for i in order[fold::folds]]
    rest = [ordered[i] for i in sorted(set(order) - set(order[fold::folds]))]
    n_val = max(1, round(val_fraction * len(rest))) if val_fraction > 0 else 0
    if n_val >= len(rest):
        raise ValueError(f"{len(cases)} case(s) are too few for {folds} folds with validation cases.")
    picked = [rest[i] for i in np.random.default_rng([seed, fold]).permutation(len(rest))]
    split = {"validation": picked[:n_val], "test": test, "training": picked[n_val:]}
    return {k: sorted(v, key=lambda c: c["case"]) for k, v in split.items()}


def write_datalist(datalist: dict, path: str) -> str:
    """Write ``datalist`` as JSON (creating folders, replacing the file atomically: torchrun ranks write it too),
    with its files' paths absolute (``shared.data.paths.absolute_file_paths``); return ``path``."""
    datalist = absolute_file_paths(datalist)
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
