"""Published bundles run without this repository: every config, from another working directory, in processes where
this checkout cannot be imported (torchrun workers included); and two published bundles load side by side."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import pytest

from conftest import (BABYAI, BRATS, HIPMRI, ISPY2, PATHOLOGY, RANK_RECORD, TINY_BABYAI, TINY_BRATS, TINY_CYCLEGAN,
                      TINY_HIPMRI, TINY_HOVERNET, TINY_ISPY2, TINY_TRAIN, assert_ranks_shared_the_work, overrides)
from helpers.hub_fixtures import download, isolated_env, run_python

pytestmark = pytest.mark.slow


def _version(bundle: Path) -> str:
    return json.loads((bundle / "configs" / "metadata.json").read_text())["version"]


def _run(configs: list[Path], args: dict, cwd: Path, run_id: str | None = None, torchrun: bool = False,
         record_ranks: Path | None = None) -> str:
    """``python -m monai.bundle run`` (or torchrun with 2 CPU processes) with ``configs``, isolated; return the log.
    ``record_ranks``: a folder outside the repository where the test's rank recorder is copied and stacked last."""
    env = isolated_env()
    if record_ranks is not None:
        record_ranks.mkdir(parents=True, exist_ok=True)
        for helper in (RANK_RECORD, RANK_RECORD.with_suffix(".py")):
            shutil.copy(helper, record_ranks / helper.name)
        configs = [*configs, record_ranks / RANK_RECORD.name]
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(record_ranks)])
    config = str(configs[0]) if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    command = ["-m", "monai.bundle", "run", *([run_id] if run_id else []), "--config_file", config, *overrides(args)]
    if torchrun:
        command = ["-m", "torch.distributed.run", "--nproc_per_node=2", *command]
    result = run_python(command, env, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-6000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def downloaded_brats(published, hub, tmp_path_factory) -> Path:
    return download(hub, BRATS.name, _version(BRATS), tmp_path_factory.mktemp("users_brats"))


@pytest.fixture(scope="module")
def downloaded_ispy2(published_ispy2, hub, tmp_path_factory) -> Path:
    return download(hub, ISPY2.name, _version(ISPY2), tmp_path_factory.mktemp("users_ispy2"))


def _value(text: str):
    """A command-line override's value as ``monai.bundle run`` reads it (Python literals, else the string)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


@pytest.fixture(scope="module")
def downloaded_hipmri(published_hipmri, hub, tmp_path_factory) -> Path:
    return download(hub, HIPMRI.name, _version(HIPMRI), tmp_path_factory.mktemp("users_hipmri"))


def test_isolation_hides_this_repository(tmp_path):
    result = run_python(["-c", "import shared"], isolated_env(), cwd=tmp_path)
    assert result.returncode != 0 and "No module named 'shared'" in result.stdout


def test_published_brats_runs_every_config_standalone(downloaded_brats, brats_demo_dir, tmp_path):
    configs = downloaded_brats / "configs"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    work = {**TINY_BRATS, "demo#dir": str(brats_demo_dir), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval"), "split#val_fraction": "0.2", "split#test_fraction": "0.2"}
    _run([configs / "train.json"], {**work, **TINY_TRAIN}, cwd, run_id="training")
    assert (tmp_path / "models" / "model.pt").is_file()
    _run([configs / "train.json", configs / "evaluate.json"], {**work, "validate#dataset#num_workers": "0"}, cwd)
    assert (tmp_path / "eval" / "test_metrics.json").is_file()
    case = brats_demo_dir / "BraTS20_Training_004"
    _run([configs / "inference.json"], {"dataset_dir": str(case), "output_dir": str(tmp_path / "out"),
                                        "pixdim": TINY_BRATS["pixdim"],
                                        "dataloader#num_workers": "0"}, cwd)  # the published weights
    pred = nib.load(tmp_path / "out" / "BraTS20_Training_004_pred.nii.gz")
    assert pred.shape == nib.load(case / "BraTS20_Training_004_t2.nii.gz").shape
    _run([configs / "train.json", configs / "multi_gpu_train.json"],
         {**work, **TINY_TRAIN, "train#trainer#epoch_length": "1", "ckpt_dir": str(tmp_path / "ddp"),
          "split#val_fraction": "0.4"}, cwd, run_id="training", torchrun=True, record_ranks=tmp_path / "recorder")
    assert (tmp_path / "ddp" / "model.pt").is_file()
    assert len(list((tmp_path / "ddp" / "training_state").glob("state_iteration=*.pt"))) == 1  # rank 0 saves, once
    assert_ranks_shared_the_work(tmp_path / "eval" / "ranks")


def test_published_ispy2_runs_every_config_standalone(downloaded_ispy2, breast_demo, tmp_path):
    configs = downloaded_ispy2 / "configs"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    work = {**TINY_ISPY2, "demo#dir": str(breast_demo), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval")}
    vae = [configs / "train.json", configs / "train_vae.json"]
    _run(vae, work, cwd, run_id="training")
    _run([*vae, configs / "generate.json"], {**work, "num_samples": "2"}, cwd)
    assert (tmp_path / "eval" / "generated" / "grid_preview.png").is_file()
    log = _run([configs / "train.json"], {**work, "augment_with_vae": "True"}, cwd, run_id="training")
    assert "VAE augmentation: 20% of each batch" in log
    _run([configs / "train.json", configs / "evaluate.json"], work, cwd)
    assert (tmp_path / "eval" / "per_patient_dice.json").is_file()
    inner = {k: _value(v) for k, v in work.items() if k not in ("ckpt_dir", "output_dir")}
    _run([configs / "compare.json"], {"output_dir": str(tmp_path / "compare"), "overrides": repr(inner),
                                      "vae_checkpoint": str(tmp_path / "models" / "vae_t2_mask.pt")}, cwd)
    assert (tmp_path / "compare" / "comparison.csv").is_file()
    _run([configs / "crossval.json"], {"output_dir": str(tmp_path / "crossval"), "folds": "2", "overrides": repr(inner),
                                       "selected_variants": "['without_vae']"}, cwd)
    assert json.loads((tmp_path / "crossval" / "crossval.json").read_text())["folds"] == 2
    _run([configs / "inference.json"], {"dataset_dir": str(breast_demo), "output_dir": str(tmp_path / "out"),
                                        "pixdim": TINY_ISPY2["pixdim"], "slice_size": TINY_ISPY2["slice_size"]}, cwd)
    assert len(list((tmp_path / "out").glob("*_mask.nii.gz"))) == 5
    _run([configs / "train.json", configs / "multi_gpu_train.json"],
         {**work, "ckpt_dir": str(tmp_path / "ddp"), "split#val_fraction": "0.4"}, cwd, run_id="training",
         torchrun=True, record_ranks=tmp_path / "recorder")
    assert (tmp_path / "ddp" / "model.pt").is_file()
    assert_ranks_shared_the_work(tmp_path / "eval" / "ranks")


def test_published_hipmri_runs_every_config_standalone(downloaded_hipmri, hipmri_demo, tmp_path):
    configs = downloaded_hipmri / "configs"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    work = {**TINY_HIPMRI, "demo#dir": str(hipmri_demo), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval")}
    _run([configs / "train.json"], work, cwd, run_id="training")
    _run([configs / "train.json", configs / "evaluate.json"], work, cwd)
    assert (tmp_path / "eval" / "test_metrics.json").is_file()
    _run([configs / "inference.json"], {"dataset_dir": str(hipmri_demo / "keras_slices_validate"),
                                        "output_dir": str(tmp_path / "out"), "image_size": TINY_HIPMRI["image_size"]}, cwd)
    assert len(list((tmp_path / "out").glob("*_recon.nii.gz"))) == 48
    prior = [configs / "train.json", configs / "train_prior.json"]
    _run(prior, work, cwd, run_id="training")
    _run([*prior, configs / "generate.json"], {**work, "num_samples": "2"}, cwd)
    assert (tmp_path / "eval" / "generated" / "sample_001.nii.gz").is_file()
    _run([*prior, configs / "generate.json", configs / "evaluate_generation.json"],
         {**work, "num_samples": "4", "two_sample_test#folds": "2", "two_sample_test#epochs": "1"}, cwd)
    assert json.loads((tmp_path / "eval" / "generation" / "report.json").read_text())["two_sample_test"]["samples"]["n"] == 4
    mixture = [configs / "train.json", configs / "fit_prior.json"]
    sizes = {**work, "prior#num_components": "4", "prior#num_mixtures": "2"}
    _run(mixture, sizes, cwd, run_id="training")
    _run([*mixture, configs / "generate.json"], {**sizes, "num_samples": "2", "generated_dir": str(tmp_path / "mix")}, cwd)
    assert (tmp_path / "mix" / "sample_001.nii.gz").is_file()
    _run([configs / "train.json", configs / "multi_gpu_train.json"], {**work, "ckpt_dir": str(tmp_path / "ddp")}, cwd,
         run_id="training", torchrun=True, record_ranks=tmp_path / "recorder")
    assert (tmp_path / "ddp" / "model.pt").is_file()
    assert_ranks_shared_the_work(Path(work["output_dir"]) / "ranks")


@pytest.fixture(scope="module")
def downloaded_babyai(published_babyai, hub, tmp_path_factory) -> Path:
    return download(hub, BABYAI.name, _version(BABYAI), tmp_path_factory.mktemp("users_babyai"))


def test_published_babyai_runs_every_config_standalone(downloaded_babyai, babyai_demo, tmp_path):
    configs = downloaded_babyai / "configs"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    work = {**TINY_BABYAI, "demo#dir": str(babyai_demo), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval")}
    _run([configs / "train.json"], work, cwd, run_id="training")
    evaluation = {k: v for k, v in work.items() if "num_workers" not in k}
    _run([configs / "train.json", configs / "evaluate.json"], {**evaluation, "slice_factors": "[4]", "slice_axes": "[2]"},
         cwd)
    assert (tmp_path / "eval" / "test_metrics.json").is_file()
    inference = {k: TINY_BABYAI[k] for k in ("demo#num_subjects", "demo#voxel_size", "pixdim", "patch_size")}
    _run([configs / "inference.json"], {**inference, "dataset_dir": str(babyai_demo), "ckpt_dir": str(tmp_path / "models"),
                                        "output_dir": str(tmp_path / "out")}, cwd)
    assert len(list((tmp_path / "out").glob("*_T2w_sr.nii.gz"))) == 5
    _run([configs / "synthesize.json"], {"dataset_dir": str(babyai_demo), "synthesis_dir": str(tmp_path / "thick")}, cwd)
    assert len(list((tmp_path / "thick").glob("sub-*/ses-*/anat/*_acq-k4axial_*_T2w.nii.gz"))) == 5
    _run([configs / "train.json", configs / "multi_gpu_train.json"], {**work, "ckpt_dir": str(tmp_path / "ddp")}, cwd,
         run_id="training", torchrun=True, record_ranks=tmp_path / "recorder")
    assert (tmp_path / "ddp" / "model.pt").is_file()
    assert_ranks_shared_the_work(Path(work["output_dir"]) / "ranks")


@pytest.fixture(scope="module")
def downloaded_pathology(published_pathology, hub, tmp_path_factory) -> Path:
    return download(hub, PATHOLOGY.name, _version(PATHOLOGY), tmp_path_factory.mktemp("users_pathology"))


def test_published_pathology_runs_every_config_standalone(downloaded_pathology, tmp_path):
    configs = downloaded_pathology / "configs"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    common = {"ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    cyclegan = {**TINY_CYCLEGAN, **common, "demo#dir": str(tmp_path / "BCI")}
    _run([configs / "train_cyclegan.json"], cyclegan, cwd, run_id="training")
    _run([configs / "train_cyclegan.json", configs / "evaluate_cyclegan.json"], cyclegan, cwd)
    assert (tmp_path / "eval" / "cyclegan_test_metrics.json").is_file()
    # stage 0 (stage 1 is the same config with --stage 1, run in test_pathology_hovernet), then the evaluation of
    # the downloaded HoVer-Net
    hovernet = {**TINY_HOVERNET, **common, "demo#dir": str(tmp_path / "PanNuke")}
    _run([configs / "train_hovernet.json"], hovernet, cwd, run_id="training")
    assert (tmp_path / "models" / "hovernet_stage0.pt").is_file()
    _run([configs / "train_hovernet.json", configs / "evaluate_hovernet.json"],
         {k: v for k, v in hovernet.items() if k != "ckpt_dir"}, cwd)
    assert (tmp_path / "eval" / "hovernet_test_metrics.json").is_file()
    # the downloaded weights: a full-size generator and HoVer-Net, on one 164x164 demo tile
    demo = {"demo#dir": str(tmp_path / "BCI_small"), "demo#image_size": "164", "demo#num_train": "1",
            "demo#num_test": "1"}
    _run([configs / "inference.json"], {**demo, "output_dir": str(tmp_path / "out"), "regions#progress": "False"}, cwd)
    assert {p.name for p in (tmp_path / "out").glob("00000_test_0_*")} == {
        f"00000_test_0_{suffix}" for suffix in ("he.png", "instances.tif", "types.tif", "nuclei.json",
                                                "nuclei.geojson", "overlay.png")}


SIDE_BY_SIDE = """
import json, sys
from monai.bundle import run
runs = json.loads(sys.argv[1])
for config, args in runs:
    run(config_file=config, **args)
print(sorted(m for m in sys.modules if m.endswith("_scripts")))
"""


def test_two_published_bundles_load_side_by_side(downloaded_brats, downloaded_ispy2, brats_demo_dir, breast_demo,
                                                 tmp_path):
    runs = [
        [str(downloaded_brats / "configs" / "inference.json"),
         {"dataset_dir": str(brats_demo_dir / "BraTS20_Training_004"), "output_dir": str(tmp_path / "brats"),
          "pixdim": [3.0, 3.0, 3.0], "dataloader#num_workers": 0}],
        [str(downloaded_ispy2 / "configs" / "inference.json"),
         {"dataset_dir": str(breast_demo), "output_dir": str(tmp_path / "ispy2"), "pixdim": [1.4, 1.4, 3.0],
          "slice_size": [256, 160]}],
    ]
    result = run_python(["-c", SIDE_BY_SIDE, json.dumps(runs)], isolated_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    assert f"['{BRATS.name}_scripts', '{ISPY2.name}_scripts']" in result.stdout
    assert (tmp_path / "brats" / "BraTS20_Training_004_pred.nii.gz").is_file()
    assert len(list((tmp_path / "ispy2").glob("*_mask.nii.gz"))) == 5
