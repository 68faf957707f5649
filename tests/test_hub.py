"""Publishing to, and fetching weights from, a Hugging Face Hub: the real clients against a hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BRATS, TINY_BRATS, overrides
from helpers.fake_hub import FakeHub
from helpers.hub_fixtures import bundle_copy, hub_env, publish, run_python
from helpers.hub_fixtures import sha as _sha

pytestmark = pytest.mark.slow
NAME = BRATS.name
REPO_ID = f"testns/{NAME}"
VERSION = json.loads((BRATS / "configs" / "metadata.json").read_text())["version"]


def _bundle_copy(trained: dict, dst: Path) -> Path:
    """A copy of the bundle (outside the repo) holding the tiny trained weights, to publish from."""
    return bundle_copy(BRATS, dst, {"models/model.pt": Path(trained["ckpt_dir"]) / "model.pt"})


def _publish(bundle: Path, hub: FakeHub, tmp: Path, *extra: str, token: str | None = None):
    return publish(bundle, hub, tmp, *extra, token=token)


def test_push_records_weights_and_download_round_trips(published, hub, tmp_path):
    assert ("POST", f"/api/models/{REPO_ID}/commit/main") in hub.requests
    tags = {t for t, _ in hub.repos[REPO_ID]["refs"].items()}
    assert {"main", VERSION, "latest_version"} <= tags
    entries = {e["path"]: e for e in yaml.safe_load((published / "large_files.yml").read_text())["large_files"]}
    assert entries["models/model.pt"]["url"] == f"{hub.url}/{REPO_ID}/resolve/{VERSION}/models/model.pt"
    assert entries["models/model.pt"]["hash_val"] == _sha(published / "models" / "model.pt")
    assert "models/model.ts" in entries and "models/model.onnx" in entries

    hub_files = hub.repos[REPO_ID]["commits"][hub.repos[REPO_ID]["refs"][VERSION]]
    package = f"{NAME}_scripts"
    assert {"README.md", "models/model.ts", f"{package}/shared/networks/flexible_unet.py",
            f"{package}/layout.py"} <= set(hub_files)
    assert f"{package}/shared/publish.py" not in hub_files and not any(p.startswith("tests/") for p in hub_files)
    assert not any(p.startswith("shared/") or "multimodal_vae" in p or "networks.py" in p for p in hub_files)
    download = run_python(["-m", "monai.bundle", "download", "--name", NAME, "--source", "huggingface_hub",
                           "--repo", REPO_ID, "--version", VERSION, "--bundle_dir", str(tmp_path / "dl")],
                          hub_env(hub, tmp_path / "hf"), cwd=tmp_path, token=hub.token)
    assert download.returncode == 0, download.stdout[-4000:]
    got = tmp_path / "dl" / NAME
    for path, content in hub_files.items():
        assert _sha(got / path) == hashlib.sha256(content).hexdigest(), path
    assert _sha(got / "models" / "model.pt") == _sha(published / "models" / "model.pt")

    from shared.networks.flexible_unet import ExportableFlexibleUNet

    eager = ExportableFlexibleUNet(3, 4, "resnet34", spatial_dims=2).eval()
    eager.load_state_dict(torch.load(got / "models" / "model.pt"))
    exported = torch.jit.load(str(got / "models" / "model.ts"))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(exported(x), eager(x), atol=1e-5)
        from shared.inferers.onnx_runtime import onnx_session

        onnx = onnx_session(got / "models" / "model.onnx").run(None, {"input": x.numpy()})[0]
        assert torch.allclose(torch.from_numpy(onnx), eager(x), atol=1e-4)  # another size than the export's


def test_download_large_files_restores_published_weights(published, hub, tmp_path):
    bundle = shutil.copytree(published, tmp_path / NAME)
    (bundle / "models" / "model.pt").unlink()
    result = run_python(["-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)],
                        hub_env(hub, tmp_path / "hf"), cwd=tmp_path, token=hub.token)
    assert result.returncode == 0, result.stdout[-4000:]
    assert _sha(bundle / "models" / "model.pt") == _sha(published / "models" / "model.pt")
    from shared.hub import ensure_weights

    ensure_weights(str(bundle / "models" / "model.pt"), str(bundle))  # checked against large_files.yml's sha256
    assert (bundle / "models" / "model.pt.sha256").read_text().split()[0] == _sha(bundle / "models" / "model.pt")


def test_inference_fetches_published_weights_once_then_works_offline(published, hub, brats_demo_dir, tmp_path):
    bundle = shutil.copytree(published, tmp_path / NAME)
    weights = bundle / "models" / "model.pt"
    weights.unlink()
    hf_home = tmp_path / "hf"
    args = {"dataset_dir": str(brats_demo_dir / "BraTS20_Training_004"), "output_dir": str(tmp_path / "out"),
            "pixdim": TINY_BRATS["pixdim"], "dataloader#num_workers": "0",
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
    from shared.metrics.segmentation_report import SegmentationReport

    bundle = _bundle_copy(trained, tmp_path / NAME)
    (bundle / "eval").mkdir()
    row = {"dice": 0.5, "iou": 0.25, "precision": 0.75, "recall": 0.125, "accuracy": 0.9}
    table = {"classes": {"ED": row}, "regions": {}, "num_cases": 3}
    (bundle / "eval" / "test_metrics.md").write_text(SegmentationReport.markdown(table))  # as evaluate.json writes it
    result = _publish(bundle, hub, tmp_path, "--zip", str(tmp_path / "out.zip"))
    assert result.returncode == 0, result.stdout[-4000:]
    archive = zipfile.ZipFile(tmp_path / "out.zip")
    card = archive.read(f"{NAME}/docs/README.md").decode()
    assert "on 3 test case(s)" in card and "| ED | 0.500 | 0.250 | 0.750 | 0.125 |" in card
    assert card.count("## Metrics of the published weights") == 1
    names = set(archive.namelist())
    package = f"{NAME}/{NAME}_scripts"
    assert {f"{NAME}/configs/inference.json", f"{NAME}/models/model.pt", f"{NAME}/models/model.ts",
            f"{package}/shared/hub.py", f"{NAME}/LICENSE", f"{NAME}/docs/README.md"} <= names
    assert f"{package}/shared/publish.py" not in names


@pytest.mark.real_hub
@pytest.mark.skipif(not os.environ.get("RUN_REAL_HUB_TESTS"), reason="needs the real Hugging Face Hub; set "
                    "RUN_REAL_HUB_TESTS=1 (and HF_TOKEN) to run")
def test_real_hub_repo_resolves():  # pragma: no cover - not reachable in CI
    from huggingface_hub import HfApi

    assert HfApi().model_info("MONAI/spleen_ct_segmentation").sha
