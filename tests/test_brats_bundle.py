"""The BraTS bundle through its real configs and MONAI's CLI: train -> evaluate -> infer, multi-GPU, export."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import (BRATS, ORACLE_ENV, REPO, TINY_TRAIN, official_schema, oracle_weights, overrides,
                      run_bundle)

pytestmark = pytest.mark.slow
CONFIGS = BRATS / "configs"
def test_training_writes_checkpoints_logs_and_datalist(trained):
    models, evaluation = Path(trained["ckpt_dir"]), Path(trained["output_dir"])
    states = list((models / "training_state").glob("state_iteration=*.pt"))
    assert (models / "model.pt").is_file() and (models / "model.pt.sha256").is_file() and len(states) == 1
    last = torch.load(states[0], weights_only=True)
    assert {"network", "optimizer", "lr_scheduler"} <= set(last["objects"])
    assert last["trainer"]["iteration"] == 2
    assert list(evaluation.glob("tensorboard/*/events.out.tfevents.*"))  # one subfolder per run
    datalist = json.loads((evaluation / "datalist.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [3, 1, 1]


def test_resume_continues_from_last_checkpoint(trained, tmp_path):
    work = {**trained, "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    shutil.copytree(trained["ckpt_dir"], work["ckpt_dir"])
    args = {**work, **TINY_TRAIN, "train#trainer#max_epochs": "2", "resume_checkpoint": "latest"}
    out = run_bundle(["run", "--config_file", str(CONFIGS / "train.json"), *overrides(args)], cwd=tmp_path).stdout
    assert "resumed from" in out and "epoch 1, iteration 2 of 4" in out
    states = sorted((Path(work["ckpt_dir"]) / "training_state").glob("state_iteration=*.pt"))
    assert [p.name for p in states] == ["state_iteration=000000004.pt"]  # the older state was pruned
    assert torch.load(states[0], weights_only=True)["trainer"]["iteration"] == 4


def test_evaluate_from_repo_root_gives_an_oracle_network_its_exact_scores(trained, tmp_path):
    """evaluate.json with an oracle network (oedema wherever FLAIR is bright): the table holds the Dice that its
    mask and the test case's labels give, computed here from the files."""
    config = "['bundles/brats_mri_slice_segmentation/configs/train.json','bundles/brats_mri_slice_segmentation/configs/evaluate.json']"
    oracle = {"network_def": "{'_target_': 'oracle.FlairThreshold'}", "checkpoint": oracle_weights(tmp_path)}
    run_bundle(["run", "--config_file", config, *overrides({**trained, "validate#dataset#num_workers": "0", **oracle})],
               cwd=REPO, env=ORACLE_ENV)
    table = json.loads((Path(trained["output_dir"]) / "test_metrics.json").read_text())
    assert list(table["classes"]) == ["NCR/NET", "ED", "ET"] and list(table["regions"]) == ["WT", "TC", "ET"]
    for row in table["classes"].values():
        assert set(row) == {"dice", "iou", "precision", "recall", "accuracy"}
    assert table["num_cases"] == 1
    (case,) = json.loads((Path(trained["output_dir"]) / "datalist.json").read_text())["test"]
    bright, label = _flair_mask(Path(case["flair"])), np.asarray(nib.load(case["label"]).dataobj)
    assert table["classes"]["ED"]["dice"] == pytest.approx(_dice(bright, label == 2), abs=0.01)
    assert table["regions"]["WT"]["dice"] == pytest.approx(_dice(bright, label > 0), abs=0.01)
    assert table["classes"]["ED"]["recall"] == pytest.approx((bright & (label == 2)).sum() / (label == 2).sum(), abs=0.01)
    for kind, name in (("classes", "NCR/NET"), ("classes", "ET"), ("regions", "TC"), ("regions", "ET")):
        assert table[kind][name]["dice"] == 0.0, (kind, name)  # the oracle never predicts them
    assert (Path(trained["output_dir"]) / "test_metrics.csv").read_text().startswith("kind,name,dice,iou")


