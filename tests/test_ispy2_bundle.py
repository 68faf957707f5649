"""The I-SPY2 bundle through its real configs: VAE -> generate -> U-Net with/without augmentation -> evaluate,
the comparison, inference geometry, the pickle loader and bad inputs."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import (ISPY2, ORACLE_ENV, REPO, TINY_ISPY2, official_schema, oracle_weights, overrides, run_bundle,
                      stand_in_schema)
from helpers.bundle_scripts import bundle_module
from shared.data.slice_patches import TumourSliceDataset
from shared.inferers.prepared_slices import PreparedSliceInferer

layout = bundle_module(ISPY2, "layout")
build_ispy2_datalist, discover_patients, load_study_pickles = (
    layout.build_ispy2_datalist, layout.discover_patients, layout.load_study_pickles)

pytestmark = pytest.mark.slow
BUNDLE = ISPY2
CONFIGS = BUNDLE / "configs"
VAE = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'train_vae.json'}']"  # the VAE's training, stacked on the U-Net's
TINY = TINY_ISPY2


@pytest.fixture(scope="module")
def work(breast_demo, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ispy2_run")
    return {**TINY, "demo#dir": str(breast_demo), "ckpt_dir": str(root / "models"), "output_dir": str(root / "eval")}


@pytest.fixture(scope="module")
def vae(work, tmp_path_factory) -> Path:
    run_bundle(["run", "training", "--config_file", VAE, *overrides(work)],
               cwd=tmp_path_factory.mktemp("elsewhere"))
    return Path(work["ckpt_dir"]) / "vae_t2_mask.pt"


def test_demo_layout(breast_demo):
    patients = sorted(p.name for p in breast_demo.iterdir() if p.is_dir())
    assert patients == [f"ISPY2-{100000 + i}" for i in range(1, 6)]
    t2 = nib.load(breast_demo / patients[0] / f"{patients[0]}_t2.nii.gz")
    mask = nib.load(breast_demo / patients[0] / f"{patients[0]}_mask.nii.gz")
    assert t2.shape == mask.shape == (256, 160, 24) and np.allclose(t2.affine, mask.affine)
    m = np.asarray(mask.dataobj)
    assert set(np.unique(m)) == {0, 1} and 50 < m.sum() < 0.05 * m.size


def test_vae_then_generate(vae, work, tmp_path):
    assert vae.is_file()
    out = tmp_path / "generated"
    generate = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'train_vae.json'}','{CONFIGS / 'generate.json'}']"
    run_bundle(["run", "--config_file", generate,
                *overrides({**work, "generated_dir": str(out), "num_samples": "4"})], cwd=tmp_path)
    for i in range(4):
        t2 = nib.load(out / f"synthetic_{i:03d}_t2.nii.gz").get_fdata()
        mask = nib.load(out / f"synthetic_{i:03d}_mask.nii.gz").get_fdata()
        assert t2.shape == mask.shape == (128, 128) and np.isfinite(t2).all()
        assert mask.min() >= 0 and mask.max() <= 1
        assert (out / f"synthetic_{i:03d}.png").is_file()
    assert (out / "grid_preview.png").is_file()


def test_single_modality_vae(work, tmp_path):
    args = {**work, "vae_inputs": "['t2']", "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path)}
    run_bundle(["run", "training", "--config_file", VAE, *overrides(args)], cwd=tmp_path)
    import torch

    state = torch.load(tmp_path / "models" / "vae_t2.pt")
    assert state["encoder.0.0.weight"].shape[1] == 1 and not any(k.startswith("decoders.1") for k in state)


def test_evaluate_gives_an_oracle_network_that_finds_no_tumour_a_dice_of_zero(work, tmp_path):
    """evaluate.json with an oracle network that predicts no tumour anywhere: every test patient has a tumour, so
    every per-patient Dice, their mean and the micro Dice are exactly 0."""
    oracle = {"network_def": "{'_target_': 'oracle.BrightSlice', 'threshold': 1e9}",
              "checkpoint": oracle_weights(tmp_path), "output_dir": str(tmp_path / "eval")}
    run_bundle(["run", "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']",
                *overrides({**work, **oracle})], cwd=tmp_path, env=ORACLE_ENV)
    result = json.loads((tmp_path / "eval" / "per_patient_dice.json").read_text())
    test_patients = [case["case"] for case in json.loads((tmp_path / "eval" / "datalist.json").read_text())["test"]]
    assert result["per_case"] == {patient: 0.0 for patient in test_patients}
    assert result["mean_dice"] == 0.0 and result["micro_dice"] == 0.0 and result["num_cases"] == 1


@pytest.fixture(scope="module")
def compared(vae, work, tmp_path_factory) -> tuple[Path, str]:
    """compare.json: both U-Nets (without / with VAE augmentation) trained and evaluated on the same split."""
    out = tmp_path_factory.mktemp("compare")

    def value(v: str):
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v

    inner = {k: value(v) for k, v in work.items() if k not in ("ckpt_dir", "output_dir")}
    log = run_bundle(["run", "--config_file", str(CONFIGS / "compare.json"), "--output_dir", str(out),
                      "--vae_checkpoint", str(vae), "--overrides", repr(inner)], cwd=out).stdout
    return out, log


def test_each_unet_variant_is_trained_and_evaluated(compared):
    out, log = compared
    without_log, with_log = log.split("variant with_vae: training", 1)
    assert "VAE augmentation: 20% of each batch" not in without_log
    assert "VAE augmentation: 20% of each batch" in with_log
    for variant in ("without_vae", "with_vae"):
        assert (out / variant / "models" / "model.pt").is_file()
        result = json.loads((out / variant / "eval" / "per_patient_dice.json").read_text())
        assert result["num_cases"] == 1 and 0.0 <= result["mean_dice"] <= 1.0
        datalist = json.loads((out / variant / "eval" / "datalist.json").read_text())
        assert [len(datalist[k]) for k in ("training", "validation", "test")] == [3, 1, 1]


def test_compare_writes_the_with_without_table(compared):
    out, _ = compared
    rows = (out / "comparison.csv").read_text().splitlines()
    assert rows[0] == "case,without_vae,with_vae" and rows[-2].startswith("mean,") and len(rows) == 4
    summary = json.loads((out / "comparison.json").read_text())
    for variant in ("without_vae", "with_vae"):
        per_patient = json.loads((out / variant / "eval" / "per_patient_dice.json").read_text())
        assert summary[variant]["mean_dice"] == per_patient["mean_dice"]


def _reoriented(src: Path, dst: Path) -> Path:
    """Flip x and store at half the in-plane spacing: same anatomy, another grid and orientation."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        img = nib.load(p)
        data = np.asarray(img.dataobj)[::-1].repeat(2, 0).repeat(2, 1)
        flip = np.diag([-0.5, 0.5, 1.0, 1.0])
        flip[0, 3] = img.shape[0] - 0.75
        flip[1, 3] = -0.25
        nib.save(nib.Nifti1Image(data, img.affine @ flip), dst / p.name.replace(src.name, dst.name))
    return dst


