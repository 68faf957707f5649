"""Shared fixtures: a tiny BraTS demo set and a helper that runs bundle configs through MONAI's CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.bundle_scripts import bundle_module

pytest_plugins = ["helpers.hub_fixtures"]

REPO = Path(__file__).resolve().parents[1]
BRATS = REPO / "bundles" / "brats_mri_slice_segmentation"
ISPY2 = REPO / "bundles" / "ispy2_breast_mri_vae_augmentation"
HIPMRI = REPO / "bundles" / "hipmri_pelvis_vqvae"
BABYAI = REPO / "bundles" / "babyai_infant_brain_t2w_sr"
PATHOLOGY = REPO / "bundles" / "pathology_ihc_to_he_hovernet"
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())
MULTI_GPU = REPO / "shared" / "configs" / "multi_gpu_train.json"
SCHEMA_DIR = REPO.parent / "shared" / "schema"  # the steering folder beside the checkout, when present
SCHEMA = SCHEMA_DIR / "meta_schema_20240725.json"


def official_schema(tmp_path: Path) -> Path:
    """The official metadata schema: the local copy beside the checkout; without it (offline, no steering folder)
    the test is skipped, since the schema cannot be downloaded."""
    if not SCHEMA.is_file():
        pytest.skip(f"the official MONAI metadata schema is not available offline ({SCHEMA} is missing)")
    return SCHEMA


def stand_in_schema(tmp_path: Path) -> Path:
    """The official schema when it is available, else a permissive stand-in, for tests of what surrounds the
    schema check (publishing) rather than of the metadata itself."""
    if SCHEMA.is_file():
        return SCHEMA
    stand_in = tmp_path / "stand_in_schema.json"
    stand_in.write_text('{"type": "object"}')
    return stand_in

# 3 mm demo volumes (80x80x52) and 64x64 patches keep every config run to seconds on 2 CPU cores.
TINY_BRATS = {
    "demo#voxel_size": "3.0",
    "demo#num_cases": "5",
    "pixdim": "[3.0, 3.0, 3.0]",
    "patch_size": "[64, 64]",
}


# the parameter-free stand-in networks of tests/helpers/oracle.py, importable by the bundle processes
ORACLE_ENV = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "helpers"), os.environ.get("PYTHONPATH", "")])}


def oracle_weights(folder: Path, state: dict | None = None) -> str:
    """A weights file for an oracle network (``state``, or the empty state of a parameter-free one), for the
    configs that load weights."""
    path = folder / "oracle_weights.pt"
    torch.save(state or {}, path)
    return str(path)


RANK_RECORD = REPO / "tests" / "helpers" / "rank_record.json"  # stacked last on a torchrun run (needs ORACLE_ENV)


def assert_ranks_shared_the_work(ranks_dir: Path, world_size: int = 2) -> list[dict]:
    """The records of ``rank_record.json``: one a rank; in every epoch the ranks' samplers gave them disjoint shards
    that cover the dataset; every network ended with the same weights on every rank."""
    records = [json.loads((ranks_dir / f"rank_{r}.json").read_text()) for r in range(world_size)]
    assert [r["world_size"] for r in records] == [world_size] * world_size
    assert records[0]["shards"] and all(len(r["shards"]) == len(records[0]["shards"]) for r in records)
    for epoch in range(len(records[0]["shards"])):
        shards = [set(r["shards"][epoch]) for r in records]
        assert all(len(s) > 0 for s in shards)
        assert set.union(*shards) == set(range(records[0]["dataset_size"])), "the shards do not cover the dataset"
        overlap = sum(len(s) for s in shards) - len(set.union(*shards))
        assert overlap <= world_size - 1, f"epoch {epoch}: the ranks share {overlap} item(s)"  # only the padding
    assert all(r["weights"] == records[0]["weights"] for r in records), "the ranks ended with different weights"
    return records


def overrides(values: dict[str, str]) -> list[str]:
    return [arg for k, v in values.items() for arg in (f"--{k}", str(v))]


def run_bundle(args: list[str], cwd: Path, env: dict | None = None, check: bool = True, timeout: int = 900):
    """Run ``python -m monai.bundle ...`` in a subprocess; return the CompletedProcess (stdout+stderr in .stdout)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"monai.bundle {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-6000:]}")
    return result


def run_torchrun(config_files: list[Path], args: dict[str, str], cwd: Path, nproc: int = 2, env: dict | None = None):
    """``torchrun --nproc_per_node=N -m monai.bundle run training`` on the CPU (gloo), asserting success."""
    config = "[" + ",".join(f"'{c}'" for c in config_files) + "]"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "monai.bundle", "run",
           "training", "--config_file", config, *overrides(args)]
    result = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-6000:]
    return result


@pytest.fixture(scope="session")
def brats_demo_dir(tmp_path_factory) -> Path:
    ensure_brats_demo = bundle_module(BRATS, "demo").ensure_brats_demo
    root = tmp_path_factory.mktemp("brats_demo") / "MICCAI_BraTS2020_TrainingData"
    return Path(ensure_brats_demo(str(root), num_cases=int(TINY_BRATS["demo#num_cases"]), voxel_size=3.0))


