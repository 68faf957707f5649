"""The bad-input table of issue 24: more than 30 unusual or damaged inputs a bundle, each with the outcome it must
have (``written``: its output is there; ``failed``: it is reported failed with its file named and the reason), built
into each bundle's own input layout from one good input of its demo set.

NIfTI inputs (HipMRI, BraTS, I-SPY2, BABY-AI) share one list of variants; the pathology bundle has its own list of
image variants. A variant that changes how a scan is stored (dtype, orientation, compression, name) is applied to
every file of its case and must be written; one that damages a file is applied to the case's first file only and
must fail, naming that file.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
from PIL import Image


@dataclass(frozen=True)
class Variant:
    name: str  # the case's name, and the stem of its files
    expected: str  # "written" or "failed"
    reason: str  # a fragment the failure must contain ("" for a written case)
    make: Callable[[nib.Nifti1Image | np.ndarray, Path], Path]  # writes the input at a path stem; returns the file


# --- NIfTI -----------------------------------------------------------------------------------------------------
def _save(image: nib.Nifti1Image, stem: Path, ext: str = ".nii.gz") -> Path:
    path = stem.with_name(stem.name + ext)
    nib.save(image, path)
    return path


def _like(image: nib.Nifti1Image, pixels: np.ndarray, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    return nib.Nifti1Image(pixels, image.affine if affine is None else affine)


def _pixels(image: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(image.dataobj, dtype=np.float32)


def _patch(path: Path, offset: int, fmt: str, *values) -> Path:
    data = bytearray(path.read_bytes())
    data[offset: offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(bytes(data))
    return path


def _cut(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _with(pixels: Callable[[np.ndarray], np.ndarray]) -> Callable:
    return lambda image, stem: _save(_like(image, pixels(_pixels(image))), stem)


def _one_voxel(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(p: np.ndarray) -> np.ndarray:
        p = p.copy()
        p[tuple(s // 2 for s in p.shape)] = value
        return p
    return change


def _rotated(image: nib.Nifti1Image, degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation @ image.affine


def _flipped(image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """The same scan stored with its first axis reversed (LPS-like), at the same place in space."""
    pixels = _pixels(image)[::-1].copy()
    affine = image.affine.copy()
    affine[:3, 0] *= -1
    affine[:3, 3] = image.affine[:3, :3] @ np.array([pixels.shape[0] - 1, 0, 0]) + image.affine[:3, 3]
    return pixels, affine


def _scaled_int16(image: nib.Nifti1Image, stem: Path) -> Path:
    pixels = _pixels(image)
    stored = nib.Nifti1Image(np.round((pixels - pixels.min()) * 2).astype(np.int16), image.affine)
    stored.header.set_slope_inter(0.5, float(pixels.min()))
    return _save(stored, stem)


def _qform_only(image: nib.Nifti1Image, stem: Path) -> Path:
    stored = _like(image, _pixels(image))
    stored.set_sform(None, code=0)
    stored.set_qform(image.affine, code=1)
    return _save(stored, stem)


def _nifti2(image: nib.Nifti1Image, stem: Path) -> Path:
    return _save(nib.Nifti2Image(_pixels(image), image.affine), stem)


def _big_endian(image: nib.Nifti1Image, stem: Path) -> Path:
    return _save(nib.Nifti1Image(_pixels(image), image.affine, nib.Nifti1Header(endianness=">")), stem, ".nii")


def _header_dims(image: nib.Nifti1Image, stem: Path, size: int) -> Path:
    path = _save(_like(image, _pixels(image)), stem, ".nii")
    ndim = len(image.shape)
    return _patch(path, 40, f"<{1 + ndim}h", ndim, *[size] * ndim)


def _zero_axis(image: nib.Nifti1Image, stem: Path) -> Path:
    path = _save(_like(image, _pixels(image)), stem, ".nii")
    _patch(path, 76 + 8, "<f", 0.0)  # pixdim[2]
    return _patch(path, 296, "<4f", 0, 0, 0, 0)  # srow_y


def _nan_affine(image: nib.Nifti1Image, stem: Path) -> Path:
    path = _save(_like(image, _pixels(image)), stem, ".nii")
    _patch(path, 252, "<2h", 0, 0)  # qform_code, sform_code: unknown, so the affine comes from pixdim
    return _patch(path, 76 + 4, "<f", float("nan"))  # pixdim[1]


def _truncated_gz(image: nib.Nifti1Image, stem: Path) -> Path:
    return _cut(_save(_like(image, _pixels(image)), stem))


def _truncated_nii(image: nib.Nifti1Image, stem: Path) -> Path:
    return _cut(_save(_like(image, _pixels(image)), stem, ".nii"), 0.7)


def _written_bytes(data: bytes, ext: str = ".nii.gz") -> Callable:
    """A variant that is the file ``<stem><ext>`` holding ``data``, whatever the good input."""

    def make(image, stem: Path) -> Path:
        path = stem.with_name(stem.name + ext)
        path.write_bytes(data)
        return path
    return make


def _gzip_of_noise(image: nib.Nifti1Image, stem: Path) -> Path:
    path = stem.with_name(stem.name + ".nii.gz")
    path.write_bytes(gzip.compress(np.random.default_rng(0).bytes(4096)))
    return path


def _dangling_link(image: nib.Nifti1Image, stem: Path) -> Path:
    path = stem.with_name(stem.name + ".nii.gz")
    os.symlink(stem.with_name("nowhere.nii.gz"), path)
    return path


def _renamed(ext: str) -> Callable:
    return lambda image, stem: _save(_like(image, _pixels(image)), stem, ext)


def _two_volumes(image: nib.Nifti1Image, stem: Path) -> Path:
    pixels = _pixels(image)
    return _save(_like(image, np.stack([pixels, pixels], -1)), stem)


def _rgb(image: nib.Nifti1Image, stem: Path) -> Path:
    pixels = _pixels(image)
    grey = np.clip(255 * (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1e-6), 0, 255).astype(np.uint8)
    rgb = np.zeros(grey.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"], rgb["B"] = grey, grey, grey
    return _save(nib.Nifti1Image(rgb, image.affine), stem)


def _anisotropic(image: nib.Nifti1Image, stem: Path) -> Path:
    pixels = _pixels(image)
    thick = pixels[..., ::2] if pixels.ndim == 3 else pixels[:, ::2]
    affine = image.affine.copy()
    affine[:3, thick.ndim - 1] *= 2
    return _save(_like(image, thick, affine), stem)


NIFTI_VARIANTS: list[Variant] = [
    # stored differently, the same scan: written
    Variant("plain", "written", "", _with(lambda p: p)),
    Variant("uncompressed", "written", "", _renamed(".nii")),
    Variant("int16", "written", "", _with(lambda p: np.round(p - p.min()).astype(np.int16))),
    Variant("uint8", "written", "", _with(lambda p: np.clip(255 * (p - p.min()) / max(float(np.ptp(p)), 1e-6), 0,
                                                            255).astype(np.uint8))),
    Variant("float64", "written", "", _with(lambda p: p.astype(np.float64))),
    Variant("big_endian", "written", "", _big_endian),
    Variant("scaled_int16", "written", "", _scaled_int16),
    Variant("negative", "written", "", _with(lambda p: p - 1000.0)),
    Variant("large_values", "written", "", _with(lambda p: p * 1e6)),
    Variant("flipped_axis", "written", "", lambda image, stem: _save(_like(image, *_flipped(image)), stem)),
    Variant("oblique", "written", "", lambda image, stem: _save(_like(image, _pixels(image), _rotated(image, 10)),
                                                                stem)),
    Variant("qform_only", "written", "", _qform_only),
    Variant("nifti2", "written", "", _nifti2),
    Variant("name with spaces", "written", "", _with(lambda p: p)),
    Variant("n\u00e4me_\u00fcnicode", "written", "", _with(lambda p: p)),
    Variant("thick_slices", "written", "", _anisotropic),
    # damaged, or not a usable scan: failed, naming the file
    Variant("truncated_gz", "failed", "its voxels cannot be read", _truncated_gz),
    Variant("truncated_nii", "failed", "but the file holds", _truncated_nii),
    Variant("empty_file", "failed", "not a readable NIfTI file", _written_bytes(b"")),
    Variant("text_file", "failed", "not a readable NIfTI file", _written_bytes(b"this is not an image\n")),
    Variant("gzip_noise", "failed", "not a readable NIfTI file", _gzip_of_noise),
    Variant("dangling_link", "failed", "does not exist", _dangling_link),
    Variant("zero_voxel_size", "failed", "a size that is zero, negative or not finite", _zero_axis),
    Variant("nan_voxel_size", "failed", "a size that is zero, negative or not finite", _nan_affine),
    Variant("huge_header", "failed", "its header declares 30000x30000", lambda i, s: _header_dims(i, s, 30000)),
    Variant("complex", "failed", "complex-valued voxels", _with(lambda p: p.astype(np.complex64))),
    Variant("rgb", "failed", "", _rgb),
    Variant("two_volumes", "failed", "", _two_volumes),
    Variant("nan_voxel", "failed", "NaN or infinite", _with(_one_voxel(np.nan))),
    Variant("inf_voxel", "failed", "NaN or infinite", _with(_one_voxel(np.inf))),
    Variant("all_zero", "failed", "the image is blank", _with(np.zeros_like)),
    Variant("constant", "failed", "the image is blank", _with(lambda p: np.full_like(p, 7.0))),
]


def nifti_case(variant: Variant, good: dict[str, Path], folder: Path, stems: dict[str, str]) -> dict[str, Path]:
    """Write one case of a multi-file NIfTI layout into ``folder``: ``good`` maps each file key (``flair``, ``t2``,
    ``t1w``...) to a good file, ``stems`` to the file's stem. A written variant is applied to every file, a failed one
    to the first only (the others are good copies). Return ``{key: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for index, (key, source) in enumerate(good.items()):
        stem = folder / stems[key]
        if variant.expected == "written" or index == 0:
            files[key] = variant.make(nib.load(source), stem)
        else:
            files[key] = Path(shutil.copy(source, stem.with_name(stem.name + ".nii.gz")))
    return files


# --- pathology images --------------------------------------------------------------------------------------------
def _png(pixels: np.ndarray, stem: Path, ext: str = ".png", **options) -> Path:
    path = stem.with_name(stem.name + ext)
    Image.fromarray(pixels).save(path, **options)
    return path


def _tiff(pixels: np.ndarray, stem: Path, **options) -> Path:
    path = stem.with_name(stem.name + ".tif")
    tifffile.imwrite(path, pixels, **options)
    return path


def _cut_image(ext: str) -> Callable:
    def make(pixels: np.ndarray, stem: Path) -> Path:
        return _cut(_png(pixels, stem, ext), 0.4)
    return make


def _alpha(pixels: np.ndarray, stem: Path) -> Path:
    alpha = np.full(pixels.shape[:2] + (1,), 255, np.uint8)
    alpha[:8] = 0
    return _png(np.concatenate([pixels, alpha], -1), stem)


def _palette(pixels: np.ndarray, stem: Path) -> Path:
    path = stem.with_name(stem.name + ".png")
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    return path


def _cmyk_jpeg(pixels: np.ndarray, stem: Path) -> Path:
    path = stem.with_name(stem.name + ".jpg")
    Image.fromarray(pixels).convert("CMYK").save(path)
    return path


def _huge_png(pixels: np.ndarray, stem: Path) -> Path:
    """A PNG whose header claims 100000 x 100000 pixels (PIL refuses to decode it: a decompression bomb)."""
    path = _png(pixels[:4, :4], stem)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 100000, 100000)
    path.write_bytes(bytes(data))
    return path


