"""The small components configs name instead of ``$`` expressions: each gives what the expression it replaced gave."""

from __future__ import annotations

import re

import pytest
import torch

from shared.data.paths import join_path, timestamped_dir
from shared.data.screened_datasets import single_case
from shared.engines.device import default_device, is_cuda, per_device, set_cudnn_benchmark
from shared.engines.metric_order import lower_is_better
from shared.engines.workflow import pick
from shared.handlers.progress import TrainingProgressBar
from shared.hub import weights_preset
from shared.metrics.translation_report import no_batch_images


def test_paths_join_and_stamp():
    assert join_path("/b", "models") == "/b/models" and join_path("models", "vae.pt") == "models/vae.pt"
    stamped = timestamped_dir("/b/eval", "tensorboard/cyclegan")
    assert re.fullmatch(r"/b/eval/tensorboard/cyclegan/\d{8}-\d{6}", stamped)


def test_the_device_and_what_follows_from_it(monkeypatch):
    assert default_device() == torch.device("cpu") and not is_cuda(default_device())
    assert per_device("cpu", cpu=0, cuda=4) == 0 and per_device(torch.device("cuda", 1), cpu=0, cuda=4) == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == torch.device("cuda", 0)
    assert default_device(distributed=True) == torch.device("cuda", 1) and is_cuda(default_device())


def test_cudnn_benchmark_is_set(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert set_cudnn_benchmark(True) is True and torch.backends.cudnn.benchmark is True


def test_pick_names_the_options():
    assert pick({"bundle": 1, "zoo": 2}, "zoo") == 2 and pick(([1], [2]), 1) == [2]
    with pytest.raises(KeyError, match=r"'zo' is not one of \['bundle', 'zoo'\]"):
        pick({"bundle": 1, "zoo": 2}, "zo")
    with pytest.raises(KeyError, match="2 is not one of"):
        pick(([1], [2]), 2)


def test_weights_preset_prefers_the_bundles_own(tmp_path):
    weights = tmp_path / "hovernet.pt"
    assert weights_preset(weights) == "zoo" and weights_preset(weights, use_published=True) == "bundle"
    weights.write_bytes(b"x")
    assert weights_preset(str(weights)) == "bundle"


def test_single_case_and_lower_is_better_and_no_batch_images():
    assert single_case([{"image": 1}]) == {"image": 1}
    with pytest.raises(ValueError, match="got 2: set batch_size to 1"):
        single_case([1, 2])
    assert lower_is_better(0.5, -1) and lower_is_better(0.4, 0.5) and not lower_is_better(0.6, 0.5)
    assert no_batch_images({"image": torch.zeros(1)}) == ([None], [None])


def test_the_progress_bar_shows_the_loss_by_default():
    bar = TrainingProgressBar()
    assert bar._output_transform([{"loss": torch.tensor(0.25)}, {"loss": torch.tensor(0.5)}]) == {
        "loss": torch.tensor(0.25)}
