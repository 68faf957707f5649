"""The device a bundle runs on and the settings that follow from it, as components a config names instead of ``$``
expressions (each of which MONAI ``eval``s)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["default_device", "is_cuda", "per_device", "set_cudnn_benchmark"]


def default_device(distributed: bool = False) -> torch.device:
    """The first CUDA device (``distributed``: this process's node-local rank's) where CUDA is available, else the
    CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.distributed.get_node_local_rank() if distributed else 0)


def is_cuda(device: torch.device | str) -> bool:
    """Whether ``device`` is a CUDA device: mixed precision, pinned memory and cuDNN autotuning pay off there."""
    return torch.device(device).type == "cuda"


def per_device(device: torch.device | str, cpu: Any, cuda: Any) -> Any:
    """``cpu`` or ``cuda`` by the type of ``device``: e.g. loader workers or batch sizes that a GPU needs and two CPU
    cores do not."""
    return cuda if is_cuda(device) else cpu


def set_cudnn_benchmark(enabled: bool) -> bool:
    """Set ``torch.backends.cudnn.benchmark`` (autotuning, worth it where every input has one size); returns it."""
    torch.backends.cudnn.benchmark = bool(enabled)
    return torch.backends.cudnn.benchmark
