"""pytest fixtures around a Hugging Face Hub on 127.0.0.1: the hub, publishing to it, and isolated subprocesses."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.fake_hub import FakeHub
from shared.networks.babyai_unet import babyai_unet

REPO = Path(__file__).resolve().parents[2]
ISOLATED = Path(__file__).resolve().parent / "isolated"


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_python(args: list[str], env: dict, cwd: Path, token: str | None = None, timeout: int = 900):
    """A subprocess with the hub endpoint set before huggingface_hub is imported (it reads HF_ENDPOINT on import)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update({"PYTHONUNBUFFERED": "1", **env})
    if token:
        full["HF_TOKEN"] = token
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def hub_env(hub: FakeHub, hf_home: Path, offline: bool = False) -> dict:
    env = {"HF_ENDPOINT": hub.url, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(hf_home)}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def isolated_env() -> dict:
    """Environment in which this repository cannot be imported, in the process and its children."""
    return {"PYTHONPATH": str(ISOLATED), "ISOLATE_FROM_REPO": str(REPO)}


def bundle_copy(bundle: Path, dst: Path, weights: dict[str, Path | dict]) -> Path:
    """A copy of ``bundle`` (outside the repository) with ``weights`` (``{"models/x.pt": file or state dict}``)."""
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("demo_data", "eval", "*.pt", "*.ts", "*.sha256",
                                                               "training_state*", "__pycache__"))
    (dst / "models").mkdir(exist_ok=True)
    for rel, source in weights.items():
        if isinstance(source, dict):
            torch.save(source, dst / rel)
        else:
            shutil.copy(source, dst / rel)
    return dst


def publish(bundle: Path, hub: FakeHub, tmp: Path, *extra: str, token: str | None = None):
    from conftest import stand_in_schema

    schema = ["--schema-file", str(stand_in_schema(tmp))]
    return run_python(["-m", "shared.publish", str(bundle), "--repo", f"testns/{bundle.name}", *schema, *extra],
                      hub_env(hub, tmp / "hf_publish"), cwd=tmp, token=token)


def download(hub: FakeHub, name: str, version: str, dst: Path) -> Path:
    """``monai.bundle download`` of a published bundle, as a user would get it."""
    result = run_python(["-m", "monai.bundle", "download", "--name", name, "--source", "huggingface_hub",
                         "--repo", f"testns/{name}", "--version", version, "--bundle_dir", str(dst)],
                        hub_env(hub, dst / "hf"), cwd=dst, token=hub.token)
    assert result.returncode == 0, result.stdout[-4000:]
    return dst / name


@pytest.fixture(scope="session")
def hub():
    with FakeHub(max_seconds=2400, max_requests=20000) as server:
        yield server


@pytest.fixture(scope="session")
def published(trained, hub, tmp_path_factory) -> Path:
    """The BraTS bundle, with the tiny trained weights, pushed to the loopback hub; returns the source copy."""
    from conftest import BRATS

    tmp = tmp_path_factory.mktemp("publish")
    source = bundle_copy(BRATS, tmp / BRATS.name, {"models/model.pt": Path(trained["ckpt_dir"]) / "model.pt"})
    result = publish(source, hub, tmp, "--public", token=hub.token)
    assert result.returncode == 0, result.stdout[-6000:]
    assert hub.token not in result.stdout
    return source


@pytest.fixture(scope="session")
def published_ispy2(hub, tmp_path_factory) -> Path:
    """The I-SPY2 bundle with freshly initialised weights (publishing checks formats, not quality), pushed."""
    from conftest import ISPY2
    from monai.networks.nets import BasicUNet

    from shared.networks.multimodal_vae import MultimodalVAE

    tmp = tmp_path_factory.mktemp("publish_ispy2")
    unet = BasicUNet(2, 1, 1, features=(8, 16, 32, 64, 128, 8), norm="batch", act="relu")
    vae = MultimodalVAE(2, (1, 1), ("linear", "sigmoid"), encoder_channels=(8, 16), latent_channels=32)
    source = bundle_copy(ISPY2, tmp / ISPY2.name, {"models/model.pt": unet.state_dict(),
                                                   "models/vae_t2_mask.pt": vae.state_dict()})
    result = publish(source, hub, tmp, "--public", token=hub.token)
    assert result.returncode == 0, result.stdout[-6000:]
    return source


@pytest.fixture(scope="session")
def published_hipmri(hub, tmp_path_factory) -> Path:
    """The HipMRI bundle with freshly initialised weights, pushed."""
    from conftest import HIPMRI
    from helpers.bundle_scripts import bundle_module

    tmp = tmp_path_factory.mktemp("publish_hipmri")
    from shared.networks.code_grid_transformer import CodeGridTransformer

    networks = bundle_module(HIPMRI, "networks")
    prior = CodeGridTransformer(512, (64, 32), block=(2, 2), dim=128, depth=4, heads=4)  # train_prior.json's
    weights = {"models/model.pt": networks.hipmri_vqvae().state_dict(), "models/prior.pt": prior.state_dict()}
    source = bundle_copy(HIPMRI, tmp / HIPMRI.name, weights)
    result = publish(source, hub, tmp, "--public", token=hub.token)
    assert result.returncode == 0, result.stdout[-6000:]
    return source


@pytest.fixture(scope="session")
def published_babyai(hub, tmp_path_factory) -> Path:
    """The BABY-AI bundle with freshly initialised small-preset weights, pushed."""
    from conftest import BABYAI

    tmp = tmp_path_factory.mktemp("publish_babyai")
    weights = {"models/model.pt": babyai_unet("small").state_dict()}
    source = bundle_copy(BABYAI, tmp / BABYAI.name, weights)
    result = publish(source, hub, tmp, "--public", token=hub.token)
    assert result.returncode == 0, result.stdout[-6000:]
    return source


@pytest.fixture(scope="session")
def published_pathology(hub, tmp_path_factory) -> Path:
    """The pathology bundle with freshly initialised HoVer-Net and full-size generator weights, pushed: publishing
    checks HoVer-Net's dict of branches against the metadata and exports both networks."""
    from conftest import PATHOLOGY
    from helpers.bundle_scripts import bundle_module
    from shared.networks.cyclegan import ResnetGenerator

    tmp = tmp_path_factory.mktemp("publish_pathology")
    weights = {"models/hovernet.pt": bundle_module(PATHOLOGY, "hovernet").hovernet_fast().state_dict(),
               "models/generator_ihc_to_he.pt": ResnetGenerator(3, 3, 64, 9).state_dict()}
    source = bundle_copy(PATHOLOGY, tmp / PATHOLOGY.name, weights)
    result = publish(source, hub, tmp, "--public", token=hub.token)
    assert result.returncode == 0, result.stdout[-6000:]
    assert "TorchScript export of network_def" in result.stdout
    assert "TorchScript export of generator_def" in result.stdout
    return source
