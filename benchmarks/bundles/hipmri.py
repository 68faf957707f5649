"""HipMRI: training rows of the VQ-VAE (``train.json``) and of the prior (``train_prior.json`` on it); reconstruction of
a test set's slices by ``inference.json``'s inferer against the study's per-slice loop; sampling code grids from the
prior with its key/value cache against recomputing every earlier position at each step; the VQ-VAE exported."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import Resize

from benchmarks.bundle_config import parse
from benchmarks.export_rows import export_rows
from benchmarks.gpu_check import Step, torchrun_step, train_and_resume
from benchmarks.harness import Contenders, Row, compare
from benchmarks.slice_loops import batched_vs_study_loop
from benchmarks.training_rows import training_rows
from shared.data.integrity import save_with_sha256
from shared.inferers.code_grid_prior import sample_code_grids
from shared.networks.code_grid_transformer import CodeGridTransformer

NAME = "hipmri_pelvis_vqvae"
QUICK = {"image_size": [64, 32]}  # a 16x8 code grid


BACKENDS = ("torch", "onnxruntime")  # inference rows: inference.json's --backend


def _overrides(quick: bool, workdir: Path) -> dict:
    where = {"ckpt_dir": str(workdir / "models"), "output_dir": str(workdir / "eval")}
    return {**QUICK, **where} if quick else where


def study_loop(image_size):
    """The reconstruction one slice at a time, as the study's loop, with the training config's preparation: resize
    to ``image_size`` (anti-aliased), normalise (population std), the VQ-VAE, resize back, de-normalise; blank slices
    kept as they are."""
    down = Resize(tuple(image_size), mode="bilinear", anti_aliasing=True)

    def loop(slices: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        out = slices.clone()
        up = Resize(tuple(slices.shape[2:]), mode="bilinear", anti_aliasing=False)
        for i, image in enumerate(slices):
            if image.max() > image.min():
                small = torch.as_tensor(down(image))
                mean, std = small.mean(), small.std(unbiased=False)
                reconstruction = network(((small - mean) / std)[None])
                reconstruction = reconstruction[0] if isinstance(reconstruction, (tuple, list)) else reconstruction
                out[i] = torch.as_tensor(up(reconstruction[0])) * std + mean
        return out

    return loop


def inference_contenders(quick: bool, workdir: Path, backend: str = "torch") -> Contenders:
    parser = parse(NAME, ["inference.json"], {**_overrides(quick, workdir), "backend": backend})
    preprocessing = parser.get_parsed_content("preprocessing")
    loaded = [preprocessing(item)["image"].as_tensor() for item in parser.get_parsed_content("datalist")]
    items = [x for x in loaded if x.shape == loaded[0].shape][: 8 if quick else 64]  # one batch of one slice size
    return batched_vs_study_loop(parser, torch.stack(items), f"{len(items)} test slices {tuple(items[0].shape[1:])}",
                                 study_loop(parser.get_parsed_content("image_size")))


@torch.inference_mode()
def _sample_without_cache(prior: CodeGridTransformer, count: int, generator: torch.Generator) -> torch.Tensor:
    """What a prior without a key/value cache does (as MONAI's ``VQVAETransformerInferer.sample``): each step runs
    the network over the whole sequence so far and keeps the last position's logits."""
    tokens = prior.begin_token.expand(count, 1, -1)
    for _ in range(prior.seq_len):
        probabilities = torch.softmax(prior(tokens)[:, -1].float(), dim=-1).flatten(0, 1)
        drawn = torch.multinomial(probabilities, 1, generator=generator).reshape(count, 1, -1)
        tokens = torch.cat((tokens, drawn), dim=1)
    return prior.to_grid(tokens[:, 1:])


def sampling_row(quick: bool, workdir: Path, repeats: int) -> Row:
    """``generate.json``'s sampler against the same prior without its cache, both drawing with one seed."""
    parser = parse(NAME, ["train.json", "train_prior.json"], _overrides(quick, workdir))
    prior, count = parser.get_parsed_content("network_def").eval(), 2 if quick else 4

    def cached() -> torch.Tensor:
        return sample_code_grids(prior, count, generator=torch.Generator().manual_seed(0))

    def uncached() -> torch.Tensor:
        return _sample_without_cache(prior, count, torch.Generator().manual_seed(0))

    return compare("sampling", f"{count} code grids of {prior.latent_size} ({prior.seq_len} steps of "
                   f"{prior.block} blocks) from train_prior.json's prior: generate.json's sampler (key/value cache, "
                   "all samples in one batch) vs recomputing the whole sequence at each step", cached, uncached,
                   goal=2.0, repeats=repeats,
                   check=lambda a, b: {"codes_identical_share": float((a == b).float().mean())})


def rows(quick: bool, repeats: int, workdir: Path) -> list[Row]:
    iterations = 2 if quick else 10
    result = training_rows(parse(NAME, ["train.json"], _overrides(quick, workdir)), "train.json (VQ-VAE)",
                           iterations, repeats)
    # the prior trains on the codes of a VQ-VAE: a freshly initialised one costs the same time as a trained one
    vqvae = parse(NAME, ["train.json"], _overrides(quick, workdir)).get_parsed_content("network_def")
    save_with_sha256(vqvae.state_dict(), workdir / "models" / "model.pt")
    result += training_rows(parse(NAME, ["train.json", "train_prior.json"], _overrides(quick, workdir)), "train_prior.json (prior)",
                            iterations, repeats)
    result.append(sampling_row(quick, workdir, repeats))
    inference = parse(NAME, ["inference.json"], _overrides(quick, workdir))
    size = inference.get_parsed_content("image_size")
    result += export_rows("VQ-VAE", inference.get_parsed_content("network_def"),
                          torch.randn(4 if quick else 32, 1, *size), repeats)
    return result


def gpu_steps(quick: bool, work: Path) -> list[Step]:
    """``python -m benchmarks.gpu_check``: both trainings (the prior on the VQ-VAE just trained), evaluation,
    generation and its evaluation, inference of a folder of demo slices, both multi-GPU stacks, the VQ-VAE exported."""
    demo = {"demo#dir": str(work / "HipMRI_demo"), **QUICK} if quick else {}  # else the bundle's own demo folder
    models = str(work / "models")
    common = {**demo, "ckpt_dir": models, "output_dir": str(work / "eval")}
    iterations = 2 if quick else 20
    steps = train_and_resume("train.json", ["train.json"], common, iterations)
    steps += train_and_resume("train_prior.json", ["train.json", "train_prior.json"], common, iterations, needs=("train.json",))
    steps += [
        Step("evaluate", "run", ["train.json", "evaluate.json"], common, needs=("train.json",)),
        Step("generate", "run", ["train.json", "train_prior.json", "generate.json"], {**common, "num_samples": 4 if quick else 16},
             needs=("train_prior.json",)),
        Step("evaluate_generation", "run", ["train.json", "train_prior.json", "generate.json", "evaluate_generation.json"],
             {**common, "num_samples": 8 if quick else 64, **({"two_sample_test#epochs": 2} if quick else {})},
             needs=("train_prior.json",)),
        Step("inference", "infer", ["inference.json"], {**demo, "ckpt_dir": models, "output_dir": str(work / "out")},
             needs=("train.json",), outputs=("*_recon.nii.gz",)),
        # the multi-GPU runs keep their training states apart from the single-process runs'
        torchrun_step("train.json multi-GPU", ["train.json"],
                      {**common, "training_state#dir": str(work / "ddp_state")}, iterations, needs=("train.json",)),
        torchrun_step("train_prior.json multi-GPU", ["train.json", "train_prior.json"],
                      {**common, "training_state#dir": str(work / "ddp_state_prior")}, iterations,
                      needs=("train.json",)),
        Step("export", "export", ["inference.json"], {**demo, "ckpt_dir": models}, needs=("train.json",)),
    ]
    return steps
