"""The chained inference: IHC -> H&E translation by the CycleGAN generator, then HoVer-Net nuclei, on plain images of
any size and on whole-slide images.

For each input (:mod:`.slides` opens it) :class:`ChainedNucleiInferer`:

1. plans the regions to process: a plain image up to ``whole_image_max_pixels`` is one region; a larger image or a
   slide is cut into square cores of ``region_size`` pixels, each read with ``region_margin`` pixels of context,
   and for a slide only the cores with tissue (:func:`.slides.tissue_mask` on a low-resolution picture) are
   processed, with a progress bar;
2. translates each region to H&E with :class:`StainTranslator` (overlapping generator tiles, Gaussian blending;
   skipped with ``stain="he"``);
3. runs HoVer-Net over the region (``nuclei_inferer``: :class:`.hovernet_windows.FittedHoVerNetInferer`, the fewest
   windows that cover the region, or MONAI's ``SlidingWindowHoVerNetInferer``), stitching the NP, HV and NC maps
   over the whole region, then MONAI's HoVer-Net post-processing once on the stitched maps: a nucleus under a
   window seam is one nucleus;
4. keeps the nuclei whose centroid lies in the region's core (so a nucleus in the overlap of two regions is kept
   once), with centroids and contours in level-0 pixels, and pastes them into the instance and type maps.

The margin is context, not output: HoVer-Net's maps near a region's edge see the zero padding beyond it, so a
nucleus there is reported by the neighbouring region, whose core holds it with ``region_margin`` pixels of real
image around. The time of each step (reading, translation, HoVer-Net, post-processing, collecting the nuclei) is
logged and returned (``NucleiResult.timings``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import convert_to_numpy, ensure_tuple
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from shared.data.slides import InputImage, Region, plan_regions, tissue_mask
from shared.writers.nuclei import NucleiResult, Nucleus

__all__ = ["STAINS", "StainTranslator", "ChainedNucleiInferer", "input_of_batch"]

logger = logging.getLogger(__name__)
STAINS = ("ihc", "he")


def input_of_batch(batchdata: Mapping[str, Any], device: str | torch.device | None = None,
                   non_blocking: bool = False, **kwargs) -> tuple[InputImage, None]:
    """``prepare_batch`` of the chained inference: a case's opened input (``batchdata["image"]``, an
    :class:`.slides.InputImage`) goes to the inferer as it is; the inferer reads it region by region."""
    return batchdata["image"], None


class StainTranslator:
    """IHC -> H&E with the CycleGAN generator over overlapping tiles: ``(H, W, 3)`` uint8 in, the same out.

    Args:
        generator: the IHC -> H&E generator (inputs and outputs in [-1, 1]).
        inferer: a ``SlidingWindowInferer`` whose ``roi_size`` is the generator's training tile size, with
            ``mode="gaussian"`` to hide the seams.
    """

    def __init__(self, generator: torch.nn.Module, inferer: Inferer) -> None:
        self.generator, self.inferer = generator, inferer

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)
        self.generator.eval()
        with torch.inference_mode():
            y = self.inferer(x, self.generator)
        return ((y[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


class ChainedNucleiInferer(Inferer):
    """The chained inference of one input (see the module's description), as a MONAI ``Inferer``:
    ``inferer(input_image, hovernet)`` returns a :class:`.nuclei_outputs.NucleiResult`.

    Args:
        nuclei_inferer: ``SlidingWindowHoVerNetInferer`` for HoVer-Net (fast mode: 256x256 windows, overlap
            ``1 - 164 / 256``, ``extra_input_padding`` of 46 pixels a side).
        postprocessing: MONAI's HoVer-Net post-processing of a dict of the three stitched maps (``(C, H, W)`` each),
            giving ``instance_map``, ``instance_info`` (with types).
        stain: ``"ihc"`` (translate first) or ``"he"`` (the inputs are H&E already).
        translator: the :class:`StainTranslator` (required with ``stain="ihc"``, unused otherwise).
        region_size: side of a region's core, in processing-level pixels.
        region_margin: context read around a core, in processing-level pixels (a nucleus and the reach of the
            zero padding at the read region's edge into HoVer-Net's maps).
        whole_image_max_pixels: plain images up to this many pixels are processed as one region.
        max_map_pixels: inputs up to this many pixels (at the processing level) get full-resolution H&E, instance
            and type maps; larger ones an H&E preview and no maps.
        preview_size: longest side of the low-resolution picture used for the tissue mask and the preview.
        use_tissue_mask: process only the regions of a slide with tissue.
        progress: show a progress bar over the regions.
    """

    def __init__(self, nuclei_inferer: SlidingWindowInferer, postprocessing: Callable[[dict], dict],
                 stain: str = "ihc", translator: StainTranslator | None = None, region_size: int = 2048,
                 region_margin: int = 128, whole_image_max_pixels: int = 4096 * 4096,
                 max_map_pixels: int = 8192 * 8192, preview_size: int = 2048, use_tissue_mask: bool = True,
                 progress: bool = True) -> None:
        super().__init__()
        if stain not in STAINS:
            raise ValueError(f"stain must be one of {STAINS}; got {stain!r}.")
        if stain == "ihc" and translator is None:
            raise ValueError("stain 'ihc' needs the IHC -> H&E translator; for H&E inputs pass stain 'he'.")
        self.nuclei_inferer, self.postprocessing = nuclei_inferer, postprocessing
        self.stain, self.translator = stain, translator if stain == "ihc" else None
        self.region_size, self.region_margin = int(region_size), int(region_margin)
        self.whole_image_max_pixels, self.max_map_pixels = int(whole_image_max_pixels), int(max_map_pixels)
        self.preview_size, self.use_tissue_mask, self.progress = int(preview_size), use_tissue_mask, progress

    # --- planning -------------------------------------------------------------------------------------------------

    def plan(self, image: InputImage, picture: np.ndarray | None = None) -> tuple[list[Region], int, dict]:
        """``(regions, total, description)`` of an input (see the module's description); ``picture``: its overview
        (:meth:`.slides.InputImage.overview` at ``preview_size``), for the tissue mask of a slide."""
        height, width = image.height, image.width
        if image.kind == "image" and height * width <= self.whole_image_max_pixels:
            whole = (0, 0, height, width)
            return [Region(whole, whole)], 1, {"mode": "whole image"}
        core, margin = max(1, self.region_size), max(0, self.region_margin)
        keep = None
        if self.use_tissue_mask and image.kind == "slide":
            if picture is None:
                picture, _ = image.overview(self.preview_size)
            mask = tissue_mask(picture)
            fy, fx = height / mask.shape[0], width / mask.shape[1]

            def keep(c: tuple[int, int, int, int]) -> bool:
                return bool(mask[int(c[0] // fy):math.ceil(c[2] / fy), int(c[1] // fx):math.ceil(c[3] / fx)].any())

        regions, total = plan_regions(height, width, core, margin, keep)
        return regions, total, {"mode": "regions", "core_size": core, "margin": margin,
                                "tissue_mask": keep is not None}

    # --- one region -----------------------------------------------------------------------------------------------

    def segment(self, he: np.ndarray, network: Callable, timings: dict[str, float] | None = None
                ) -> tuple[np.ndarray, dict]:
        """``(instance_map, instance_info)`` of an H&E image ``(H, W, 3)`` uint8: HoVer-Net's maps stitched over the
        whole image, then the post-processing once. Instances without a contour (no entry in ``instance_info``)
        are removed from the map. ``timings``: seconds of ``hovernet`` and ``postprocessing`` are added to it."""
        timings = {} if timings is None else timings
        start = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(he)).permute(2, 0, 1)[None].float().div_(255.0)
        with torch.inference_mode():
            maps = self.nuclei_inferer(x, network)
        maps = {key: value[0].detach().float().cpu() for key, value in maps.items()}
        middle = time.perf_counter()
        output = self.postprocessing(maps)
        labels = convert_to_numpy(output["instance_map"]).reshape(he.shape[:2]).astype(np.int64)
        info = {int(k): v for k, v in output["instance_info"].items()}
        if labels.max() > 0:
            known = np.zeros(labels.max() + 1, bool)
            known[list(info)] = True
            labels[~known[labels]] = 0
        timings["hovernet"] = timings.get("hovernet", 0.0) + middle - start
        timings["postprocessing"] = timings.get("postprocessing", 0.0) + time.perf_counter() - middle
        return labels, info

    # --- one input ------------------------------------------------------------------------------------------------

    def __call__(self, inputs: InputImage, network: Callable, *args: Any, **kwargs: Any) -> NucleiResult:
        try:
            return self.run(inputs, network)
        finally:
            inputs.close()

    def run(self, image: InputImage, network: Callable) -> NucleiResult:
        """The chained inference of one opened input with the HoVer-Net ``network``."""
        start = time.perf_counter()
        height, width = image.height, image.width
        dx, dy = image.downsample
        full = height * width <= self.max_map_pixels
        picture = None
        if not full or (image.kind == "slide" and self.use_tissue_mask):
            picture, _ = image.overview(self.preview_size)
        regions, total, plan = self.plan(image, picture)
        if full:
            instance_map, type_map = np.zeros((height, width), np.int32), np.zeros((height, width), np.uint8)
            he_image = np.array(image.read(0, 0, height, width)) if len(regions) < total else \
                np.empty((height, width, 3), np.uint8)
            factor = 1
        else:
            instance_map = type_map = None
            factor = math.ceil(max(height, width) / self.preview_size)
            he_image = np.array(Image.fromarray(picture).resize((math.ceil(width / factor),
                                                                 math.ceil(height / factor))))
        nuclei: list[Nucleus] = []
        name = os.path.basename(image.path)
        bar = tqdm(regions, desc=name, unit="region", disable=not self.progress or len(regions) <= 1)
        timings = dict.fromkeys(("read", "translation", "hovernet", "postprocessing", "nuclei"), 0.0)
        for region in bar:
            top, left, bottom, right = region.read
            step = time.perf_counter()
            rgb = image.read(top, left, bottom - top, right - left)
            timings["read"] += time.perf_counter() - step
            step = time.perf_counter()
            he = self.translator(rgb) if self.translator is not None else rgb
            timings["translation"] += time.perf_counter() - step
            labels, info = self.segment(he, network, timings)
            step = time.perf_counter()
            c_top, c_left, c_bottom, c_right = region.core
            core_he = he[c_top - top:c_bottom - top, c_left - left:c_right - left]
            if full:
                he_image[c_top:c_bottom, c_left:c_right] = core_he
            else:
                _paste_reduced(he_image, core_he, c_top, c_left, factor)
            self._keep_core_nuclei(region, labels, info, nuclei, (dx, dy), instance_map, type_map)
            timings["nuclei"] += time.perf_counter() - step
        seconds = time.perf_counter() - start
        megapixels = sum((r.core[2] - r.core[0]) * (r.core[3] - r.core[1]) for r in regions) / 1e6
        logger.info(f"{name}: {width}x{height} px at level {image.level}, {len(regions)} of {total} region(s) "
                    f"({megapixels:.2f} megapixels), {len(nuclei)} nuclei in {seconds:.1f} s "
                    f"({seconds / max(megapixels, 1e-9):.1f} s per megapixel; "
                    + ", ".join(f"{key} {value:.1f} s" for key, value in timings.items()) + ")")
        he_scale = (dx * width / he_image.shape[1], dy * height / he_image.shape[0])
        return NucleiResult(
            path=image.path, kind=image.kind, stain=self.stain, level=image.level, size=(height, width),
            level0_size=tuple(image.level0_size), downsample=(dx, dy), nuclei=nuclei, he_image=he_image,
            he_scale=he_scale, instance_map=instance_map, type_map=type_map,
            regions={**plan, "processed": len(regions), "total": total}, seconds=seconds,
            timings={key: round(value, 3) for key, value in timings.items()})

    @staticmethod
    def _keep_core_nuclei(region: Region, labels: np.ndarray, info: dict, nuclei: list[Nucleus],
                          downsample: tuple[float, float], instance_map: np.ndarray | None,
                          type_map: np.ndarray | None) -> None:
        """Append the nuclei of ``region`` (its instance ``labels`` and ``info``) whose centroid lies in its core to
        ``nuclei``, in level-0 pixels, and paste them into the full-resolution maps if given."""
        ids = sorted(info)
        if not ids:
            return
        top, left = region.read[:2]
        c_top, c_left, c_bottom, c_right = region.core
        dx, dy = downsample
        centroids = ndimage.center_of_mass(labels > 0, labels, ids)
        areas = np.bincount(labels.ravel())[ids]
        for local_id, (row, column), area in zip(ids, centroids, areas):
            row, column = row + top, column + left
            if not (c_top <= row < c_bottom and c_left <= column < c_right):
                continue  # another region's core holds its centroid: it is reported there
            entry = info[local_id]
            nucleus_id = len(nuclei) + 1
            contour = (np.asarray(entry["contour"], np.float64) + (left, top)) * (dx, dy)
            kind = int(entry.get("type", 0))
            nuclei.append(Nucleus(nucleus_id, (column * dx, row * dy), kind, float(entry.get("type_prob", 0.0)),
                                  int(area), contour))
            if instance_map is not None and type_map is not None:
                r0, r1, c0, c1 = (int(v) for v in np.asarray(entry["bounding_box"]).flatten())
                own = labels[r0:r1, c0:c1] == local_id
                target = instance_map[top + r0:top + r1, left + c0:left + c1]
                free = own & (target == 0)
                target[free] = nucleus_id
                type_map[top + r0:top + r1, left + c0:left + c1][free] = kind


def _paste_reduced(preview: np.ndarray, pixels: np.ndarray, top: int, left: int, factor: int) -> None:
    """Paste ``pixels`` (at ``top``, ``left`` of the full image) into ``preview``, reduced ``factor`` times."""
    y0, x0 = top // factor, left // factor
    height = min(math.ceil(pixels.shape[0] / factor), preview.shape[0] - y0)
    width = min(math.ceil(pixels.shape[1] / factor), preview.shape[1] - x0)
    if height > 0 and width > 0:
        reduced = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).reduce(factor))
        preview[y0:y0 + height, x0:x0 + width] = reduced[:height, :width]
