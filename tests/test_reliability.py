"""Reliability through the real configs: a killed training resumes exactly, unusable cases are set aside, exit codes
are honest, local weights are tamper-evident, and inputs are checked before any work is wasted."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import (BRATS, HIPMRI, ISPY2, ORACLE_ENV, TINY_BRATS, TINY_HIPMRI, TINY_ISPY2, TINY_TRAIN, overrides,
                      run_bundle)
from helpers.bundle_scripts import bundle_module

pytestmark = pytest.mark.slow
ORACLE = ORACLE_ENV


def _states(folder: Path) -> list[Path]:
    return sorted(folder.glob("state_iteration=*.pt"))


def _final_trainer_state(folder: Path) -> dict:
    return dict(torch.load(_states(folder)[-1], weights_only=True)["trainer"])


# --- a killed training resumes -----------------------------------------------------------------------------------
def test_killed_training_resumes_to_the_iterations_of_an_uninterrupted_run(breast_demo, tmp_path):
    """SIGKILL in the middle of the I-SPY2 VAE's training, then --resume_checkpoint latest."""
    base = {**TINY_ISPY2, "demo#dir": str(breast_demo), "train#trainer#max_epochs": "12",
            "training_state#every_iterations": "2"}
    config = ["--config_file", f"['{ISPY2 / 'configs' / 'train.json'}','{ISPY2 / 'configs' / 'train_vae.json'}']"]
    whole = {**base, "ckpt_dir": str(tmp_path / "whole"), "output_dir": str(tmp_path / "whole_eval")}
    run_bundle(["run", "training", *config, *overrides(whole)], cwd=tmp_path)
    expected = _final_trainer_state(tmp_path / "whole" / "training_state_vae_t2_mask")

    killed = {**base, "ckpt_dir": str(tmp_path / "killed"), "output_dir": str(tmp_path / "killed_eval")}
    states = tmp_path / "killed" / "training_state_vae_t2_mask"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "monai.bundle", "run", "training", *config,
                                    *overrides(killed)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            saved = [int(p.stem.split("=")[1]) for p in _states(states)]
            if saved and max(saved) >= 20:
                process.kill()  # SIGKILL: no handler runs, no file is closed cleanly
                break
            time.sleep(0.02)
        assert process.wait() == -9, (tmp_path / "killed.log").read_text()[-3000:]
    at_kill = _final_trainer_state(states)
    assert 20 <= at_kill["iteration"] < expected["iteration"]

    out = run_bundle(["run", "training", *config, *overrides({**killed, "resume_checkpoint": "latest"})],
                     cwd=tmp_path).stdout
    resumed_from = int(out.split("resumed from ")[1].split("iteration ")[1].split(" ")[0])
    assert resumed_from >= at_kill["iteration"] - 2  # at most the work since the last save was lost
    assert _final_trainer_state(states) == expected  # same epochs, iterations and epoch length
    assert len(_states(states)) == 1  # older states pruned
    assert (tmp_path / "killed" / "vae_t2_mask.pt").is_file()


def test_resume_from_an_epoch_end_replays_the_uninterrupted_run(brats_demo_dir, tmp_path):
    """Two epochs in one run, or one epoch then a resume: bit-identical weights (random augmentation included)."""
    base = {**TINY_BRATS, "demo#dir": str(brats_demo_dir), "split#val_fraction": "0.2", "split#test_fraction": "0.2",
            "train#dataloader#batch_size": "8", "train#dataloader#num_workers": "0", "train#dataset#num_workers": "0",
            "validate#dataset#num_workers": "0", "network_def#backbone": "resnet18", "output_dir": str(tmp_path)}
    config = ["--config_file", str(BRATS / "configs" / "train.json")]
    run_bundle(["run", "training", *config, *overrides({**base, "ckpt_dir": str(tmp_path / "a"),
                                                         "train#trainer#max_epochs": "2"})], cwd=tmp_path)
    split = {**base, "ckpt_dir": str(tmp_path / "b")}
    run_bundle(["run", "training", *config, *overrides({**split, "train#trainer#max_epochs": "1"})], cwd=tmp_path)
    run_bundle(["run", "training", *config, *overrides({**split, "train#trainer#max_epochs": "2",
                                                         "resume_checkpoint": "latest"})], cwd=tmp_path)
    a = torch.load(_states(tmp_path / "a" / "training_state")[-1], weights_only=True)
    b = torch.load(_states(tmp_path / "b" / "training_state")[-1], weights_only=True)
    assert a["trainer"] == b["trainer"] and a["validator"] == b["validator"]
    for name, tensor in a["objects"]["network"].items():
        assert torch.equal(tensor, b["objects"]["network"][name]), name
    moments = [x["objects"]["optimizer"]["state"][0]["exp_avg"] for x in (a, b)]
    assert torch.equal(*moments)


