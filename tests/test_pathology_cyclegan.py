"""The pathology bundle's CycleGAN half (IHC -> H&E) through its real configs and MONAI's CLI: train, resume,
evaluate with the identity baseline, the model zoo's property ids, and bad test images."""

from __future__ import annotations

import json
import math
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (ORACLE_ENV, PATHOLOGY, RANK_RECORD, REPO, TINY_CYCLEGAN, assert_ranks_shared_the_work,
                      oracle_weights, overrides, run_bundle, run_torchrun)
from helpers.bundle_scripts import bundle_module
from helpers.properties import check_properties
from shared.data.integrity import sha256_file, sidecar_path
from shared.networks.cyclegan import ResnetGenerator
from shared.networks.fid_inception import FIDInceptionV3

pytestmark = pytest.mark.slow
CONFIGS = PATHOLOGY / "configs"
TRAIN = CONFIGS / "train_cyclegan.json"
EVALUATE = f"['{TRAIN}','{CONFIGS / 'evaluate_cyclegan.json'}']"
NETWORKS = ("generator_ab", "generator_ba", "discriminator_a", "discriminator_b")
POOLS = ("image_pool_a", "image_pool_b")
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cyclegan")
    return {**TINY_CYCLEGAN, "demo#dir": str(root / "BCI"), "ckpt_dir": str(root / "models"),
            "output_dir": str(root / "eval")}


@pytest.fixture(scope="module")
def trained(work, tmp_path_factory) -> tuple[dict[str, str], str]:
    """Two epochs from an unrelated working directory, keeping the training state of both epochs' ends."""
    args = {**work, "train#trainer#max_epochs": "2", "training_state#keep_last": "2"}
    log = run_bundle(["run", "training", "--config_file", str(TRAIN), *overrides(args)],
                     cwd=tmp_path_factory.mktemp("elsewhere")).stdout
    return work, log


def _states(ckpt_dir: str | Path) -> list[Path]:
    return sorted((Path(ckpt_dir) / "training_state" / "cyclegan").glob("state_iteration=*.pt"))


