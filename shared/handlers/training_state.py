"""Crash-safe training state: what a killed run needs to go on exactly where its last save left it."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import set_determinism

from shared.data.integrity import recorded_sha256, save_with_sha256, sidecar_path, verify_sha256

__all__ = ["TrainingState", "TrainingStateError", "STATE_FILE", "state_to_resume"]

logger = logging.getLogger(__name__)
STATE_FILE = re.compile(r"^state_iteration=(\d+)\.pt$")
# optimiser settings a resumed run takes from the state (PyTorch's load_state_dict restores them); told when they differ
_HYPERPARAMETERS = ("lr", "weight_decay", "momentum", "betas", "eps", "amsgrad")
FORMAT = 1


class TrainingStateError(RuntimeError):
    """A saved training state cannot be used for this run."""


def _unwrap(obj: Any) -> Any:
    return obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _length(loader: Any) -> int | None:
    try:
        return len(loader) if loader is not None else None
    except TypeError:  # an iterable without a length
        return None


def _case_names(split: Mapping | None) -> dict[str, list[str]]:
    if not split:
        return {}
    return {section: [str(c.get("case", i)) if isinstance(c, Mapping) else str(c) for i, c in enumerate(split[section])]
            for section in ("training", "validation") if section in split}


def complete_states(state_dir: str | Path) -> list[Path]:
    """The complete states in ``state_dir`` (a sha256 sidecar was written after them), the one saved last first:
    by the time their sidecars were written, not by iteration (another run's state may have more iterations)."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return []
    found = []
    for path in state_dir.iterdir():
        if (match := STATE_FILE.match(path.name)) and recorded_sha256(path) is not None:
            found.append((sidecar_path(path).stat().st_mtime_ns, int(match.group(1)), path))
    return [path for *_, path in sorted(found, reverse=True)]


def state_to_resume(state_dir: str | Path, resume: str | None) -> Path | None:
    """The state file that ``resume`` names: ``None`` for none, the complete state saved last in ``state_dir`` for
    ``"latest"`` (``None`` when there is none yet), else the path itself, which must exist. A train config calls
    this first, so that a wrong ``--resume_checkpoint`` stops the run before any data is loaded."""
    if not resume:
        return None
    if str(resume) == "latest":
        states = complete_states(state_dir)
        if not states:
            logger.warning(f"--resume_checkpoint latest: no training state under {state_dir}; "
                           "training starts from scratch.")
            return None
        return states[0]
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume_checkpoint {resume}: no such file. Pass 'latest' to resume from the newest state under "
            f"{state_dir}, or the path of one of its state_iteration=<n>.pt files."
        )
    return path


