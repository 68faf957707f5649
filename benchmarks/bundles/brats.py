"""BraTS 2020 slice segmentation: training rows from ``train.json``; whole-volume inference of ``inference.json``'s
inferer against the study's per-slice patch prediction; the U-Net exported."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.inferers import sliding_window_inference

from benchmarks.bundle_config import parse
from benchmarks.export_rows import export_rows
from benchmarks.harness import Contenders, Row
from benchmarks.training_rows import training_rows

NAME = "brats_mri_slice_segmentation"
# 3 mm demo volumes (80x80x52) and 64x64 patches: seconds on 2 CPU cores
QUICK = {"demo#voxel_size": 3.0, "demo#num_cases": 5, "pixdim": [3.0, 3.0, 3.0], "patch_size": [64, 64]}


BACKENDS = ("torch", "onnxruntime")  # inference rows: inference.json's --backend


def _overrides(quick: bool, workdir: Path) -> dict:
    where = {"ckpt_dir": str(workdir / "models"), "output_dir": str(workdir / "eval")}
    if quick:
        return {**QUICK, **where, "demo#dir": str(workdir / "demo")}
    return where


def inference_contenders(quick: bool, workdir: Path, backend: str = "torch") -> Contenders:
    parser = parse(NAME, ["inference.json"], {**_overrides(quick, workdir), "backend": backend})
    case = parser.get_parsed_content("cases").valid[0]
    volume = parser.get_parsed_content("preprocessing")(case)["image"].as_tensor()[None]
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("inferer")
    roi_size = parser.get_parsed_content("patch_size")

    def bundle():
        with torch.inference_mode():
            return inferer(volume, network)

    def study():  # every axial slice on its own, one patch a forward pass
        with torch.no_grad():
            return torch.stack([sliding_window_inference(volume[..., z], roi_size, 1, network, overlap=inferer.overlap,
                                                         mode=inferer.mode, cval=inferer.cval)
                                for z in range(volume.shape[-1])], dim=-1)

    def agreement(ours, theirs) -> dict:
        return {"max_abs_diff": float((ours - theirs).abs().max())}

    return Contenders(f"whole volume {tuple(volume.shape[2:])}: inference.json's SliceInferer "
                      f"({inferer.sw_batch_size} windows a batch, inference_mode) vs the study's per-slice loop, one "
                      "window a forward pass", bundle, study, agreement)


def rows(quick: bool, repeats: int, workdir: Path) -> list[Row]:
    parser = parse(NAME, ["train.json"], _overrides(quick, workdir))
    result = training_rows(parser, "train.json", iterations=2 if quick else 10, repeats=repeats)
    patch = parse(NAME, ["inference.json"], _overrides(quick, workdir)).get_parsed_content("patch_size")
    network = parse(NAME, ["inference.json"], _overrides(quick, workdir)).get_parsed_content("network_def")
    result += export_rows("U-Net (ResNet-34 encoder)", network, torch.randn(8 if quick else 64, 3, *patch), repeats)
    return result
