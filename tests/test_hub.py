"""Publishing to, and fetching weights from, a Hugging Face Hub: the real clients against a hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import pytest
import torch
import yaml

from conftest import BRATS, REPO, SCHEMA_DIR, TINY_BRATS, overrides
from helpers.fake_hub import FakeHub

pytestmark = pytest.mark.slow
NAME = BRATS.name
REPO_ID = "testns/brats"
VERSION = json.loads((BRATS / "configs" / "metadata.json").read_text())["version"]
SCHEMA = SCHEMA_DIR / "meta_schema_20240725.json"


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_python(args: list[str], env: dict, cwd: Path, token: str | None = None) -> subprocess.CompletedProcess:
    """A subprocess with the hub endpoint set before huggingface_hub is imported (it reads HF_ENDPOINT on import)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update({"PYTHONUNBUFFERED": "1", **env})
    if token:
        full["HF_TOKEN"] = token
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)


def hub_env(hub: FakeHub, hf_home: Path, offline: bool = False) -> dict:
    env = {"HF_ENDPOINT": hub.url, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(hf_home)}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def hub():
    with FakeHub(max_seconds=1500, max_requests=5000) as server:
        yield server


def _bundle_copy(trained: dict, dst: Path) -> Path:
    """A copy of the bundle (outside the repo) holding the tiny trained weights, to publish from."""
    shutil.copytree(BRATS, dst, ignore=shutil.ignore_patterns("demo_data", "eval", "*.pt", "*.ts"))
    shutil.copy(Path(trained["ckpt_dir"]) / "model.pt", dst / "models" / "model.pt")
    return dst


def _publish(bundle: Path, hub: FakeHub, tmp: Path, *extra: str, token: str | None = None) -> subprocess.CompletedProcess:
    schema = ["--schema-file", str(SCHEMA)] if SCHEMA.is_file() else []
    return run_python(["-m", "shared.publish", str(bundle), "--repo", REPO_ID, *schema, *extra],
                      hub_env(hub, tmp / "hf_publish"), cwd=tmp, token=token)