def test_inference_keeps_input_geometry_and_slice_range(breast_demo, tmp_path):
    cases = tmp_path / "cases"
    shutil.copytree(breast_demo / "ISPY2-100001", cases / "ISPY2-100001")
    moved = _reoriented(cases / "ISPY2-100001", cases / "moved")
    assert nib.aff2axcodes(nib.load(moved / "moved_t2.nii.gz").affine)[0] == "L"
    (cases / "broken").mkdir()
    (cases / "broken" / "broken_t2.nii.gz").write_text("not NIfTI")
    args = {"dataset_dir": str(cases), "output_dir": str(tmp_path / "out"), "pixdim": TINY["pixdim"],
            "slice_size": TINY["slice_size"], "network_def": "{'_target_': 'oracle.BrightSlice'}",
            "handlers": "[]", "checkpoint": "None", "slice_range": "[5, 10]"}
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "helpers"), os.environ.get("PYTHONPATH", "")])}
    result = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"), *overrides(args)], cwd=tmp_path,
                        env=env, check=False)
    assert result.returncode != 0 and "1 of 3 case(s) failed: ['broken']" in result.stdout
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert report["succeeded"] == ["ISPY2-100001", "moved"]
    assert "broken_t2.nii.gz: not a readable NIfTI file" in report["failed"][0]["error"]
    for name, folder in (("ISPY2-100001", cases / "ISPY2-100001"), ("moved", moved)):
        source = nib.load(folder / f"{name}_t2.nii.gz")
        pred = nib.load(tmp_path / "out" / f"{name}_mask.nii.gz")
        assert pred.shape == source.shape and np.allclose(pred.affine, source.affine)
        labels = np.asarray(pred.dataobj)
        z_with_labels = np.nonzero(labels.reshape(-1, labels.shape[-1]).any(0))[0]
        assert set(z_with_labels) == set(range(5, 11))  # only the requested slice range is segmented
    plain = np.asarray(nib.load(tmp_path / "out" / "ISPY2-100001_mask.nii.gz").dataobj)
    moved_pred = np.asarray(nib.load(tmp_path / "out" / "moved_mask.nii.gz").dataobj)
    back = moved_pred[::-1][::2, ::2]  # undo the flip and the 2x upsampling
    assert 2 * (back & plain).sum() / (back.sum() + plain.sum()) > 0.9