def _tensorboard_contents(folder: Path) -> tuple[set[str], set[str], tuple[int, int] | None]:
    """Scalar tags, image tags and the (width, height) of the last ``output_CHW`` image of a TensorBoard run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images, panel = set(), set(), None
    for events in folder.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
        images |= set(accumulator.Tags()["images"])
        if "output_CHW" in accumulator.Tags()["images"]:
            last = accumulator.Images("output_CHW")[-1]
            panel = (last.width, last.height)
    return scalars, images, panel


def test_training_writes_weights_state_datalist_and_tensorboard(trained):
    work, log = trained
    models, evaluation = Path(work["ckpt_dir"]), Path(work["output_dir"])
    assert "Epoch[2] Metrics" in log and "val_ssim" in log and "val_psnr" in log
    # the generator that inference uses, alone, and all four networks for fine-tuning, each with its sha256
    generator = ResnetGenerator(base_channels=4, num_residual_blocks=1)
    generator.load_state_dict(torch.load(models / "generator_ihc_to_he.pt", weights_only=True))
    assert (models / "generator_ihc_to_he.pt.sha256").is_file()
    assert set(torch.load(models / "cyclegan_networks.pt", weights_only=True)) == set(NETWORKS)
    states = _states(models)
    assert [p.name for p in states] == ["state_iteration=000000002.pt", "state_iteration=000000004.pt"]
    last = torch.load(states[-1], weights_only=True)  # loads without unpickling anything but tensors
    assert set(last["objects"]) == {*NETWORKS, *POOLS, "generator_optimizer", "discriminator_optimizer",
                                    "generator_lr_scheduler", "discriminator_lr_scheduler"}
    assert last["trainer"]["iteration"] == 4 and len(last["objects"]["image_pool_a"]["images"]) == 32
    datalist = json.loads((evaluation / "cyclegan_datalist.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [4, 1, 2] and datalist["excluded"] == []
    # losses, validation metrics and a real | fake | reconstructed panel (2 rows of three 64x64 tiles)
    (run,) = (evaluation / "tensorboard" / "cyclegan").iterdir()  # one subfolder a run
    scalars, images, panel = _tensorboard_contents(run)
    assert {"loss_G", "loss_cycle", "loss_identity", "loss_D_A", "loss_D_B", "val_ssim", "val_psnr"} <= scalars
    assert images == {"output_CHW"} and panel == (3 * 64, 2 * 64)


def test_resume_from_the_first_epoch_replays_the_second_exactly(trained, tmp_path):
    work, _ = trained
    resumed = {**work, "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    shutil.copytree(work["ckpt_dir"], resumed["ckpt_dir"])
    second_epoch = _states(resumed["ckpt_dir"])[-1]
    second_epoch.unlink()  # as if the run had been killed during its second epoch
    sidecar_path(second_epoch).unlink()
    args = {**resumed, "train#trainer#max_epochs": "2", "resume_checkpoint": "latest"}
    log = run_bundle(["run", "training", "--config_file", str(TRAIN), *overrides(args)], cwd=tmp_path).stdout
    assert "Epoch[2] Metrics" in log and "Epoch[1] Metrics" not in log  # only the second epoch ran
    (state,) = _states(resumed["ckpt_dir"])  # the first epoch's state was pruned (keep_last 1)
    assert state.name == "state_iteration=000000004.pt"
    ours = torch.load(state, weights_only=True)["objects"]
    uninterrupted = torch.load(_states(work["ckpt_dir"])[-1], weights_only=True)["objects"]
    for name in NETWORKS:
        for key, value in uninterrupted[name].items():
            if isinstance(value, torch.Tensor):  # the generators' size record is no tensor
                assert torch.allclose(ours[name][key], value, rtol=0, atol=1e-6), f"{name}.{key}"
            else:
                assert ours[name][key] == value, f"{name}.{key}"
    for name in POOLS:  # the discriminators' image history goes on as it would have
        assert len(ours[name]["images"]) == len(uninterrupted[name]["images"])
        assert all(torch.allclose(a, b, rtol=0, atol=1e-6)
                   for a, b in zip(ours[name]["images"], uninterrupted[name]["images"]))


def test_evaluate_writes_translation_and_identity_baseline_per_case(trained, tmp_path):
    """evaluate_cyclegan.json with an oracle generator that returns its input: its translation scores are the
    identity baseline's, case by case."""
    work, _ = trained
    oracle = {"network_def": "{'_target_': 'oracle.IdentityGenerator'}", "checkpoint": oracle_weights(tmp_path),
              "fid#url": f"{UNREACHABLE}/pt_inception-2015-12-05-6726825d.pth"}
    run_bundle(["run", "--config_file", EVALUATE, *overrides({**work, **oracle})], cwd=REPO, env=ORACLE_ENV)
    evaluation = Path(work["output_dir"])
    result = json.loads((evaluation / "cyclegan_test_metrics.json").read_text())
    for case in result["cases"]:
        for metric in ("ssim", "psnr"):
            assert case["translation"][metric] == pytest.approx(case["identity_baseline"][metric], rel=1e-5)
    assert result["num_cases"] == 2 and result["num_tiles"] == 8
    assert [c["case"] for c in result["cases"]] == ["00000_test_0", "00001_test_1+"]
    for section in ("translation", "identity_baseline"):
        assert 0 <= result[section]["ssim"]["mean"] <= 1 and 0 < result[section]["psnr"]["mean"] < 100
        for case in result["cases"]:
            assert -1 <= case[section]["ssim"] <= 1 and math.isfinite(case[section]["psnr"]) and case["tiles"] == 4
    # the demo's IHC and H&E show the same tissue in other colours: the baseline is well above chance
    assert result["identity_baseline"]["ssim"]["mean"] > 0.3
    rows = (evaluation / "cyclegan_test_metrics.csv").read_text().splitlines()
    assert rows[0] == "case,her2,tiles,ssim,psnr,identity_ssim,identity_psnr" and len(rows) == 3
    assert rows[2].startswith("00001_test_1+,1+,4,")
    table = (evaluation / "cyclegan_test_metrics.md").read_text()
    assert "| CycleGAN IHC -> H&E |" in table and "| identity baseline" in table
    assert f"FID: not computed (WeightsUnavailableError: {UNREACHABLE}/pt_inception" in table  # weights unavailable
    report = json.loads((evaluation / "cyclegan_evaluation_report.json").read_text())
    assert report == {"succeeded": ["00000_test_0", "00001_test_1+"], "failed": []}


