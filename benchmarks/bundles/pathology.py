"""Pathology: training rows of the CycleGAN (``train_cyclegan.json``) and of HoVer-Net stage 0
(``train_hovernet.json``); the chained inference of ``inference.json`` against the study's tile-by-tile flow; both
networks exported.

The study's flow, written plainly: the image cut into 256x256 tiles (edge tiles padded), each tile through the
generator alone, then each translated tile through HoVer-Net fast on its own (four 256 windows for its 164-pixel
output steps, one a pass) and MONAI's HoVer-Net post-processing per tile. Its nuclei are counted per tile, so a
nucleus on a tile border can be split or doubled: the two counts are shown, not required equal."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.apps.pathology.transforms import HoVerNetInstanceMapPostProcessingd, HoVerNetNuclearTypePostProcessingd
from monai.apps.pathology.inferers import SlidingWindowHoVerNetInferer
from monai.transforms import Compose

from benchmarks.bundle_config import bundle_dir, parse
from benchmarks.export_rows import export_rows
from benchmarks.gpu_check import Step, torchrun_step, train_and_resume
from benchmarks.harness import Contenders, Row
from benchmarks.training_rows import training_rows

NAME = "pathology_ihc_to_he_hovernet"
TILE = 256
# quick: a 164x164 demo tile, a generator of 4 base channels and 1 block, one PanNuke tile a fold
QUICK_CYCLEGAN = {"demo#image_size": 128, "demo#num_train": 5, "demo#num_test": 2, "image_size": 64,
                  "train#dataloader#batch_size": 2}
QUICK_HOVERNET = {"demo#tiles_per_fold": 2, "batch_size": 1}
QUICK_GENERATOR = {"base_channels": 4, "num_residual_blocks": 1}
QUICK_INFERENCE = {"demo#image_size": 164, "demo#num_train": 1, "demo#num_test": 1, "regions#progress": False}
# full: one 512x512 image (four of the study's tiles; BCI's own images are 1024x1024, four times the time)
FULL_INFERENCE = {"demo#image_size": 512, "demo#num_train": 1, "demo#num_test": 1, "regions#progress": False}
CYCLEGAN_ITERATIONS = 5  # one full-size CycleGAN step takes about 10 s on 2 CPU cores


BACKENDS = ("torch", "onnxruntime")  # inference rows: inference.json's --backend


def _where(workdir: Path) -> dict:
    return {"ckpt_dir": str(workdir / "models"), "output_dir": str(workdir / "eval")}


def cyclegan_bare_loop(trainer) -> Callable[[Sequence], None]:
    """CycleGAN's step written plainly with the trainer's networks, optimisers, losses and pools (no AMP: CPU)."""
    device = trainer.state.device
    g_ab, g_ba, d_a, d_b = trainer.generator_ab, trainer.generator_ba, trainer.discriminator_a, trainer.discriminator_b
    loss = trainer.loss_function
    discriminators = list(d_a.parameters()) + list(d_b.parameters())

    def loop(batches: Sequence) -> None:
        for batch in batches:
            real_a, real_b = (batch[key].to(device, **trainer.to_kwargs) for key in trainer.keys)
            trainer.generator_optimizer.zero_grad(set_to_none=True)
            for p in discriminators:
                p.requires_grad_(False)
            fake_b, fake_a = g_ab(real_a), g_ba(real_b)
            loss_g = (loss.generator_adversarial(d_a(fake_a), d_b(fake_b))
                      + loss.cycle(real_a, g_ba(fake_b), real_b, g_ab(fake_a))
                      + loss.identity(real_a, g_ba(real_a), real_b, g_ab(real_b)))
            loss_g.backward()
            trainer.generator_optimizer.step()
            for p in discriminators:
                p.requires_grad_(True)
            trainer.discriminator_optimizer.zero_grad(set_to_none=True)
            loss_d = (loss.discriminator(d_a(real_a), d_a(trainer.image_pool_a.query(fake_a.detach())))
                      + loss.discriminator(d_b(real_b), d_b(trainer.image_pool_b.query(fake_b.detach()))))
            loss_d.backward()
            trainer.discriminator_optimizer.step()

    return loop


def _inference_parser(quick: bool, workdir: Path, overrides: dict | None = None):
    where = {**_where(workdir), "demo#dir": str(workdir / "BCI_inference")}
    size = QUICK_INFERENCE | QUICK_GENERATOR if quick else FULL_INFERENCE
    return parse(NAME, ["inference.json"], {**where, **size, **(overrides or {})})


def generator_size(state: dict) -> dict:
    """``base_channels`` and ``num_residual_blocks`` of a ``ResnetGenerator`` state dict."""
    blocks = {key.split(".")[1] for key in state if ".conv_block." in key}
    return {"base_channels": int(state["model.1.weight"].shape[0]), "num_residual_blocks": len(blocks)}


def trained_weights() -> dict[str, dict]:
    """The bundle's trained weights, by the config id of their network (``network``, ``generator``), where there
    are: post-processing time depends on the nuclei found, so random weights would misstate it."""
    weights = {}
    for network, file in (("network", "hovernet.pt"), ("generator", "generator_ihc_to_he.pt")):
        path = bundle_dir(NAME) / "models" / file
        if path.is_file():
            weights[network] = torch.load(path, map_location="cpu", weights_only=True)
    return weights


def study_flow(rgb: np.ndarray, generator: torch.nn.Module, hovernet: torch.nn.Module) -> int:
    """The study's tile-by-tile chain on ``rgb`` (H, W, 3) uint8; returns the nuclei found."""
    height, width = rgb.shape[:2]
    rows, columns = math.ceil(height / TILE), math.ceil(width / TILE)
    padded = np.pad(rgb, ((0, rows * TILE - height), (0, columns * TILE - width), (0, 0)), mode="reflect")
    inferer = SlidingWindowHoVerNetInferer(roi_size=TILE, sw_batch_size=1, overlap=1.0 - 164 / TILE,
                                           padding_mode="constant", cval=0, extra_input_padding=((TILE - 164) // 2,) * 4)
    postprocessing = Compose([HoVerNetInstanceMapPostProcessingd(sobel_kernel_size=21, marker_threshold=0.4,
                                                                 marker_radius=2, min_object_size=10),
                              HoVerNetNuclearTypePostProcessingd()])
    count = 0
    with torch.no_grad():
        for r in range(rows):
            for c in range(columns):
                tile = padded[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
                x = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
                he = ((generator(x).clamp(-1, 1) + 1) * 127.5).round() / 255.0
                maps = inferer(he, hovernet)
                out = postprocessing({k: v[0] for k, v in maps.items()})
                count += len(out["instance_info"])
    return count


def inference_contenders(quick: bool, workdir: Path, backend: str = "torch") -> Contenders:
    weights = {} if quick else trained_weights()
    size = generator_size(weights["generator"]) if "generator" in weights else {}
    parser = _inference_parser(quick, workdir, {"backend": backend, **size})
    dataset = parser.get_parsed_content("dataset")
    inferer = parser.get_parsed_content("inferer")
    hovernet = parser.get_parsed_content("network").eval()
    generator = parser.get_parsed_content("translation#generator").eval()
    for network, key in ((hovernet, "network"), (generator, "generator")):
        if key in weights:
            network.load_state_dict(weights[key])
    first = dataset[0]["image"]
    rgb = np.array(first.read(0, 0, first.height, first.width))
    first.close()
    # the study's own copies: the bundle's channels-last option converts the weights it is given in place
    study_generator, study_hovernet = copy.deepcopy(generator), copy.deepcopy(hovernet)

    def bundle():
        with torch.inference_mode():
            return len(inferer(dataset[0]["image"], hovernet).nuclei)

    def study():
        return study_flow(rgb, study_generator, study_hovernet)

    return Contenders(f"one {rgb.shape[1]}x{rgb.shape[0]} IHC image: inference.json's chain (overlapping generator "
                      "tiles, HoVer-Net windows stitched over the image, post-processing once) vs the study's "
                      f"{TILE}-pixel tiles, each through both networks and the post-processing alone", bundle, study,
                      lambda ours, theirs: {"nuclei": ours, "study_nuclei": theirs, "backend": backend,
                                            "weights": "trained" if weights else "random",
                                            **size})


def rows(quick: bool, repeats: int, workdir: Path) -> list[Row]:
    cyclegan = {**_where(workdir), "demo#dir": str(workdir / "BCI")}
    if quick:
        cyclegan.update(QUICK_CYCLEGAN | QUICK_GENERATOR)
    result = training_rows(parse(NAME, ["train_cyclegan.json"], cyclegan), "train_cyclegan.json",
                           2 if quick else CYCLEGAN_ITERATIONS,
                           repeats, bare_loop=cyclegan_bare_loop)
    hovernet = {**_where(workdir), "demo#dir": str(workdir / "PanNuke"), **(QUICK_HOVERNET if quick else {})}
    result += training_rows(parse(NAME, ["train_hovernet.json"], hovernet), "train_hovernet.json (stage 0)",
                            1, repeats)  # one HoVer-Net step takes about 25 s on 2 CPU cores
    parser = _inference_parser(quick, workdir)
    batch = parser.get_parsed_content("translation#batch_size")
    result += export_rows("CycleGAN generator", parser.get_parsed_content("generator_def"),
                          torch.rand(batch, 3, TILE, TILE) * 2 - 1, repeats)
    result += export_rows("HoVer-Net fast", parser.get_parsed_content("network_def"),
                          torch.rand(parser.get_parsed_content("nuclei#sw_batch_size"), 3, TILE, TILE), repeats)
    return result


SLIDE_SIZE = {True: 256, False: 4096}  # the slide row's side in pixels, quick and full (16.8 megapixels)


def slide_figures(overrides: dict) -> dict:
    """The slide row's figures from its ``*_nuclei.json``: megapixels, seconds per megapixel and per step."""
    document = json.loads(next(Path(str(overrides["output_dir"])).glob("*_nuclei.json")).read_text())
    megapixels = document["size"]["height"] * document["size"]["width"] / 1e6
    seconds = document["seconds"]
    return {"megapixels": round(megapixels, 2), "seconds_per_megapixel": round(seconds["total"] / megapixels, 2),
            "nuclei": document["num_nuclei"], "step_seconds": seconds}


def slide_step(quick: bool, work: Path, where: dict) -> Step:
    """``inference.json --stain he --level 0`` on a generated H&E slide in Aperio's SVS layout
    (``benchmarks.slide_region``'s), with HoVer-Net stage 1's weights: seconds per megapixel on the device."""
    import sys

    root = str(bundle_dir(NAME))
    if root not in sys.path:
        sys.path.insert(0, root)
    from scripts.demo import write_aperio_slide

    from benchmarks.slide_region import slide_pixels

    slide = work / "slide" / "he_slide.svs"
    if not slide.is_file():
        slide.parent.mkdir(parents=True, exist_ok=True)
        write_aperio_slide(slide, slide_pixels(SLIDE_SIZE[quick]))
    overrides = {**where, "dataset_dir": str(slide), "stain": "he", "level": 0, "output_dir": str(work / "slide_out"),
                 "regions#progress": False, "nuclei_weights": "bundle"}
    return Step(f"slide region {SLIDE_SIZE[quick]}x{SLIDE_SIZE[quick]} (H&E, level 0)", "run", ["inference.json"],
                overrides, needs=("train_hovernet.json (stage 1)",), figures=slide_figures)


def gpu_steps(quick: bool, work: Path) -> list[Step]:
    """``python -m benchmarks.gpu_check``: the CycleGAN's training (and resume) and evaluation, HoVer-Net stage 0
    (and resume), stage 1 and evaluation, the chained inference of the demo's IHC test images, an H&E slide region
    (seconds per megapixel), both multi-GPU stacks (the CycleGAN with its four-network variant), both networks
    exported."""
    where = _where(work)
    cyclegan = {**where, "demo#dir": str(work / "BCI")} if quick else dict(where)
    hovernet = {**where, "demo#dir": str(work / "PanNuke"), **QUICK_HOVERNET} if quick else dict(where)
    if quick:
        cyclegan.update(QUICK_CYCLEGAN | QUICK_GENERATOR, **{"train#dataset#num_workers": 0,
                                                             "validate#dataset#num_workers": 0})
        hovernet.update({"train#dataset#num_workers": 0, "validate#dataset#num_workers": 0})
    iterations = {"cyclegan": 2, "hovernet": 1} if quick else {"cyclegan": 20, "hovernet": 10}
    inference = {**where, **(QUICK_GENERATOR if quick else {}), "output_dir": str(work / "out")}
    if quick:
        inference.update({k: v for k, v in cyclegan.items() if k.startswith("demo#")}, **{"regions#progress": False})
    evaluate_hovernet = {k: v for k, v in hovernet.items() if "num_workers" not in k or k.startswith("validate")}
    return [
        *train_and_resume("train_cyclegan.json", ["train_cyclegan.json"], cyclegan, iterations["cyclegan"]),
        Step("evaluate_cyclegan", "run", ["train_cyclegan.json", "evaluate_cyclegan.json"], cyclegan,
             needs=("train_cyclegan.json",)),
        *train_and_resume("train_hovernet.json (stage 0)", ["train_hovernet.json"], hovernet, iterations["hovernet"]),
        Step("train_hovernet.json (stage 1)", "train", ["train_hovernet.json"],
             {**hovernet, "stage": 1, "train#trainer#epoch_length": iterations["hovernet"],
              "train#trainer#max_epochs": 1}, "training", needs=("train_hovernet.json (stage 0)",)),
        Step("evaluate_hovernet", "run", ["train_hovernet.json", "evaluate_hovernet.json"], evaluate_hovernet,
             needs=("train_hovernet.json (stage 1)",)),
        Step("inference", "infer", ["inference.json"], inference,
             needs=("train_cyclegan.json", "train_hovernet.json (stage 1)"),
             outputs=("*_types.tif", "*_he.png")),
        slide_step(quick, work, where),
        torchrun_step("train_cyclegan.json multi-GPU", ["train_cyclegan.json"],
                      {**cyclegan, "training_state#dir": str(work / "ddp_state_cyclegan")}, iterations["cyclegan"],
                      needs=("train_cyclegan.json",), variant=("multi_gpu_train_cyclegan.json",)),
        torchrun_step("train_hovernet.json multi-GPU", ["train_hovernet.json"],
                      {**hovernet, "training_state#dir": str(work / "ddp_state_hovernet")}, iterations["hovernet"],
                      needs=("train_hovernet.json (stage 0)",)),
        Step("export", "export", ["inference.json"], inference,
             needs=("train_cyclegan.json", "train_hovernet.json (stage 1)")),
    ]