@pytest.fixture(scope="session")
def brats_workdir(tmp_path_factory, brats_demo_dir) -> dict[str, str]:
    """Overrides that send a tiny BraTS run's data, checkpoints and outputs to a temporary folder."""
    work = tmp_path_factory.mktemp("brats_run")
    return {
        **TINY_BRATS,
        "demo#dir": str(brats_demo_dir),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "split#val_fraction": "0.2",
        "split#test_fraction": "0.2",
    }


TINY_TRAIN = {
    "train#trainer#max_epochs": "1",
    "train#trainer#epoch_length": "2",
    "train#dataloader#batch_size": "2",
    "train#dataloader#num_workers": "0",
    "train#dataset#num_workers": "0",
    "validate#dataset#num_workers": "0",
}


@pytest.fixture(scope="session")
def trained(brats_workdir, tmp_path_factory) -> dict[str, str]:
    """Train 2 iterations from an unrelated working directory, with an absolute config path."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    run_bundle(["run", "training", "--config_file", str(BRATS / "configs" / "train.json"),
                *overrides({**brats_workdir, **TINY_TRAIN})], cwd=elsewhere)
    return brats_workdir


@pytest.fixture(scope="session")
def breast_demo(tmp_path_factory) -> Path:
    """Five I-SPY2-style demo patients."""
    ensure_breast_demo = bundle_module(ISPY2, "demo").ensure_breast_demo
    return Path(ensure_breast_demo(str(tmp_path_factory.mktemp("ispy2") / "ISPY2"), num_patients=5))


# the I-SPY2 demo's own grid (no resampling) and 1 epoch of small batches keep each run to seconds
TINY_ISPY2 = {"demo#num_patients": "5", "pixdim": "[1.4, 1.4, 3.0]", "slice_size": "[256, 160]",
              "train#trainer#max_epochs": "1", "train#dataloader#batch_size": "16",
              "validate#dataloader#batch_size": "16"}


@pytest.fixture(scope="session")
def hipmri_demo(tmp_path_factory) -> Path:
    """The HipMRI-style demo slices (generated in seconds)."""
    ensure_hipmri_demo = bundle_module(HIPMRI, "demo").ensure_hipmri_demo
    return Path(ensure_hipmri_demo(str(tmp_path_factory.mktemp("hipmri") / "HipMRI_study_keras_slices_data")))


# 64x32 slices (a 16x8 code grid), one short epoch: each HipMRI run takes seconds
TINY_HIPMRI = {"image_size": "[64, 32]", "train#trainer#max_epochs": "1", "train#trainer#epoch_length": "2",
               "train#dataset#num_workers": "0", "validate#dataset#num_workers": "0"}


# the BABY-AI demo at 3 mm (61x73x61; 4 subjects, 5 sessions) with 16^3 patches: each config runs in seconds
TINY_BABYAI = {"demo#num_subjects": "4", "demo#voxel_size": "3.0", "heldout#num_subjects": "3",
               "heldout#validation_subjects": "1", "pixdim": "[3.0, 3.0, 3.0]",
               "patch_size": "[16, 16, 16]", "patch_margin": "2", "patches_per_volume": "2",
               "train#trainer#max_epochs": "1", "val_interval": "1", "slice_factors": "[2, 4]", "slice_axes": "[0, 2]",
               "train#dataset#num_workers": "0", "validate#dataset#num_workers": "0"}


@pytest.fixture(scope="session")
def babyai_demo(tmp_path_factory) -> Path:
    """The BABY-AI demo in its BIDS layout, at 3 mm."""
    ensure_babyai_demo = bundle_module(BABYAI, "demo").ensure_babyai_demo
    root = tmp_path_factory.mktemp("babyai") / "baby_open_brains"
    return Path(ensure_babyai_demo(str(root), num_subjects=int(TINY_BABYAI["demo#num_subjects"]),
                                   voxel_size=float(TINY_BABYAI["demo#voxel_size"])))


# 128x128 demo pairs (4 training, 1 validation, 2 test), each cut into four 64x64 tiles that the networks take as
# they are; generators of 4 base channels and 1 residual block; 2 images (8 tiles) a batch: 2 iterations an epoch.
TINY_CYCLEGAN = {"demo#image_size": "128", "demo#num_train": "5", "demo#num_test": "2", "image_size": "64",
                 "base_channels": "4", "num_residual_blocks": "1", "train#dataloader#batch_size": "2",
                 "train#dataset#num_workers": "0", "validate#dataset#num_workers": "0", "log_interval": "1"}
# one PanNuke-layout tile a fold (train 1, validate 2, test 3), one iteration of one tile a stage: HoVer-Net fast
# needs 256x256
TINY_HOVERNET = {"demo#tiles_per_fold": "1", "epochs": "1", "batch_size": "1", "train#trainer#epoch_length": "1",
                 "train#dataset#num_workers": "0", "validate#dataset#num_workers": "0"}
