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

from benchmarks.bundle_config import bundle_dir, parse
from benchmarks.export_rows import export_rows
from benchmarks.gpu_check import Step, torchrun_step, train_and_resume
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


def gpu_steps(quick: bool, work: Path) -> list[Step]:
    """``python -m benchmarks.gpu_check``: training of the ``small`` preset (and its resume), evaluation, the thick-
    slice synthesis, inference of the demo sessions, the multi-GPU stack, the network exported. The study's 379 M
    preset needs its weights from the Hugging Face Hub and is left to ``benchmarks/babyai_inference.py``."""
    common = _overrides(quick, work)
    train = {k: v for k, v in common.items() if k != "preset"}
    if quick:
        train.update(TRAIN_QUICK, **{"train#dataset#num_workers": 0, "validate#dataset#num_workers": 0})
    iterations = 2 if quick else 20
    evaluation = {**{k: v for k, v in train.items() if "num_workers" not in k}, "slice_factors": [4],
                  "slice_axes": [2]}
    inference = {k: v for k, v in common.items() if k in ("demo#num_subjects", "demo#voxel_size", "demo#dir",
                                                          "pixdim", "patch_size", "preset", "ckpt_dir")}
    demo = common.get("demo#dir", str(bundle_dir(NAME) / "demo_data" / "baby_open_brains"))
    return [
        *train_and_resume("train.json", ["train.json"], train, iterations),
        Step("evaluate", "run", ["train.json", "evaluate.json"], evaluation, needs=("train.json",)),
        Step("synthesize", "run", ["synthesize.json"],
             {"dataset_dir": demo, "synthesis_dir": str(work / "thick")}, needs=("train.json",)),
        Step("inference", "infer", ["inference.json"],
             {**inference, "dataset_dir": demo, "output_dir": str(work / "out")}, needs=("train.json",),
             outputs=("**/*_T2w_sr.nii.gz",)),
        torchrun_step("train.json multi-GPU", ["train.json"], {**train, "training_state#dir": str(work / "ddp_state")},
                      iterations, needs=("train.json",)),
        Step("export", "export", ["inference.json"], inference, needs=("train.json",)),
    ]
