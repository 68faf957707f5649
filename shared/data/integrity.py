"""Weights files that carry their sha256: written beside them when saved (``<file>.sha256``, the format of
``sha256sum``, so ``sha256sum -c`` checks it too), checked when loaded."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

__all__ = ["WeightsIntegrityError", "sha256_file", "sidecar_path", "write_sha256", "recorded_sha256",
           "verify_sha256", "save_with_sha256"]

logger = logging.getLogger(__name__)


class WeightsIntegrityError(RuntimeError):
    """A weights file does not match the sha256 recorded for it: it changed after it was written."""


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.sha256")


def _replace_with(path: Path, write) -> None:
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def write_sha256(path: str | os.PathLike, digest: str | None = None) -> str:
    """Record ``path``'s sha256 (computed unless given) in its sidecar file; return it."""
    digest = digest or sha256_file(path)
    _replace_with(sidecar_path(path), lambda p: p.write_text(f"{digest}  {Path(path).name}\n"))
    return digest


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 recorded beside ``path``, or ``None`` when it has no sidecar."""
    sidecar = sidecar_path(path)
    return sidecar.read_text().split()[0] if sidecar.is_file() else None


def verify_sha256(path: str | os.PathLike, expected: str | None = None) -> bool:
    """Check ``path`` against ``expected`` (default: its sidecar). Raise :class:`WeightsIntegrityError` naming the
    file on a mismatch; return ``False`` when there is nothing to check against, ``True`` when it matches."""
    from monai.apps.utils import check_hash

    expected = expected or recorded_sha256(path)
    if expected is None:
        logger.warning(f"{path}: no sha256 is recorded beside it ({sidecar_path(path).name}); not verified.")
        return False
    if not check_hash(path, expected, "sha256"):
        raise WeightsIntegrityError(
            f"{path}: its sha256 is not the {expected} recorded when it was written: the file was modified or "
            f"damaged. Nothing was loaded from it; train again, or fetch the published weights."
        )
    return True


def save_with_sha256(obj: object, path: str | os.PathLike) -> str:
    """``torch.save`` ``obj`` to ``path`` atomically (a partial file, then a rename) and record its sha256.

    The old sidecar goes first, so a crash part-way leaves a file that is unverified, never one that fails its check.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    digest = sha256_file(partial)
    sidecar_path(path).unlink(missing_ok=True)
    os.replace(partial, path)
    return write_sha256(path, digest)