def _write_pickles(folder: Path, n_patients: int = 4, per_patient: int = 3) -> dict[str, str]:
    rng = np.random.default_rng(0)
    n = n_patients * per_patient
    t2 = rng.standard_normal((n, 320, 512)).astype(np.float32)
    mask = np.zeros((n, 320, 512), np.float32)
    mask[:, 100:140, 200:260] = 1
    mask[0, 0, 5] = 1  # a marker: row 0 (top), column 5
    labels = [f"P{i // per_patient}" for i in range(n)]
    paths = {}
    for key, value in (("t2", t2), ("mask", mask), ("labels", labels)):
        name = {"t2": "t2_arraysstan_32.pkl", "mask": "mask_arrayscropped_8.pkl", "labels": "patient_labels.pkl"}[key]
        with open(folder / name, "wb") as f:
            pickle.dump(value, f)
        paths[key] = str(folder / name)
    return paths


def test_pickle_loader_and_training_from_pickles(tmp_path):
    paths = _write_pickles(tmp_path)
    slices = load_study_pickles(paths["t2"], paths["mask"], paths["labels"])
    assert len(slices) == 12 and slices[0]["t2"].shape == (1, 512, 320)
    assert slices[0]["mask"][0, 5, 319] == 1  # column 5 -> x = 5; top row -> the highest y
    split = build_ispy2_datalist(None, str(tmp_path / "dl.json"), 0.25, 0.25, pickles=paths)
    patients = {k: {s["case"] for s in v} for k, v in split.items()}
    assert sum(len(p) for p in patients.values()) == 4
    assert not (patients["training"] & patients["test"]) and not (patients["training"] & patients["validation"])
    assert json.loads((tmp_path / "dl.json").read_text())["test"] == sorted(patients["test"])
    args = {**TINY, "pickles": repr(paths), "dataset_dir": str(tmp_path), "ckpt_dir": str(tmp_path / "m"),
            "output_dir": str(tmp_path / "e"), "split#val_fraction": "0.25"}
    run_bundle(["run", "training", "--config_file", VAE, *overrides(args)], cwd=tmp_path)
    assert (tmp_path / "m" / "vae_t2_mask.pt").is_file()


def test_bad_inputs_are_clear_errors(breast_demo, tmp_path):
    root = tmp_path / "data"
    for name in ("good", "shape", "text", "empty"):
        shutil.copytree(breast_demo / "ISPY2-100001", root / name)
        for p in (root / name).iterdir():
            p.rename(root / name / p.name.replace("ISPY2-100001", name))
    t2 = nib.load(root / "shape" / "shape_t2.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), t2.affine), root / "shape" / "shape_mask.nii.gz")
    (root / "text" / "text_mask.nii.gz").write_text("not an image")
    nib.save(nib.Nifti1Image(np.zeros(t2.shape, np.uint8), t2.affine), root / "empty" / "empty_mask.nii.gz")
    valid, rejected = discover_patients(str(root))
    errors = {r["case"]: r["error"] for r in rejected}
    assert "shape_mask.nii.gz: shape (10, 10, 10) differs from t2" in errors["shape"]
    assert "text_mask.nii.gz: not a readable NIfTI file" in errors["text"]
    assert [p["case"] for p in valid] == ["empty", "good"]
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()  # the volume pipeline of train.json
    parser.read_config(str(ISPY2 / "configs" / "train.json"))
    parser["pixdim"] = [1.4, 1.4, 3.0]
    volume = Compose(parser.get_parsed_content("volume_transforms"))
    # an empty mask is unusable for training: that patient is set aside with the reason, the others go on
    dataset = TumourSliceDataset(valid, None, volume, num_workers=0)
    assert [r["case"] for r in dataset.set_aside] == ["empty"]
    assert "empty_mask.nii.gz: the tumour mask is empty" in dataset.set_aside[0]["error"]
    assert {dataset[i]["case"] for i in range(len(dataset))} == {"good"}
    with pytest.raises(ValueError, match="empty_mask.nii.gz: the tumour mask is empty"):
        TumourSliceDataset(valid[:1], None, volume, num_workers=0)


def test_metadata_is_valid_against_the_schema(tmp_path):
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(official_schema(tmp_path)))


