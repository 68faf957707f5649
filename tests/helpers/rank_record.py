"""A test-only trainer handler for torchrun runs: each process writes the dataset indices its sampler gave it in each
epoch and a digest of every network's weights at the end (``<output_dir>/rank_<r>.json``), so that a test can check
that the ranks trained on different shards and ended with the same weights. Stacked with ``rank_record.json``."""

import hashlib
import json
import os

import torch
from ignite.engine import Engine, Events


def weights_digest(network: torch.nn.Module) -> str:
    """sha256 of the network's state, in key order (a DistributedDataParallel wrapper is looked through)."""
    state = getattr(network, "module", network).state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        value = state[key]  # a tensor, or a module's extra state (e.g. BABY-AI's preset record)
        digest.update(value.detach().cpu().contiguous().numpy().tobytes() if torch.is_tensor(value) else
                      repr(value).encode())
    return digest.hexdigest()


class RankRecord:
    def __init__(self, output_dir: str, networks: list[torch.nn.Module]) -> None:
        self.output_dir, self.networks = output_dir, networks
        self.shards: list[list[int]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.record_shard)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def record_shard(self, engine: Engine) -> None:
        self.shards.append([int(i) for i in engine.state.dataloader.sampler])

    def write(self, engine: Engine) -> None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        os.makedirs(self.output_dir, exist_ok=True)
        record = {"rank": rank, "world_size": world, "dataset_size": len(engine.state.dataloader.dataset),
                  "shards": self.shards, "weights": [weights_digest(n) for n in self.networks]}
        with open(os.path.join(self.output_dir, f"rank_{rank}.json"), "w") as f:
            json.dump(record, f)