@pytest.fixture(scope="module")
def published(trained, hub, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("publish")
    source = _bundle_copy(trained, tmp / NAME)
    result = _publish(source, hub, tmp, "--public", token=hub.token)
    assert result.returncode == 0, result.stdout[-6000:]
    assert hub.token not in result.stdout
    return source


def test_push_records_weights_and_download_round_trips(published, hub, tmp_path):
    assert ("POST", f"/api/models/{REPO_ID}/commit/main") in hub.requests
    tags = {t for t, _ in hub.repos[REPO_ID]["refs"].items()}
    assert {"main", VERSION, "latest_version"} <= tags
    entries = {e["path"]: e for e in yaml.safe_load((published / "large_files.yml").read_text())["large_files"]}
    assert entries["models/model.pt"]["url"] == f"{hub.url}/{REPO_ID}/resolve/{VERSION}/models/model.pt"
    assert entries["models/model.pt"]["hash_val"] == _sha(published / "models" / "model.pt")
    assert "models/model.ts" in entries

    hub_files = hub.repos[REPO_ID]["commits"][hub.repos[REPO_ID]["refs"][VERSION]]
    assert {"README.md", "models/model.ts", "shared/networks/flexible_unet.py"} <= set(hub_files)
    assert "shared/publish.py" not in hub_files and not any(p.startswith("tests/") for p in hub_files)
    download = run_python(["-m", "monai.bundle", "download", "--name", NAME, "--source", "huggingface_hub",
                           "--repo", REPO_ID, "--version", VERSION, "--bundle_dir", str(tmp_path / "dl")],
                          hub_env(hub, tmp_path / "hf"), cwd=tmp_path, token=hub.token)
    assert download.returncode == 0, download.stdout[-4000:]
    got = tmp_path / "dl" / NAME
    for path, content in hub_files.items():
        assert _sha(got / path) == hashlib.sha256(content).hexdigest(), path
    assert _sha(got / "models" / "model.pt") == _sha(published / "models" / "model.pt")

    from shared.networks import ExportableFlexibleUNet

    eager = ExportableFlexibleUNet(3, 4, "resnet34", spatial_dims=2).eval()
    eager.load_state_dict(torch.load(got / "models" / "model.pt"))
    exported = torch.jit.load(str(got / "models" / "model.ts"))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(exported(x), eager(x), atol=1e-5)


def test_download_large_files_restores_published_weights(published, hub, tmp_path):
    bundle = shutil.copytree(published, tmp_path / NAME)
    (bundle / "models" / "model.pt").unlink()
    result = run_python(["-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)],
                        hub_env(hub, tmp_path / "hf"), cwd=tmp_path, token=hub.token)
    assert result.returncode == 0, result.stdout[-4000:]
    assert _sha(bundle / "models" / "model.pt") == _sha(published / "models" / "model.pt")


ISOLATED_RUN = """
import os, runpy, sys
repo = sys.argv.pop(1)
# make this repository unimportable: drop the editable install's finder and the checkout's own folders
# (the virtual environment may live inside the checkout; its site-packages stay)
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "")]
own = {repo, os.path.join(repo, "tests"), os.path.join(repo, "tests", "helpers")}
sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) not in own]
sys.path_importer_cache.clear()
try:
    import shared
except ImportError:
    pass
else:
    raise SystemExit(f"shared is still importable from {shared.__file__}")
sys.argv = ["monai.bundle"] + sys.argv[1:]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def test_published_copy_runs_standalone_without_this_repository(published, hub, brats_demo_dir, tmp_path):
    outside = tmp_path / "standalone"
    shutil.copytree(published, outside / NAME, ignore=shutil.ignore_patterns("shared"))
    # what the published copy carries, not the repository: take `shared` from the hub's files
    hub_files = hub.repos[REPO_ID]["commits"][hub.repos[REPO_ID]["refs"][VERSION]]
    for path, content in hub_files.items():
        if path.startswith("shared/"):
            (outside / NAME / path).parent.mkdir(parents=True, exist_ok=True)
            (outside / NAME / path).write_bytes(content)
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    args = {"dataset_dir": str(brats_demo_dir / "BraTS20_Training_004"), "output_dir": str(tmp_path / "out"),
            "pixdim": TINY_BRATS["pixdim"], "patch_size": TINY_BRATS["patch_size"], "dataloader#num_workers": "0"}
    result = run_python(["-c", ISOLATED_RUN, str(REPO), "run", "--config_file",
                         str(outside / NAME / "configs" / "inference.json"), *overrides(args)],
                        {"PYTHONPATH": ""}, cwd=cwd)
    assert result.returncode == 0, result.stdout[-6000:]
    pred = nib.load(tmp_path / "out" / "BraTS20_Training_004_pred.nii.gz")
    assert pred.shape == nib.load(brats_demo_dir / "BraTS20_Training_004" / "BraTS20_Training_004_t2.nii.gz").shape


def test_inference_fetches_published_weights_once_then_works_offline(published, hub, brats_demo_dir, tmp_path):
    bundle = shutil.copytree(published, tmp_path / NAME)
    weights = bundle / "models" / "model.pt"
    weights.unlink()
    hf_home = tmp_path / "hf"
    args = {"dataset_dir": str(brats_demo_dir / "BraTS20_Training_004"), "output_dir": str(tmp_path / "out"),
            "pixdim": TINY_BRATS["pixdim"], "patch_size": TINY_BRATS["patch_size"], "dataloader#num_workers": "0",
            "use_published_weights": "True"}
    command = ["-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
               *overrides(args)]
    resolve = f"/{REPO_ID}/resolve/{VERSION}/models/model.pt"
    before = hub.requests.count(("GET", resolve))
    result = run_python(command, hub_env(hub, hf_home), cwd=tmp_path, token=hub.token)
    assert result.returncode == 0, result.stdout[-6000:]
    assert _sha(weights) == _sha(published / "models" / "model.pt")
    assert hub.requests.count(("GET", resolve)) == before + 1

    weights.unlink()  # gone from the bundle, still in the HF cache: offline mode takes it from there
    served = len(hub.requests)
    offline = run_python(command, hub_env(hub, hf_home, offline=True), cwd=tmp_path, token=hub.token)
    assert offline.returncode == 0, offline.stdout[-6000:]
    assert _sha(weights) == _sha(published / "models" / "model.pt")
    assert len(hub.requests) == served


def _clone_repo(hub: FakeHub, name: str, private: bool) -> str:
    source = hub.repos[REPO_ID]
    hub.repos[name] = {**source, "private": private, "refs": dict(source["refs"]),
                       "commits": {k: dict(v) for k, v in source["commits"].items()}}
    return name


def _fetch(hub: FakeHub, tmp: Path, revision: str, filename: str, sha: str, token: str | None, offline=False,
           repo: str = REPO_ID):
    code = ("import sys\nfrom shared.hub import fetch_published_file, WeightsUnavailableError\n"
            f"try:\n    fetch_published_file({repo!r}, {filename!r}, {revision!r}, {sha!r}, {str(tmp / 'w.pt')!r})\n"
            "except WeightsUnavailableError as e:\n    print('ERROR', e); sys.exit(3)\nprint('OK')\n")
    return run_python(["-c", code], hub_env(hub, tmp / "hf", offline), cwd=tmp, token=token)


def test_fetch_errors_are_clear(published, hub, tmp_path):
    sha = _sha(published / "models" / "model.pt")
    private = _clone_repo(hub, "testns/private", private=True)
    no_token = _fetch(hub, tmp_path, VERSION, "models/model.pt", sha, token=None, repo=private)
    assert no_token.returncode == 3 and "private and no valid token was given (set HF_TOKEN)" in no_token.stdout
    version = _fetch(hub, tmp_path, "9.9.9", "models/model.pt", sha, token=hub.token)
    assert version.returncode == 3 and "version '9.9.9' does not exist" in version.stdout
    missing = _fetch(hub, tmp_path, VERSION, "models/nope.pt", sha, token=hub.token)
    assert missing.returncode == 3 and "no such file at version" in missing.stdout
    offline = _fetch(hub, tmp_path, VERSION, "models/model.pt", sha, token=hub.token, offline=True)
    assert offline.returncode == 3 and "not in the local Hugging Face cache" in offline.stdout
    assert not (tmp_path / "w.pt").exists()


def test_tampered_weights_are_refused_and_deleted(published, hub, tmp_path):
    good = (published / "models" / "model.pt").read_bytes()
    _clone_repo(hub, "testns/tampered", private=False)
    code = ("import sys\nfrom shared.hub import fetch_published_file, WeightsUnavailableError\n"
            f"try:\n    fetch_published_file('testns/tampered', 'models/model.pt', {VERSION!r}, "
            f"{hashlib.sha256(good).hexdigest()!r}, {str(tmp_path / 'w.pt')!r})\n"
            "except WeightsUnavailableError as e:\n    print('ERROR', e); sys.exit(3)\n")
    hub.tamper("testns/tampered", VERSION, "models/model.pt", good[:-16] + b"\0" * 16)
    result = run_python(["-c", code], hub_env(hub, tmp_path / "hf"), cwd=tmp_path, token=hub.token)
    assert result.returncode == 3 and "does not match the published" in result.stdout
    assert not (tmp_path / "w.pt").exists()
    cached = [p for p in (tmp_path / "hf").rglob("*") if p.is_file() and p.stat().st_size == len(good)]
    assert cached == []  # the bad download is not left in the HF cache either


def test_publish_refuses_a_failed_check_and_pushes_nothing(trained, hub, tmp_path):
    bundle = _bundle_copy(trained, tmp_path / NAME)
    served = len(hub.requests)
    result = _publish(bundle, hub, tmp_path, "--version", "9.9.9", token=hub.token)
    assert result.returncode == 1
    assert "not published, a check failed" in result.stdout and "9.9.9 is not in the metadata changelog" in result.stdout
    assert len(hub.requests) == served
    (bundle / "models" / "model.pt").unlink()
    assert "missing models/model.pt" in _publish(bundle, hub, tmp_path, "--dry-run").stdout


def test_publish_zip_is_a_self_contained_bundle_with_measured_metrics(trained, hub, tmp_path):
    bundle = _bundle_copy(trained, tmp_path / NAME)
    (bundle / "eval").mkdir()
    row = {"dice": 0.5, "iou": 0.25, "precision": 0.75, "recall": 0.125, "accuracy": 0.9}
    (bundle / "eval" / "test_metrics.json").write_text(json.dumps({"classes": {"ED": row}, "regions": {}, "num_cases": 3}))
    result = _publish(bundle, hub, tmp_path, "--zip", str(tmp_path / "out.zip"))
    assert result.returncode == 0, result.stdout[-4000:]
    archive = zipfile.ZipFile(tmp_path / "out.zip")
    card = archive.read(f"{NAME}/docs/README.md").decode()
    assert "on 3 test case(s)" in card and "| ED | 0.500 | 0.250 | 0.750 | 0.125 |" in card
    names = set(archive.namelist())
    assert {f"{NAME}/configs/inference.json", f"{NAME}/models/model.pt", f"{NAME}/models/model.ts",
            f"{NAME}/shared/hub.py", f"{NAME}/LICENSE", f"{NAME}/docs/README.md"} <= names
    assert f"{NAME}/shared/publish.py" not in names


@pytest.mark.real_hub
@pytest.mark.skipif(not os.environ.get("RUN_REAL_HUB_TESTS"), reason="needs the real Hugging Face Hub; set "
                    "RUN_REAL_HUB_TESTS=1 (and HF_TOKEN) to run")
def test_real_hub_repo_resolves():  # pragma: no cover - not reachable in CI
    from huggingface_hub import HfApi

    assert HfApi().model_info("MONAI/spleen_ct_segmentation").sha
