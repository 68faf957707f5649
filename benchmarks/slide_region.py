"""The pathology bundle's chained inference on an H&E whole-slide image at level 0 (``--stain he``), end to end through
``python -m monai.bundle run``: wall time and peak memory, per megapixel of the slide.

The slide is generated (no download): the demo's H&E rendering of scikit-image's IHC image, mirrored to
``--size`` pixels a side, written in Aperio's SVS layout (``scripts.demo.write_aperio_slide``) and read by the
default backend (OpenSlide where it is installed). HoVer-Net is ``--weights`` (a ``hovernet.pt`` trained with
``train_hovernet.json``), else the bundle's trained one when ``models/hovernet.pt`` exists, else freshly initialised
(the networks' time does not depend on their weights; the post-processing's grows with the nuclei found, so the table
says which was used). The table splits the inference's time into its steps (reading, translation, HoVer-Net,
post-processing, collecting the nuclei; the rest is process start, loading and writing the outputs).

    python -m benchmarks.slide_region [--size 2048] [--weights FILE] [--set ID VALUE ...] [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bundle_config import bundle_dir
from benchmarks.harness import machine

NAME = "pathology_ihc_to_he_hovernet"


def slide_pixels(size: int) -> np.ndarray:
    """``size`` x ``size`` H&E-looking RGB: the demo's rendering, mirrored to fill the slide."""
    from scripts.demo import render_he, source_ihc

    tile = render_he(source_ihc())
    row = np.concatenate([tile, tile[:, ::-1]] * (size // (2 * tile.shape[1]) + 1), 1)
    block = np.concatenate([row, row[::-1]] * (size // (2 * row.shape[0]) + 1), 0)
    return np.ascontiguousarray(block[:size, :size])


def measure(size: int, work: Path, weights: Path | None = None, settings: dict[str, str] | None = None) -> dict:
    sys.path.insert(0, str(bundle_dir(NAME)))  # the bundle's scripts package, as monai.bundle run has it
    from scripts.demo import write_aperio_slide
    from scripts.hovernet import hovernet_fast

    from shared.data.integrity import save_with_sha256

    slide = write_aperio_slide(work / "he_slide.svs", slide_pixels(size))
    trained = Path(weights) if weights else bundle_dir(NAME) / "models" / "hovernet.pt"
    models = work / "models"
    if trained.is_file():
        models = trained.parent
    else:
        save_with_sha256(hovernet_fast().state_dict(), models / "hovernet.pt")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               str(bundle_dir(NAME) / "configs" / "inference.json"), "--dataset_dir", str(slide), "--stain", "he",
               "--level", "0", "--ckpt_dir", str(models), "--output_dir", str(work / "out"),
               "--regions#progress", "False", "--nuclei_weights", "bundle"]
    for key, value in (settings or {}).items():
        command += [f"--{key}", value]
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"inference failed:\n{result.stdout[-4000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    document = json.loads((work / "out" / "he_slide_nuclei.json").read_text())
    megapixels = size * size / 1e6
    return {"slide": f"{size}x{size} H&E, Aperio SVS layout, level 0", "megapixels": round(megapixels, 2),
            "regions": document["regions"], "nuclei": document["num_nuclei"],
            "weights": "trained" if trained.is_file() else "random", "settings": settings or {},
            "seconds": round(seconds, 1), "steps": document.get("seconds", {}),
            "seconds_per_megapixel": round(seconds / megapixels, 1), "peak_memory_mb": round(peak_mb),
            "peak_memory_mb_per_megapixel": round(peak_mb / megapixels, 1), "machine": machine(),
            "command": " ".join(["python -m benchmarks.slide_region --size", str(size),
                                 *(f"--set {k} {v}" for k, v in (settings or {}).items())])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="slide side in pixels (level 0)")
    parser.add_argument("--weights", type=Path, default=None, help="HoVer-Net weights (hovernet.pt) to use")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                        help="an inference.json override, e.g. --set nuclei#max_window 512")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        row = measure(args.size, Path(work), args.weights, dict(args.set))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "slide_region.json").write_text(json.dumps(row, indent=2))
    steps = row["steps"]
    print("| slide | MP | regions processed | nuclei | weights | s | s/MP | peak MB | MB/MP | steps (s) |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {row['slide']} | {row['megapixels']} | {row['regions'].get('processed', '-')} of "
          f"{row['regions'].get('total', '-')} | {row['nuclei']} | {row['weights']} | {row['seconds']} | "
          f"{row['seconds_per_megapixel']} | {row['peak_memory_mb']} | {row['peak_memory_mb_per_megapixel']} | "
          + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()) + " |")
    print(f"command: {row['command']}")
    print(f"machine: {row['machine']}")


if __name__ == "__main__":
    main()
