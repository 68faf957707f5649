"""Whole-volume inference of the BABY-AI bundle's published preset against the study's own loop: prints a table.

    python benchmarks/babyai_inference.py [--study_windows 40] [--device cpu|cuda] [--preset published|small]

Both run the study's network (``published`` preset, 379 M parameters; random weights with one seed, since speed and
memory do not depend on the values and the hub is not needed) on one demo session (182x218x182 at 1 mm), each in its
own process so that its peak resident memory is its own:

1. the study's loop: both volumes normalised, zero-padded (centred) to 192x224x192, every 32^3 window at stride 16
   run alone under ``torch.no_grad`` and the overlaps averaged, as the study's inference script did. On a CPU this
   takes about half an hour, so ``--study_windows N`` times its first N windows and scales the time to all 1573
   (each window costs the same); ``0`` runs them all.
2. the bundle: ``configs/inference.json`` as it is (foreground crop, ``ForegroundSlidingWindowInferer`` with
   32^3 windows, overlap 0.5, constant blending as the study averaged, 8 windows a batch, ``torch.inference_mode``,
   output written on the T1w's grid).

The last column compares the two outputs inside the brain (the study's cropped back from its padded grid); set
``BABYAI_WEIGHTS=<weights of the preset>`` to compare a trained network's (random weights make every window's
edge effects large). The two place their windows differently (the study from the padded grid's corner, the bundle
from the foreground box's), so near-equal, not equal, outputs are expected.
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

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "babyai_infant_brain_t2w_sr"
STUDY_GRID = (192, 224, 192)
ROI, STRIDE = 32, 16


def _network(device: str, preset: str):
    import os

    import torch

    from shared.networks.babyai_unet import babyai_unet

    torch.manual_seed(0)
    network = babyai_unet(preset)
    for parameter in network.model[-1].parameters():  # random, not zero: a residual preset starts as the identity
        if parameter.dim() > 1:
            torch.nn.init.normal_(parameter, std=0.01)
    if os.environ.get("BABYAI_WEIGHTS"):  # trained weights, so that the two outputs can be compared meaningfully
        network.load_state_dict(torch.load(os.environ["BABYAI_WEIGHTS"], map_location="cpu", weights_only=True))
    return network.to(device).eval()


def study_loop(t1w: str, t2w: str, out: str, device: str, max_windows: int, preset: str) -> dict:
    """The study's inference, as its script did it (plus a cap on the windows timed)."""
    import nibabel as nib
    import torch

    from shared.transforms.intensity import MaskedPercentileRescale

    network = _network(device, preset)
    scale = MaskedPercentileRescale(1.0, 99.0, 0.0, 1.0)
    volumes = [scale(np.asarray(nib.load(p).dataobj, dtype=np.float32)[None])[0] for p in (t1w, t2w)]
    shape = volumes[0].shape
    before = [(g - s) // 2 for g, s in zip(STUDY_GRID, shape)]
    padded = np.stack([np.pad(v, [(b, g - s - b) for b, g, s in zip(before, STUDY_GRID, shape)]) for v in volumes])
    output = np.zeros(STUDY_GRID, np.float32)
    count = np.zeros(STUDY_GRID, np.float32)
    corners = [(x, y, z) for x in range(0, STUDY_GRID[0] - ROI + 1, STRIDE)
               for y in range(0, STUDY_GRID[1] - ROI + 1, STRIDE) for z in range(0, STUDY_GRID[2] - ROI + 1, STRIDE)]
    timed = corners if max_windows <= 0 else corners[:max_windows]
    start = time.perf_counter()
    with torch.no_grad():
        for x, y, z in timed:
            window = torch.from_numpy(padded[None, :, x:x + ROI, y:y + ROI, z:z + ROI]).to(device)
            output[x:x + ROI, y:y + ROI, z:z + ROI] += network(window)[0, 0].cpu().numpy()
            count[x:x + ROI, y:y + ROI, z:z + ROI] += 1
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) * len(corners) / len(timed)
    result = output / np.maximum(count, 1)
    crop = tuple(slice(b, b + s) for b, s in zip(before, shape))
    np.save(out, result[crop])
    return {"seconds": seconds, "windows": len(corners), "timed_windows": len(timed)}


