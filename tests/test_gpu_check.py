"""``python -m benchmarks.gpu_check``: it skips, saying so, without a GPU, and ``--device cpu --quick`` runs the very
same steps on the CPU, so that the check's own code is known to work before GPU time is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import Step, agreement
from conftest import REPO


def _check(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=1200, env={**os.environ, **(env or {})})


def test_without_a_gpu_the_check_says_it_skipped_and_what_to_run(tmp_path):
    result = _check(["--results_dir", str(tmp_path)], env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gpu_check skipped: no CUDA GPU is visible here" in result.stdout
    assert "python -m benchmarks.gpu_check --device cpu --quick" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_every_step_of_a_bundle_runs_on_the_cpu_with_its_figures(tmp_path):
    bundle = "hipmri_pelvis_vqvae"  # the quickest bundle: every step in about two minutes on 2 CPU cores
    result = _check(["--device", "cpu", "--quick", "--bundle", bundle, "--results_dir", str(tmp_path)])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    table = json.loads((tmp_path / f"gpu_check_{bundle}.json").read_text())
    rows = {row["step"]: row for row in table["rows"]}
    assert set(rows) == {"train.json", "train.json resumed", "train_prior.json", "train_prior.json resumed",
                         "evaluate", "generate", "evaluate_generation", "inference", "train.json multi-GPU", "train_prior.json multi-GPU",
                         "export"}
    assert all(row["ok"] for row in rows.values())
    assert table["machine"]["device"] == "cpu (GPUs hidden)" and table["machine"]["peak_flops_per_s"]["fp32"] > 0
    for name in ("train.json", "train_prior.json"):
        first, resumed = rows[name], rows[f"{name} resumed"]
        assert first["iterations_per_s"] > 0 and first["validations"] == 1 and first["states_saved"] == 1
        assert (first["resumed_at_iteration"], first["final_iteration"]) == (0, 2)
        assert (resumed["resumed_at_iteration"], resumed["final_iteration"], resumed["iterations_run"]) == (2, 4, 2)
        assert rows[f"{name} multi-GPU"]["final_iteration"] == 2 and rows[f"{name} multi-GPU"]["peak_memory_mb"] > 0
    inference = rows["inference"]
    assert inference["cases"] == inference["files_compared"] > 0 and inference["seconds_per_case"] > 0
    assert inference["max_abs_diff"] == 0  # the "device" is the CPU here: the same result
    assert inference["flops"] > 0 and 0 < inference["compute_share"] < 2
    vqvae = rows["export"]["networks"]["network_def"]
    assert vqvae["torchscript_max_abs_diff"] < 1e-4 and vqvae["onnxruntime_max_abs_diff"] < 1e-3
    assert vqvae["flops"] > 0 and vqvae["eager_s"] > 0
    markdown = (tmp_path / f"gpu_check_{bundle}.md").read_text()
    assert markdown in result.stdout and markdown.count("| pass |") == len(rows)
    assert (tmp_path / "gpu_check_logs" / bundle / "inference on the CPU.log").is_file()


def test_a_failed_step_is_reported_and_what_needs_it_is_skipped(tmp_path, monkeypatch):
    steps = [Step("broken", "run", ["no_such_config.json"]),
             Step("after", "run", ["train.json"], needs=("broken",))]
    monkeypatch.setattr("benchmarks.bundles.hipmri.gpu_steps", lambda quick, work: steps)
    rows, _ = gpu_check.check_bundle("hipmri_pelvis_vqvae", True, "cpu", tmp_path / "work", tmp_path,
                                     {"fp32": 1e9})
    assert not rows[0]["ok"] and "no_such_config.json" in rows[0]["error"]
    assert rows[1] == {"step": "after", "kind": "run", "configs": ["train.json"], "ok": False,
                       "error": "skipped: broken failed"}


def test_agreement_counts_equal_labels_and_the_largest_float_difference(tmp_path):
    device, cpu = tmp_path / "device", tmp_path / "cpu"
    for folder in (device, cpu):
        folder.mkdir()
    labels = np.zeros((4, 5, 2), np.uint8)
    changed = labels.copy()
    changed[0, 0, 0] = 1
    for folder, label, image in ((device, labels, np.ones((3, 3, 3), np.float32)),
                                 (cpu, changed, np.full((3, 3, 3), 1.25, np.float32))):
        nib.save(nib.Nifti1Image(label, np.eye(4)), folder / "a_pred.nii.gz")
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "a_recon.nii.gz")
    figures = agreement(device, cpu, ("*_pred.nii.gz", "*_recon.nii.gz"))
    assert figures == {"files_compared": 2, "min_equal_fraction": pytest.approx(39 / 40), "max_abs_diff": 0.25}
    assert "no output matches" in agreement(device, cpu, ("*.png",))["agreement_error"]
    (cpu / "a_pred.nii.gz").unlink()
    assert "the CPU run wrote no a_pred.nii.gz" in agreement(device, cpu, ("*_pred.nii.gz",))["agreement_error"]


def test_the_pathology_slide_row_reports_seconds_per_megapixel(tmp_path):
    """The pathology check's slide row, run alone on the CPU with a freshly initialised HoVer-Net: a generated
    256x256 H&E slide in the SVS layout, its seconds per megapixel and per step in the row and the table."""
    import torch

    from benchmarks.bundles import pathology
    from shared.data.integrity import save_with_sha256

    work = tmp_path / "work"
    where = {"ckpt_dir": str(work / "models"), "output_dir": str(work / "eval")}
    step = pathology.slide_step(True, work, where)
    assert step.name in [s.name for s in pathology.gpu_steps(True, work)]
    assert (work / "slide" / "he_slide.svs").is_file()
    import scripts.hovernet  # the bundle's package, importable once slide_step has run

    torch.manual_seed(0)
    save_with_sha256(scripts.hovernet.hovernet_fast().state_dict(), work / "models" / "hovernet.pt")
    row = gpu_check.run_step(pathology.NAME, step, "cpu", tmp_path / "logs", {"fp32": 1e9})
    assert row["ok"], row
    assert row["megapixels"] == pytest.approx(256 * 256 / 1e6, abs=0.01)
    assert row["seconds_per_megapixel"] > 0 and row["step_seconds"]["hovernet"] > 0
    table = gpu_check.markdown(pathology.NAME, [{"step": step.name, "configs": step.configs, **row}],
                               {"device": "cpu", "cores": 2, "torch": torch.__version__,
                                "peak_flops_per_s": {"fp32": 1e9}, "bundle_seconds": 1.0}, "test")
    assert f"seconds_per_megapixel {gpu_check._number(row['seconds_per_megapixel'])}" in table


def test_an_app_step_runs_where_its_sdk_imports_and_is_skipped_with_the_reason_elsewhere(tmp_path):
    """The ``app`` kind (the BraTS MONAI Deploy application's row): prepared, run as ``python -m``, its figures
    added; skipped, still ok, with the import error, where the SDK is missing."""
    from benchmarks.gpu_check import Step, markdown, run_app

    source = tmp_path / "in.json"
    made = []
    ran = Step("app", "app", [], app=["json.tool", str(source), str(tmp_path / "out.json")], app_requires="json",
               prepare=lambda: made.append(source.write_text('{"a": 1}')),
               figures=lambda _: {"written": (tmp_path / "out.json").is_file()})
    result = run_app(ran, "cpu", tmp_path / "logs" / "app.log")
    assert result["ok"] and result["written"] and made and "skipped" not in result
    missing = Step("app", "app", [], app=["json.tool"], app_requires="no_such_sdk_module")
    skipped = run_app(missing, "cpu", tmp_path / "logs" / "missing.log")
    assert skipped["ok"] and "no_such_sdk_module does not import (ModuleNotFoundError" in skipped["skipped"]
    info = {"device": "cpu", "cores": 2, "torch": "x", "peak_flops_per_s": {"fp32": 1e9}, "bundle_seconds": 1.0}
    table = markdown("b", [{"step": "deploy app", "configs": [], **skipped}], info, "cmd")
    assert "| deploy app |  | skipped: no_such_sdk_module does not import" in table
    failing = Step("app", "app", [], app=["json.tool", str(tmp_path / "nothing.json")], app_requires="json")
    assert not run_app(failing, "cpu", tmp_path / "logs" / "failing.log")["ok"]
