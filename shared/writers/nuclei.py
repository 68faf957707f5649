"""What the chained IHC -> H&E -> nuclei inference (``shared.inferers.chained_nuclei``) writes for each input
``<stem>``, in ``output_dir``:

- ``<stem>_he.png``: the H&E image HoVer-Net saw (the translation of an IHC input, or the input itself with ``stain
  he``), at the processing level; for an input larger than ``max_map_pixels`` (a whole slide at level 0) a preview
  of at most ``preview_size`` pixels a side (its scale is in the JSON).
- ``<stem>_instances.tif`` (int32, 0 background, nucleus ``id`` elsewhere) and ``<stem>_types.tif`` (uint8, 0
  background, 1, 2, ... the nucleus types) at the processing level, zlib-compressed, tiled when large; ``.npy`` with
  ``map_format="npy"``. Not written for inputs larger than ``max_map_pixels`` (the JSON and GeoJSON hold every
  nucleus).
- ``<stem>_nuclei.json``: the input, level and scales, and ``nuclei``: ``{"id", "centroid": [x, y], "type",
  "type_name", "type_probability", "area", "contour": [[x, y], ...]}``, coordinates in level-0 pixels (x: column,
  y: row), ``area`` in processing-level pixels (the instance map's count).
- ``<stem>_nuclei.geojson``: the same nuclei for QuPath (File > Import objects): a ``FeatureCollection`` of
  ``Polygon`` features (closed rings, level-0 pixels) with ``objectType: "detection"``, the type as
  ``classification`` (name and colour) and the id, area and type probability as ``measurements``.
- ``<stem>_overlay.png``: the nuclei's contours over ``<stem>_he.png``, coloured by type.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image, ImageDraw

from shared.data.case_names import plain_case_name
from shared.writers.naming import output_path

__all__ = ["type_names_of", "TYPE_COLOURS", "Nucleus", "NucleiResult", "nuclei_json", "nuclei_geojson",
           "draw_contours", "write_label_map", "SaveNucleiOutputsd"]

logger = logging.getLogger(__name__)
# type 0 (a nucleus without a type) grey, then HoVer-Net's PanNuke colours: red, green, blue, yellow, orange
TYPE_COLOURS: dict[int, tuple[int, int, int]] = {0: (128, 128, 128), 1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255),
                                                 4: (255, 255, 0), 5: (255, 165, 0)}


@dataclass
class Nucleus:
    """One nucleus: ``centroid`` ``(x, y)`` and ``contour`` ``(N, 2)`` in level-0 pixels, ``area`` in
    processing-level pixels."""

    id: int
    centroid: tuple[float, float]
    type: int
    type_probability: float
    area: int
    contour: np.ndarray


@dataclass
class NucleiResult:
    """The chained inference's result for one input.

    ``he_image``: the H&E image (``he_scale``: level-0 pixels per its pixel, ``(x, y)``); ``instance_map`` /
    ``type_map``: processing-level maps, ``None`` when the input is too large to hold them; ``size``, ``level0_size``:
    ``(height, width)``; ``downsample``: level-0 pixels per processing-level pixel, ``(x, y)``; ``seconds``: the
    whole inference, ``timings``: its seconds per step (read, translation, hovernet, postprocessing, nuclei)."""

    path: str
    kind: str
    stain: str
    level: int
    size: tuple[int, int]
    level0_size: tuple[int, int]
    downsample: tuple[float, float]
    nuclei: list[Nucleus]
    he_image: np.ndarray
    he_scale: tuple[float, float]
    instance_map: np.ndarray | None = None
    type_map: np.ndarray | None = None
    regions: dict = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _number(value: float) -> float | int:
    value = round(float(value), 2)
    return int(value) if value.is_integer() else value


def _points(contour: np.ndarray) -> list[list[float | int]]:
    return [[_number(x), _number(y)] for x, y in contour]


def type_names_of(names: Sequence[str]) -> dict[int, str]:
    """Type number -> name: ``names`` are the types 1, 2, ...; 0 is a nucleus without a type."""
    return {0: "Unclassified", **{i: str(name) for i, name in enumerate(names, start=1)}}


def nuclei_json(result: NucleiResult, files: Mapping[str, str | None], type_names: Mapping[int, str]) -> dict:
    """The ``<stem>_nuclei.json`` document of ``result``; ``files``: the names of the other outputs."""
    return {
        "image": result.path,
        "kind": result.kind,
        "stain": result.stain,
        "level": result.level,
        "size": {"height": result.size[0], "width": result.size[1]},
        "level0_size": {"height": result.level0_size[0], "width": result.level0_size[1]},
        "downsample": {"x": result.downsample[0], "y": result.downsample[1]},
        "coordinates": "level-0 pixels: x = column, y = row, from the top-left pixel; area in processing-level pixels",
        "he_image_scale": {"x": result.he_scale[0], "y": result.he_scale[1]},
        "files": dict(files),
        "regions": result.regions,
        "seconds": {"total": round(result.seconds, 3), **result.timings},
        "type_names": {str(k): v for k, v in type_names.items()},
        "num_nuclei": len(result.nuclei),
        "nuclei": [{"id": n.id, "centroid": [_number(n.centroid[0]), _number(n.centroid[1])], "type": n.type,
                    "type_name": type_names.get(n.type, str(n.type)), "type_probability": round(n.type_probability, 4),
                    "area": n.area, "contour": _points(n.contour)} for n in result.nuclei],
    }


def nuclei_geojson(result: NucleiResult, type_names: Mapping[int, str],
                   colours: Mapping[int, Sequence[int]] = TYPE_COLOURS) -> dict:
    """A QuPath-compatible GeoJSON ``FeatureCollection`` of ``result``'s nuclei (detections, level-0 pixels); each
    feature's ``id`` is a UUID derived from the input and the nucleus id."""
    features = []
    for n in result.nuclei:
        ring = _points(n.contour)
        ring.append(ring[0])
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{os.path.abspath(result.path)}#nucleus-{n.id}")),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "detection",
                "isLocked": False,
                "classification": {"name": type_names.get(n.type, str(n.type)),
                                   "color": list(colours.get(n.type, (128, 128, 128)))},
                "measurements": {"Nucleus ID": n.id, "Area px": n.area,
                                 "Type probability": round(n.type_probability, 4)},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def draw_contours(image: np.ndarray, nuclei: Sequence[Nucleus], scale: tuple[float, float],
                  colours: Mapping[int, Sequence[int]] = TYPE_COLOURS, width: int = 1,
                  type_names: Mapping[int, str] | None = None) -> np.ndarray:
    """``image`` (RGB uint8) with each nucleus's contour drawn in its type's colour; contours are in level-0
    pixels, ``scale`` level-0 pixels per image pixel ``(x, y)``. With ``type_names``, a legend of the types drawn
    (colour swatch and name) in the top-left corner, when the image has room for it."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for n in nuclei:
        points = [(float(x) / scale[0], float(y) / scale[1]) for x, y in n.contour]
        draw.line(points + points[:1], fill=tuple(colours.get(n.type, (128, 128, 128))), width=width)
    if type_names:
        _draw_legend(draw, picture.size, sorted({n.type for n in nuclei}), type_names, colours)
    return np.asarray(picture)


LEGEND_ROW = 12  # pixels a legend line takes


def _draw_legend(draw: ImageDraw.ImageDraw, size: tuple[int, int], types: Sequence[int],
                 type_names: Mapping[int, str], colours: Mapping[int, Sequence[int]]) -> None:
    names = [type_names.get(t, str(t)) for t in types]
    box_width = 16 + 6 * max((len(n) for n in names), default=0)
    if not types or size[0] < box_width + 4 or size[1] < LEGEND_ROW * len(types) + 4:
        return
    draw.rectangle([0, 0, box_width, LEGEND_ROW * len(types) + 2], fill=(255, 255, 255))
    for row, (t, name) in enumerate(zip(types, names)):
        top = 2 + LEGEND_ROW * row
        draw.rectangle([2, top, 10, top + 8], fill=tuple(colours.get(t, (128, 128, 128))))
        draw.text((14, top - 1), name, fill=(0, 0, 0))


def write_label_map(path: str, labels: np.ndarray) -> None:
    """A 2D label map as ``.npy``, or as a zlib-compressed TIFF (tiled 512x512 beyond 4096 pixels a side)."""
    if path.endswith(".npy"):
        np.save(path, labels)
        return
    tile = (512, 512) if max(labels.shape) > 4096 else None
    tifffile.imwrite(path, labels, compression="zlib", tile=tile, photometric="minisblack")


def _write_json(path: str, document: dict) -> None:
    partial = path + ".partial"
    with open(partial, "w") as f:
        json.dump(document, f, separators=(",", ":"))
    os.replace(partial, path)


class SaveNucleiOutputsd(MapTransform):
    """Write a case's outputs (see the module's description) from the :class:`NucleiResult` under ``keys``, named
    after the case's ``case_key`` entry, into ``output_dir``.

    Args:
        keys: key of the :class:`NucleiResult` (``"pred"``).
        output_dir: the output folder.
        type_names: the names of the nucleus types 1, 2, ... (e.g. PanNuke's five).
        map_format: ``"tif"`` or ``"npy"`` for the instance and type maps.
        case_key: key of the case name (the output files' stem).
        line_width: contour width in the overlay, in pixels.
    """

    def __init__(self, keys: KeysCollection, output_dir: str, type_names: Sequence[str], map_format: str = "tif",
                 case_key: str = "case", line_width: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if map_format not in ("tif", "npy"):
            raise ValueError(f"map_format must be 'tif' or 'npy'; got {map_format!r}.")
        self.output_dir, self.map_format, self.case_key, self.line_width = output_dir, map_format, case_key, line_width
        self.type_names = type_names_of(type_names)

    def write(self, result: NucleiResult, stem: str) -> dict[str, str | None]:
        """Write every output of ``result`` as ``<stem>_*``; return the file names."""
        plain_case_name(stem, result.path)
        os.makedirs(self.output_dir, exist_ok=True)
        files: dict[str, str | None] = {
            "he": f"{stem}_he.png", "instances": None, "types": None, "nuclei": f"{stem}_nuclei.json",
            "geojson": f"{stem}_nuclei.geojson", "overlay": f"{stem}_overlay.png"}
        if result.instance_map is not None and result.type_map is not None:
            files["instances"] = f"{stem}_instances.{self.map_format}"
            files["types"] = f"{stem}_types.{self.map_format}"
        where = {k: output_path(self.output_dir, v) for k, v in files.items() if v}
        Image.fromarray(result.he_image).save(where["he"])
        if files["instances"]:
            write_label_map(where["instances"], result.instance_map.astype(np.int32))
            write_label_map(where["types"], result.type_map.astype(np.uint8))
        _write_json(where["nuclei"], nuclei_json(result, files, self.type_names))
        _write_json(where["geojson"], nuclei_geojson(result, self.type_names))
        overlay = draw_contours(result.he_image, result.nuclei, result.he_scale, width=self.line_width,
                                type_names=self.type_names)
        Image.fromarray(overlay).save(where["overlay"])
        return files

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            result: NucleiResult = d[key]
            stem = str(d.get(self.case_key) or os.path.splitext(os.path.basename(result.path))[0])
            self.write(result, stem)
            logger.info(f"{stem}: {len(result.nuclei)} nuclei written to {self.output_dir}")
        return d
