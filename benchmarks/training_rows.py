"""The two training rows of every bundle, from its real train config.

- ``trainer_overhead``: the bundle's trainer (its ignite engine, post-processing, training metrics and handlers,
  validation left out) against a bare PyTorch loop over the same network, loss, optimiser and AMP setting; both
  step on the same batches already in memory, so the difference is the trainer's own cost.
- ``data_pipeline``: the same trainer on the same in-memory batches (pure compute) against a steady-state epoch
  with the bundle's dataset, loader and augmentation as configured (warm caches and workers).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer

from benchmarks.harness import Row, compare
from shared.handlers.training_state import TrainingState

__all__ = ["FirstBatches", "build_trainer", "supervised_bare_loop", "training_rows"]


class FirstBatches:
    """The first ``count`` batches of a fresh pass over ``loader`` each time it is iterated (an epoch cut short, with
    the loader's own shuffling, workers and caching)."""

    def __init__(self, loader: Iterable, count: int) -> None:
        self.loader, self.count = loader, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.loader), self.count)


def build_trainer(parser: ConfigParser, trainer_id: str = "train#trainer",
                  handlers_id: str = "train#named_handlers"):
    """The trainer of a parsed train config, without its validation handler (validation is other work)."""
    if handlers_id in parser:
        parser[handlers_id] = {name: h for name, h in parser[handlers_id].items()
                               if not str(h.get("_target_", "")).endswith("ValidationHandler")}
    return parser.get_parsed_content(trainer_id)


def run_epoch(trainer, data: Sequence | FirstBatches) -> None:
    """One epoch of ``trainer`` over ``data``, as a fresh run (so that it can be repeated)."""
    trainer.data_loader = data
    trainer.state.max_epochs = None
    trainer.state.max_iters = None
    trainer.run()


def supervised_bare_loop(trainer: SupervisedTrainer) -> Callable[[Sequence], None]:
    """The training step of ``SupervisedTrainer`` written plainly with the trainer's own network, loss, optimiser,
    inferer and AMP setting: no engine, events, post-processing or metrics."""
    device, amp = trainer.state.device, trainer.amp
    network, optimizer, loss_function, inferer = trainer.network, trainer.optimizer, trainer.loss_function, trainer.inferer

    def loop(batches: Sequence) -> None:
        scaler = torch.amp.GradScaler(enabled=amp)
        network.train()
        for batch in batches:
            inputs, targets = trainer.prepare_batch(batch, device, trainer.non_blocking)[:2]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(device).type, enabled=amp):
                loss = loss_function(inferer(inputs, network), targets).mean()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return loop


def training_rows(parser: ConfigParser, label: str, iterations: int, repeats: int,
                  bare_loop: Callable[[Any], Callable[[Sequence], None]] = supervised_bare_loop) -> list[Row]:
    """``trainer_overhead`` and ``data_pipeline`` of the trainer that ``parser`` (a train config with its
    overrides) defines; ``label`` names the config in the rows. Each timed unit is one epoch of ``iterations``
    iterations; the medians are given per iteration."""
    trainer = build_trainer(parser)
    loader = trainer.data_loader
    iterations = min(iterations, len(loader))
    batch = next(iter(loader))
    in_memory = [batch] * iterations
    bare = bare_loop(trainer)
    per_iteration = f"s/iteration, {iterations} a timed epoch"

    overhead = compare(
        "trainer_overhead",
        f"{label}: the bundle's trainer (engine, post-processing, metrics, handlers) vs a bare PyTorch loop, same "
        "in-memory batch, network, loss and optimiser",
        lambda: run_epoch(trainer, in_memory), lambda: bare(in_memory), goal=0.95, repeats=repeats,
        unit=per_iteration)
    pipeline = compare(
        "data_pipeline",
        f"{label}: a steady-state epoch with the configured dataset, loader and augmentation vs the same trainer on "
        "an in-memory batch (pure compute)",
        lambda: run_epoch(trainer, FirstBatches(loader, iterations)), lambda: run_epoch(trainer, in_memory),
        goal=0.90, repeats=repeats, unit=per_iteration)
    for row in (overhead, pipeline):
        row.bundle_median /= iterations
        row.reference_median /= iterations
        row.bundle_spread = [t / iterations for t in row.bundle_spread]
        row.reference_spread = [t / iterations for t in row.reference_spread]
        row.extra.setdefault("batch_size", getattr(loader, "batch_size", None))
    pipeline.extra.update(num_workers=getattr(loader, "num_workers", None), loader=type(loader).__name__)
    overhead.extra.update(epoch_length=len(loader), **state_save_seconds(parser, trainer))
    return [overhead, pipeline]


def state_save_seconds(parser: ConfigParser, trainer, handlers_id: str = "train#named_handlers") -> dict:
    """How long one save of the trainer's resumable state takes (``TrainingState`` saves at every epoch end, so a
    timed epoch shorter than a real one overstates its share), as ``{"state_save_s": ...}``; empty without one."""
    handlers = list(parser.get_parsed_content(handlers_id).values()) if handlers_id in parser else []
    state = next((h for h in handlers if isinstance(h, TrainingState)), None)
    if state is None or trainer.state.iteration == 0:
        return {}
    state._last_saved = None  # saved once more, at the same iteration, for the timing
    start = time.perf_counter()
    state.save(trainer)
    return {"state_save_s": round(time.perf_counter() - start, 3)}
