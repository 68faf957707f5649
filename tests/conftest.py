"""Shared fixtures: a tiny BraTS demo set and a helper that runs bundle configs through MONAI's CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BRATS = REPO / "bundles" / "brats_mri_slice_segmentation"
SCHEMA_DIR = REPO.parent / "shared" / "schema"  # the steering folder beside the checkout, when present

# 3 mm demo volumes (80x80x52) and 64x64 patches keep every config run to seconds on 2 CPU cores.
TINY_BRATS = {
    "demo#voxel_size": "3.0",
    "demo#num_cases": "5",
    "pixdim": "[3.0, 3.0, 3.0]",
    "patch_size": "[64, 64]",
}


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


def run_torchrun(config_files: list[Path], args: dict[str, str], cwd: Path, nproc: int = 2):
    """``torchrun --nproc_per_node=N -m monai.bundle run training`` on the CPU (gloo), asserting success."""
    config = "[" + ",".join(f"'{c}'" for c in config_files) + "]"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "monai.bundle", "run",
           "training", "--config_file", config, *overrides(args)]
    result = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:]
    return result


@pytest.fixture(scope="session")
def brats_demo_dir(tmp_path_factory) -> Path:
    from shared.demo.brats import ensure_brats_demo

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
