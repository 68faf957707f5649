"""Every config stack a user can run, checked without running it: each ``$`` expression compiles and names only
what its stack imports (plus MONAI's default globals), and the GPU branch of ``device``, ``amp`` and ``initialize``
resolves on this CPU-only machine with ``torch.cuda.is_available`` patched to True and ``LOCAL_RANK``
set, so that a stack that only a GPU machine would break on breaks here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import BABYAI, BRATS, BUNDLES, HIPMRI, ISPY2, MULTI_GPU, PATHOLOGY
from helpers.config_expressions import expression_problems, parsed_stack

CYCLEGAN_DDP = "multi_gpu_train_cyclegan.json"
# the stacks the README and the model cards give; MULTI_GPU is the shared multi-GPU config
STACKS: dict[Path, list[tuple[str | Path, ...]]] = {
    BRATS: [("train.json",), ("train.json", MULTI_GPU), ("train.json", "evaluate.json"), ("inference.json",)],
    ISPY2: [("train.json",), ("train.json", MULTI_GPU), ("train.json", "study_unet.json"),
            ("train.json", "study_unet.json", MULTI_GPU), ("train.json", "train_vae.json"), ("train.json", "train_vae.json", MULTI_GPU),
            ("train.json", "evaluate.json"), ("train.json", "train_vae.json", "generate.json"), ("compare.json",),
            ("crossval.json",), ("inference.json",)],
    HIPMRI: [("train.json",), ("train.json", MULTI_GPU), ("train.json", "train_prior.json"),
             ("train.json", "train_prior.json", MULTI_GPU), ("train.json", "evaluate.json"),
             ("train.json", "train_prior.json", "generate.json"),
             ("train.json", "train_prior.json", "generate.json", "evaluate_generation.json"),
             ("train.json", "fit_prior.json"), ("train.json", "fit_prior.json", "generate.json"),
             ("train.json", "fit_prior.json", "generate.json", "evaluate_generation.json"),
             ("train.json", "fit_deformation_prior.json"), ("train.json", "fit_deformation_prior.json", "generate.json"),
             ("train.json", "fit_deformation_prior.json", "generate.json", "evaluate_generation.json"),
             ("inference.json",)],
    BABYAI: [("train.json",), ("train.json", MULTI_GPU), ("train.json", "evaluate.json"), ("inference.json",),
             ("synthesize.json",)],
    PATHOLOGY: [("train_cyclegan.json",), ("train_cyclegan.json", "brief.json"),
                ("train_cyclegan.json", MULTI_GPU, CYCLEGAN_DDP), ("train_cyclegan.json", "brief.json", MULTI_GPU,
                                                                   CYCLEGAN_DDP),
                ("train_hovernet.json",), ("train_hovernet.json", "brief.json"), ("train_hovernet.json", MULTI_GPU),
                ("train_cyclegan.json", "evaluate_cyclegan.json"), ("train_hovernet.json", "evaluate_hovernet.json"),
                ("inference.json",), ("inference.json", "brief.json"),
                ("inference.json", "brief.json", "count_nuclei.json")],
}
CASES = [(bundle, stack) for bundle, stacks in STACKS.items() for stack in stacks]


def _files(bundle: Path, stack: tuple[str | Path, ...]) -> list[Path]:
    return [f if isinstance(f, Path) else bundle / "configs" / f for f in stack]


def _name(case) -> str:
    bundle, stack = case
    return bundle.name.split("_")[0] + ":" + "+".join(Path(f).stem for f in stack)


def test_every_config_of_every_bundle_is_in_a_checked_stack():
    assert set(STACKS) == set(BUNDLES)
    for bundle, stacks in STACKS.items():
        configs = {p.name for p in (bundle / "configs").glob("*.json")} - {"metadata.json"}
        assert configs == {f for stack in stacks for f in stack if isinstance(f, str)}, bundle.name
        trains = {c for c in configs if c.startswith("train")}
        assert all(any(t in s and MULTI_GPU in s for s in stacks) for t in trains), f"{bundle.name}: multi-GPU"


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_every_expression_compiles_and_names_only_what_its_stack_imports(case):
    bundle, stack = case
    assert expression_problems(parsed_stack(_files(bundle, stack))) == []


@pytest.fixture
def patched_gpu(monkeypatch) -> dict[str, list]:
    """A machine that reports one CUDA device, launched by torchrun as local rank 1; process-group setup and device
    selection are recorded instead of done."""
    calls: dict[str, list] = {"init_process_group": [], "set_device": []}
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored afterwards
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls["set_device"].append(device))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda *args, **kwargs: calls["init_process_group"].append(kwargs))
    return calls


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_the_gpu_branch_of_device_amp_and_initialize_resolves(case, patched_gpu):
    bundle, stack = case
    parser = parsed_stack(_files(bundle, stack))
    distributed = MULTI_GPU in stack
    if "device" in parser:
        device = parser.get_parsed_content("device")
        assert device == torch.device("cuda", 1 if distributed else 0)
    if "amp" in parser:
        assert parser.get_parsed_content("amp") is True
    if "is_not_rank0" in parser:  # no process group yet: the first and only process writes
        assert parser.get_parsed_content("is_not_rank0") is False
    for i in range(len(parser["initialize"]) if "initialize" in parser else 0):
        parser.get_parsed_content(f"initialize#{i}")
    if "cudnn_benchmark" in parser:  # inference: cuDNN autotuning where every input has one size
        assert parser.get_parsed_content("cudnn_benchmark") == (bundle != BRATS)
    if distributed:
        assert patched_gpu["init_process_group"] == [{"backend": "nccl"}]
        assert patched_gpu["set_device"] == [torch.device("cuda", 1)]


def _stacked_configs() -> list[tuple[Path, str]]:
    """Configs that only ever run on top of another one."""
    return sorted({(bundle, stack[i]) for bundle, stacks in STACKS.items() for stack in stacks
                   for i in range(1, len(stack)) if isinstance(stack[i], str)
                   and not any(s[0] == stack[i] for s in stacks)})


# set nested ids (``validate#dataset#data``): MONAI fails while merging the file alone, before reading any id of it
FAIL_WHILE_MERGING = {(BRATS, "evaluate.json"), (ISPY2, "evaluate.json"), (ISPY2, "study_unet.json"),
                      (ISPY2, "train_vae.json"), (HIPMRI, "evaluate.json"), (HIPMRI, "train_prior.json"),
                      (HIPMRI, "evaluate_generation.json"), (BABYAI, "evaluate.json"),
                      (PATHOLOGY, "evaluate_cyclegan.json"), (PATHOLOGY, "evaluate_hovernet.json")}
# only change settings of any base: alone, they are not a workflow
SETTINGS_ONLY = {(PATHOLOGY, "brief.json"), (PATHOLOGY, CYCLEGAN_DDP)}


@pytest.mark.parametrize("case", _stacked_configs(), ids=lambda c: f"{c[0].name.split('_')[0]}:{c[1]}")
def test_a_stacked_config_run_alone_names_its_stack(case, tmp_path):
    from monai.bundle import ConfigParser

    from conftest import run_bundle

    bundle, config = case
    path = bundle / "configs" / config
    if case in FAIL_WHILE_MERGING:
        with pytest.raises(KeyError, match="query key"):
            ConfigParser.load_config_files(str(path))
        return
    if case in SETTINGS_ONLY:
        return
    run_id = "training" if "training" in ConfigParser.load_config_files(str(path)) else "run"
    result = run_bundle(["run", run_id, "--config_file", str(path)], cwd=tmp_path, check=False)
    assert result.returncode != 0
    message = next(line for line in result.stdout.splitlines() if line.startswith("ValueError: "))
    assert f"{config} is stacked on" in message and f"{path}']\"" in message, message


def _reachable(parser, config_id: str, seen: set[str]) -> list:
    """The config of ``config_id`` and of every id it references, transitively."""
    import re

    if config_id in seen or config_id not in parser:
        return []
    seen.add(config_id)
    config = parser[config_id]
    found = [config]
    for ref in re.findall(r"@([\w#]+)", json.dumps(config)):
        found += _reachable(parser, ref, seen)
    return found


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_initialize_reaches_no_bundle_or_shared_code(case):
    """``initialize`` runs before ``run`` puts the bundle root on ``sys.path``, where a published bundle keeps its
    scripts and its copy of ``shared``: nothing it resolves may name them."""
    bundle, stack = case
    parser = parsed_stack(_files(bundle, stack))
    targets = [t for config in _reachable(parser, "initialize", set())
               for t in json.dumps(config).split('"_target_": ')[1:]]
    assert [t.split('"')[1] for t in targets if t.split('"')[1].startswith(("shared.", "scripts."))] == []