def test_resume_refuses_another_setup_and_a_missing_state(trained, tmp_path):
    work = {**trained, **TINY_TRAIN, "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    shutil.copytree(trained["ckpt_dir"], work["ckpt_dir"])
    config = ["--config_file", str(BRATS / "configs" / "train.json")]
    other = run_bundle(["run", "training", *config, *overrides({**work, "resume_checkpoint": "latest",
                                                                "train#dataloader#batch_size": "4"})],
                       cwd=tmp_path, check=False)
    assert other.returncode != 0
    assert "was saved by a run with other settings" in other.stdout and "batch size 2 there, 4 here" in other.stdout
    missing = run_bundle(["run", "training", *config, *overrides({**work, "resume_checkpoint": "nope.pt"})],
                         cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "--resume_checkpoint nope.pt: no such file" in missing.stdout
    assert "Loading dataset" not in missing.stdout  # refused before any data was loaded


# --- unusable cases are set aside --------------------------------------------------------------------------------
def _damage(path: Path, how: str) -> None:
    image = nib.load(path)
    data = np.asarray(image.dataobj).astype(np.float32)
    if how == "nan":
        data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] = np.nan
    else:
        data[:] = 0
    nib.save(nib.Nifti1Image(data, image.affine), path)


def test_brats_training_sets_aside_unusable_cases(trained, brats_demo_dir, tmp_path):
    datalist = json.loads((Path(trained["output_dir"]) / "datalist.json").read_text())
    demo = shutil.copytree(brats_demo_dir, tmp_path / "data")
    nan_case, blank_case = (c["case"] for c in datalist["training"][:2])
    _damage(demo / nan_case / f"{nan_case}_t2.nii.gz", "nan")
    _damage(demo / blank_case / f"{blank_case}_flair.nii.gz", "blank")
    args = {**trained, **TINY_TRAIN, "dataset_dir": str(demo), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval")}
    out = run_bundle(["run", "training", "--config_file", str(BRATS / "configs" / "train.json"), *overrides(args)],
                     cwd=tmp_path).stdout
    assert f"case {nan_case} (training) set aside: UnusableImageError" in out
    assert (tmp_path / "models" / "model.pt").is_file()
    excluded = {e["case"]: e for e in json.loads((tmp_path / "eval" / "datalist.json").read_text())["excluded"]}
    assert "1 voxel(s) are NaN or infinite" in excluded[nan_case]["error"] and excluded[nan_case]["split"] == "training"
    assert "the image is blank" in excluded[blank_case]["error"]


def test_ispy2_training_sets_aside_an_unusable_patient(breast_demo, tmp_path):
    demo = shutil.copytree(breast_demo, tmp_path / "data")
    args = {**TINY_ISPY2, "dataset_dir": str(demo), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval")}
    config = ["--config_file", f"['{ISPY2 / 'configs' / 'train.json'}','{ISPY2 / 'configs' / 'train_vae.json'}']"]
    layout = bundle_module(ISPY2, "layout")
    split = layout.build_ispy2_datalist(str(demo), str(tmp_path / "dl.json"), 0.2, 0.0)
    patient = split["training"][0]["case"]
    _damage(demo / patient / f"{patient}_t2.nii.gz", "nan")
    out = run_bundle(["run", "training", *config, *overrides(args)], cwd=tmp_path).stdout
    assert f"case {patient} (training) set aside: UnusableImageError" in out
    assert (tmp_path / "models" / "vae_t2_mask.pt").is_file()
    excluded = json.loads((tmp_path / "eval" / "vae_datalist.json").read_text())["excluded"]
    assert [e["case"] for e in excluded] == [patient]


# --- honest exit codes, checked inputs, tamper-evident weights ----------------------------------------------------
def _inference(args: dict, tmp_path: Path, env: dict | None = None):
    return run_bundle(["run", "--config_file", str(BRATS / "configs" / "inference.json"), *overrides(args)],
                      cwd=tmp_path, env=env, check=False)


@pytest.fixture
def cases(brats_demo_dir, tmp_path) -> Path:
    """One good case and one whose FLAIR is not a NIfTI file."""
    root = tmp_path / "cases"
    shutil.copytree(brats_demo_dir / "BraTS20_Training_002", root / "BraTS20_Training_002")
    (root / "broken").mkdir()
    for modality in ("flair", "t1ce", "t2"):
        (root / "broken" / f"broken_{modality}.nii.gz").write_text("not a NIfTI file")
    return root


def test_inference_exit_codes_follow_the_cases(trained, cases, tmp_path):
    base = {"pixdim": TINY_BRATS["pixdim"], "ckpt_dir": trained["ckpt_dir"],
            "dataloader#num_workers": "0"}
    all_bad = _inference({**base, "dataset_dir": str(cases / "broken"), "output_dir": str(tmp_path / "a")}, tmp_path)
    assert all_bad.returncode != 0 and "1 of 1 case(s) failed: ['broken']" in all_bad.stdout
    assert json.loads((tmp_path / "a" / "inference_report.json").read_text())["succeeded"] == []
    partial = _inference({**base, "dataset_dir": str(cases), "output_dir": str(tmp_path / "b"),
                          "allow_partial": "True"}, tmp_path)
    assert partial.returncode == 0, partial.stdout[-3000:]
    assert (tmp_path / "b" / "BraTS20_Training_002_pred.nii.gz").is_file()
    report = json.loads((tmp_path / "b" / "inference_report.json").read_text())
    assert report["succeeded"] == ["BraTS20_Training_002"] and [f["case"] for f in report["failed"]] == ["broken"]


def test_weights_that_cannot_be_loaded_stop_the_run_with_the_cause(cases, tmp_path):
    from shared.data.integrity import save_with_sha256

    wrong = tmp_path / "wrong"
    save_with_sha256({"conv.weight": torch.zeros(1)}, wrong / "model.pt")  # intact, but another network's weights
    result = _inference({"dataset_dir": str(cases), "output_dir": str(tmp_path / "out"), "ckpt_dir": str(wrong),
                         "pixdim": TINY_BRATS["pixdim"],
                         "dataloader#num_workers": "0"}, tmp_path)
    assert result.returncode != 0 and "Missing key(s) in state_dict" in result.stdout
    assert "going on with the next" not in result.stdout  # not recorded against each case
    assert not (tmp_path / "out" / "BraTS20_Training_002_pred.nii.gz").exists()


def test_damaged_local_weights_are_refused(trained, cases, tmp_path):
    models = shutil.copytree(trained["ckpt_dir"], tmp_path / "models")
    weights = bytearray((models / "model.pt").read_bytes())
    weights[len(weights) // 2 : len(weights) // 2 + 8] = b"\x7f" * 8  # flipped bytes that still unpickle
    (models / "model.pt").write_bytes(bytes(weights))
    result = _inference({"dataset_dir": str(cases), "output_dir": str(tmp_path / "out"), "ckpt_dir": str(models),
                         "pixdim": TINY_BRATS["pixdim"]}, tmp_path)
    assert result.returncode != 0
    assert f"WeightsIntegrityError: {models / 'model.pt'}: its sha256 is not the" in result.stdout
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*_pred.nii.gz"))


def test_an_unwritable_output_folder_is_found_before_any_case(cases, tmp_path):
    (tmp_path / "a_file").write_text("")
    result = _inference({"dataset_dir": str(cases), "output_dir": str(tmp_path / "a_file" / "out"),
                         "network_def": "{'_target_': 'oracle.FlairThreshold'}", "handlers": "[]",
                         "checkpoint": "None", "pixdim": TINY_BRATS["pixdim"]},
                        tmp_path, env=ORACLE)
    assert result.returncode != 0 and "outputs cannot be written there" in result.stdout
    assert "going on with the next" not in result.stdout and "case(s) done" not in result.stdout  # nothing inferred


def test_a_single_slice_volume_gives_a_single_slice_prediction(brats_demo_dir, tmp_path):
    case = tmp_path / "one" / "thin"
    case.mkdir(parents=True)
    for modality in ("flair", "t1ce", "t2"):
        source = nib.load(brats_demo_dir / "BraTS20_Training_001" / f"BraTS20_Training_001_{modality}.nii.gz")
        z = source.shape[2] // 2
        thin = np.asarray(source.dataobj)[:, :, z : z + 1]
        nib.save(nib.Nifti1Image(thin, source.affine), case / f"thin_{modality}.nii.gz")
    result = _inference({"dataset_dir": str(case), "output_dir": str(tmp_path / "out"),
                         "network_def": "{'_target_': 'oracle.FlairThreshold'}", "handlers": "[]",
                         "checkpoint": "None", "pixdim": TINY_BRATS["pixdim"],
                         "dataloader#num_workers": "0"}, tmp_path, env=ORACLE)
    assert result.returncode == 0, result.stdout[-3000:]
    pred = nib.load(tmp_path / "out" / "thin_pred.nii.gz")
    source = nib.load(case / "thin_flair.nii.gz")
    assert pred.shape == source.shape and len(pred.shape) == 3 and np.allclose(pred.affine, source.affine)


# --- the study's pickles and clear messages ----------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_is_refused_without_running_it(tmp_path):
    layout = bundle_module(ISPY2, "layout")
    marker = tmp_path / "pwned"
    paths = {}
    for key, value in (("t2", [_Payload(marker)]), ("mask", np.zeros((1, 4, 4))), ("labels", ["P0"])):
        paths[key] = tmp_path / f"{key}.pkl"
        paths[key].write_bytes(pickle.dumps(value))
    with pytest.raises(pickle.UnpicklingError, match=rf"{paths['t2']}: refused to build posix.system"):
        layout.load_study_pickles(str(paths["t2"]), str(paths["mask"]), str(paths["labels"]))
    assert not marker.exists()


def test_misuse_gets_a_message_that_says_what_to_do(breast_demo, tmp_path):
    configs = ISPY2 / "configs"
    args = {**TINY_ISPY2, "demo#dir": str(breast_demo), "ckpt_dir": str(tmp_path / "none"),
            "output_dir": str(tmp_path), "augment_with_vae": "True"}
    no_vae = run_bundle(["run", "training", "--config_file", str(configs / "train.json"), *overrides(args)],
                        cwd=tmp_path, check=False)
    assert no_vae.returncode != 0
    assert "vae_t2_mask.pt does not exist. Train the bundle first (configs/train.json + configs/train_vae.json" in \
        no_vae.stdout
    alone = run_bundle(["run", "--config_file", str(configs / "generate.json")], cwd=tmp_path, check=False)
    assert alone.returncode != 0 and "generate.json is stacked on train.json + train_vae.json" in alone.stdout
    assert f"'{configs / 'train.json'}','{configs / 'train_vae.json'}','{configs / 'generate.json'}'" in alone.stdout


@pytest.mark.parametrize("bundle", ["hipmri", "brats"])
def test_resume_with_short_epochs_says_its_batches_are_drawn_afresh(bundle, hipmri_demo, brats_demo_dir, tmp_path):
    """With --train#trainer#epoch_length shorter than the loader (the README's short runs), a resumed run keeps the
    counts but not the uninterrupted run's batches: it says so (README, "What every bundle guarantees")."""
    if bundle == "hipmri":
        config, args = HIPMRI / "configs" / "train.json", {**TINY_HIPMRI, "demo#dir": str(hipmri_demo)}
    else:
        config, args = BRATS / "configs" / "train.json", {**TINY_BRATS, **TINY_TRAIN, "demo#dir": str(brats_demo_dir)}
    args = {**args, "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    first = run_bundle(["run", "training", "--config_file", str(config), *overrides(args)], cwd=tmp_path).stdout
    assert "drawn afresh" not in first
    resumed = run_bundle(["run", "training", "--config_file", str(config),
                          *overrides({**args, "train#trainer#max_epochs": "2", "resume_checkpoint": "latest"})],
                         cwd=tmp_path).stdout
    assert "resumed with an epoch length of 2 iterations, shorter than the loader's" in resumed
    assert _final_trainer_state(tmp_path / "models" / "training_state") == {"iteration": 4, "epoch_length": 2,
                                                                          "max_epochs": 2}
