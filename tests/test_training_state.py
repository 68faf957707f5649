"""Training states of several runs in one folder (shared.handlers.training_state): a run never deletes another's
state nor loses its own to another's pruning, ``latest`` is the state saved last, and resuming a state saved with
other optimiser settings says which."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from conftest import BRATS, HIPMRI, TINY_HIPMRI, TINY_TRAIN, overrides, run_bundle
from shared.handlers.training_state import TrainingState, complete_states, state_to_resume


def _run(state_dir: Path, iterations: int, lr: float = 0.1, resume: str | None = None, keep_last: int = 1) -> Engine:
    """A tiny training of ``iterations`` one-iteration epochs with a TrainingState in ``state_dir``."""
    network = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr)

    def step(engine, batch):
        optimizer.zero_grad()
        loss = network(batch).square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    TrainingState(str(state_dir), {"network": network, "optimizer": optimizer}, resume=resume,
                  keep_last=keep_last).attach(engine)
    engine.run([torch.ones(1, 2)], max_epochs=iterations)
    return engine


def test_a_fresh_run_keeps_its_state_beside_an_older_run_with_more_iterations(tmp_path):
    _run(tmp_path, iterations=3)  # an older run: state 3
    time.sleep(0.01)  # the file system's clock
    _run(tmp_path, iterations=1)  # a new, shorter run in the same folder
    assert sorted(p.name for p in complete_states(tmp_path)) == ["state_iteration=000000001.pt",
                                                                 "state_iteration=000000003.pt"]
    assert state_to_resume(tmp_path, "latest").name == "state_iteration=000000001.pt"  # the one saved last


def test_a_run_prunes_only_its_own_older_states(tmp_path):
    _run(tmp_path / "a", iterations=5)
    other = tmp_path / "a" / "state_iteration=000000009.pt"
    os.replace(tmp_path / "a" / "state_iteration=000000005.pt", other)  # another run's state, never ours
    os.replace(tmp_path / "a" / "state_iteration=000000005.pt.sha256", tmp_path / "a" / f"{other.name}.sha256")
    _run(tmp_path / "a", iterations=3, keep_last=2)
    names = sorted(p.name for p in complete_states(tmp_path / "a"))
    assert names == ["state_iteration=000000002.pt", "state_iteration=000000003.pt", "state_iteration=000000009.pt"]


def test_resuming_with_other_optimiser_settings_says_which(tmp_path, caplog):
    _run(tmp_path, iterations=1, lr=0.1)
    with caplog.at_level(logging.WARNING, logger="shared.handlers.training_state"):
        engine = _run(tmp_path, iterations=2, lr=0.01, resume="latest")
    assert engine.state.iteration == 2
    assert "optimizer lr 0.1 there, 0.01 here" in caplog.text and "goes on with the saved ones" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("bundle", [BRATS, HIPMRI], ids=lambda b: b.name)
def test_two_runs_in_one_checkpoint_folder_through_the_real_configs(bundle, request, tmp_path):
    """The issue's case: a longer run, then a shorter one with another learning rate in the same ``--ckpt_dir``:
    the shorter run's state survives, ``latest`` resumes it, and the resumed run says the learning rate differs."""
    if bundle == BRATS:
        work = {**request.getfixturevalue("brats_workdir"), **TINY_TRAIN, "train#trainer#epoch_length": "1"}
    else:
        work = {**TINY_HIPMRI, "demo#dir": str(request.getfixturevalue("hipmri_demo")),
                "train#trainer#epoch_length": "1"}
    work.update(ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"))
    train = ["run", "training", "--config_file", str(bundle / "configs" / "train.json")]
    run_bundle([*train, *overrides({**work, "train#trainer#max_epochs": "2"})], cwd=tmp_path)
    run_bundle([*train, *overrides({**work, "optimizer#lr": "0.002"})], cwd=tmp_path)
    states = tmp_path / "models" / "training_state"
    assert sorted(p.name for p in complete_states(states)) == ["state_iteration=000000001.pt",
                                                               "state_iteration=000000002.pt"]
    log = run_bundle([*train, *overrides({**work, "train#trainer#max_epochs": "2", "resume_checkpoint": "latest",
                                          "optimizer#lr": "0.004"})], cwd=tmp_path).stdout
    assert "resumed from" in log and "state_iteration=000000001.pt" in log
    assert "optimizer lr 0.002 there, 0.004 here" in log
    assert "holds another run's state at the same iteration" in log  # the first run's state 2, replaced


def test_a_disabled_early_stop_attaches_nothing_and_an_enabled_one_stops_training():
    from ignite.engine import Engine, Events

    from shared.handlers.early_stop import ResumableEarlyStopHandler

    scores = iter([1.0, 0.5, 0.4, 0.3, 0.2])
    trainer = Engine(lambda engine, batch: None)
    off = ResumableEarlyStopHandler(patience=1, score_function=lambda engine: next(scores), enabled=False)
    off.set_trainer(trainer)
    off.attach(trainer)
    assert not trainer.has_event_handler(off, Events.EPOCH_COMPLETED)
    trainer.run([0], max_epochs=5)
    assert trainer.state.epoch == 5

    on = ResumableEarlyStopHandler(patience=1, score_function=lambda engine: next(scores))
    trainer = Engine(lambda engine, batch: None)
    on.set_trainer(trainer)
    on.attach(trainer)
    trainer.run([0], max_epochs=5)
    assert trainer.state.epoch == 2  # the second epoch scored lower: patience 1 is spent