@pytest.fixture
def fid_server(tmp_path):
    """A web server on 127.0.0.1 serving stand-in FID Inception weights (the real network's shapes, random values)
    under the real file name; ``requests`` counts the downloads."""
    folder = tmp_path / "served"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), folder / "pt_inception-2015-12-05-6726825d.pth")
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    weights = folder / "pt_inception-2015-12-05-6726825d.pth"
    yield {"url": f"http://127.0.0.1:{server.server_port}/{weights.name}", "prefix": sha256_file(weights)[:8],
           "requests": requests}
    server.shutdown()


def test_evaluate_computes_fid_with_inception_weights_fetched_once(trained, fid_server, tmp_path):
    """FID through evaluate_cyclegan.json with weights fetched from a URL (here stand-ins from a loopback server), once,
    hash-checked: with an oracle generator that returns its input, the translation's FID is the identity
    baseline's; a cached file that fails the check is refused and FID reported as not computed."""
    work, _ = trained
    args = {**work, "network_def": "{'_target_': 'oracle.IdentityGenerator'}", "checkpoint": oracle_weights(tmp_path),
            "output_dir": str(tmp_path / "eval"), "fid#url": fid_server["url"],
            "fid#sha256_prefix": fid_server["prefix"]}
    env = {**ORACLE_ENV, "TORCH_HOME": str(tmp_path / "torch_home")}
    for _ in range(2):
        run_bundle(["run", "--config_file", EVALUATE, *overrides(args)], cwd=tmp_path, env=env)
    assert len(fid_server["requests"]) == 1  # the second run used the cached file
    fid = json.loads((tmp_path / "eval" / "cyclegan_test_metrics.json").read_text())["fid"]
    assert fid["num_tiles"] == 8 and fid["weights"] == "pt_inception-2015-12-05-6726825d.pth"
    assert math.isfinite(fid["translation"]) and fid["translation"] == pytest.approx(fid["identity_baseline"])
    assert "FID against the real H&E tiles" in (tmp_path / "eval" / "cyclegan_test_metrics.md").read_text()
    wrong = run_bundle(["run", "--config_file", EVALUATE, *overrides({**args, "fid#sha256_prefix": "deadbeef"})],
                       cwd=tmp_path, env=env)
    assert "does not start with deadbeef" in wrong.stdout and len(fid_server["requests"]) == 1
    fid = json.loads((tmp_path / "eval" / "cyclegan_test_metrics.json").read_text())["fid"]
    assert fid.startswith("FID: not computed (WeightsUnavailableError:")


def test_bad_test_images_are_named_and_fail_the_run_unless_partial(trained, tmp_path):
    work, _ = trained
    data = shutil.copytree(work["demo#dir"], tmp_path / "BCI")
    test = {side: data / side / "test" for side in ("IHC", "HE")}
    grayscale = test["IHC"] / "00001_test_1+.png"
    with Image.open(grayscale) as image:
        image.convert("L").save(grayscale)
    broken = test["IHC"] / "00002_test_2+.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot a PNG after all")
    shutil.copy(test["HE"] / "00000_test_0.png", test["HE"] / "00002_test_2+.png")  # its partner
    # a relative --dataset_dir: with a reader fallback into ITK (which changes the working directory), good cases
    # were once set aside as "No such file or directory"
    args = {**work, "dataset_dir": "BCI", "output_dir": str(tmp_path / "eval"), "fid_weights": "None"}
    failed = run_bundle(["run", "--config_file", EVALUATE, *overrides(args)], cwd=tmp_path, check=False)
    assert failed.returncode != 0
    assert "2 of 3 case(s) failed: ['00001_test_1+', '00002_test_2+']" in failed.stdout
    report = json.loads((tmp_path / "eval" / "cyclegan_evaluation_report.json").read_text())
    errors = {f["case"]: f["error"] for f in report["failed"]}
    assert report["succeeded"] == ["00000_test_0"]
    assert f"{grayscale}: an image of shape (1, 128, 128) (channel first) has 1 channel(s)" in errors["00001_test_1+"]
    assert f"{broken}: not a readable image file" in errors["00002_test_2+"]
    datalist = json.loads((tmp_path / "eval" / "cyclegan_datalist.json").read_text())
    assert sorted(e["case"] for e in datalist["excluded"]) == ["00001_test_1+", "00002_test_2+"]
    assert all(Path(p[k]).is_absolute() for p in datalist["test"] for k in ("A", "B"))

    partial = run_bundle(["run", "--config_file", EVALUATE, *overrides({**args, "allow_partial": "True"})],
                         cwd=tmp_path, check=False)
    assert partial.returncode == 0, partial.stdout[-3000:]
    assert json.loads((tmp_path / "eval" / "cyclegan_test_metrics.json").read_text())["num_cases"] == 1


