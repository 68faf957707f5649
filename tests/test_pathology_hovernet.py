"""The pathology bundle's HoVer-Net half through its real configs (stage 0 -> stage 1 -> evaluation on a one-tile
PanNuke demo), MONAI's HoVer-Net post-processing as evaluate_hovernet.json configures it, and the report's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import ComputeHoVerMaps
from skimage.draw import disk

from conftest import PATHOLOGY, REPO, TINY_HOVERNET, overrides, run_bundle
from helpers.bundle_scripts import bundle_module
from shared.data.integrity import verify_sha256
from shared.metrics.nuclei_report import NucleiReport, detection_counts, match_centroids

CONFIGS = PATHOLOGY / "configs"
hovernet = bundle_module(PATHOLOGY, "hovernet")


@pytest.fixture(scope="module")
def hovernet_run(tmp_path_factory) -> dict:
    """Stage 0, then stage 1 from stage 0's weights, through train_hovernet.json; return the overrides used and
    the weights files stage 0 left (``stage0_files``)."""
    work = tmp_path_factory.mktemp("hovernet")
    args = {**TINY_HOVERNET, "demo#dir": str(work / "PanNuke"), "ckpt_dir": str(work / "models"),
            "output_dir": str(work / "eval")}
    config = str(CONFIGS / "train_hovernet.json")
    run_bundle(["run", "training", "--config_file", config, *overrides(args)], cwd=work)
    models = Path(args["ckpt_dir"])
    stage0_files = sorted(p.name for p in models.glob("*.pt"))
    run_bundle(["run", "training", "--config_file", config, "--stage", "1", *overrides(args)], cwd=work)
    return {**args, "stage0_files": stage0_files}


def _without_records(args: dict) -> dict[str, str]:
    return {k: v for k, v in args.items() if k != "stage0_files"}


@pytest.mark.slow
def test_two_stages_write_their_weights_and_stage1_starts_from_stage0(hovernet_run):
    models = Path(hovernet_run["ckpt_dir"])
    assert hovernet_run["stage0_files"] == ["hovernet_stage0.pt"]  # stage 0 does not touch the bundle's weights
    assert sorted(p.name for p in models.glob("*.pt")) == ["hovernet.pt", "hovernet_stage0.pt", "hovernet_stage1.pt"]
    for name in ("hovernet.pt", "hovernet_stage0.pt", "hovernet_stage1.pt"):
        assert verify_sha256(models / name)
    stage0, stage1, final = (torch.load(models / n, weights_only=True)
                             for n in ("hovernet_stage0.pt", "hovernet_stage1.pt", "hovernet.pt"))
    assert all(torch.equal(stage1[k], final[k]) for k in stage1 if k != "_extra_state")
    assert stage0["_extra_state"] == stage1["_extra_state"] == final["_extra_state"]  # the network's settings
    # one Adam step (lr 1e-4) away from stage 0's weights, not from a fresh initialisation
    learned = [k for k in stage0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked",
                                                    "_extra_state"))]
    assert max(float((stage1[k] - stage0[k]).abs().max()) for k in learned) < 1e-3
    encoder = "res_blocks.d1.layers.denselayer_0.layers.conv1.weight"
    assert not torch.equal(stage0[encoder], stage1[encoder])  # stage 1 trains the encoder too
    # each stage keeps its own training state, so that --resume_checkpoint latest resumes the right one
    states = {p.parent.name for p in (models / "training_state").glob("*/state_iteration=*.pt")}
    assert states == {"hovernet_stage0", "hovernet_stage1"}
    datalist = json.loads((Path(hovernet_run["output_dir"]) / "hovernet_datalist.json").read_text())
    assert [[c["case"] for c in datalist[k]] for k in ("training", "validation", "test")] == [
        ["fold1_0000"], ["fold2_0000"], ["fold3_0000"]]


@pytest.mark.slow
def test_evaluation_writes_pq_dice_and_f1_per_type(hovernet_run):
    configs = f"['{CONFIGS / 'train_hovernet.json'}','{CONFIGS / 'evaluate_hovernet.json'}']"
    run_bundle(["run", "--config_file", configs, *overrides(_without_records(hovernet_run))], cwd=REPO)
    output = Path(hovernet_run["output_dir"])
    report = json.loads((output / "hovernet_evaluation_report.json").read_text())
    assert report == {"succeeded": ["fold3_0000"], "failed": []}
    metrics = json.loads((output / "hovernet_test_metrics.json").read_text())
    assert metrics["num_tiles"] == 1 and metrics["match_radius"] == 12
    assert list(metrics["types"]) == ["Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"]
    for values in [metrics["overall"], *metrics["types"].values()]:
        for name in ("pq", "sq", "rq", "dice", "precision", "recall", "f1"):
            assert values[name] is None or 0.0 <= values[name] <= 1.0, (name, values)
    assert all(metrics[k] is None or 0.0 <= metrics[k] <= 1.0 for k in ("mpq", "bpq"))
    overall = metrics["overall"]
    assert overall["true_nuclei"] == sum(t["true_nuclei"] for t in metrics["types"].values()) > 10
    assert overall["dice"] is not None and overall["f1"] is not None
    assert [t["case"] for t in metrics["tiles"]] == ["fold3_0000"]
    csv = (output / "hovernet_test_metrics.csv").read_text().splitlines()
    assert csv[0] == "nuclei,pq,sq,rq,dice,precision,recall,f1,true_nuclei,predicted_nuclei" and len(csv) == 7
    assert "| Epithelial |" in (output / "hovernet_test_metrics.md").read_text()


# --- post-processing and metrics on perfect outputs -------------------------------------------------------------------

# (row, column, radius, type): separate discs of every type, and two that touch (only the hv maps split them)
DISCS = [(20, 20, 7, 1), (20, 62, 9, 2), (25, 104, 6, 3), (64, 26, 10, 4), (70, 76, 8, 5), (104, 20, 6, 1),
         (106, 62, 11, 3), (100, 100, 8, 5), (100, 114, 8, 2)]


def _known_nuclei(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    instances, types = np.zeros((size, size), np.int32), np.zeros((size, size), np.int32)
    for index, (row, column, radius, kind) in enumerate(DISCS, start=1):
        rr, cc = disk((row, column), radius, shape=instances.shape)
        instances[rr, cc], types[rr, cc] = index, kind
    return instances, types


def _perfect_prediction(instances: np.ndarray, types: np.ndarray) -> dict[str, torch.Tensor]:
    """What a perfect HoVer-Net would output: confident nuclei / type logits and the true hv maps."""
    def logits(labels: np.ndarray, classes: int) -> torch.Tensor:
        return 10.0 * torch.nn.functional.one_hot(torch.as_tensor(labels).long(), classes).permute(2, 0, 1).float()

    return {"nucleus_prediction": logits(instances > 0, 2), "type_prediction": logits(types, 6),
            "horizontal_vertical": torch.as_tensor(ComputeHoVerMaps()(instances[None])).float()}


def _configured_postprocessing():
    """The post-processing exactly as evaluate_hovernet.json writes it."""
    config = json.loads((CONFIGS / "evaluate_hovernet.json").read_text())
    return ConfigParser({"postprocessing": config["validate#postprocessing"]}).get_parsed_content("postprocessing")


def test_configured_postprocessing_finds_every_known_nucleus(tmp_path):
    instances, types = _known_nuclei()
    output = _configured_postprocessing()({"pred": _perfect_prediction(instances, types)})
    found = np.asarray(output["instance_map"])[0]
    assert len(np.unique(found[found > 0])) == len(DISCS)
    assert len(output["instance_info"]) == len(DISCS)
    counts = detection_counts(output["instance_map"], output["type_map"], instances, types, 5)
    assert counts[:, 1:].sum() == 0 and counts[0, 0] == len(DISCS)  # every nucleus matched, of its own type
    # the report handler on the same output: everything perfect
    # the type names of the training config (evaluate_hovernet.json inherits them) and of inference.json are
    # PanNuke's channels in order, one type-prediction channel each after the background
    trained = ConfigParser.load_config_file(str(CONFIGS / "train_hovernet.json"))
    inferred = ConfigParser.load_config_file(str(CONFIGS / "inference.json"))["nuclei"]["presets"]["bundle"]
    for config, values in (("train_hovernet.json", trained), ("inference.json", inferred)):
        assert values["nucleus_types"] == list(bundle_module(PATHOLOGY, "layout").NUCLEUS_TYPES), config
        assert values["num_classes"] == len(values["nucleus_types"]) + 1, config
    types_of_config = trained["nucleus_types"]
    report = NucleiReport(str(tmp_path), types_of_config, name="perfect")
    engine = SimpleNamespace(state=SimpleNamespace(
        output=[output], batch=[{"case": "synthetic", "label_inst": instances[None], "label_type": types[None]}]))
    report.reset()
    report.update(engine)
    result = report.write()
    assert result["overall"]["f1"] == 1.0 and result["overall"]["dice"] == 1.0
    assert result["overall"]["pq"] == pytest.approx(1.0, abs=1e-4) and result["mpq"] == pytest.approx(1.0, abs=1e-4)
    assert result["types"]["Neoplastic"] == {**result["types"]["Neoplastic"], "f1": 1.0, "true_nuclei": 2,
                                             "predicted_nuclei": 2}
    assert (tmp_path / "perfect.json").is_file() and (tmp_path / "perfect.csv").is_file()
    # a failed case (CaseEvaluator leaves a dict, not decollated items) adds nothing
    report.update(SimpleNamespace(state=SimpleNamespace(output={}, batch={})))
    assert report.compute()["num_tiles"] == 1


def test_centroid_matching_pairs_one_to_one_within_the_radius():
    predicted = np.array([[0.0, 5.0], [0.0, 0.0]])
    true = np.array([[0.0, 6.0], [0.0, 12.0]])
    # nearest-first pairing would take (0, 5)-(0, 6) and leave (0, 0) 12 px from (0, 12): the Hungarian pairing
    # finds both within 7 px
    assert match_centroids(predicted, true, radius=7) == (2, 0, 0)
    assert match_centroids(predicted, true, radius=1) == (1, 1, 1)
    assert match_centroids(predicted[:0], true) == (0, 0, 2)
    assert match_centroids(predicted, true[:0]) == (0, 2, 0)


def test_stage_networks_freeze_the_encoder_then_need_stage0_weights(tmp_path):
    stage0 = hovernet.hovernet_for_stage(0, str(tmp_path / "missing.pt"))
    frozen = {name for name, p in stage0.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith("res_blocks.") for name in frozen)
    branches = ("nucleus_prediction.", "horizontal_vertical.", "type_prediction.")
    assert all(p.requires_grad for name, p in stage0.named_parameters() if name.startswith(branches))
    with pytest.raises(FileNotFoundError, match="train stage 0 first"):
        hovernet.hovernet_for_stage(1, str(tmp_path / "missing.pt"))
