"""Every train config learns: its trainer, built by its JSON on the tiny demo, lowers its loss over a few iterations
on one fixed batch (what a wrong loss wiring, a frozen network or a detached output would not do)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import (BABYAI, BRATS, HIPMRI, ISPY2, PATHOLOGY, TINY_BABYAI, TINY_BRATS, TINY_CYCLEGAN, TINY_HIPMRI,
                      TINY_HOVERNET, TINY_ISPY2)
from helpers.bundle_scripts import bundle_module
from helpers.learning import losses_on_one_batch

pytestmark = pytest.mark.slow
ITERATIONS = 6


def _assert_learns(results: list[dict]) -> None:
    for result in results:
        losses = result["losses"]
        assert all(torch.isfinite(torch.tensor(losses))), result
        # deterministic steps on one batch: any steady fall is the network learning (1 % in 4-6 steps at the configs'
        # learning rates; a network that does not learn stays within float noise of its first loss)
        assert losses[-1] < 0.99 * losses[0], result


def _work(tmp_path: Path) -> dict[str, str]:
    return {"ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}


def test_brats_train_learns_and_a_network_that_cannot_learn_fails_the_check(brats_demo_dir, tmp_path):
    args = {**TINY_BRATS, **_work(tmp_path), "demo#dir": str(brats_demo_dir), "train#dataloader#num_workers": "0",
            "train#dataset#num_workers": "0"}
    train = [BRATS / "configs" / "train.json"]
    learning, frozen = losses_on_one_batch(BRATS, [(train, args, "loss", ITERATIONS),
                                                   (train, {**args, "optimizer#lr": "0.0"}, "loss", ITERATIONS)])
    _assert_learns([learning])
    # the control: the same steps with a learning rate of 0 keep the first loss, and the check refuses them
    assert frozen["losses"] == pytest.approx([frozen["losses"][0]] * ITERATIONS, rel=1e-6)
    with pytest.raises(AssertionError, match="losses"):
        _assert_learns([frozen])


def test_ispy2_unet_and_vae_trainings_learn(breast_demo, tmp_path):
    configs = ISPY2 / "configs"
    args = {**TINY_ISPY2, **_work(tmp_path), "demo#dir": str(breast_demo)}
    _assert_learns(losses_on_one_batch(ISPY2, [([configs / "train.json"], args, "loss", ITERATIONS),
                                               ([configs / "train.json", configs / "train_vae.json"], args, "loss",
                                                ITERATIONS)]))


def test_hipmri_vqvae_and_prior_trainings_learn(hipmri_demo, tmp_path):
    configs = HIPMRI / "configs"
    vqvae = tmp_path / "vqvae.pt"
    torch.manual_seed(0)
    torch.save(bundle_module(HIPMRI, "networks").hipmri_vqvae().state_dict(), vqvae)  # a random, frozen VQ-VAE
    args = {**TINY_HIPMRI, **_work(tmp_path), "demo#dir": str(hipmri_demo)}
    _assert_learns(losses_on_one_batch(HIPMRI, [
        ([configs / "train.json"], args, "loss", ITERATIONS),
        ([configs / "train.json", configs / "train_prior.json"], {**args, "checkpoint": str(vqvae)}, "loss", ITERATIONS)]))


def test_babyai_train_learns(babyai_demo, tmp_path):
    args = {**TINY_BABYAI, **_work(tmp_path), "demo#dir": str(babyai_demo)}
    _assert_learns(losses_on_one_batch(BABYAI, [([BABYAI / "configs" / "train.json"], args, "loss", ITERATIONS)]))


def test_pathology_cyclegan_and_hovernet_trainings_learn(tmp_path):
    configs = PATHOLOGY / "configs"
    cyclegan = {**TINY_CYCLEGAN, **_work(tmp_path), "demo#dir": str(tmp_path / "BCI")}
    hovernet = {**TINY_HOVERNET, **_work(tmp_path), "demo#dir": str(tmp_path / "PanNuke")}
    _assert_learns(losses_on_one_batch(PATHOLOGY, [
        ([configs / "train_cyclegan.json"], cyclegan, "loss_G", 4),
        ([configs / "train_hovernet.json"], hovernet, "loss", 4)]))