def test_train_config_has_the_model_zoo_train_properties(work, tmp_path):
    """The train properties of ``monai.bundle.ConfigWorkflow``, with a stand-in metadata file (the real one is
    checked with the other bundles' in test_layout.py)."""
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"version": "0.0.0", "monai_version": "1.6.1", "pytorch_version": "2.13.0",
                                "numpy_version": np.__version__}))
    args = {**work, "output_dir": str(tmp_path), "ckpt_dir": str(tmp_path)}
    result = check_properties(PATHOLOGY, TRAIN, "train", args, meta)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "missing: []" in result.stdout


def test_pair_check_names_the_files_of_a_misaligned_or_grey_pair():
    from monai.data import MetaTensor

    from shared.transforms.validation import UnusableImageError

    check = bundle_module(PATHOLOGY, "stain_transforms").CheckRGBPaird(keys=["A", "B"])
    ihc = MetaTensor(torch.rand(3, 32, 32), meta={"filename_or_obj": "IHC/train/x.png"})
    he = MetaTensor(torch.rand(3, 32, 30), meta={"filename_or_obj": "HE/train/x.png"})
    with pytest.raises(UnusableImageError, match=r"differ in size \(IHC/train/x\.png is 32x32, HE/train/x\.png is 32x30\)"):
        check({"A": ihc, "B": he})
    with pytest.raises(UnusableImageError, match=r"HE/train/x\.png: .* has 4 channel\(s\)"):
        check({"A": ihc, "B": MetaTensor(torch.rand(4, 32, 32), meta={"filename_or_obj": "HE/train/x.png"})})
    assert check({"A": ihc, "B": ihc})["A"] is ihc



def test_multi_gpu_variant_runs_to_a_clean_exit_again_and_again_with_torchrun_on_cpu(tmp_path):
    """The four networks in DDP on 2 CPU processes (gloo), three runs in a row, each to exit 0: ranks used to abort
    at exit now and then, with the process group torn down during interpreter shutdown (shared.engines.distributed)."""
    configs = [TRAIN, REPO / "shared" / "configs" / "multi_gpu_train.json", CONFIGS / "multi_gpu_train_cyclegan.json",
               RANK_RECORD]
    args = {**TINY_CYCLEGAN, "demo#num_train": "8", "train#dataloader#batch_size": "1", "demo#dir": str(tmp_path / "BCI"),
            "output_dir": str(tmp_path / "eval"), "train#trainer#max_epochs": "1"}
    for run in range(3):
        models = tmp_path / f"models_{run}"
        shutil.rmtree(tmp_path / "eval" / "ranks", ignore_errors=True)  # this run's records only
        log = run_torchrun(configs, {**args, "ckpt_dir": str(models)}, tmp_path, env=ORACLE_ENV).stdout
        assert "terminate called" not in log and "communication thread(s) are still alive" not in log
        # each rank trained on its own 3 of the 6 images, and the 4 networks agree across the ranks
        (record, _) = assert_ranks_shared_the_work(tmp_path / "eval" / "ranks")
        assert record["dataset_size"] == 6 and len(record["shards"][0]) == 3 and len(record["weights"]) == 4
        assert log.count("CycleGANTrainer - INFO - Epoch[1] Complete") == 2  # one a rank
        (state,) = _states(models)
        saved = torch.load(state, weights_only=True)
        assert saved["settings"]["world_size"] == 2
        # 6 training images in 4 tiles each, split between the 2 ranks: 3 iterations of one image a rank
        assert saved["trainer"]["iteration"] == 3
        generator = ResnetGenerator(base_channels=4, num_residual_blocks=1)
        generator.load_state_dict(torch.load(models / "generator_ihc_to_he.pt", weights_only=True))