IMAGE_VARIANTS: list[Variant] = [
    Variant("plain", "written", "", lambda p, s: _png(p, s)),
    Variant("jpeg", "written", "", lambda p, s: _png(p, s, ".jpg", quality=95)),
    Variant("jpeg_ext", "written", "", lambda p, s: _png(p, s, ".jpeg", quality=95)),
    Variant("tiff", "written", "", lambda p, s: _tiff(p, s, photometric="rgb")),
    Variant("tiff_lzw", "written", "", lambda p, s: _tiff(p, s, photometric="rgb", compression="lzw")),
    Variant("tiff_tiled", "written", "", lambda p, s: _tiff(p, s, photometric="rgb", tile=(32, 32))),
    Variant("tiff_planar", "written", "", lambda p, s: _tiff(np.moveaxis(p, -1, 0), s, photometric="rgb",
                                                             planarconfig="separate")),
    Variant("tiff_16bit", "written", "", lambda p, s: _tiff(p.astype(np.uint16) * 257, s, photometric="rgb")),
    Variant("bigtiff", "written", "", lambda p, s: _tiff(p, s, photometric="rgb", bigtiff=True)),
    Variant("rgba", "written", "", _alpha),
    Variant("palette", "written", "", _palette),
    Variant("cmyk_jpeg", "written", "", _cmyk_jpeg),
    Variant("png_16bit_rgb", "written", "", lambda p, s: _tiff(p.astype(np.uint16), s, photometric="rgb")),
    Variant("wide", "written", "", lambda p, s: _png(np.concatenate([p, p, p], 1), s)),
    Variant("tall_odd", "written", "", lambda p, s: _png(np.concatenate([p, p], 0)[:97, :61], s)),
    Variant("name with spaces", "written", "", lambda p, s: _png(p, s)),
    Variant("n\u00e4me_\u00fcnicode", "written", "", lambda p, s: _png(p, s)),
    Variant("upper_ext", "written", "", lambda p, s: _png(p, s, ".PNG")),
    Variant("grayscale", "failed", "a grayscale image", lambda p, s: _png(p[..., 0], s)),
    Variant("grey_alpha", "failed", "", lambda p, s: _png(np.stack([p[..., 0], p[..., 0]], -1), s)),
    Variant("one_pixel", "failed", "the image is 1x1 pixels", lambda p, s: _png(p[:1, :1], s)),
    Variant("thin", "failed", "pixels", lambda p, s: _png(p[:2], s)),
    Variant("truncated_png", "failed", "not a readable image file", _cut_image(".png")),
    Variant("truncated_jpeg", "failed", "", _cut_image(".jpg")),
    Variant("truncated_tiff", "failed", "", lambda p, s: _cut(_tiff(p, s, photometric="rgb"), 0.3)),
    Variant("empty_file", "failed", "not a readable image file", _written_bytes(b"", ".png")),
    Variant("text_file", "failed", "not a readable image file", _written_bytes(b"this is not an image\n", ".png")),
    Variant("png_header_only", "failed", "not a readable image file", _written_bytes(b"\x89PNG\r\n\x1a\n", ".png")),
    Variant("decompression_bomb", "failed", "", _huge_png),
    Variant("tiff_float_negative", "failed", "", lambda p, s: _tiff(p.astype(np.float32) - 300.0, s,
                                                                    photometric="rgb")),
    Variant("tiff_stack", "failed", "", lambda p, s: _tiff(np.stack([p, p, p]), s, photometric="rgb")),
    Variant("blank_white", "written", "", lambda p, s: _png(np.full_like(p, 255), s)),
]
