"""``shared.handlers.best_weights.BestWeightsSaver`` against MONAI's ``CheckpointSaver(save_key_metric=True)``: the same
best epoch, and what the library lacks (a sha256 sidecar that makes the file corruption-evident, and the
evaluator's own best, which ``TrainingState`` restores on resume)."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from shared.data.integrity import sidecar_path, verify_sha256
from shared.handlers.best_weights import BestWeightsSaver

SCORES = [0.2, 0.5, 0.4]  # epoch 2 is the best


def _evaluator(network: torch.nn.Module, resumed_best: float | None = None) -> Engine:
    """An evaluator whose key metric takes the values of ``SCORES``, with MONAI's best-metric bookkeeping."""
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "val_dice"
    engine.state.best_metric, engine.state.best_metric_epoch = (-1, -1) if resumed_best is None else (resumed_best, 0)

    @engine.on(Events.EPOCH_COMPLETED)
    def score(e: Engine) -> None:  # what a MONAI evaluator does with its key metric, before the savers run
        value = SCORES[e.state.epoch - 1]
        e.state.metrics["val_dice"] = value
        if value > e.state.best_metric:
            e.state.best_metric, e.state.best_metric_epoch = value, e.state.epoch
        with torch.no_grad():
            network.weight.fill_(value)

    return engine


def test_the_best_epoch_is_kept_as_monai_would_and_with_a_sha256_sidecar(tmp_path):
    network = torch.nn.Linear(1, 1, bias=False)
    engine = _evaluator(network)
    BestWeightsSaver(str(tmp_path / "ours"), network, "model.pt").attach(engine)
    CheckpointSaver(str(tmp_path / "monai"), {"model": network}, save_key_metric=True,
                    key_metric_filename="model.pt").attach(engine)
    engine.run([0], max_epochs=3)
    ours = torch.load(tmp_path / "ours" / "model.pt", weights_only=True)
    theirs = torch.load(tmp_path / "monai" / "model.pt", weights_only=True)
    assert ours["weight"].item() == theirs["weight"].item() == 0.5  # both keep epoch 2
    verify_sha256(tmp_path / "ours" / "model.pt")
    assert not sidecar_path(tmp_path / "monai" / "model.pt").exists()  # the library writes no checksum


def test_after_a_resume_worse_weights_do_not_replace_the_best(tmp_path):
    """A run resumed after a best of 0.6 (restored into the evaluator by TrainingState): none of 0.2 / 0.5 / 0.4 is
    better, so the best weights on disk stay; MONAI's saver starts its own best afresh and overwrites them."""
    network = torch.nn.Linear(1, 1, bias=False)
    engine = _evaluator(network, resumed_best=0.6)
    BestWeightsSaver(str(tmp_path / "ours"), network, "model.pt").attach(engine)
    CheckpointSaver(str(tmp_path / "monai"), {"model": network}, save_key_metric=True,
                    key_metric_filename="model.pt").attach(engine)
    engine.run([0], max_epochs=3)
    assert not (tmp_path / "ours" / "model.pt").exists()
    assert torch.load(tmp_path / "monai" / "model.pt", weights_only=True)["weight"].item() == 0.5
