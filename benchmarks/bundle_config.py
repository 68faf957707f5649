"""A bundle's configs parsed in the benchmark process, as ``monai.bundle run`` would parse them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["REPO", "bundle_dir", "parse"]

REPO = Path(__file__).resolve().parents[1]


def bundle_dir(name: str) -> Path:
    return REPO / "bundles" / name


def parse(name: str, configs: Sequence[str], overrides: dict[str, Any] | None = None) -> ConfigParser:
    """``configs`` (file names under the bundle's ``configs/``, stacked in order) with ``overrides`` (ids to Python
    values); the bundle's ``scripts`` package becomes importable, as it is for ``monai.bundle run``. One process
    benchmarks one bundle, since every bundle's package is named ``scripts``."""
    root = bundle_dir(name)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / c) for c in configs])
    parser.update({"bundle_root": str(root), **(overrides or {})})
    return parser