def bundle_inference(t1w: str, t2w: str, out: str, device: str, preset: str) -> dict:
    """``configs/inference.json`` over one pair, with the preset's network (no weights file)."""
    import torch
    from monai.bundle import ConfigParser

    sys.path.insert(0, str(BUNDLE))
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    folder = Path(out).parent / "bundle_out"
    parser.update({"bundle_root": str(BUNDLE), "datalist": [{"t1w": t1w, "t2w": t2w}], "output_dir": str(folder),
                   "handlers": [], "checkpoint": None, "device": f"$torch.device('{device}')",
                   "network": "$None"})
    evaluator = parser.get_parsed_content("evaluator")
    evaluator.network = _network(device, preset)  # the same weights as the study loop's network
    windows: list[int] = []
    evaluator.network.register_forward_pre_hook(lambda module, inputs: windows.append(inputs[0].shape[0]))
    start = time.perf_counter()
    evaluator.run()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    import nibabel as nib

    written = next(folder.glob("*_sr.nii.gz"))
    np.save(out, np.asarray(nib.load(written).dataobj, dtype=np.float32))
    return {"seconds": seconds, "windows": sum(windows), "timed_windows": sum(windows)}


def _child(method: str, t1w: str, t2w: str, out: str, device: str, study_windows: int, preset: str) -> None:
    import torch

    torch.set_grad_enabled(True)
    result = (study_loop(t1w, t2w, out, device, study_windows, preset) if method == "study"
              else bundle_inference(t1w, t2w, out, device, preset))
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study_windows", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="published", help="'small' runs the study loop in full in minutes")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, t1w, t2w, out, device, windows, preset = args.child
        return _child(method, t1w, t2w, out, device, int(windows), preset)
    sys.path.insert(0, str(BUNDLE))
    from scripts.demo import ensure_babyai_demo

    demo = Path(ensure_babyai_demo(str(BUNDLE / "demo_data" / "baby_open_brains")))
    anat = demo / "sub-D01" / "ses-1mo" / "anat"
    t1w, t2w = (str(anat / f"sub-D01_ses-1mo_space-INFANTMNIacpc_{c}.nii.gz") for c in ("T1w", "T2w"))
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("bundle", "study"):
            out = str(Path(tmp) / f"{method}.npy")
            run = subprocess.run([sys.executable, __file__, "--child", method, t1w, t2w, out, args.device,
                                  str(args.study_windows), args.preset], capture_output=True, text=True)
            line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{method} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            results[method] = json.loads(line[len("RESULT "):])
            outputs[method] = np.load(out)
    import nibabel as nib

    brain = np.asarray(nib.load(t1w).dataobj) > 0
    difference = None
    if args.study_windows <= 0:
        gap = np.abs(outputs["bundle"] - outputs["study"])[brain]
        difference = (f"max {gap.max():.2e}, mean {gap.mean():.2e}, 99th percentile {np.percentile(gap, 99):.2e} "
                      f"(output range {outputs['study'][brain].min():.2f} to {outputs['study'][brain].max():.2f})")
    study, ours = results["study"], results["bundle"]
    print(f"\nBABY-AI {args.preset} preset, one 182x218x182 volume, device {args.device}\n")
    print("| method | windows run | time (s) | peak RSS (GB) | max abs difference in the brain |")
    print("|---|---|---|---|---|")
    timed = "" if study["timed_windows"] == study["windows"] else f" (scaled from {study['timed_windows']} timed)"
    print(f"| study loop (padded 192x224x192, stride 16, one window a pass) | {study['windows']} | "
          f"{study['seconds']:.0f}{timed} | {study['peak_rss_gb']:.2f} | reference |")
    diff = "n/a (study loop not run in full)" if difference is None else difference
    print(f"| bundle inference.json | {ours['windows']} | {ours['seconds']:.0f} | {ours['peak_rss_gb']:.2f} | {diff} |")
    print(f"\nspeed-up: {study['seconds'] / ours['seconds']:.2f}x")


if __name__ == "__main__":
    main()
