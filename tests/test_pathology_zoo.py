"""Issue 25: the MONAI model zoo's HoVer-Net from the (loopback) Hugging Face Hub as the pathology bundle's nuclei
weights and as the start of fine-tuning, and weights that say which network they fit."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PATHOLOGY, TINY_HOVERNET, overrides
from helpers.bundle_scripts import bundle_module
from helpers.hub_fixtures import hub_env, run_python
from shared.data.integrity import save_with_sha256
from shared.networks.cyclegan import ResnetGenerator
from shared.networks.hovernet import RecordedHoVerNet

pytestmark = pytest.mark.slow
CONFIGS = PATHOLOGY / "configs"
ZOO_REPO, ZOO_FILE = "MONAI/pathology_nuclei_segmentation_classification", "models/model.pt"
CONSEP = {"0": "Unclassified", "1": "other", "2": "inflammatory", "3": "epithelial", "4": "spindle-shaped"}


@pytest.fixture(scope="module")
def zoo_state() -> dict[str, torch.Tensor]:
    """A state dict of the zoo's exact network (``HoVerNet(mode="fast", adapt_standard_resnet=True, in_channels=3,
    out_classes=5)``), as the zoo saves it: a plain state dict, with no settings record."""
    torch.manual_seed(0)
    state = RecordedHoVerNet(mode="fast", adapt_standard_resnet=True, in_channels=3, out_classes=5).state_dict()
    return {k: v for k, v in state.items() if k != "_extra_state"}


@pytest.fixture
def zoo_hub(hub, zoo_state):
    buffer = io.BytesIO()
    torch.save(zoo_state, buffer)
    hub.repos[ZOO_REPO] = {"private": False, "refs": {"main": "e" * 40}, "order": ["e" * 40],
                           "commits": {"e" * 40: {ZOO_FILE: buffer.getvalue(), "configs/metadata.json": b"{}"}}}
    yield hub
    del hub.repos[ZOO_REPO]


def _tile(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(bundle_module(PATHOLOGY, "demo").source_ihc()[:128, :128])
    Image.fromarray(pixels).save(folder / "tile.png")
    return folder


def _infer(args: dict[str, str], env: dict, cwd: Path):
    return run_python(["-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json"),
                       *overrides({"regions#progress": "False", **args})], env, cwd=cwd)


def test_zoo_nuclei_weights_are_fetched_once_trusted_and_give_consep_types(zoo_hub, tmp_path):
    """With no trained HoVer-Net, inference takes the zoo's: fetched once through the hub client, trusted on first
    use, md5 compared with the zoo's, loaded strictly into the zoo's network, CoNSeP's type names in the outputs;
    then from the local copy, offline from the cache, and a changed upstream file is refused."""
    tiles, models, home = _tile(tmp_path / "tiles"), tmp_path / "models", tmp_path / "hf"
    args = {"dataset_dir": str(tiles), "stain": "he", "ckpt_dir": str(models), "output_dir": str(tmp_path / "out")}
    first = _infer(args, hub_env(zoo_hub, home), tmp_path)
    assert first.returncode == 0, first.stdout[-4000:]
    assert "trusting this first download" in first.stdout
    assert "not the 0d704f4b938fec725e7fcc9ae5ea6aca its publisher gives" in first.stdout  # stand-in weights
    trusted = json.loads((models / "zoo" / "trusted_sha256.json").read_text())
    assert list(trusted) == [f"{ZOO_REPO}@main/{ZOO_FILE}"]
    document = json.loads((tmp_path / "out" / "tile_nuclei.json").read_text())
    assert document["type_names"] == CONSEP
    geojson = json.loads((tmp_path / "out" / "tile_nuclei.geojson").read_text())
    names = {f["properties"]["classification"]["name"] for f in geojson["features"]}
    assert names <= set(CONSEP.values())

    served = len(zoo_hub.requests)
    again = _infer(args, hub_env(zoo_hub, home), tmp_path)
    assert again.returncode == 0 and len(zoo_hub.requests) == served  # the local copy: not fetched again
    (models / "zoo" / "hovernet_consep.pt").unlink()
    offline = _infer(args, hub_env(zoo_hub, home, offline=True), tmp_path)
    assert offline.returncode == 0, offline.stdout[-3000:]  # from the Hugging Face cache

    (models / "zoo" / "hovernet_consep.pt").unlink()
    repo = zoo_hub.repos[ZOO_REPO]
    repo["commits"]["f" * 40] = {ZOO_FILE: zoo_hub.file(ZOO_REPO, "main", ZOO_FILE) + b"changed"}
    repo["order"].append("f" * 40)
    repo["refs"]["main"] = "f" * 40
    changed = _infer(args, hub_env(zoo_hub, tmp_path / "hf_fresh"), tmp_path)
    assert changed.returncode != 0 and "does not match the trusted" in changed.stdout
    assert not (models / "zoo" / "hovernet_consep.pt").exists()


def test_a_checkpoint_that_does_not_fit_the_preset_is_refused(zoo_state, tmp_path):
    """Zoo weights given as the bundle's own HoVer-Net (6 PanNuke classes): refused, naming the file and the layer."""
    models = tmp_path / "models"
    save_with_sha256(zoo_state, models / "hovernet.pt")
    result = _infer({"dataset_dir": str(_tile(tmp_path / "tiles")), "stain": "he", "ckpt_dir": str(models),
                     "output_dir": str(tmp_path / "out")}, {}, tmp_path)
    assert result.returncode != 0
    assert f"WeightsLoadError: {models / 'hovernet.pt'}: cannot load these weights" in result.stdout
    assert "type_prediction.output_features.decoderblock4.conv.weight" in result.stdout


