"""Header-only checks of NIfTI inputs: cheap, and every error names the file and the problem (with
``shared.transforms.io.nifti_header_problem``: complex voxels, a zero voxel size, a size beyond memory)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np

from shared.data.errors import InvalidInputError
from shared.transforms.io import nifti_header_problem

__all__ = ["check_nifti_group", "check_nifti_dims"]


def _load_header(path: str) -> nib.Nifti1Image:
    if not os.path.exists(path):
        raise InvalidInputError(f"{path}: file does not exist.")
    if not os.path.isfile(path):
        raise InvalidInputError(f"{path}: is not a file.")
    try:
        image = nib.load(path)
        image.header.get_data_shape()
    except Exception as e:  # nibabel raises several types for non-NIfTI and truncated files
        raise InvalidInputError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e}).") from e
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InvalidInputError(f"{path}: is a {type(image).__name__}, expected a NIfTI file (.nii or .nii.gz).")
    problem = nifti_header_problem(image.header, path)
    if problem:
        raise InvalidInputError(problem)
    return image


def check_nifti_group(files: Mapping[str, str], required: Sequence[str], atol_mm: float = 1e-3) -> None:
    """Check that each ``required`` key names a readable single-channel 3D NIfTI and that all ``files`` share one
    voxel grid (shape and affine). Raises :class:`InvalidInputError` naming the file and the problem."""
    missing = [k for k in required if not files.get(k)]
    if missing:
        raise InvalidInputError(f"missing input(s) {missing}; got {dict(files)}.")
    reference_key, reference = None, None
    for key, path in files.items():
        image = _load_header(str(path))
        shape = image.header.get_data_shape()
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise InvalidInputError(
                f"{path}: expected one 3D volume ({key}), found shape {tuple(shape)} "
                f"({'several channels/volumes' if len(shape) > 3 else 'not 3D'})."
            )
        if reference is None:
            reference_key, reference = key, (path, shape, image.affine)
            continue
        ref_path, ref_shape, ref_affine = reference
        if tuple(shape) != tuple(ref_shape):
            raise InvalidInputError(
                f"{path}: shape {tuple(shape)} differs from {reference_key} {ref_path} shape {tuple(ref_shape)}."
            )
        if not np.allclose(image.affine, ref_affine, atol=atol_mm):
            raise InvalidInputError(f"{path}: affine differs from {reference_key} {ref_path}; co-register the inputs.")


def check_nifti_dims(path: str, ndim: int | tuple[int, ...]) -> tuple[int, ...]:
    """Check that ``path`` is a readable NIfTI image with ``ndim`` spatial dimensions (one of them, for a tuple;
    trailing singleton dimensions do not count) and return its shape without them. Raises
    :class:`InvalidInputError` naming the file: a 3D volume where a 2D slice is expected, and so on."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    shape = tuple(_load_header(str(path)).header.get_data_shape())
    while len(shape) > min(allowed) and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in allowed:
        kinds = {2: "a 2D slice", 3: "a 3D volume", 4: "a 4D series"}
        wanted = " or ".join(kinds.get(n, f"{n}D") for n in allowed)
        raise InvalidInputError(f"{path}: is {kinds.get(len(shape), f'{len(shape)}D data')} of shape {shape}; "
                                f"{wanted} is expected here.")
    return shape
