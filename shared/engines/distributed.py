"""Ending a multi-process run so that its process group is really gone before the interpreter shuts down.

``torch.distributed.destroy_process_group()`` only unregisters the group: the group object, and with gloo its three
communication threads, live on while anything still refers to it. After a bundle's training two things do:

- ``torch._dynamo``, which ``DistributedDataParallel`` imports when it is built, i.e. after the group exists; its
  import-time tables keep the default group for the life of the process (import it before the group is made, as
  ``shared/configs/multi_gpu_train.json`` does first thing in ``initialize``);
- each ``DistributedDataParallel`` wrapper (its reducer, logger and group), which the config parser keeps alive.

A group left alive this way is torn down during interpreter shutdown, when a gloo thread that releases a tensor can
no longer take the GIL, and the process may abort ("terminate called without an active exception") although
training finished: the CycleGAN's four wrappers made this visible in CI. :func:`release_process_group` drops the
wrappers' references, destroys the group and collects it, so its threads are joined while Python is fully alive.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["communication_threads", "is_not_rank0", "release_process_group"]

logger = logging.getLogger(__name__)
# what a DistributedDataParallel wrapper holds the process group by (torch 2.13)
_GROUP_HOLDERS = ("reducer", "logger", "process_group")


def is_not_rank0() -> bool:
    """True in every process of a multi-process run but the first: the configs disable the handlers that only write
    (stats, TensorBoard, progress bar, best weights) with ``"_disabled_": "@is_not_rank0"``."""
    return dist.is_available() and dist.is_initialized() and dist.get_rank() > 0


def communication_threads() -> list[str]:
    """Names of this process's live gloo threads (Linux; empty elsewhere)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    names = []
    for task in tasks.iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith(("pt_gloo", "gloo")):
            names.append(name)
    return names


def release_process_group(networks: Sequence[torch.nn.Module] = ()) -> None:
    """Wait for every rank, drop what each ``DistributedDataParallel`` in ``networks`` holds the default process group
    by, destroy the group and collect it. The wrappers cannot be used afterwards; the modules they wrap can. Does
    nothing when no group is initialised."""
    if not dist.is_initialized():
        return
    dist.barrier()  # no rank tears its group down while another still runs rank-0 handlers
    for network in networks:
        if isinstance(network, torch.nn.parallel.DistributedDataParallel):
            for name in _GROUP_HOLDERS:
                network.__dict__.pop(name, None)
    dist.destroy_process_group()
    gc.collect()
    left = communication_threads()
    if left:
        logger.warning(f"the process group was destroyed but {len(left)} communication thread(s) are still alive "
                       f"({', '.join(sorted(left))}): something else still refers to it.")