def _flair_mask(path: Path) -> np.ndarray:
    """What the FlairThreshold oracle predicts, computed on the input file's own grid."""
    flair = nib.load(path).get_fdata()
    lo, hi = np.percentile(flair[flair != 0], [0.5, 99.5])
    return flair > (lo + hi) / 2


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _reoriented_resampled_case(src: Path, dst: Path, zoom: float) -> Path:
    """The same anatomy stored with x flipped (L->R becomes R) on a finer in-plane grid (1/zoom of the spacing)."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        img = nib.load(p)
        data = np.asarray(img.dataobj)
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = img.shape[0] - 1  # new voxel i is old voxel n-1-i
        order = 0 if p.name.endswith("_seg.nii.gz") else 1
        data = ndimage.zoom(data[::-1], (zoom, zoom, 1.0), order=order, grid_mode=True, mode="grid-constant")
        # grid_mode zoom: new voxel j covers old voxel (j + 0.5) / zoom - 0.5
        shift = np.eye(4)
        shift[:2, 3] = 0.5 / zoom - 0.5
        scale = np.diag([1 / zoom, 1 / zoom, 1.0, 1.0])
        nib.save(nib.Nifti1Image(data, img.affine @ flip @ shift @ scale), dst / p.name.replace(src.name, dst.name))
    return dst


def test_inference_lines_up_with_inputs_and_skips_bad_cases(brats_workdir, brats_demo_dir, tmp_path):
    cases = tmp_path / "cases"
    plain = cases / "plain"
    shutil.copytree(brats_demo_dir / "BraTS20_Training_002", plain)
    for p in plain.iterdir():
        p.rename(plain / p.name.replace("BraTS20_Training_002", "plain"))
    moved = _reoriented_resampled_case(plain, cases / "moved", zoom=1.5)
    assert nib.aff2axcodes(nib.load(moved / "moved_flair.nii.gz").affine)[0] == "R"
    nan_case = cases / "nan"
    shutil.copytree(plain, nan_case)
    for p in nan_case.iterdir():
        p.rename(nan_case / p.name.replace("plain", "nan"))
    t2 = nib.load(nan_case / "nan_t2.nii.gz")
    data = t2.get_fdata().astype(np.float32)
    data[40, 40, 20] = np.nan
    nib.save(nib.Nifti1Image(data, t2.affine), nan_case / "nan_t2.nii.gz")
    (cases / "broken").mkdir()
    (cases / "broken" / "broken_flair.nii.gz").write_text("not a NIfTI file")

    out = tmp_path / "out"
    args = {**{k: v for k, v in brats_workdir.items() if not k.startswith("split")},
            "dataset_dir": str(cases), "output_dir": str(out),
            "network_def": "{'_target_': 'oracle.FlairThreshold'}", "handlers": "[]", "checkpoint": "None",
            "dataloader#num_workers": "0"}
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "helpers"), os.environ.get("PYTHONPATH", "")])}
    result = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"), *overrides(args)], cwd=tmp_path,
                        env=env, check=False)
    assert result.returncode != 0 and "2 of 4 case(s) failed: ['broken', 'nan']" in result.stdout
    assert result.stdout.count("case nan failed, going on with the next") == 1  # one line a failure, no tracebacks

    report = json.loads((out / "inference_report.json").read_text())
    assert report["succeeded"] == ["moved", "plain"]
    failed = {f["case"]: f["error"] for f in report["failed"]}
    assert "nan_t2.nii.gz: 1 voxel(s) are NaN or infinite" in failed["nan"]
    assert "missing input(s)" in failed["broken"]
    for name in ("plain", "moved"):
        source = nib.load(cases / name / f"{name}_flair.nii.gz")
        pred = nib.load(out / f"{name}_pred.nii.gz")
        assert pred.shape == source.shape
        assert np.allclose(pred.affine, source.affine, atol=1e-5)
        labels = np.asarray(pred.dataobj)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 2}
        # the oracle's voxel-wise label must land on the voxels it was computed from
        assert _dice(labels == 2, _flair_mask(cases / name / f"{name}_flair.nii.gz")) > (0.99 if name == "plain" else 0.9)
        assert (out / f"{name}_overlay.png").is_file()
    assert not (out / "nan_pred.nii.gz").exists()


def test_inference_with_trained_weights_on_explicit_files(trained, brats_demo_dir, tmp_path):
    out = tmp_path / "out"
    case = brats_demo_dir / "BraTS20_Training_003"
    files = {m: str(case / f"BraTS20_Training_003_{m}.nii.gz") for m in ("flair", "t1ce", "t2")}
    args = {**{k: v for k, v in trained.items() if not k.startswith(("split", "demo"))},
            "datalist": repr([files]), "output_dir": str(out)}
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"), *overrides(args)], cwd=tmp_path)
    source = nib.load(brats_demo_dir / "BraTS20_Training_003" / "BraTS20_Training_003_t2.nii.gz")
    pred = nib.load(out / "BraTS20_Training_003_pred.nii.gz")
    assert pred.shape == source.shape and np.allclose(pred.affine, source.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 4}


def test_inference_without_weights_says_what_to_do(brats_demo_dir, tmp_path):
    args = {"dataset_dir": str(brats_demo_dir), "ckpt_dir": str(tmp_path / "none"), "output_dir": str(tmp_path)}
    result = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"), *overrides(args)],
                        cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "model.pt does not exist. Train the bundle first" in result.stdout
    assert "download_large_files" in result.stdout


def test_metadata_is_valid_against_the_schema(tmp_path):
    from monai.bundle import verify_metadata

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert Path(meta["schema"]).name == "meta_schema_20240725.json"
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(official_schema(tmp_path)))


def test_verify_net_in_out_and_scripted_export(trained, tmp_path):
    common = ["--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json")]
    out = run_bundle(["verify_net_in_out", "network_def", *common], cwd=tmp_path).stdout
    assert "verified with no error" in out
    ts_file, ckpt = tmp_path / "model.ts", Path(trained["ckpt_dir"]) / "model.pt"
    run_bundle(["ckpt_export", "network_def", "--filepath", str(ts_file), "--ckpt_file", str(ckpt), *common],
               cwd=tmp_path)
    from shared.networks.flexible_unet import ExportableFlexibleUNet

    eager = ExportableFlexibleUNet(3, 4, "resnet34", spatial_dims=2).eval()
    eager.load_state_dict(torch.load(ckpt))
    exported = torch.jit.load(str(ts_file))
    for shape in [(1, 3, 128, 128), (2, 3, 96, 160)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(exported(x), eager(x), atol=1e-5)
