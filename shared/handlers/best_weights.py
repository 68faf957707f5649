"""Keep the weights of the best validation epoch, as the evaluator's own key metric judges it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events

from shared.data.integrity import save_with_sha256

__all__ = ["BestWeightsSaver"]

logger = logging.getLogger(__name__)


def _state_dict(network: torch.nn.Module) -> dict:
    if isinstance(network, torch.nn.parallel.DistributedDataParallel):
        network = network.module
    return network.state_dict()


class BestWeightsSaver:
    """Save ``networks`` to ``save_dir/filename`` (atomically, with a sha256 sidecar) each time the evaluator it is
    attached to reaches a new best key metric. The judgement is MONAI's own (``state.best_metric_epoch``, with the
    evaluator's ``metric_cmp_fn``), which ``TrainingState`` restores on resume, so a resumed run does not overwrite
    better weights with worse ones. One network is saved as its plain state dict (what ``CheckpointLoader`` and
    ``torch.load`` + ``load_state_dict`` expect); several as ``{name: state dict}``. It only writes files: on
    torchrun, give it ``"_disabled_": "@is_not_rank0"``.

    Not MONAI's ``CheckpointSaver(save_key_metric=True)``: it writes no sha256 sidecar, and it keeps a best score
    of its own that a resumed run starts afresh, so it overwrites better weights (``tests/test_best_weights.py``).
    """

    def __init__(self, save_dir: str, networks: torch.nn.Module | Mapping[str, torch.nn.Module],
                 filename: str = "model.pt") -> None:
        self.path = os.path.join(save_dir, filename)
        self.networks = networks

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch != engine.state.epoch:
            return
        if isinstance(self.networks, Mapping):
            state = {name: _state_dict(net) for name, net in self.networks.items()}
        else:
            state = _state_dict(self.networks)
        save_with_sha256(state, self.path)
        logger.info(f"best weights so far (key metric {engine.state.best_metric:.4f} at epoch "
                    f"{engine.state.best_metric_epoch}) saved to {self.path}")