def test_fine_tuning_from_the_zoo_keeps_its_encoder_and_starts_a_new_type_head(zoo_hub, zoo_state, tmp_path):
    """Stage 0 from ``--init_from zoo`` with PanNuke's 6 classes: the encoder is the zoo's (frozen in stage 0), the
    type head's last layer is new, and the saved weights record the zoo network's settings."""
    args = {**TINY_HOVERNET, "demo#dir": str(tmp_path / "PanNuke"), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval"), "init_from": "zoo"}
    result = run_python(["-m", "monai.bundle", "run", "training", "--config_file",
                         str(CONFIGS / "train_hovernet.json"), *overrides(args)], hub_env(zoo_hub, tmp_path / "hf"),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "left freshly initialised (another shape or absent): ['type_prediction.output_features." in result.stdout
    tuned = torch.load(tmp_path / "models" / "hovernet_stage0.pt", weights_only=True)
    # the parameters MONAI's freeze_encoder freezes (most of the residual blocks) are the zoo's, unchanged
    stage0 = RecordedHoVerNet(mode="fast", adapt_standard_resnet=True, out_classes=6, freeze_encoder=True)
    frozen = [k for k, p in stage0.named_parameters() if not p.requires_grad]
    assert len(frozen) > 100 and all(torch.equal(tuned[k], zoo_state[k]) for k in frozen)
    # the trainable rest starts from the zoo too: one Adam step (lr 1e-4) away from it
    assert torch.allclose(tuned["conv0.conv.weight"], zoo_state["conv0.conv.weight"], atol=1e-3)
    assert tuned["type_prediction.output_features.decoderblock4.conv.weight"].shape[0] == 6
    assert tuned["_extra_state"]["settings"] == {"mode": "fast", "in_channels": 3, "np_out_channels": 2,
                                                 "out_classes": 6, "adapt_standard_resnet": True}


def test_inference_builds_the_generator_its_weights_record(tmp_path):
    """After a brief.json training (a 16-channel, 3-block generator), the documented inference command without
    brief.json builds that generator; a size given that the weights contradict is refused, naming both."""
    models = tmp_path / "models"
    save_with_sha256(ResnetGenerator(base_channels=16, num_residual_blocks=3).state_dict(),
                     models / "generator_ihc_to_he.pt")
    save_with_sha256({}, models / "hovernet.pt")
    env = {"PYTHONPATH": str(PATHOLOGY.parents[1] / "tests" / "helpers")}
    args = {"dataset_dir": str(_tile(tmp_path / "tiles")), "ckpt_dir": str(models), "output_dir": str(tmp_path / "out"),
            "network_def": "{'_target_': 'oracle.DarkNucleiHoVerNet'}"}
    result = _infer(args, env, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    assert (tmp_path / "out" / "tile_he.png").is_file()
    wrong = _infer({**args, "base_channels": "64"}, env, tmp_path)
    assert wrong.returncode != 0
    assert f"{models / 'generator_ihc_to_he.pt'}: these weights were saved by a network with other settings " \
           "(base_channels 16 in the weights, 64 here)" in wrong.stdout


def test_the_overlay_legend_names_the_types_drawn_in_their_colours():
    from shared.writers.nuclei import TYPE_COLOURS, Nucleus, draw_contours, type_names_of

    square = np.array([[45, 45], [55, 45], [55, 55], [45, 55]])
    nuclei = [Nucleus(1, (50, 50), 2, 0.9, 100, square), Nucleus(2, (80, 80), 4, 0.9, 100, square + 30)]
    names = type_names_of(list(CONSEP.values())[1:])
    overlay = draw_contours(np.full((120, 160, 3), 200, np.uint8), nuclei, (1.0, 1.0), type_names=names)
    assert tuple(overlay[6, 6]) == TYPE_COLOURS[2] and tuple(overlay[18, 6]) == TYPE_COLOURS[4]  # one swatch a type
    assert (overlay[2:22, 14:80].astype(int).sum(-1) < 300).any()  # the names, in black
    assert tuple(overlay[50, 45]) == TYPE_COLOURS[2]  # the contour itself
    plain = draw_contours(np.full((120, 160, 3), 200, np.uint8), nuclei, (1.0, 1.0))
    assert tuple(plain[6, 6]) == (200, 200, 200)  # no legend without type names


def test_evaluate_hovernet_scores_the_zoo_weights_without_their_foreign_types(zoo_hub, tmp_path):
    """evaluate_hovernet.json --nuclei_weights zoo on PanNuke-layout tiles: the type-agnostic scores only, since
    CoNSeP's types are not PanNuke's."""
    args = {**TINY_HOVERNET, "demo#dir": str(tmp_path / "PanNuke"), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval"), "nuclei_weights": "zoo"}
    args = {k: v for k, v in args.items() if not k.startswith("train#")}
    stack = f"['{CONFIGS / 'train_hovernet.json'}','{CONFIGS / 'evaluate_hovernet.json'}']"
    result = run_python(["-m", "monai.bundle", "run", "--config_file", stack, *overrides(args)],
                        hub_env(zoo_hub, tmp_path / "hf"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    report = json.loads((tmp_path / "eval" / "hovernet_test_metrics.json").read_text())
    assert report["num_tiles"] == 1 and report["types"] == {} and report["mpq"] is None
    assert report["overall"]["true_nuclei"] > 0
