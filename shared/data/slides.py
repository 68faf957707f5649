"""Inputs of the chained inference: plain images (PNG, JPEG, TIFF) and whole-slide images (SVS, pyramidal TIFF),
opened as sources of RGB uint8 regions at one resolution level, and the tissue mask and region plan that decide
which parts of a slide are processed.

- Plain images are read whole (PIL; TIFF through ``tifffile``) and brought to RGB uint8: RGBA is composited over
  white, 16-bit (or other integer / float) pixels are rescaled to 8 bits with a warning; grayscale, images smaller
  than ``min_size`` and unreadable files are refused with an ``UnusableImageError`` that names the file.
- Whole-slide images are read with MONAI's WSI reader: OpenSlide (when it is installed) for the vendors' formats
  its drivers recognise, else :class:`PyramidTiffWSIReader`, MONAI's ``tifffile`` backend with two fixes for real
  slides: the levels are the
  image pyramid's (an SVS file's thumbnail, label and macro pages are not levels; tifffile-written pyramids keep their
  levels in sub-IFDs), and a region read decodes only the tiles (or strips) it covers, where MONAI's backend decodes
  the whole level for every patch.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
from monai.config import KeysCollection
from monai.data import WSIReader
from monai.data.wsi_reader import TiffFileWSIReader
from monai.transforms import ForegroundMask, MapTransform
from monai.utils import optional_import
from PIL import Image
from skimage import filters, morphology

from shared.transforms.validation import UnusableImageError

__all__ = [
    "IMAGE_SUFFIXES", "SLIDE_SUFFIXES", "inference_items", "read_image_pixels", "rgb_uint8", "is_slide",
    "PyramidTiffWSIReader", "slide_reader", "InputImage", "ArrayImage", "SlideImage", "OpenInputd", "tissue_mask",
    "Region", "plan_regions",
]

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SLIDE_SUFFIXES = (".svs",)  # and .tif / .tiff files that hold a pyramid (see is_slide)
SLIDE_MIN_PIXELS = 1 << 28  # a single-level tiled TIFF larger than this (16384^2) is read as a slide too
TIFF_SUFFIXES = (".tif", ".tiff", ".svs")


# --- discovery ----------------------------------------------------------------------------------------------------

def inference_items(dataset_dir: str) -> tuple[list[dict], list[dict]]:
    """``(items, set_aside)`` for a folder of images and slides (its files with a suffix of :data:`IMAGE_SUFFIXES`
    or :data:`SLIDE_SUFFIXES`, sorted; other files are ignored) or a single file: ``{"image": path, "case":
    name}``, the case named after the file's stem (``<stem>_<suffix>`` when two files share a stem). Nothing is set
    aside here: every file is checked when it is opened, and a bad one fails its case only."""
    if os.path.isfile(dataset_dir):
        paths = [dataset_dir]
    elif os.path.isdir(dataset_dir):
        suffixes = IMAGE_SUFFIXES + SLIDE_SUFFIXES
        paths = sorted(os.path.join(dataset_dir, n) for n in os.listdir(dataset_dir)
                       if n.lower().endswith(suffixes) and _is_file_or_link(os.path.join(dataset_dir, n)))
        if not paths:
            raise FileNotFoundError(f"no images or slides ({', '.join(suffixes)}) in {dataset_dir}.")
    else:
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist.")
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    items = []
    for path, stem in zip(paths, stems):
        suffix = os.path.splitext(path)[1].lstrip(".").lower()
        items.append({"image": path, "case": f"{stem}_{suffix}" if stems.count(stem) > 1 else stem})
    logger.info(f"{len(items)} input(s) from {dataset_dir}")
    return items, []


def _is_file_or_link(path: str) -> bool:
    """A file, or a link (a broken one too: it is then reported, not silently skipped)."""
    return os.path.isfile(path) or os.path.islink(path)


# --- plain images -------------------------------------------------------------------------------------------------

def _tiff_pixels(path: str) -> np.ndarray:
    """The first image of a TIFF as ``(H, W[, S])``: samples last, length-1 axes dropped."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        pixels, axes = series.asarray(), series.axes
    axes = axes.replace("C", "S")
    kept = [i for i, a in enumerate(axes) if a in "YXS" or pixels.shape[i] > 1]
    pixels = pixels.reshape([pixels.shape[i] for i in kept])
    axes = "".join(axes[i] for i in kept)
    if set(axes) - set("YXS"):
        raise UnusableImageError(f"{path}: a TIFF with axes {axes} and shape {pixels.shape}; one 2D RGB image is "
                                 "expected.")
    return np.moveaxis(pixels, axes.index("S"), -1) if "S" in axes and axes[-1] != "S" else pixels


