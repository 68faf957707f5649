"""BABY-AI: training rows of ``train.json``; whole-volume inference of ``inference.json`` (foreground crop,
foreground sliding windows in batches) against the study's loop (the volume zero-padded to a grid of whole strides,
every window at half-window stride run alone, overlaps averaged); the network exported.

The table uses the ``small`` preset (1.2 M parameters), so that the study's loop runs in full, repeatedly: both
contenders run the same windows' worth of network either way, so the ratio holds the windows each runs and how;
``benchmarks/babyai_inference.py`` measures the study's 379 M-parameter ``published`` preset once (about half an
hour on 2 CPU cores)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from monai.transforms import Compose, CropForegroundd

from benchmarks.bundle_config import parse
from benchmarks.export_rows import export_rows
from benchmarks.harness import Contenders, Row
from benchmarks.training_rows import training_rows

NAME = "babyai_infant_brain_t2w_sr"
QUICK = {"demo#num_subjects": 4, "demo#voxel_size": 3.0, "pixdim": [3.0, 3.0, 3.0], "patch_size": [16, 16, 16],
         "patch_margin": 2, "patches_per_volume": 2}
TRAIN_QUICK = {"slice_factors": [2, 4], "slice_axes": [0, 2]}
PRESET = "small"


def _overrides(quick: bool, workdir: Path) -> dict:
    where = {"ckpt_dir": str(workdir / "models"), "output_dir": str(workdir / "eval"), "preset": PRESET}
    return {**QUICK, **where, "demo#dir": str(workdir / "demo")} if quick else where


def study_loop(volume: torch.Tensor, network: torch.nn.Module, roi: int) -> torch.Tensor:
    """The study's inference: ``volume`` (1, C, X, Y, Z) zero-padded, centred, to whole multiples of the stride
    (``roi / 2``), each ``roi``^3 window through the network alone, the overlapping outputs averaged."""
    stride = roi // 2
    shape = volume.shape[2:]
    grid = [max(roi, math.ceil(s / stride) * stride) for s in shape]
    before = [(g - s) // 2 for g, s in zip(grid, shape)]
    pad = [p for b, g, s in reversed(list(zip(before, grid, shape))) for p in (b, g - s - b)]
    padded = torch.nn.functional.pad(volume, pad)
    output = torch.zeros((1, 1, *grid))
    count = torch.zeros((1, 1, *grid))
    with torch.no_grad():
        for x in range(0, grid[0] - roi + 1, stride):
            for y in range(0, grid[1] - roi + 1, stride):
                for z in range(0, grid[2] - roi + 1, stride):
                    window = (..., slice(x, x + roi), slice(y, y + roi), slice(z, z + roi))
                    output[window] += network(padded[window])
                    count[window] += 1
    output /= count.clamp(min=1)
    return output[(..., *(slice(b, b + s) for b, s in zip(before, shape)))]


def inference_contenders(quick: bool, workdir: Path, backend: str = "torch") -> Contenders:
    parser = parse(NAME, ["inference.json"], _overrides(quick, workdir))
    pair = parser.get_parsed_content("dataset").data[0]
    transforms = parser.get_parsed_content("preprocessing").transforms
    crop = next(i for i, t in enumerate(transforms) if isinstance(t, CropForegroundd))
    whole = Compose(transforms[:crop])(pair)
    cropped = Compose(transforms[crop:])(whole)
    volume = torch.cat([whole["t1w"].as_tensor(), whole["t2w"].as_tensor()])[None]
    image = cropped["image"].as_tensor()[None]
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("inferer")
    roi = parser.get_parsed_content("patch_size")[0]

    def bundle():
        with torch.inference_mode():
            return inferer(image, network)

    def study():
        return study_loop(volume, network, roi)

    def agreement(ours, theirs) -> dict:
        box = cropped["foreground_start_coord"], cropped["foreground_end_coord"]
        region = theirs[(..., *(slice(int(a), int(b)) for a, b in zip(*box)))]
        inside = image[:, :1] > 0  # the brain: where the T1w is not background
        return {"max_abs_diff_in_brain": float((ours - region).abs()[inside].max())}

    return Contenders(f"one {tuple(volume.shape[2:])} volume, {PRESET} preset, {roi}^3 windows: inference.json's "
                      f"foreground crop and ForegroundSlidingWindowInferer ({inferer.sw_batch_size} windows a batch, "
                      f"overlap {inferer.overlap}, inference_mode) vs the study's padded loop at stride {roi // 2}, "
                      "one window a pass", bundle, study, agreement)


def rows(quick: bool, repeats: int, workdir: Path) -> list[Row]:
    overrides = {**_overrides(quick, workdir), **(TRAIN_QUICK if quick else {})}
    overrides.pop("preset")
    result = training_rows(parse(NAME, ["train.json"], overrides), "train.json", 2 if quick else 10, repeats)
    inference = parse(NAME, ["inference.json"], _overrides(quick, workdir))
    roi = inference.get_parsed_content("patch_size")
    result += export_rows(f"residual U-Net ({PRESET} preset)", inference.get_parsed_content("network_def"),
                          torch.randn(2 if quick else 8, 2, *roi), repeats)
    return result
