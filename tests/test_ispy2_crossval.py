"""The I-SPY2 cross-validated comparison: patient folds, the paired statistics, and a tiny run of crossval.json
(both variants on two folds, the VAE trained on each fold's training patients) that a second run does not redo."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conftest import ISPY2, TINY_ISPY2, run_bundle
from helpers.bundle_scripts import bundle_module
from shared.metrics.per_case_dice import PatientMeanDice

CONFIGS = ISPY2 / "configs"
layout = bundle_module(ISPY2, "layout")
report = bundle_module(ISPY2, "crossval_report")


def test_folds_are_patient_disjoint_cover_every_patient_once_and_do_not_depend_on_the_variant(breast_demo, tmp_path):
    patients = sorted(p.name for p in breast_demo.iterdir() if p.is_dir())
    tested = []
    for fold in range(3):
        split = layout.build_ispy2_datalist(str(breast_demo), str(tmp_path / f"dl{fold}.json"), 0.2, 0.0, seed=4,
                                            folds=3, fold=fold)
        names = {k: {p["case"] for p in v} for k, v in split.items()}
        assert not names["training"] & names["test"] and not names["validation"] & names["test"]
        assert not names["training"] & names["validation"] and names["training"] and names["validation"]
        assert names["training"] | names["validation"] | names["test"] == set(patients)
        tested += sorted(names["test"])
        # the VAE's config and the U-Net's build the same fold from the same settings
        again = layout.build_ispy2_datalist(str(breast_demo), str(tmp_path / "again.json"), 0.2, 0.2, seed=4, folds=3,
                                            fold=fold)
        assert again == split
        assert json.loads((tmp_path / f"dl{fold}.json").read_text())["fold"] == fold
    assert sorted(tested) == patients  # each patient is a test patient exactly once
    with pytest.raises(ValueError, match="folds"):
        layout.build_ispy2_datalist(str(breast_demo), str(tmp_path / "x.json"), 0.2, 0.0, folds=9, fold=0)


def test_paired_difference_statistics():
    a, b = [0.60, 0.70, 0.65, 0.80, 0.75], [0.62, 0.69, 0.70, 0.85, 0.79]
    d = np.subtract(b, a)
    result = report.paired_difference(a, b)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert result["mean_difference"] == pytest.approx(d.mean())
    assert result["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert result["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d).pvalue) and result["pairs"] == 5
    assert report.paired_difference(a, a)["wilcoxon_p"] == 1.0
    assert report.paired_difference([0.5, np.nan, 0.7], [0.6, 0.4, 0.9])["pairs"] == 2


@pytest.fixture(scope="module")
def crossval(breast_demo, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("crossval")
    inner = {k: ast.literal_eval(v) if v[0] in "[0123456789" else v for k, v in TINY_ISPY2.items()}
    inner["demo#dir"] = str(breast_demo)
    args = ["run", "--config_file", str(CONFIGS / "crossval.json"), "--output_dir", str(out), "--folds", "2",
            "--overrides", repr(inner), "--variants", repr({
                "without_vae": {"augment_with_vae": False},
                "with_vae": {"augment_with_vae": True, "pretrain_configs": [[str(CONFIGS / "train.json"), str(CONFIGS / "train_vae.json")]]}})]
    first = run_bundle([*args, "--workers", "2"], cwd=out).stdout
    second = run_bundle(args, cwd=out).stdout
    return out, [first, second]


def test_crossval_trains_both_variants_on_identical_folds_and_writes_the_statistics(crossval, breast_demo):
    out, _ = crossval
    summary = json.loads((out / "crossval.json").read_text())
    assert summary["folds"] == 2 and list(summary["variants"]) == ["without_vae", "with_vae"]
    for variant in summary["variants"].values():
        assert len(variant["per_fold"]) == 2 and all(0 <= d <= 1 for d in variant["per_fold"])
        assert variant["mean_dice"] == pytest.approx(np.mean(variant["per_fold"]))
    assert set(summary["paired"]) >= {"mean_difference", "ci95", "wilcoxon_p"}
    assert summary["paired"]["difference"] == "with_vae - without_vae"
    tested = []
    for fold in range(2):
        splits = [json.loads((out / f"fold_{fold}" / v / "eval" / "datalist.json").read_text())
                  for v in ("without_vae", "with_vae")]
        assert splits[0]["test"] == splits[1]["test"] and splits[0]["training"] == splits[1]["training"]
        # the VAE saw only this fold's training and validation patients
        vae_split = json.loads((out / f"fold_{fold}" / "with_vae" / "eval" / "vae_datalist.json").read_text())
        assert vae_split["test"] == splits[0]["test"]
        assert (out / f"fold_{fold}" / "with_vae" / "models" / "vae_t2_mask.pt").is_file()
        assert not (out / f"fold_{fold}" / "without_vae" / "models" / "vae_t2_mask.pt").exists()
        tested += [p["case"] for p in splits[0]["test"]]
    assert sorted(tested) == sorted(p.name for p in breast_demo.iterdir() if p.is_dir())
    with open(out / "crossval_per_fold.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["fold", "test_patients", "without_vae", "with_vae"] and len(rows) == 3
    with open(out / "crossval_per_patient.csv") as f:
        assert len(list(csv.reader(f))) == 1 + len(tested)
    assert (out / "crossval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Wilcoxon p" in (out / "crossval.md").read_text()


def test_a_second_run_skips_finished_folds(crossval):
    out, (first, second) = crossval
    assert "already done" not in first
    assert second.count("already done") == 4 and "training with" not in second
    assert json.loads((out / "crossval.json").read_text())["folds"] == 2


def test_patient_mean_dice_pools_each_patients_slices_before_averaging():
    from types import SimpleNamespace

    metric = PatientMeanDice()
    metric.reset()
    ones, zeros = np.ones((1, 4, 4)), np.zeros((1, 4, 4))
    half = np.zeros((1, 4, 4))
    half[0, :2] = 1
    batch = [{"case": "a"}, {"case": "a"}, {"case": "b"}]
    output = [{"pred": ones, "label": ones}, {"pred": zeros, "label": half}, {"pred": half, "label": ones}]
    metric.iteration_completed(SimpleNamespace(state=SimpleNamespace(batch=batch, output=output)))
    # a: 16 of 16 + 8 true voxels found -> 2 * 16 / (16 + 24); b: 2 * 8 / (8 + 16)
    assert metric.compute() == pytest.approx((32 / 40 + 16 / 24) / 2)
