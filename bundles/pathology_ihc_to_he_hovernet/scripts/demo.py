"""Deterministic demo sets in the study's two layouts, built from the real IHC image scikit-image ships.

The source is ``skimage.data.immunohistochemistry()``: colonic glands, 512x512 RGB, haematoxylin counterstain with a
membranous / cytoplasmic DAB stain (FHL2 protein; here it stands in for HER2). Stain separation
(``skimage.color.rgb2hed``) gives the haematoxylin and DAB densities that both demo sets are made of:

- **BCI** (IHC -> H&E pairs)::

      <root>/{HE,IHC}/{train,test}/<NNNNN>_{train|test}_<0|1+|2+|3+>.png     RGB uint8, same names under HE and IHC

  Each pair is one crop of the source (offset, a flip and a rotation by 90 degrees), pixel-aligned on both sides.
  The IHC side is the crop re-stained: DAB scaled to the pair's HER2 level (0, 1+, 2+, 3+ from faint to strong
  membranes), haematoxylin and brightness jittered. The H&E side is :func:`render_he` of the crop: haematoxylin
  kept, DAB dropped, eosin added over the tissue (stronger over the DAB-stained cytoplasm), recombined with H&E
  stain vectors by Beer-Lambert. Real BCI images are 1024x1024; the demo's are ``image_size`` (default 256).
- **PanNuke** (nucleus instances and types)::

      <root>/Fold <k>/images/fold<k>/images.npy   (N, 256, 256, 3) float64, 0..255 (as the real files)
      <root>/Fold <k>/images/fold<k>/types.npy    (N,) tissue names, "<U5" ("Colon")
      <root>/Fold <k>/masks/fold<k>/masks.npy     (N, 256, 256, 6) float64: channels 0-4 instance ids of the
                                                  Neoplastic, Inflammatory, Connective, Dead, Epithelial nuclei
                                                  (ids unique across the channels of a tile), channel 5 the
                                                  background: 1 where no nucleus, 0 on nuclei (as the real files)

  Tiles are :func:`render_he` of 256x256 crops; the nuclei are segmented once on the whole source image from its
  haematoxylin (:func:`nuclei_instances`), typed by a fixed rule (:func:`nucleus_types`), and cropped with the tile.

All the variety comes from one 512x512 image, so crops overlap: the sets exercise the pipelines and give
learnable, real tissue structure, not a benchmark.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage
from skimage import color, data, filters, measure, morphology, segmentation

from shared.data.demo_cache import generate_once

from .layout import HER2_LEVELS, NUCLEUS_TYPES

__all__ = [
    "GENERATOR_VERSION", "DAB_GAIN", "source_ihc", "haematoxylin", "dab", "render_he", "restain_ihc",
    "nuclei_instances", "nucleus_types", "ensure_bci_demo", "ensure_pannuke_demo", "write_aperio_slide",
]

logger = logging.getLogger(__name__)
GENERATOR_VERSION = 1
# DAB scale of each HER2 level, relative to the source image's strong, complete membranes
DAB_GAIN = {"0": 0.08, "1+": 0.35, "2+": 0.7, "3+": 1.1}
# H&E stain optical-density vectors (Macenko et al. 2009's reference H&E), unit length, RGB order
HE_HAEMATOXYLIN = np.array([0.5626, 0.7201, 0.4062])
HE_EOSIN = np.array([0.2159, 0.8012, 0.5581])
GLASS = 240.0  # light through bare glass, as in scanned H&E slides
OD_SCALE = np.log(1e6)  # rgb2hed's densities are optical densities divided by this
# nucleus typing thresholds, in optical density (tuned on the source image: stroma rings ~0.1, glands 0.8-1.9)
DAB_RING_NEOPLASTIC, DAB_RING_EPITHELIAL = 1.2, 0.5
MIN_FRAGMENT = 12  # pixels: nucleus pieces smaller than this at a crop's edge are dropped


def source_ihc() -> np.ndarray:
    """The source IHC image, 512x512x3 uint8 (shipped in scikit-image's wheel, no download)."""
    return np.ascontiguousarray(data.immunohistochemistry())


def haematoxylin(ihc_rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density (HxW float32, >= 0) of an RGB uint8 image, by ``rgb2hed``."""
    return (color.rgb2hed(ihc_rgb)[..., 0] * OD_SCALE).astype(np.float32)


def dab(ihc_rgb: np.ndarray) -> np.ndarray:
    """DAB optical density (HxW float32, >= 0) of an RGB uint8 image, by ``rgb2hed``."""
    return (color.rgb2hed(ihc_rgb)[..., 2] * OD_SCALE).astype(np.float32)


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(rgb.astype(np.float64), 1.0) / 255.0)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def render_he(ihc_rgb: np.ndarray, haematoxylin_gain: float = 1.0, eosin_gain: float = 1.0) -> np.ndarray:
    """An H&E rendering (HxWx3 uint8) of the tissue in an IHC image, pixel-aligned with it.

    Haematoxylin is kept (less its crosstalk from dense DAB and the counterstain's faint background, so that nuclei
    stand out as in H&E), DAB is dropped, and eosin is laid over the tissue: stroma and cytoplasm from the total
    optical density, more where DAB marks cytoplasm and membranes. Both stains are recombined by Beer-Lambert with
    H&E stain vectors: blue-purple nuclei, pink stroma and cytoplasm, near-white glass. The gains scale the two
    stains (1: as tuned on the source image) for slide-to-slide variety."""
    hed = color.rgb2hed(ihc_rgb) * OD_SCALE
    stain_h, stain_d = hed[..., 0], hed[..., 2]
    nuclei = np.clip(stain_h - 0.05 * stain_d - 0.15, 0, None) * 2.2 * haematoxylin_gain
    total = filters.gaussian(_optical_density(ihc_rgb).sum(-1), 1.5)
    tissue = np.clip((total - 0.28) / 0.35, 0, 1)  # glass ~0.24, stroma 0.5-1, glands 2-3
    eosin = eosin_gain * (0.7 * tissue + 0.05 * filters.gaussian(stain_d, 1.0))
    eosin *= 1 - 0.6 * np.clip(nuclei / 0.8, 0, 1)  # chromatin takes little eosin: nuclei stay blue-purple
    density = nuclei[..., None] * HE_HAEMATOXYLIN + eosin[..., None] * HE_EOSIN
    return _to_uint8(GLASS * np.exp(-density))


def restain_ihc(ihc_rgb: np.ndarray, haematoxylin_gain: float = 1.0, dab_gain: float = 1.0,
                brightness: float = 1.0) -> np.ndarray:
    """The IHC image with its haematoxylin and DAB densities scaled (HxWx3 uint8): e.g. a weaker HER2 stain.
    Unit gains give the image back (up to rounding): the densities are not clipped on the way."""
    stains = _optical_density(ihc_rgb) @ color.hed_from_rgb
    stains[..., 0] *= haematoxylin_gain
    # an IHC image's eosin channel holds the DAB's mismatch with the standard DAB vector: left alone, it would tint
    # weakly stained membranes green, so it is scaled with the DAB
    stains[..., 1:] *= dab_gain
    return _to_uint8(255.0 * brightness * np.exp(-(stains @ color.rgb_from_hed)))


def nuclei_instances(ihc_rgb: np.ndarray, min_area: int = 30) -> np.ndarray:
    """Nucleus instance map (HxW int32, 0 background) of an IHC image, from its haematoxylin.

    The nuclear signal is haematoxylin less a tenth of the DAB (dense DAB leaks into the haematoxylin channel),
    smoothed; nuclei are where it exceeds both Otsu's threshold and the local mean (crowded glands), opened, filled
    and rid of specks; touching nuclei are split by a watershed of the distance transform from its h-maxima (plain
    local maxima cut elongated nuclei into pieces)."""
    stains = color.rgb2hed(ihc_rgb) * OD_SCALE
    signal = filters.gaussian(stains[..., 0] - 0.1 * stains[..., 2], 1.0)
    mask = (signal > filters.threshold_otsu(signal)) & (signal > filters.threshold_local(signal, 41))
    mask = morphology.opening(mask, morphology.disk(1))
    mask = morphology.remove_small_objects(ndimage.binary_fill_holes(mask), max_size=min_area)
    distance = filters.gaussian(ndimage.distance_transform_edt(mask), 1.0)
    markers = measure.label(morphology.h_maxima(distance, 1.0))
    instances = segmentation.watershed(-distance, markers, mask=mask)
    instances = morphology.remove_small_objects(instances, max_size=min_area)
    return segmentation.relabel_sequential(instances)[0].astype(np.int32)


def nucleus_types(ihc_rgb: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Type of each nucleus (index ``i`` for instance ``i + 1``; 1..5 as in :data:`NUCLEUS_TYPES`), by a fixed rule:
    small and dense (pyknotic) -> Dead; else a strong DAB ring (HER2-like membrane) -> Neoplastic, a weaker one ->
    Epithelial; in the stroma (no ring) small and round -> Inflammatory, the others (spindles, mostly) -> Connective."""
    count = int(instances.max())
    if count == 0:
        return np.zeros(0, np.int32)
    ids = np.arange(1, count + 1)
    ring = morphology.dilation(instances, morphology.disk(4))
    ring[instances > 0] = 0
    ring_dab = np.nan_to_num(ndimage.mean(dab(ihc_rgb), ring, ids))
    density = ndimage.mean(haematoxylin(ihc_rgb), instances, ids)
    props = measure.regionprops(instances)
    area = np.array([p.area for p in props])
    elongation = np.array([p.axis_major_length / max(p.axis_minor_length, 1.0) for p in props])
    types = np.full(count, NUCLEUS_TYPES.index("Connective") + 1, np.int32)
    types[(area < 110) & (elongation < 1.8)] = NUCLEUS_TYPES.index("Inflammatory") + 1
    types[ring_dab >= DAB_RING_EPITHELIAL] = NUCLEUS_TYPES.index("Epithelial") + 1
    types[ring_dab >= DAB_RING_NEOPLASTIC] = NUCLEUS_TYPES.index("Neoplastic") + 1
    types[(area < 70) & (density >= np.percentile(density, 75))] = NUCLEUS_TYPES.index("Dead") + 1
    return types


@functools.lru_cache(maxsize=1)
def _source_nuclei() -> tuple[np.ndarray, np.ndarray]:
    image = source_ihc()
    instances = nuclei_instances(image)
    return instances, nucleus_types(image, instances)


def _crop(rng: np.random.Generator, size: int, *images: np.ndarray) -> list[np.ndarray]:
    """The same random crop, flip and rotation by 90 degrees of each image."""
    height, width = images[0].shape[:2]
    if size > min(height, width):
        raise ValueError(f"a {size}x{size} crop does not fit the {height}x{width} source image (at most 512).")
    top, left = (int(rng.integers(0, n - size + 1)) for n in (height, width))
    turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    out = []
    for image in images:
        piece = np.rot90(image[top:top + size, left:left + size], turns)
        out.append(np.ascontiguousarray(piece[:, ::-1] if flip else piece))
    return out


def _save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, format="PNG")


def ensure_bci_demo(root: str, image_size: int = 256, num_train: int = 24, num_test: int = 8,
                    seed: int = 1024) -> str:
    """Generate the BCI-layout demo pairs into ``root`` unless they are already there; return ``root``."""

    def build(staging: Path) -> None:
        logger.info(f"generating the BCI-style IHC / H&E demo pairs into {root}")
        source = source_ihc()
        for split_index, (split, count) in enumerate((("train", num_train), ("test", num_test))):
            for side in ("HE", "IHC"):
                (staging / side / split).mkdir(parents=True)
            for index in range(count):
                rng = np.random.default_rng([seed, split_index, index])
                level = HER2_LEVELS[index % len(HER2_LEVELS)]
                (tissue,) = _crop(rng, image_size, source)
                ihc = restain_ihc(tissue, haematoxylin_gain=rng.uniform(0.85, 1.15),
                                  dab_gain=DAB_GAIN[level] * rng.uniform(0.9, 1.1), brightness=rng.uniform(0.95, 1.04))
                he = render_he(tissue, haematoxylin_gain=rng.uniform(0.9, 1.1),
                               eosin_gain=rng.uniform(0.85, 1.15))
                name = f"{index:05d}_{split}_{level}.png"
                _save_png(ihc, staging / "IHC" / split / name)
                _save_png(he, staging / "HE" / split / name)

    settings = {"version": GENERATOR_VERSION, "layout": "BCI", "image_size": image_size, "num_train": num_train,
                "num_test": num_test, "seed": seed}
    return generate_once(root, settings, build)


def ensure_pannuke_demo(root: str, num_folds: int = 3, tiles_per_fold: int = 8, tile_size: int = 256,
                        seed: int = 2020) -> str:
    """Generate the PanNuke-layout demo folds into ``root`` unless they are already there; return ``root``."""

    def build(staging: Path) -> None:
        logger.info(f"generating the PanNuke-style demo folds into {root}")
        source = source_ihc()
        instances, types = _source_nuclei()
        type_of = np.concatenate([[0], types]).astype(np.int32)  # instance id -> type 1..5
        for fold in range(1, num_folds + 1):
            images = np.zeros((tiles_per_fold, tile_size, tile_size, 3), np.float64)
            masks = np.zeros((tiles_per_fold, tile_size, tile_size, 6), np.float64)
            for index in range(tiles_per_fold):
                rng = np.random.default_rng([seed, fold, index])
                tissue, tile_instances = _crop(rng, tile_size, source, instances)
                tile_instances = morphology.remove_small_objects(tile_instances, max_size=MIN_FRAGMENT - 1)
                tile_types = type_of[tile_instances]
                tile_instances = segmentation.relabel_sequential(tile_instances)[0]
                images[index] = render_he(tissue, haematoxylin_gain=rng.uniform(0.9, 1.1),
                                          eosin_gain=rng.uniform(0.85, 1.15))
                for channel in range(len(NUCLEUS_TYPES)):
                    masks[index, ..., channel] = np.where(tile_types == channel + 1, tile_instances, 0)
                masks[index, ..., 5] = tile_instances == 0
            image_dir = staging / f"Fold {fold}" / "images" / f"fold{fold}"
            mask_dir = staging / f"Fold {fold}" / "masks" / f"fold{fold}"
            image_dir.mkdir(parents=True)
            mask_dir.mkdir(parents=True)
            np.save(image_dir / "images.npy", images)
            np.save(image_dir / "types.npy", np.array(["Colon"] * tiles_per_fold))
            np.save(mask_dir / "masks.npy", masks)

    settings = {"version": GENERATOR_VERSION, "layout": "PanNuke", "num_folds": num_folds,
                "tiles_per_fold": tiles_per_fold, "tile_size": tile_size, "seed": seed}
    return generate_once(root, settings, build)


APERIO = "Aperio Image Library v12.0.0\r\n"


def write_aperio_slide(path: str | Path, pixels: np.ndarray, mpp: float = 0.5) -> Path:
    """Write ``pixels`` (H, W, 3 uint8) as a slide in Aperio's SVS layout, which OpenSlide's Aperio driver and
    tifffile both read: a tiled JPEG baseline with AppMag and MPP, a stripped thumbnail, tiled reduced levels (2x,
    4x), a label and a macro image."""
    path, (height, width) = Path(path), pixels.shape[:2]
    jpeg = dict(photometric="rgb", metadata=None, compression="jpeg")
    with tifffile.TiffWriter(path) as tif:
        tif.write(pixels, tile=(256, 256), **jpeg, description=APERIO + f"{width}x{height} [0,0 {width}x{height}] "
                                                                        f"(256x256) JPEG/RGB Q=70|AppMag = 20|MPP = {mpp}")
        tif.write(np.ascontiguousarray(pixels[::8, ::8]), **jpeg,
                  description=APERIO + f"{width}x{height} -> {width // 8}x{height // 8}")
        for factor in (2, 4):
            level = np.ascontiguousarray(pixels[::factor, ::factor])
            tif.write(level, tile=(256, 256), **jpeg,
                      description=APERIO + f"{width}x{height} -> {level.shape[1]}x{level.shape[0]} JPEG/RGB Q=70")
        tif.write(np.ascontiguousarray(pixels[:64, :64]), subfiletype=1, photometric="rgb", metadata=None,
                  description=APERIO + "label 64x64")
        tif.write(np.ascontiguousarray(pixels[:128, :96]), subfiletype=9, **jpeg, description=APERIO + "macro 96x128")
    return path
