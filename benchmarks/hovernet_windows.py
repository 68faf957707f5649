"""HoVer-Net fast's time per window side on this machine: how the window size trades the border HoVer-Net trims
(46 pixels a side) against the per-pixel cost of larger activations, the numbers behind the pathology bundle's
``nuclei#max_window``.

For each side: one window's forward pass (the bundle's network, freshly initialised: time does not depend on the
weights), eager PyTorch in channels-last memory format as ``inference.json`` runs it, with batch norms folded, and
under bf16 autocast; the median of ``--repeats`` after a warm-up, in seconds per megapixel of output kept.

    python -m benchmarks.hovernet_windows [--sides 256 384 512 768] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bundle_config import parse
from benchmarks.harness import machine
from benchmarks.slide_region import NAME

VARIANTS = {"channels-last": {"channels_last": True}, "+ folded batch norms": {"channels_last": True,
                                                                               "fold_batch_norm": True},
            "+ bf16 autocast": {"channels_last": True, "fold_batch_norm": True, "autocast_dtype": "bfloat16"}}


def seconds_per_window(network: torch.nn.Module, side: int, repeats: int, settings: dict) -> float:
    from shared.inferers.onnx_runtime import BackendInferer

    inferer = BackendInferer(lambda x, net: net(x), **settings)
    x = torch.rand(1, 3, side, side)
    times = []
    with torch.inference_mode():
        inferer(x, network)
        for _ in range(repeats):
            start = time.perf_counter()
            inferer(x, network)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 384, 512, 768])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    rows = []
    for side in args.sides:
        for name, settings in VARIANTS.items():
            network = parse(NAME, ["inference.json"], {"stain": "he"}).get_parsed_content("network_def").eval()
            seconds = seconds_per_window(network, side, args.repeats, settings)
            kept = (side - 92) ** 2 / 1e6
            rows.append({"side": side, "variant": name, "seconds": round(seconds, 2),
                         "kept_share": round(kept / (side * side / 1e6), 3),
                         "seconds_per_output_megapixel": round(seconds / kept, 1),
                         "seconds_per_input_megapixel": round(seconds / (side * side / 1e6), 1)})
            print(rows[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "hovernet_windows.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print("| window | output kept | variant | s a window | s per input MP | s per output MP |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r['kept_share']:.0%} | {r['variant']} | {r['seconds']} | "
              f"{r['seconds_per_input_megapixel']} | {r['seconds_per_output_megapixel']} |")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