def test_verify_net_in_out(tmp_path):
    out = run_bundle(["verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"),
                      "--config_file", str(CONFIGS / "inference.json")], cwd=tmp_path).stdout
    assert "verified with no error" in out


def test_publish_exports_both_networks(vae, compared, tmp_path):
    import zipfile

    bundle = tmp_path / BUNDLE.name
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("demo_data", "eval", "*.pt", "*.ts"))
    shutil.copy(compared[0] / "without_vae" / "models" / "model.pt", bundle / "models" / "model.pt")
    shutil.copy(vae, bundle / "models" / "vae_t2_mask.pt")
    (bundle / "eval").mkdir()
    shutil.copy(compared[0] / "without_vae" / "eval" / "per_patient_dice.md", bundle / "eval")
    cmd = [sys.executable, "-m", "shared.publish", str(bundle), "--repo", "ns/ispy2", "--zip", str(tmp_path / "b.zip"),
           "--schema-file", str(stand_in_schema(tmp_path))]
    result = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "TorchScript export of vae_def (scripted)" in result.stdout
    archive = zipfile.ZipFile(tmp_path / "b.zip")
    assert "test patient(s) (micro Dice" in archive.read(f"{BUNDLE.name}/docs/README.md").decode()
    names = set(archive.namelist())
    package = f"{BUNDLE.name}_scripts"
    for path in ("models/model.pt", "models/model.ts", "models/vae_t2_mask.pt", "models/vae_t2_mask.ts",
                 "models/model.pt.sha256", f"{package}/networks.py", f"{package}/shared/inferers/prepared_slices.py",
                 f"{package}/shared/engines/case_evaluator.py", "configs/multi_gpu_train.json"):
        assert f"{BUNDLE.name}/{path}" in names
    # only the shared code the bundle uses is vendored: no other study's code, no publishing tool
    assert f"{BUNDLE.name}/{package}/shared/publish.py" not in names
    assert f"{BUNDLE.name}/{package}/shared/networks/cyclegan.py" not in names


def test_slices_prepared_together_give_the_per_slice_result():
    """The inferer prepares and restores a batch of slices in one call each; an oracle network shows that this is
    the study's per-slice preparation (pad/crop, normalise each slice, resize, and back); a blank slice and the
    slices outside the range get the background logit."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import NormalizeIntensity, Resize, ResizeWithPadOrCrop

    network = torch.nn.Conv2d(1, 3, 3, padding=1)
    volume = torch.rand(1, 1, 37, 18, 7)
    volume[..., 2] = 0.5  # a blank slice
    slice_size, image_size = (32, 24), (16, 16)  # crops X, pads Y
    pad_crop, normalize = ResizeWithPadOrCrop(slice_size), NormalizeIntensity()
    down, up = Resize(image_size, mode="bilinear"), Resize(slice_size, mode="bilinear")
    expected = torch.full((1, 3, 37, 18, 7), -20.0)
    with torch.no_grad():
        for z in (1, 3, 4, 5):
            padded = pad_crop(MetaTensor(volume[0, ..., z]))
            logits = network(down(normalize(padded.as_tensor()))[None])[0]
            expected[0, ..., z] = torch.as_tensor(
                pad_crop.inverse(MetaTensor(up(logits), applied_operations=padded.applied_operations)))
        preparation = [ResizeWithPadOrCrop(slice_size), NormalizeIntensity(channel_wise=True),
                       Resize(image_size, mode="bilinear")]
        out = PreparedSliceInferer(preparation, batch_size=3, slice_range=(1, 5), background=-20.0)(volume, network)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
