"""I-SPY2: training rows of the U-Net (``train.json``) and of the multimodal VAE (``train_vae.json`` on it); whole-volume
inference of ``inference.json``'s slice inferer against the study's per-slice loop; both networks exported."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Resize, ResizeWithPadOrCrop

from benchmarks.bundle_config import parse
from benchmarks.export_rows import export_rows
from benchmarks.gpu_check import Step, torchrun_step, train_and_resume
from benchmarks.harness import Contenders, Row
from benchmarks.slice_loops import batched_vs_study_loop
from benchmarks.training_rows import training_rows

NAME = "ispy2_breast_mri_vae_augmentation"
# 5 demo patients on their own grid, 256x160 slices
QUICK = {"demo#num_patients": 5, "pixdim": [1.4, 1.4, 3.0], "slice_size": [256, 160]}


BACKENDS = ("torch", "onnxruntime")  # inference rows: inference.json's --backend


def _overrides(quick: bool, workdir: Path) -> dict:
    where = {"ckpt_dir": str(workdir / "models"), "output_dir": str(workdir / "eval")}
    return {**QUICK, **where, "demo#dir": str(workdir / "demo")} if quick else where


def study_loop(slice_size, image_size):
    """The study's per-slice prediction: each axial slice centre padded/cropped to ``slice_size``, normalised,
    resized to ``image_size``, predicted alone, resized back and the pad/crop undone; a blank slice is not predicted
    (the background logit)."""
    pad_crop, normalize = ResizeWithPadOrCrop(slice_size), NormalizeIntensity()
    down, up = Resize(image_size, mode="bilinear"), Resize(slice_size, mode="bilinear")

    def loop(volume: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        slices = []
        for z in range(volume.shape[-1]):
            if volume[0, ..., z].max() == volume[0, ..., z].min():  # a blank slice: the background logit
                slices.append(torch.full((1, *volume.shape[2:4]), -20.0))
                continue
            padded = pad_crop(MetaTensor(volume[0, ..., z]))
            logits = network(down(normalize(padded.as_tensor()))[None])[0]
            restored = pad_crop.inverse(MetaTensor(up(logits), applied_operations=padded.applied_operations))
            slices.append(torch.as_tensor(restored))
        return torch.stack(slices, dim=-1)[None]

    return loop


def inference_contenders(quick: bool, workdir: Path, backend: str = "torch") -> Contenders:
    parser = parse(NAME, ["inference.json"], {**_overrides(quick, workdir), "backend": backend})
    volume = parser.get_parsed_content("preprocessing")(parser.get_parsed_content("datalist")[0])["image"]
    volume = volume.as_tensor()[None]
    return batched_vs_study_loop(parser, volume, f"whole volume {tuple(volume.shape[2:])}",
                                 study_loop(parser.get_parsed_content("slice_size"),
                                            parser.get_parsed_content("image_size")))


def rows(quick: bool, repeats: int, workdir: Path) -> list[Row]:
    iterations = 2 if quick else 10
    result = training_rows(parse(NAME, ["train.json"], _overrides(quick, workdir)), "train.json (U-Net)",
                           iterations, repeats)
    result += training_rows(parse(NAME, ["train.json", "train_vae.json"], _overrides(quick, workdir)), "train_vae.json (VAE)",
                            iterations, repeats)
    inference = parse(NAME, ["inference.json"], _overrides(quick, workdir))
    size = inference.get_parsed_content("image_size")
    batch = 4 if quick else 32
    result += export_rows("U-Net", inference.get_parsed_content("network_def"), torch.randn(batch, 1, *size), repeats)
    vae = inference.get_parsed_content("vae_def")
    result += export_rows("multimodal VAE", vae, torch.randn(batch, 2, *size), repeats)
    return result


def gpu_steps(quick: bool, work: Path) -> list[Step]:
    """``python -m benchmarks.gpu_check``: the VAE's training (and resume), samples from it, the U-Net's training
    augmented by that VAE (and resume), evaluation, inference of the demo patients, both multi-GPU stacks, both
    networks exported. ``compare.json`` and ``crossval.json`` run these same train configs and are left out."""
    common = _overrides(quick, work)
    iterations = 2 if quick else 20
    inference = {k: v for k, v in common.items() if k in QUICK or k in ("ckpt_dir", "demo#dir")}
    augmented = {**common, "augment_with_vae": True}
    return [
        *train_and_resume("train_vae.json", ["train.json", "train_vae.json"], common, iterations),
        Step("generate", "run", ["train.json", "train_vae.json", "generate.json"], {**common, "num_samples": 4},
             needs=("train_vae.json",)),
        *train_and_resume("train.json (VAE augmentation)", ["train.json"], augmented, iterations,
                          needs=("train_vae.json",)),
        Step("evaluate", "run", ["train.json", "evaluate.json"], common, needs=("train.json (VAE augmentation)",)),
        Step("inference", "infer", ["inference.json"], {**inference, "output_dir": str(work / "out")},
             needs=("train.json (VAE augmentation)",), outputs=("*_mask.nii.gz",)),
        torchrun_step("train_vae.json multi-GPU", ["train.json", "train_vae.json"],
                      {**common, "training_state#dir": str(work / "ddp_state_vae")}, iterations,
                      needs=("train_vae.json",)),
        torchrun_step("train.json multi-GPU", ["train.json"],
                      {**augmented, "training_state#dir": str(work / "ddp_state")}, iterations,
                      needs=("train_vae.json",)),
        Step("export", "export", ["inference.json"], inference, needs=("train.json (VAE augmentation)",)),
    ]