class TrainingState:
    """Save everything a resumed run needs, atomically (a partial file, then a rename, with a sha256 sidecar), at
    the end of every epoch (after validation), every ``save_every_iterations`` iterations, and when training ends;
    keep this run's ``keep_last`` newest states in ``state_dir`` as ``state_iteration=<n>.pt`` (another run's states
    there are never deleted; one this run overwrites is logged). With ``resume``, load one
    before the first iteration, so the run ends with exactly the epochs and iterations of an uninterrupted one.

    A state holds: the trainer's progress (iteration, epoch length), the ``objects`` (networks, optimisers,
    schedulers, any object with ``state_dict``), the trainer's AMP scaler, the validator's best metric and its epoch
    (so best-weights selection goes on where it stopped), and the settings it was saved under: epoch length, batch
    size, world size, each network's parameter shapes, the training / validation cases of ``split`` and each
    optimiser's hyperparameters. A state whose settings differ from the run's is refused with the differences; one
    whose optimiser hyperparameters differ (e.g. another ``--optimizer#lr``) is resumed with the state's values, as
    PyTorch restores them, and a warning lists them. ``max_epochs`` may grow: resuming with a larger one trains on.

    Each epoch reseeds the random generators from ``seed`` and the epoch number (torch, numpy, Python, and the
    dataset's transforms when the loader has no workers), so resuming from an end-of-epoch state replays the same
    batches and augmentations as the uninterrupted run. A mid-epoch state finishes its epoch with the same number of
    iterations but freshly drawn batches, and so does any state of a run whose ``epoch_length`` is shorter than its
    loader (ignite goes on through one loader iterator across such epochs; a resumed run starts a new one): this is
    logged when it resumes. Only rank 0 writes; every rank loads.

    Args:
        state_dir: folder of the state files.
        objects: the run's stateful objects besides the trainer, e.g. ``{"network": ..., "optimizer": ...}``.
        validator: the validation engine, if any.
        split: the datalist the run trains on (``{"training": [...], "validation": [...]}``).
        resume: ``None`` (start afresh), ``"latest"`` (the complete state saved last in ``state_dir``; afresh when
            there is none), or the path of a state file, which must exist.
        save_every_iterations: also save every N iterations, for long epochs; ``None``: epoch ends only.
        keep_last: how many of this run's newest states to keep (the state it resumed from counts as its own).
        seed: base of the per-epoch seeds; ``None`` leaves the generators alone.
    """

    def __init__(
        self,
        state_dir: str,
        objects: Mapping[str, Any],
        validator: Engine | None = None,
        split: Mapping | None = None,
        resume: str | None = None,
        save_every_iterations: int | None = None,
        keep_last: int = 1,
        seed: int | None = 0,
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}.")
        self.state_dir, self.objects, self.validator = Path(state_dir), dict(objects), validator
        self.cases = _case_names(split)
        self.resume, self.save_every_iterations = resume, save_every_iterations
        self.keep_last, self.seed = keep_last, seed
        self._last_saved: int | None = None
        self._own: list[Path] = []  # the states this run wrote (and the one it resumed from), oldest first

    # --- wiring ------------------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        if self.save_every_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=int(self.save_every_iterations)), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def _epoch_started(self, engine: Engine) -> None:
        # The previous epoch's handlers (validation, LR schedule, best weights, early stopping) have all run by now,
        # whatever order they were attached in: this is the end-of-epoch state.
        self.save(engine)
        if self.seed is not None:
            seed = self.seed + engine.state.epoch
            set_determinism(seed=seed)
            loader = getattr(engine, "data_loader", None)
            if loader is not None and getattr(loader, "num_workers", 1) == 0:
                set_rnd(loader.dataset, seed)

    def _stateful(self, engine: Engine) -> dict[str, Any]:
        objects = {name: _unwrap(obj) for name, obj in self.objects.items() if obj is not None}
        if getattr(engine, "scaler", None) is not None:
            objects["scaler"] = engine.scaler
        return objects

    def _settings(self, engine: Engine) -> dict:
        loader = getattr(engine, "data_loader", None)
        # a module's extra state (e.g. a network preset) is a setting too
        networks = {name: [[k, list(v.shape) if isinstance(v, torch.Tensor) else v] for k, v in obj.state_dict().items()]
                    for name, obj in self._stateful(engine).items() if isinstance(obj, torch.nn.Module)}
        optimizers = {name: [{k: group[k] for k in _HYPERPARAMETERS if k in group} for group in obj.param_groups]
                      for name, obj in self._stateful(engine).items() if isinstance(obj, torch.optim.Optimizer)}
        return {"epoch_length": engine.state.epoch_length, "batch_size": getattr(loader, "batch_size", None),
                "world_size": dist.get_world_size() if dist.is_initialized() else 1, "networks": networks,
                "cases": self.cases, "optimizers": optimizers}

    # --- saving ------------------------------------------------------------------------------------------------
    def save(self, engine: Engine) -> Path | None:
        iteration = engine.state.iteration
        if iteration == 0 or iteration == self._last_saved or not _is_rank0():
            return None
        validator = None
        if self.validator is not None:
            validator = {"best_metric": self.validator.state.best_metric,
                         "best_metric_epoch": self.validator.state.best_metric_epoch}
        state = {
            "format": FORMAT,
            "trainer": engine.state_dict(),
            "objects": {name: obj.state_dict() for name, obj in self._stateful(engine).items()},
            "validator": validator,
            "settings": self._settings(engine),
        }
        path = self.state_dir / f"state_iteration={iteration:09d}.pt"
        if path.exists() and path not in self._own:
            logger.warning(f"{path} holds another run's state at the same iteration; this run's state replaces it.")
        save_with_sha256(state, path)
        self._last_saved = iteration
        self._own = [p for p in self._own if p != path] + [path]
        self._prune()
        epochs = iteration / engine.state.epoch_length
        logger.info(f"training state after {epochs:g} epoch(s) ({iteration} iterations) saved to {path}")
        return path

    def _prune(self) -> None:
        for old in self._own[: -self.keep_last]:
            old.unlink(missing_ok=True)
            sidecar_path(old).unlink(missing_ok=True)
        self._own = self._own[-self.keep_last :]
        for partial in self.state_dir.glob("*.partial"):
            partial.unlink(missing_ok=True)

    def states(self) -> list[Path]:
        return complete_states(self.state_dir)

    # --- resuming ----------------------------------------------------------------------------------------------
    def load(self, engine: Engine) -> None:
        path = state_to_resume(self.state_dir, self.resume)
        if path is None:
            return
        verify_sha256(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise TrainingStateError(f"{path} is not a training state written by shared.handlers.TrainingState.")
        current = self._settings(engine)
        self._check_settings(path, state["settings"], current)
        self._tell_optimizer_differences(path, state["settings"].get("optimizers"), current["optimizers"])
        stateful = self._stateful(engine)
        missing = sorted(set(stateful) - set(state["objects"]))
        if missing:
            raise TrainingStateError(f"{path} has no state for {missing}; it was saved by a different training setup.")
        for name, obj in stateful.items():
            obj.load_state_dict(state["objects"][name])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["trainer"])
        if engine.state.epoch > max_epochs:
            raise TrainingStateError(f"{path} is at epoch {engine.state.epoch}, beyond this run's max_epochs "
                                     f"{max_epochs}; raise max_epochs to train on.")
        engine.state.max_epochs = max_epochs
        if self.validator is not None and state.get("validator"):
            self.validator.state.best_metric = state["validator"]["best_metric"]
            self.validator.state.best_metric_epoch = state["validator"]["best_metric_epoch"]
        self._last_saved = engine.state.iteration
        self._own = [path]
        logger.info(f"resumed from {path}: epoch {engine.state.epoch}, iteration {engine.state.iteration} of "
                    f"{max_epochs * engine.state.epoch_length}")
        batches = _length(getattr(engine, "data_loader", None))
        if batches and engine.state.epoch_length < batches:
            logger.warning(f"resumed with an epoch length of {engine.state.epoch_length} iterations, shorter than "
                           f"the loader's {batches} batches: epochs, iterations, weights and optimiser state go on "
                           "exactly, but the batches from here on are drawn afresh, not those the uninterrupted run "
                           "would have drawn (it would have gone on through the loader across epochs). Resume "
                           "replays the uninterrupted run exactly with full epochs.")

    @staticmethod
    def _tell_optimizer_differences(path: Path, saved: dict | None, current: dict) -> None:
        if saved is None:  # a state saved before optimisers were recorded
            return
        differ = [f"{name} {key} {theirs[key]} there, {ours[key]} here"
                  for name, groups in current.items() for ours, theirs in zip(groups, saved.get(name, []))
                  for key in ours if key in theirs and ours[key] != theirs[key]]
        if differ:
            logger.warning(f"{path} was saved with other optimiser settings; the resumed run goes on with the saved "
                           f"ones: {'; '.join(differ)}. Start afresh (no --resume_checkpoint) to train with yours.")

    @staticmethod
    def _check_settings(path: Path, saved: dict, current: dict) -> None:
        problems = []
        for key, what in (("epoch_length", "epoch length"), ("batch_size", "batch size"), ("world_size", "processes")):
            if saved.get(key) != current.get(key):
                problems.append(f"{what} {saved.get(key)} there, {current.get(key)} here")
        for name, params in current["networks"].items():
            theirs = {k: s for k, s in saved["networks"].get(name, [])}
            ours = {k: s for k, s in params}
            if theirs != ours:
                differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
                problems.append(f"network {name!r} differs in {len(differ)} parameter(s), e.g. {differ[:3]}")
        for section, cases in current["cases"].items():
            theirs = saved["cases"].get(section)
            if theirs is not None and theirs != cases:
                changed = sorted(set(theirs) ^ set(cases))
                problems.append(f"the {section} cases differ ({len(theirs)} there, {len(cases)} here; "
                                f"e.g. {changed[:3]})")
        if problems:
            raise TrainingStateError(
                f"{path} was saved by a run with other settings, so it cannot be resumed here: " + "; ".join(problems)
                + ". Resume with the original settings, or start afresh (no --resume_checkpoint)."
            )

