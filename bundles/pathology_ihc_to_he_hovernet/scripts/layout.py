"""The study's two dataset layouts.

- BCI (IHC -> H&E translation): ``{HE,IHC}/{train,test}/<NNNNN>_{train|test}_<HER2 level>.png``, an IHC image and
  its H&E partner under the same file name.
- PanNuke (nucleus instance segmentation and typing): ``Fold <k>/images/fold<k>/{images,types}.npy`` and
  ``Fold <k>/masks/fold<k>/masks.npy``; the masks' channels 0-4 hold the instance ids of the Neoplastic,
  Inflammatory, Connective, Dead and Epithelial nuclei, channel 5 the background.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from shared.data.errors import InvalidInputError
from shared.data.splits import split_cases, write_datalist

__all__ = [
    "BCI_SPLITS", "HER2_LEVELS", "NUCLEUS_TYPES", "PANNUKE_FILES", "bci_pairs", "build_bci_datalist",
    "pannuke_tile_labels", "pannuke_items", "pannuke_datalist",
]

logger = logging.getLogger(__name__)
BCI_SPLITS = ("train", "test")
HER2_LEVELS = ("0", "1+", "2+", "3+")
NUCLEUS_TYPES = ("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial")  # PanNuke's mask channels 0-4
# paths inside a fold folder; {k} is the fold number
PANNUKE_FILES = {
    "images": "Fold {k}/images/fold{k}/images.npy",
    "types": "Fold {k}/images/fold{k}/types.npy",
    "masks": "Fold {k}/masks/fold{k}/masks.npy",
}


def _her2_level(stem: str) -> str | None:
    level = stem.rsplit("_", 1)[-1]
    return level if level in HER2_LEVELS else None


def _images_in(folder: str, pattern: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} does not exist or is not a folder.")
    files = {os.path.basename(p): p for p in glob.glob(os.path.join(folder, pattern)) if os.path.isfile(p)}
    if not files:
        raise FileNotFoundError(f"no images ({pattern}) in {folder}.")
    return files


def bci_pairs(dataset_dir: str, split: str, he_folder: str = "HE", ihc_folder: str = "IHC",
              pattern: str = "*.png", set_aside: list[dict] | None = None) -> list[dict]:
    """IHC / H&E pairs of a BCI split, sorted by name: ``{"A": ihc_path, "B": he_path, "case": stem, "her2":
    level}`` (``A`` -> ``B`` is the translation's direction; ``her2`` is ``None`` when the name carries no level).
    A file without its partner of the same name in the other folder is an error that names it; with a
    ``set_aside`` list, such files are logged, added to it (``{"case", "error", "split"}``) and left out instead."""
    if split not in BCI_SPLITS:
        raise ValueError(f"split must be one of {BCI_SPLITS}; got {split!r}.")
    ihc = _images_in(os.path.join(dataset_dir, ihc_folder, split), pattern)
    he = _images_in(os.path.join(dataset_dir, he_folder, split), pattern)
    unpaired = sorted(set(ihc) ^ set(he))
    if unpaired and set_aside is None:
        shown = ", ".join(f"{os.path.join(ihc_folder if n in ihc else he_folder, split, n)}" for n in unpaired[:10])
        more = f" and {len(unpaired) - 10} more" if len(unpaired) > 10 else ""
        raise InvalidInputError(f"{len(unpaired)} image(s) under {dataset_dir} have no partner of the same name in the "
                                f"other folder ({ihc_folder} / {he_folder}): {shown}{more}.")
    for name in unpaired:
        path, other = (ihc[name], he_folder) if name in ihc else (he[name], ihc_folder)
        error = f"{path}: no partner of the same name in {os.path.join(dataset_dir, other, split)}."
        logger.error(f"case {os.path.splitext(name)[0]} ({split}) set aside: {error}")
        set_aside.append({"case": os.path.splitext(name)[0], "error": error, "split": split})
    paired = sorted(set(ihc) & set(he))
    if not paired:
        raise InvalidInputError(f"no IHC / H&E pair in {dataset_dir} ({split}): none of the {len(unpaired)} "
                                f"image(s) has a partner of the same name in the other folder.")
    return [{"A": ihc[name], "B": he[name], "case": os.path.splitext(name)[0],
             "her2": _her2_level(os.path.splitext(name)[0])} for name in paired]


def build_bci_datalist(dataset_dir: str, datalist_file: str, val_fraction: float = 0.2, seed: int = 0,
                       **pair_options) -> dict[str, list[dict]]:
    """``training`` / ``validation`` (``val_fraction`` of BCI's train pairs, drawn by ``seed``) and ``test`` (BCI's
    test pairs), written to the datalist JSON; ``pair_options`` go to :func:`bci_pairs`. Images without a partner
    are set aside, in the datalist's ``excluded`` list with the reason."""
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist or is not a folder.")
    excluded: list[dict] = []
    drawn = split_cases(bci_pairs(dataset_dir, "train", set_aside=excluded, **pair_options), val_fraction, 0.0, seed)
    split = {"training": drawn["training"], "validation": drawn["validation"],
             "test": bci_pairs(dataset_dir, "test", set_aside=excluded, **pair_options)}
    write_datalist({"dataset_dir": os.path.abspath(dataset_dir), "seed": seed, **split, "excluded": excluded},
                   datalist_file)
    logger.info(f"datalist {datalist_file}: " + ", ".join(f"{len(v)} {k}" for k, v in split.items())
                + f" pair(s), {len(excluded)} image(s) without a partner set aside")
    return split


def _load_checked(path: str, shape_rule: str, check: Callable[[np.ndarray], bool]) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PanNuke file {path} does not exist.")
    array = np.load(path, mmap_mode="r")
    if not check(array):
        raise InvalidInputError(f"PanNuke file {path} has shape {array.shape}; expected {shape_rule}.")
    return array


def pannuke_tile_labels(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(instances, types)`` (HxW int32 each) of one tile's HxWx6 PanNuke masks: the ids of channels 0-4 become
    ids 1..n unique across the channels (the real files reuse ids between channels), each pixel's type is its
    channel + 1, 0 is background; channel 5 (background) is not needed. Where channels overlap, the later wins."""
    instances = np.zeros(masks.shape[:2], np.int32)
    types = np.zeros(masks.shape[:2], np.int32)
    count = 0
    for channel in range(len(NUCLEUS_TYPES)):
        values = np.asarray(masks[..., channel])
        nucleus = values > 0
        ids = np.unique(values[nucleus])
        instances[nucleus] = count + 1 + np.searchsorted(ids, values[nucleus])
        types[nucleus] = channel + 1
        count += len(ids)
    # an instance wholly overwritten by a later channel leaves a gap: renumber 1..n
    nuclei = instances > 0
    instances[nuclei] = 1 + np.searchsorted(np.unique(instances[nuclei]), instances[nuclei])
    return instances, types


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)


def pannuke_items(dataset_dir: str, folds: Sequence[int], files: dict[str, str] | None = None,
                  max_tiles_per_fold: int | None = None) -> list[dict]:
    """Per-tile items of PanNuke folds: ``{"image": HxWx3 uint8, "label_inst": HxW int32 (0 background, ids unique
    across the types), "label_type": HxW int32 (0 background, 1..5 Neoplastic, Inflammatory, Connective, Dead,
    Epithelial), "case": "fold<k>_<iiii>", "tissue": str}``.

    The fold files (``files``: the keys of :data:`PANNUKE_FILES`, paths relative to ``dataset_dir`` with ``{k}``
    for the fold) are memory-mapped and read a tile at a time; images stored as float (0-255, as the real files)
    are rounded to uint8. Every tile is held in memory (about 0.7 MB each), so ``max_tiles_per_fold`` takes only the
    first tiles of each fold (the real folds hold about 2,600 tiles each)."""
    files = {**PANNUKE_FILES, **(files or {})}
    items = []
    for fold in folds:
        path = {key: os.path.join(dataset_dir, files[key].format(k=fold)) for key in PANNUKE_FILES}
        images = _load_checked(path["images"], "(N, H, W, 3)", lambda a: a.ndim == 4 and a.shape[-1] == 3)
        masks = _load_checked(path["masks"], f"(N, H, W, 6) with the images' N, H, W {images.shape[:3]}",
                              lambda a: a.ndim == 4 and a.shape[-1] == 6 and a.shape[:3] == images.shape[:3])
        tissues = _load_checked(path["types"], f"({images.shape[0]},), one tissue name a tile",
                                lambda a: a.shape == images.shape[:1])
        count = len(images) if max_tiles_per_fold is None else min(len(images), max_tiles_per_fold)
        for index in range(count):
            instances, types = pannuke_tile_labels(masks[index])
            items.append({"image": _as_uint8(images[index]), "label_inst": instances, "label_type": types,
                          "case": f"fold{fold}_{index:04d}", "tissue": str(tissues[index])})
    return items


def pannuke_datalist(dataset_dir: str, train_folds: Sequence[int] = (1,), val_folds: Sequence[int] = (2,),
                     test_folds: Sequence[int] = (3,), **item_options) -> dict[str, list[dict]]:
    """``training`` / ``validation`` / ``test`` items (see :func:`pannuke_items`) by fold. The default is PanNuke's
    own protocol, one fold each (train 1, validate 2, test 3); a fold may serve one split only."""
    chosen = {"training": list(train_folds), "validation": list(val_folds), "test": list(test_folds)}
    every = [fold for folds in chosen.values() for fold in folds]
    if len(every) != len(set(every)):
        raise ValueError(f"a PanNuke fold is in two splits: {chosen}.")
    return {split: pannuke_items(dataset_dir, folds, **item_options) if folds else []
            for split, folds in chosen.items()}
