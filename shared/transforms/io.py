"""Loading an image with the one reader its format needs, and a failure to load it named with the file, the
problem and what to do.

MONAI's ``LoadImage`` given a reader still falls back on every other registered reader when that one fails: a
damaged PNG then reaches ``ITKReader`` (which changes the process's working directory while other threads open
relative paths), and the error shown is the last fallback's. :class:`StrictLoadImage` / :class:`StrictLoadImaged`
use the named reader only. :class:`CheckedNibabelReader` checks a NIfTI header before reading the voxels (a voxel
size of zero, complex voxels, a declared size larger than this machine's memory) and names a truncated file."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import ImageReader, NibabelReader
from monai.transforms import LoadImage, LoadImaged
from monai.utils import ensure_tuple
from monai.utils.enums import PostFix

__all__ = ["UnreadableImageError", "nifti_header_problem", "CheckedNibabelReader", "StrictLoadImage",
           "StrictLoadImaged"]


class UnreadableImageError(ValueError):
    """An image file cannot be loaded: missing, damaged or truncated, or with a header that cannot be right."""


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def nifti_header_problem(header, path: str) -> str | None:
    """What makes a NIfTI ``header`` unusable, as one line naming ``path`` and what to do; ``None`` if nothing:
    complex voxels, a spatial voxel size that is zero, negative or not finite, a declared data size larger than
    this machine's memory (checked before anything is allocated), or, for an uncompressed ``.nii``, larger than what
    the file holds."""
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind == "c":
        return (f"{path}: complex-valued voxels ({dtype}); a real-valued image is expected: save its magnitude "
                "(abs) or real part as the input.")
    shape = tuple(int(n) for n in header.get_data_shape())
    spatial = min(len(shape), 3)
    zooms = np.asarray(header.get_zooms()[:spatial], float)
    columns = np.linalg.norm(np.asarray(header.get_best_affine(), float)[:3, :spatial], axis=0)
    if not (np.isfinite(zooms).all() and (zooms > 0).all() and np.isfinite(columns).all() and (columns > 0).all()):
        return (f"{path}: voxel size {tuple(float(z) for z in zooms)} (affine column lengths "
                f"{tuple(round(float(c), 6) for c in columns)}): a size that is zero, negative or not finite; the "
                "header is damaged: set the voxel size (pixdim / sform) and save the file again.")
    size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    declared = f"its header declares {'x'.join(map(str, shape))} voxels of {dtype} ({_bytes(size)})"
    if size > _memory_bytes():
        return (f"{path}: {declared}, more than this machine's memory ({_bytes(_memory_bytes())}): a damaged "
                "header, or an image too large to load whole; check the file's dimensions.")
    if path and str(path).endswith(".nii") and os.path.isfile(path):
        held = os.path.getsize(path) - int(header.get_data_offset())
        if held < size:
            return (f"{path}: {declared}, but the file holds {_bytes(max(held, 0))} of voxels: the file is truncated "
                    "or its header damaged; copy or export it again.")
    return None


def _bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


class CheckedNibabelReader(NibabelReader):
    """``monai.data.NibabelReader`` (same arguments) that checks each header (:func:`nifti_header_problem`) before
    reading the voxels, and names the file when the voxels cannot be read (a truncated ``.nii.gz``)."""

    def get_data(self, img):
        for image in ensure_tuple(img):
            problem = nifti_header_problem(image.header, image.get_filename())
            if problem:
                raise UnreadableImageError(problem)
        try:
            return super().get_data(img)
        except Exception as e:
            names = ", ".join(str(i.get_filename()) for i in ensure_tuple(img))
            raise UnreadableImageError(f"{names}: its voxels cannot be read ({_one_line(e)}); the file is truncated "
                                       "or damaged: copy or export it again.") from e


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def _reader_error(error: BaseException) -> str:
    """The reader's own error: ``LoadImage`` reports a failed read as a ``RuntimeError`` holding its traceback."""
    raised = re.findall(r"^([\w.]+(?:Error|Exception)): (.+)$", str(error), flags=re.MULTILINE)
    if "cannot find a suitable reader" in str(error) and raised:
        return f"{raised[-1][0].rsplit('.', 1)[-1]}: {raised[-1][1]}"[:300]
    return _one_line(error.__cause__ or error)


class StrictLoadImage(LoadImage):
    """``monai.transforms.LoadImage`` (same arguments) that reads with ``reader`` only, never another registered
    reader, and turns any failure into one :class:`UnreadableImageError` naming the file.

    ``reader`` may list readers, one a format (e.g. ``CheckedNibabelReader`` and
    ``shared.transforms.dicom_io.DicomSeriesReader``): each input is read by the first that accepts it
    (``verify_suffix``), and by that one only."""

    def __init__(self, reader: str | type[ImageReader] | ImageReader | Sequence, *args, **kwargs) -> None:
        if reader is None:
            raise ValueError("StrictLoadImage needs a reader, e.g. 'NibabelReader' or 'PILReader'.")
        super().__init__(reader, *args, **kwargs)
        self.readers = self.readers[-len(ensure_tuple(reader)):]

    def __call__(self, filename: Sequence[PathLike] | PathLike, reader: ImageReader | None = None):
        names = ", ".join(map(str, ensure_tuple(filename)))
        if len(ensure_tuple(filename)) > 3:
            names = f"{ensure_tuple(filename)[0]} and {len(ensure_tuple(filename)) - 1} other files"
        missing = [str(f) for f in ensure_tuple(filename) if not os.path.exists(str(f))]
        if missing:
            raise UnreadableImageError(f"{', '.join(missing[:3])}: file does not exist.")
        if reader is None:
            reader = next((r for r in self.readers if r.verify_suffix(filename)), self.readers[0])
        try:
            return super().__call__(filename, reader)
        except UnreadableImageError:
            raise
        except Exception as e:
            raise UnreadableImageError(f"{names}: not a readable image file for {type(reader).__name__} "
                                       f"({_reader_error(e)}); check that it is a valid image of this format.") from e


class StrictLoadImaged(LoadImaged):
    """Dictionary version of :class:`StrictLoadImage`: ``monai.transforms.LoadImaged`` (same arguments) with the
    named reader only and every failure named."""

    def __init__(
        self,
        keys: KeysCollection,
        reader: str | type[ImageReader] | ImageReader | Sequence,
        dtype: DtypeLike = np.float32,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str = PostFix.meta(),
        overwriting: bool = False,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        simple_keys: bool = False,
        prune_meta_pattern: str | None = None,
        prune_meta_sep: str = ".",
        allow_missing_keys: bool = False,
        expanduser: bool = True,
        *args,
        **kwargs,
    ) -> None:
        super().__init__(keys, reader, dtype, meta_keys, meta_key_postfix, overwriting, image_only,
                         ensure_channel_first, simple_keys, prune_meta_pattern, prune_meta_sep, allow_missing_keys,
                         expanduser, *args, **kwargs)
        self._loader = StrictLoadImage(reader, image_only, dtype, ensure_channel_first, simple_keys,
                                       prune_meta_pattern, prune_meta_sep, expanduser, *args, **kwargs)
