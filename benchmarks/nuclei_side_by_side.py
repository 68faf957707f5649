"""The pathology bundle's nuclei inference side by side with the MONAI model zoo's recipe, on the same H&E region
with the same HoVer-Net weights: both times and how far their nuclei agree.

- zoo: ``pathology_nuclei_segmentation_classification``'s ``inference.json`` (fast mode) as written there:
  ``SlidingWindowHoVerNetInferer`` (256x256 windows, overlap ``1 - 164 / 256``, ``sw_batch_size`` 16, 46 pixels of
  zero padding), then ``HoVerNetInstanceMapPostProcessingd`` (Sobel kernel 21, marker threshold 0.4, radius 2) and
  ``HoVerNetNuclearTypePostProcessingd`` on the whole region;
- bundle: ``inference.json --stain he`` (its inferer and network as the config builds them) on the same region
  saved as a PNG; ``--set ID VALUE`` overrides it (a second bundle row with them when ``--compare_set`` is given).

Agreement (``shared.metrics.nuclei_agreement``): instances matched one to one at IoU >= 0.5, the share of each
side's nuclei matched, and of matched pairs with the same type. The region is ``benchmarks.slide_region``'s (the
demo's H&E rendering mirrored to ``--size``); HoVer-Net is ``--weights`` (or the bundle's ``models/hovernet.pt``),
else freshly initialised, which finds no nuclei: agreement then says nothing, and the table says which was used.

    python -m benchmarks.nuclei_side_by_side [--size 1024] [--weights FILE] [--set ID VALUE ...] [--compare_set]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.apps.pathology.inferers import SlidingWindowHoVerNetInferer
from monai.apps.pathology.transforms import HoVerNetInstanceMapPostProcessingd, HoVerNetNuclearTypePostProcessingd
from monai.transforms import Compose
from PIL import Image

from benchmarks.bundle_config import bundle_dir, parse
from benchmarks.harness import machine
from benchmarks.slide_region import NAME, slide_pixels

ZOO = {"roi_size": 256, "out_size": 164, "sw_batch_size": 16, "sobel_kernel_size": 21, "marker_threshold": 0.4,
       "marker_radius": 2}


def zoo_recipe(rgb: np.ndarray, network: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """``(instance_map, type_map)`` of ``rgb`` (H, W, 3) uint8 by the zoo bundle's inference recipe."""
    inferer = SlidingWindowHoVerNetInferer(
        roi_size=ZOO["roi_size"], sw_batch_size=ZOO["sw_batch_size"], overlap=1.0 - ZOO["out_size"] / ZOO["roi_size"],
        padding_mode="constant", cval=0, extra_input_padding=((ZOO["roi_size"] - ZOO["out_size"]) // 2,) * 4)
    postprocessing = Compose([
        HoVerNetInstanceMapPostProcessingd(sobel_kernel_size=ZOO["sobel_kernel_size"],
                                           marker_threshold=ZOO["marker_threshold"],
                                           marker_radius=ZOO["marker_radius"]),
        HoVerNetNuclearTypePostProcessingd()])
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        maps = inferer(x, network)
    out = postprocessing({key: value[0] for key, value in maps.items()})
    return np.asarray(out["instance_map"])[0], np.asarray(out["type_map"])[0]


def _value(text: str):
    """A ``--set`` value: JSON where it parses (numbers, booleans, null, lists), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def bundle_inference(png: Path, weights: dict | None, settings: dict[str, str], where: dict
                     ) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """``(instance_map, type_map, seconds, step seconds)`` of the H&E image ``png`` by ``inference.json``
    (``where``: its ``ckpt_dir`` and ``nuclei_weights``)."""
    overrides = {"dataset_dir": str(png.parent), "stain": "he", **where, "regions#progress": False,
                 **{key: _value(value) for key, value in settings.items()}}
    parser = parse(NAME, ["inference.json"], overrides)
    network = parser.get_parsed_content("network").eval()
    if weights is not None:
        network.load_state_dict(weights)
    inferer = parser.get_parsed_content("inferer")
    image = parser.get_parsed_content("dataset")[0]["image"]
    start = time.perf_counter()
    result = inferer(image, network)
    seconds = time.perf_counter() - start
    return result.instance_map, result.type_map, seconds, result.timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="region side in pixels")
    parser.add_argument("--weights", type=Path, default=None, help="HoVer-Net weights (hovernet.pt)")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                        help="an inference.json override for the bundle's row, e.g. --set nuclei#max_window 512")
    parser.add_argument("--compare_set", action="store_true",
                        help="two bundle rows: the config as it is, and with the --set overrides")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    path = args.weights or bundle_dir(NAME) / "models" / "hovernet.pt"
    weights = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    from shared.metrics.nuclei_agreement import nuclei_agreement

    variants = [{}, dict(args.set)] if args.compare_set else [dict(args.set)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "region").mkdir()
        where = {"ckpt_dir": str(path.parent), "nuclei_weights": "bundle"} if weights is not None else \
            {"ckpt_dir": str(work / "models"), "nuclei_weights": "bundle"}
        network = parse(NAME, ["inference.json"], {"stain": "he", **where}).get_parsed_content("network_def").eval()
        rgb = slide_pixels(args.size)  # after parse: the bundle's scripts package is importable
        Image.fromarray(rgb).save(work / "region" / "he_region.png")
        if weights is not None:
            network.load_state_dict(weights)
        start = time.perf_counter()
        zoo_instances, zoo_types = zoo_recipe(rgb, copy.deepcopy(network))
        zoo_seconds = time.perf_counter() - start
        for settings in variants:
            instances, types, seconds, steps = bundle_inference(work / "region" / "he_region.png", weights, settings,
                                                                where)
            agreement = nuclei_agreement(zoo_instances, instances, zoo_types, types)
            rows.append({"settings": settings, "seconds": round(seconds, 1), "steps": steps,
                         "zoo_seconds": round(zoo_seconds, 1), "ratio": round(zoo_seconds / seconds, 2),
                         "agreement": agreement.as_dict()})
    megapixels = args.size ** 2 / 1e6
    report = {"region": f"{args.size}x{args.size} H&E", "megapixels": round(megapixels, 2),
              "weights": "trained" if weights is not None else "random", "machine": machine(), "rows": rows,
              "command": "python -m benchmarks.nuclei_side_by_side " + " ".join(argv or [])}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "nuclei_side_by_side.json").write_text(json.dumps(report, indent=2))
    print(f"{report['region']}, {report['megapixels']} MP, HoVer-Net weights {report['weights']}\n"
          "| bundle settings | bundle s (s/MP) | zoo recipe s (s/MP) | zoo / bundle | zoo nuclei | bundle nuclei | "
          "matched (both ways) | same type |\n|---|---|---|---|---|---|---|---|")
    for row in rows:
        a = row["agreement"]
        print(f"| {', '.join(f'{k} {v}' for k, v in row['settings'].items()) or 'inference.json as it is'} | "
              f"{row['seconds']} ({row['seconds'] / megapixels:.1f}) | {row['zoo_seconds']} "
              f"({row['zoo_seconds'] / megapixels:.1f}) | {row['ratio']} | {a['reference']} | {a['candidate']} | "
              f"{a['both_ways']:.3f} | {a['same_type']:.3f} |")
    print(f"machine: {report['machine']}")


if __name__ == "__main__":
    main()