def _pil_pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        return np.asarray(image)


def read_image_pixels(path: str) -> np.ndarray:
    """The pixels of a plain image file as stored: ``(H, W)`` or ``(H, W, channels)``, any dtype. Raises
    ``UnusableImageError`` naming the file when it cannot be decoded."""
    try:
        if path.lower().endswith(TIFF_SUFFIXES):
            return _tiff_pixels(path)
        return _pil_pixels(path)
    except UnusableImageError:
        raise
    except Exception as e:  # PIL and tifffile raise many types for damaged files
        raise UnusableImageError(f"{path}: not a readable image file ({type(e).__name__}: {e}).") from None


def _to_8_bit(pixels: np.ndarray, name: str) -> np.ndarray:
    """Integer pixels rescaled from their bit depth (the smallest of 8, 9, ... bits that holds the largest value),
    float pixels from [0, 1] or [0, 255], to 0..255 float."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32)
    if pixels.dtype == bool:
        raise UnusableImageError(f"{name}: a 1-bit image; an 8-bit RGB image is expected.")
    values = pixels.astype(np.float64)
    if not np.isfinite(values).all():
        raise UnusableImageError(f"{name}: the image has NaN or infinite values.")
    low, high = float(values.min()), float(values.max())
    if low < 0:
        raise UnusableImageError(f"{name}: a {pixels.dtype} image with negative values (down to {low:g}); an 8-bit "
                                 "RGB image is expected.")
    if np.issubdtype(pixels.dtype, np.integer):
        full_scale = float(2 ** max(8, int(high).bit_length()) - 1)
    elif high <= 1.0:
        full_scale = 1.0
    elif high <= 255.0:
        full_scale = 255.0
    else:
        raise UnusableImageError(f"{name}: a {pixels.dtype} image with values up to {high:g}; float images must lie "
                                 "in [0, 1] or [0, 255].")
    logger.warning(f"{name}: a {pixels.dtype} image (largest value {high:g}) rescaled to 8 bits "
                   f"(x 255 / {full_scale:g}).")
    return (values * (255.0 / full_scale)).astype(np.float32)


def rgb_uint8(pixels: np.ndarray, name: str, min_size: int = 16) -> np.ndarray:
    """``(H, W, 3)`` uint8 of an image's stored pixels (see :func:`read_image_pixels`): RGBA composited over white,
    other bit depths rescaled to 8 bits (with a warning). Raises ``UnusableImageError`` naming ``name`` for a
    grayscale image (a stain needs colour), a channel count other than 3 or 4, or a side under ``min_size``."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if pixels.ndim == 2 or (pixels.ndim == 3 and channels in (1, 2)):
        raise UnusableImageError(f"{name}: a grayscale image (shape {pixels.shape}); an RGB image of a stained "
                                 "section (IHC or H&E) is expected.")
    if pixels.ndim != 3 or channels not in (3, 4):
        raise UnusableImageError(f"{name}: an image of shape {pixels.shape}; an RGB (or RGBA) 2D image is expected.")
    height, width = pixels.shape[:2]
    if min(height, width) < min_size:
        raise UnusableImageError(f"{name}: the image is {width}x{height} pixels; at least {min_size}x{min_size} "
                                 "are expected.")
    values = _to_8_bit(pixels, name)
    if channels == 4:
        alpha = values[..., 3:] / 255.0
        if (alpha < 1).any():
            logger.warning(f"{name}: RGBA image, composited over white.")
        values = values[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


# --- whole-slide images -------------------------------------------------------------------------------------------

def is_slide(path: str) -> bool:
    """Whether ``path`` is read as a whole-slide image: an SVS file, or a TIFF that holds an image pyramid (or a
    single tiled level larger than 16384^2 pixels)."""
    lower = path.lower()
    if lower.endswith(SLIDE_SUFFIXES):
        return True
    if not lower.endswith((".tif", ".tiff")):
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.keyframe
            return len(series.levels) > 1 or (page.is_tiled and page.imagelength * page.imagewidth > SLIDE_MIN_PIXELS)
    except Exception as e:
        raise UnusableImageError(f"{path}: not a readable TIFF file ({type(e).__name__}: {e}).") from None


class PyramidTiffWSIReader(TiffFileWSIReader):
    """MONAI's ``tifffile`` WSI reader (same arguments and methods) for real slides: levels are those of the image
    pyramid (``tifffile``'s ``series[0].levels``), and a region decodes only the tiles or strips it covers, so that
    reading a region of a 100k x 80k slide takes the memory of the region, not of the level."""

    @staticmethod
    def _levels(wsi) -> list:
        return list(wsi.series[0].levels)

    def get_level_count(self, wsi) -> int:
        return len(self._levels(wsi))

    def get_size(self, wsi, level: int) -> tuple[int, int]:
        page = self._levels(wsi)[level].keyframe
        return int(page.imagelength), int(page.imagewidth)

    def get_downsample_ratio(self, wsi, level: int) -> float:
        return float(self.get_size(wsi, 0)[0]) / float(self.get_size(wsi, level)[0])

    def get_mpp(self, wsi, level: int) -> tuple[float, float]:
        keyframe = self._levels(wsi)[level].keyframe
        pages = list(wsi.pages)
        index = next((i for i, page in enumerate(pages) if page is keyframe), None)
        if index is None:  # a sub-IFD level: no page index, use level 0's resolution scaled
            y, x = super().get_mpp(wsi, 0)
            ratio = self.get_downsample_ratio(wsi, level)
            return y * ratio, x * ratio
        return super().get_mpp(wsi, index)

    def read_level_region(self, wsi, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """``(height, width, samples)`` pixels of ``level`` from (``top``, ``left``) in that level's pixels; the
        part outside the level is zero."""
        page = self._levels(wsi)[level].keyframe
        samples = int(page.samplesperpixel)
        out = np.zeros((height, width, samples), dtype=page.dtype)
        bottom, right = min(top + height, page.imagelength), min(left + width, page.imagewidth)
        if bottom <= top or right <= left:
            return out
        contiguous = page.planarconfig == 1 or samples == 1
        if not contiguous or page.imagedepth > 1 or not page.dataoffsets:
            pixels = page.asarray()
            pixels = pixels.reshape(pixels.shape[:2] + (-1,))
            out[: bottom - top, : right - left] = pixels[top:bottom, left:right]
            return out
        if page.is_tiled:
            chunk_height, chunk_width = int(page.tilelength), int(page.tilewidth)
        else:
            chunk_height, chunk_width = int(page.rowsperstrip or page.imagelength), int(page.imagewidth)
        chunks_across = math.ceil(page.imagewidth / chunk_width)
        handle = wsi.filehandle
        for row in range(top // chunk_height, (bottom - 1) // chunk_height + 1):
            for column in range(left // chunk_width, (right - 1) // chunk_width + 1):
                index = row * chunks_across + column
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                with handle.lock:
                    handle.seek(offset)
                    data = handle.read(count) if count else None
                segment, indices, _ = page.decode(data, index, jpegtables=page.jpegtables,
                                                  jpegheader=getattr(page, "jpegheader", None))
                if segment is None:
                    continue
                segment = segment.reshape(segment.shape[-3:])
                y0, x0 = int(indices[-3]), int(indices[-2])
                y_from, y_to = max(top, y0), min(bottom, y0 + segment.shape[0])
                x_from, x_to = max(left, x0), min(right, x0 + segment.shape[1])
                if y_to > y_from and x_to > x_from:
                    out[y_from - top:y_to - top, x_from - left:x_to - left] = \
                        segment[y_from - y0:y_to - y0, x_from - x0:x_to - x0]
        return out

    def _get_patch(self, wsi, location: tuple[int, int], size: tuple[int, int], level: int, dtype, mode: str
                   ) -> np.ndarray:
        height0, width0 = self.get_size(wsi, 0)
        height, width = self.get_size(wsi, level)
        top, left = round(location[0] * height / height0), round(location[1] * width / width0)
        patch = self.read_level_region(wsi, level, top, left, int(size[0]), int(size[1])).astype(dtype)
        if patch.shape[-1] not in (3, 4):
            raise ValueError(f"The image is expected to have three or four color channels in '{mode}' mode but has "
                             f"{patch.shape[-1]}.")
        if mode == "RGB":
            patch = patch[..., :3]
        return np.moveaxis(patch, -1, self.channel_dim)


def slide_backend(path: str | None, backend: str = "auto") -> str:
    """``backend``, or for ``"auto"`` the one for ``path``: OpenSlide (when it is installed) for a format its vendor
    drivers recognise (Aperio SVS, Hamamatsu, Leica, ...), else tifffile, which also reads the generic pyramidal
    TIFFs that OpenSlide does not (levels in sub-IFDs) and decodes only the tiles a region covers."""
    if backend != "auto":
        return backend
    openslide, installed = optional_import("openslide")
    if installed and path is not None:
        try:
            vendor = openslide.OpenSlide.detect_format(path)
        except Exception:  # unreadable: tifffile names the problem
            vendor = None
        if vendor not in (None, "generic-tiff"):
            return "openslide"
    return "tifffile"


def slide_reader(backend: str = "auto", path: str | None = None):
    """The WSI reader of ``backend``: ``"openslide"`` (MONAI's ``WSIReader``), ``"tifffile"``
    (:class:`PyramidTiffWSIReader`), or ``"auto"``: the one :func:`slide_backend` chooses for ``path``."""
    backend = slide_backend(path, backend)
    if backend == "tifffile":
        return PyramidTiffWSIReader()
    if backend == "openslide":
        return WSIReader(backend="openslide")
    raise ValueError(f"wsi_backend must be 'auto', 'tifffile' or 'openslide'; got {backend!r}.")


# --- sources ------------------------------------------------------------------------------------------------------

def _resized(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BOX))


class InputImage:
    """RGB uint8 regions of an input at the processing level. ``height``, ``width``: the level's size;
    ``downsample``: level-0 pixels per level pixel, ``(x, y)``; ``kind``: ``"image"`` or ``"slide"``."""

    path: str
    kind: str
    level: int
    height: int
    width: int
    level0_size: tuple[int, int]  # (height, width)
    downsample: tuple[float, float]  # (x, y)

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """``(height, width, 3)`` uint8 pixels from (``top``, ``left``), in processing-level pixels."""
        raise NotImplementedError

    def overview(self, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
        """A picture of the whole input at most ``max_side`` pixels a side, and the processing-level pixels per
        picture pixel ``(y, x)``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file (slides)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, level {self.level}, {self.width}x{self.height})"


class ArrayImage(InputImage):
    """A plain image held in memory, ``(H, W, 3)`` uint8."""

    kind = "image"

    def __init__(self, path: str, pixels: np.ndarray) -> None:
        self.path, self.pixels, self.level = path, pixels, 0
        self.height, self.width = pixels.shape[:2]
        self.level0_size, self.downsample = (self.height, self.width), (1.0, 1.0)

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        return self.pixels[top:top + height, left:left + width]

    def overview(self, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
        factor = max(1, math.ceil(max(self.height, self.width) / max_side))
        height, width = math.ceil(self.height / factor), math.ceil(self.width / factor)
        picture = self.pixels if factor == 1 else _resized(self.pixels, height, width)
        return picture, (self.height / height, self.width / width)


class SlideImage(InputImage):
    """A whole-slide image read region by region through a MONAI WSI reader, at ``level``."""

    kind = "slide"

    def __init__(self, path: str, level: int = 0, backend: str = "auto") -> None:
        self.path, self.level = path, int(level)
        self.reader = slide_reader(backend, path)
        self.wsi = self.reader.read(path)
        count = self.reader.get_level_count(self.wsi)
        sizes = [self.reader.get_size(self.wsi, i) for i in range(count)]
        if not 0 <= self.level < count:
            self.close()
            shown = ", ".join(f"{i}: {w}x{h}" for i, (h, w) in enumerate(sizes))
            raise UnusableImageError(f"{path}: level {level} was requested; the slide has {count} level(s) ({shown}).")
        self.sizes = sizes
        self.level0_size = sizes[0]
        self.height, self.width = sizes[self.level]
        self.downsample = (self.level0_size[1] / self.width, self.level0_size[0] / self.height)

    def _read_at(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        if isinstance(self.reader, PyramidTiffWSIReader):
            pixels = self.reader.read_level_region(self.wsi, level, top, left, height, width)
            if pixels.shape[-1] not in (3, 4) or pixels.dtype != np.uint8:
                raise UnusableImageError(f"{self.path}: level {level} holds {pixels.shape[-1]}-sample "
                                         f"{pixels.dtype} pixels; an 8-bit RGB slide is expected.")
            if pixels.shape[-1] == 4:
                alpha = pixels[..., 3:].astype(np.float32) / 255.0
                pixels = np.round(pixels[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
            return pixels
        level_height, level_width = self.sizes[level]
        location = (round(top * self.level0_size[0] / level_height), round(left * self.level0_size[1] / level_width))
        patch, _ = self.reader.get_data(self.wsi, location=location, size=(height, width), level=level)
        return np.ascontiguousarray(np.moveaxis(np.asarray(patch), 0, -1))

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        height, width = min(height, self.height - top), min(width, self.width - left)
        return self._read_at(self.level, top, left, height, width)

    def overview(self, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
        """From the smallest level at least as large as the picture (the processing level at most), read in blocks
        of 4096^2 pixels so that a slide without a pyramid is never read whole."""
        factor = max(1, math.ceil(max(self.height, self.width) / max_side))
        height, width = math.ceil(self.height / factor), math.ceil(self.width / factor)
        source = max((i for i in range(self.level, len(self.sizes))
                      if self.sizes[i][0] >= height and self.sizes[i][1] >= width), default=self.level)
        source_height, source_width = self.sizes[source]
        picture = np.zeros((height, width, 3), np.uint8)
        block = 4096
        for top in range(0, source_height, block):
            for left in range(0, source_width, block):
                pixels = self._read_at(source, top, left, min(block, source_height - top),
                                       min(block, source_width - left))
                y0, x0 = top * height // source_height, left * width // source_width
                y1 = (top + pixels.shape[0]) * height // source_height
                x1 = (left + pixels.shape[1]) * width // source_width
                if y1 > y0 and x1 > x0:
                    picture[y0:y1, x0:x1] = _resized(pixels, y1 - y0, x1 - x0)
        return picture, (self.height / height, self.width / width)

    def close(self) -> None:
        wsi = getattr(self, "wsi", None)
        if wsi is not None and hasattr(wsi, "close"):
            wsi.close()


class OpenInputd(MapTransform):
    """Replace each path under ``keys`` with its :class:`InputImage`: a :class:`SlideImage` at ``level`` for a
    whole-slide image (see :func:`is_slide`), else an :class:`ArrayImage` of the file's pixels as RGB uint8 (see
    :func:`rgb_uint8`; plain images have one level, ``level`` does not apply to them). A file that cannot be used
    raises ``UnusableImageError`` naming it.

    Args:
        keys: keys of the input paths.
        level: the slide level to process (0: full resolution).
        wsi_backend: ``"auto"``, ``"tifffile"`` or ``"openslide"`` (see :func:`slide_backend`).
        min_size: the smallest side accepted for a plain image, in pixels.
    """

    def __init__(self, keys: KeysCollection, level: int = 0, wsi_backend: str = "auto", min_size: int = 16,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.level, self.wsi_backend, self.min_size = int(level), wsi_backend, int(min_size)

    def open(self, path: str) -> InputImage:
        path = str(path)
        if not os.path.isfile(path):
            raise UnusableImageError(f"{path}: no such file.")
        if is_slide(path):
            try:
                return SlideImage(path, self.level, self.wsi_backend)
            except UnusableImageError:
                raise
            except Exception as e:
                raise UnusableImageError(f"{path}: not a readable slide ({type(e).__name__}: {e}).") from None
        if self.level > 0:
            logger.warning(f"{path}: a plain image has one level; processed at full resolution (level {self.level} "
                           "applies to slides).")
        return ArrayImage(path, rgb_uint8(read_image_pixels(path), path, self.min_size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.open(d[key])
        return d


# --- tissue and regions -------------------------------------------------------------------------------------------

def tissue_mask(rgb: np.ndarray, max_threshold: float = 0.08, dilation: int = 2) -> np.ndarray:
    """Tissue (``True``) in a low-resolution RGB picture (H, W, 3) of a slide: MONAI's ``ForegroundMask`` on the
    saturation, above Otsu's threshold or above ``max_threshold`` when Otsu's is higher (a slide that is mostly
    tissue would otherwise lose its paler half), dilated by ``dilation`` pixels. Glass is grey-white (saturation near
    0), stained tissue is not."""

    def capped_otsu(saturation: np.ndarray) -> float:
        if np.ptp(saturation) <= 1e-6:
            return max_threshold
        return min(float(filters.threshold_otsu(saturation)), max_threshold)

    mask = np.asarray(ForegroundMask(threshold=None, hsv_threshold={"S": capped_otsu})(np.moveaxis(rgb, -1, 0)))[0]
    mask = mask.astype(bool)
    return morphology.dilation(mask, morphology.disk(dilation)) if dilation > 0 else mask


@dataclass(frozen=True)
class Region:
    """A region of the processing level: its ``core`` (the nuclei it reports: those whose centroid lies in it) and
    the larger box it is ``read`` with (core plus margin, clipped to the image), both ``(top, left, bottom,
    right)``, bottom / right exclusive."""

    core: tuple[int, int, int, int]
    read: tuple[int, int, int, int]


def plan_regions(height: int, width: int, core_size: int, margin: int,
                 keep: Callable[[tuple[int, int, int, int]], bool] | None = None) -> tuple[list[Region], int]:
    """``(regions, total)``: the cores tile the image exactly (row by row, ``core_size`` square), each read with
    ``margin`` pixels around it; ``keep(core)`` (e.g. "has tissue") chooses the regions processed out of the
    ``total``.

    Not MONAI's ``WSISlidingWindowSplitter``: it reads and decodes every window before its ``filter_fn`` sees it, glass
    included, and has no core that owns the nuclei of overlapping windows (``tests/test_pathology_data.py``)."""
    regions, total = [], 0
    for top in range(0, height, core_size):
        for left in range(0, width, core_size):
            core = (top, left, min(top + core_size, height), min(left + core_size, width))
            total += 1
            if keep is None or keep(core):
                read = (max(0, top - margin), max(0, left - margin), min(height, core[2] + margin),
                        min(width, core[3] + margin))
                regions.append(Region(core, read))
    return regions, total
