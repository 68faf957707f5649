"""The layout every bundle follows: one-way layers in ``shared``, generic building blocks in ``shared`` and only study
code in ``scripts/``, no re-exports, the model zoo's property ids in every train and inference config, and MONAI's
experiment tracking."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from conftest import (BABYAI, BRATS, BUNDLES, HIPMRI, ISPY2, REPO, TINY_BABYAI, TINY_BRATS, TINY_HIPMRI, TINY_ISPY2,
                      TINY_TRAIN, overrides, run_bundle)
from helpers.bundle_scripts import bundle_module
from helpers.properties import check_properties_of
from shared.publish import imports_of, package_of

SHARED = REPO / "shared"
# networks, losses, transforms -> data -> engines, handlers, metrics, inferers, writers -> hub, publish
LAYERS = {"networks": 0, "losses": 0, "transforms": 0, "data": 1, "engines": 2, "handlers": 2, "metrics": 2,
          "inferers": 2, "writers": 2, "hub": 3, "publish": 3}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
            for p in SHARED.rglob("*.py")}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else None


def test_every_shared_module_belongs_to_a_layer():
    unplaced = [m for m in _modules() if m != "shared" and m.split(".")[1] not in LAYERS]
    assert unplaced == []


def test_imports_point_down_the_layers():
    wrong = []
    for module, path in _modules().items():
        for imported in imports_of(path.read_text(), package_of(module, path)):
            if imported.split(".")[0] == "scripts":
                wrong.append(f"{module} imports study code {imported}")
            elif imported.startswith("shared.") and module != "shared":
                target = imported.split(".")[1]
                if target in LAYERS and LAYERS[target] > _layer(module):
                    wrong.append(f"{module} (layer {_layer(module)}) imports {imported} (layer {LAYERS[target]})")
                if target == "publish" and module != "shared.publish":
                    wrong.append(f"{module} imports the publishing tool")
    assert wrong == []


def test_packages_re_export_nothing():
    for module, path in _modules().items():
        tree = ast.parse(path.read_text())
        stars = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
        assert not stars, f"{module} has a wildcard import"
        if path.name == "__init__.py":
            assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], f"{module} re-exports"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_study_code_lives_in_the_bundle_and_reaches_itself_relatively(bundle):
    scripts = sorted((bundle / "scripts").glob("*.py"))
    assert (bundle / "scripts" / "__init__.py") in scripts
    for path in scripts:
        for imported in imports_of(path.read_text()):
            # absolute `scripts.x` would break the private package name a published bundle gives this code
            assert imported.split(".")[0] != "scripts", f"{path}: import {imported} relatively"


def _generic_kind(cls: type) -> str | None:
    """What generic building block ``cls`` is (network or loss, inferer, metric, handler, engine), if any."""
    import torch
    from ignite.engine import Engine
    from ignite.metrics import Metric
    from monai.inferers import Inferer

    kinds = {"network or loss": torch.nn.Module, "inferer": Inferer, "metric": Metric, "engine": Engine}
    kind = next((name for name, base in kinds.items() if issubclass(cls, base)), None)
    return kind or ("handler" if callable(getattr(cls, "attach", None)) else None)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_generic_building_blocks_live_in_shared_whatever_number_of_bundles_use_them(bundle):
    """The README's rule: a bundle's ``scripts/`` holds its data layout, presets, study transforms and demo builder;
    networks, losses, inferers, metrics, handlers and engines live in ``shared`` in their layer."""
    misplaced = []
    for path in sorted((bundle / "scripts").glob("*.py")):
        module = bundle_module(bundle, path.stem) if path.stem != "__init__" else None
        for name, value in vars(module).items() if module else ():
            if isinstance(value, type) and value.__module__ == module.__name__ and _generic_kind(value):
                misplaced.append(f"{path.name}: {name} ({_generic_kind(value)})")
    assert misplaced == [], f"move these to shared/ (see the README's layout): {misplaced}"


def test_the_generic_block_check_recognises_each_kind():
    import torch
    from ignite.metrics import Accuracy
    from monai.handlers import StatsHandler
    from monai.inferers import SimpleInferer

    from shared.metrics.epoch_report import EpochReport
    from shared.transforms.foreground import ZeroOutsideForegroundd

    kinds = [_generic_kind(c) for c in (torch.nn.Linear, torch.nn.MSELoss, SimpleInferer, Accuracy, StatsHandler,
                                        EpochReport, ZeroOutsideForegroundd)]
    # a transform is not one of them: a study's own transforms live in its scripts/
    assert kinds == ["network or loss", "network or loss", "inferer", "metric", "handler", "handler", None]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_configs_import_no_bundle_code_before_run(bundle):
    """``imports`` are evaluated before ``run`` puts the bundle root on sys.path: they must name no bundle code."""
    for config in (bundle / "configs").glob("*.json"):
        for line in json.loads(config.read_text()).get("imports", []):
            assert not any(name in line for name in ("shared", "scripts")), f"{config.name}: {line}"


def _strings(node, key: str = ""):
    """``(key, text)`` of every string of a config, with the key it is the value of."""
    if isinstance(node, dict):
        for k, value in node.items():
            yield from _strings(value, k)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)
    elif isinstance(node, str):
        yield key, node


@pytest.mark.parametrize("config", sorted([*REPO.glob("bundles/*/configs/*.json"), *SHARED.glob("configs/*.json")]),
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_configs_keep_expressions_short_and_pipelines_visible(config):
    """No ``$`` expression over 120 characters, and no component whose target is a Python pipeline factory."""
    for key, text in _strings(json.loads(config.read_text())):
        assert not (text.startswith("$") and len(text) > 120), f"{len(text)} characters: {text}"
        assert not (key == "_target_" and text.endswith("_transforms")), f"a pipeline factory: {text}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "bundle,configs",
    [(BRATS, {"train.json": "train", "inference.json": "infer"}),
     (ISPY2, {"train.json": "train", "train.json+train_vae.json": "train", "inference.json": "infer"}),
     (HIPMRI, {"train.json": "train", "inference.json": "infer"}),
     (BABYAI, {"train.json": "train", "inference.json": "infer"})],
    ids=lambda x: x.name if isinstance(x, Path) else "-".join(x),
)
def test_model_zoo_property_ids_are_present(bundle, configs, brats_demo_dir, breast_demo, hipmri_demo, babyai_demo,
                                            tmp_path):
    demo = {BRATS: {**TINY_BRATS, "demo#dir": str(brats_demo_dir)},
            ISPY2: {**TINY_ISPY2, "demo#dir": str(breast_demo)},
            HIPMRI: {**TINY_HIPMRI, "demo#dir": str(hipmri_demo)},
            BABYAI: {**TINY_BABYAI, "demo#dir": str(babyai_demo)}}[bundle]
    checks = []
    for config, workflow_type in configs.items():
        args = {k: v for k, v in demo.items() if workflow_type == "train" or not k.startswith(("train", "validate", "heldout"))}
        args.update(output_dir=str(tmp_path / config), ckpt_dir=str(tmp_path / config))
        if workflow_type == "infer":
            args["handlers"] = "[]"  # no weights to load: the properties are about the config
        stack = [str(bundle / "configs" / c) for c in config.split("+")]
        checks.append((stack if len(stack) > 1 else stack[0], workflow_type, args))
    result = check_properties_of(bundle, checks)  # one process a bundle: the checks share its imports
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("missing: []") == len(configs), result.stdout[-3000:]


@pytest.mark.slow
def test_mlflow_tracking_records_a_training_run(brats_workdir, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow(-skinny) is not installed")
    from mlflow.tracking import MlflowClient

    args = {**brats_workdir, **TINY_TRAIN, "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    run_bundle(["run", "training", "--config_file", str(BRATS / "configs" / "train.json"), "--tracking", "mlflow",
                *overrides(args)], cwd=tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("monai_experiment")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and "train_loss" in runs[0].data.metrics and "val_mean_dice" in runs[0].data.metrics


def test_relative_imports_in_shared_are_followed_by_publishing_and_the_layer_check():
    source = "from .epoch_report import EpochReport\nfrom .. import data\nfrom ..data.splits import fold_split\n"
    found = imports_of(source, package_of("shared.metrics.report", Path("shared/metrics/report.py")))
    assert {"shared.metrics.epoch_report", "shared.data", "shared.data.splits"} <= found
    assert package_of("shared.metrics", Path("shared/metrics/__init__.py")) == "shared.metrics"
    assert imports_of(source) == set()  # without a package, relative imports cannot be resolved


# Every ``$`` string is ``eval``ed by MONAI. What is left is what no component or ``@`` reference can say: engine calls
# (``$@train#trainer.run()``), a network moved to the device and its parameters, items and attributes of what a
# component returned (``$@datalist['training']``), transform lists joined, settings combined in a condition or a
# comprehension, a few one-line lambdas, and a torch dtype where a tensor's ``to`` needs one (a transform takes
# ``"float32"``). What a component says is not written as an expression:
EXPRESSION_CEILINGS = {"total": 250, "train": 25, "inference": 15}
REPLACED_BY_COMPONENTS = {
    r"^\$(import|from) ": "MONAI's expression globals already hold torch, numpy and monai; other imports are unused",
    r"torch\.device\(|@device\.type": "shared.engines.device (default_device, is_cuda, per_device)",
    r"from_engine\(": "{'_target_': 'monai.handlers.from_engine', 'keys': [...]}",
    r"set_determinism|setattr\(": "{'_target_': 'monai.utils.set_determinism'} / shared.engines.device.set_cudnn_benchmark",
    r"Compose\(": "{'_target_': 'Compose', 'transforms': ...}",
    r"time\.strftime|os\.path": "shared.data.paths (join_path, timestamped_dir) / shared.hub.weights_preset",
    r"engine\.state\.metrics\[": "{'_target_': 'monai.handlers.stopping_fn_from_metric'}",
    r"best == -1": "{'_target_': 'shared.engines.metric_order.lower_is_better', '_mode_': 'callable'}",
}


def _expressions_of(config: Path) -> list[str]:
    return [text for _, text in _strings(json.loads(config.read_text())) if text.startswith("$")]


def _bundle_configs() -> list[Path]:
    return sorted(REPO.glob("bundles/*/configs/*.json"))


def test_configs_hold_few_expressions():
    counts = {f"{p.parent.parent.name}/{p.name}": len(_expressions_of(p)) for p in _bundle_configs()}
    over = {name: n for name, n in counts.items()
            if (name.split("/")[1].startswith("train") and n > EXPRESSION_CEILINGS["train"])
            or (name.split("/")[1].startswith("inference") and n > EXPRESSION_CEILINGS["inference"])}
    assert over == {}
    assert sum(counts.values()) <= EXPRESSION_CEILINGS["total"], counts


@pytest.mark.parametrize("config", _bundle_configs(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_expressions_do_not_say_what_a_component_says(config):
    import re

    found = [f"{text}: use {instead}" for text in _expressions_of(config)
             for pattern, instead in REPLACED_BY_COMPONENTS.items() if re.search(pattern, text)]
    assert found == []


@pytest.mark.parametrize("config", [*_bundle_configs(), *sorted(SHARED.glob("configs/*.json"))],
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_configs_are_written_in_one_json_style(config):
    """``python tests/helpers/json_style.py FILE`` rewrites a config in the style."""
    from helpers.json_style import canonical_json

    text = config.read_text()
    assert text == canonical_json(json.loads(text)) + "\n"


def test_the_pathology_inference_config_shows_its_steps_under_few_ids():
    """Nuclei (weights, windows, post-processing) and translation (generator weights, tiles) each under one id."""
    config = json.loads((REPO / "bundles" / "pathology_ihc_to_he_hovernet" / "configs" / "inference.json").read_text())
    assert len(config) <= 35, list(config)
    assert {"windows", "inferer", "postprocessing", "checkpoint"} <= set(config["nuclei"])
    assert {"windows", "inferer", "translator", "generator_checkpoint"} <= set(config["translation"])
