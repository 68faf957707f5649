"""``python -m benchmarks`` keeps working: one bundle's table, quick, written as Markdown and JSON (no timing
assertions: the figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
ROWS = {"trainer_overhead", "data_pipeline", "inference", "inference_onnxruntime", "export_torchscript",
        "export_onnxruntime", "sampling"}


def test_quick_benchmark_writes_one_table_per_bundle_with_every_row(tmp_path):
    bundle = "hipmri_pelvis_vqvae"  # the quickest bundle: its rows take seconds on 2 CPU cores
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--bundle", bundle, "--quick", "--results_dir",
                             str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    table = json.loads((tmp_path / f"{bundle}.json").read_text())
    assert table["bundle"] == bundle and table["quick"] is True
    assert {"cpu", "cores", "torch_threads", "device"} <= set(table["machine"])
    assert {row["name"] for row in table["rows"]} == ROWS
    for row in table["rows"]:
        assert row["ratio"] > 0 and row["goal"] > 0 and row["bundle_median"] > 0 and row["reference_median"] > 0
        assert row["ratio"] == pytest.approx(row["reference_median"] / row["bundle_median"])
    inference = next(row for row in table["rows"] if row["name"] == "inference")
    assert inference["extra"]["max_abs_diff"] < 1e-3  # batched slices give the study loop's reconstruction
    assert {"bundle_peak_memory_added_mb", "reference_peak_memory_added_mb"} <= set(inference["extra"])
    # the physical limit beside every inference and export row: FLOPs of the timed work, their rate, the share of
    # this run's matrix-product peak (ONNX Runtime's inference does the torch row's work)
    assert table["machine"]["peak_fp32_flops_per_s"] > 0
    for row in table["rows"]:
        if row["name"].startswith(("inference", "export")):
            extra = row["extra"]
            assert extra["flops"] > 0 and 0 < extra["compute_share"] < 2
            assert extra["achieved_flops_per_s"] == pytest.approx(extra["flops"] / row["bundle_median"])
            assert extra["compute_share"] == pytest.approx(
                extra["achieved_flops_per_s"] / table["machine"]["peak_fp32_flops_per_s"], rel=1e-3)
    by_name = {row["name"]: row for row in table["rows"]}
    assert by_name["sampling"]["extra"]["codes_identical_share"] == 1.0  # the cache changes no draw
    assert by_name["inference"]["extra"]["flops"] == by_name["inference_onnxruntime"]["extra"]["flops"]
    markdown = (tmp_path / f"{bundle}.md").read_text()
    assert markdown in result.stdout and markdown.count("\n| `") == len(table["rows"])


def test_an_unknown_bundle_is_refused_with_the_known_ones_named():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--bundle", "nope"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "hipmri_pelvis_vqvae" in result.stderr
