"""Loading weights into a network with a failure that names the weights file."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

__all__ = ["WeightsLoadError", "NamedCheckpointLoader", "load_weights", "weights_load_error"]


class WeightsLoadError(RuntimeError):
    """A weights file cannot be read or does not fit the network it is loaded into."""


def weights_load_error(path: str, error: Exception) -> WeightsLoadError:
    """The error to raise when loading ``path`` failed with ``error``: the file, why, and what to do."""
    cause = " ".join(str(error).split())
    if isinstance(error, RuntimeError) and "state_dict" in str(error):
        advice = ("the weights were saved for another network or other settings: load them with the "
                  "configs (and size settings) they were trained with")
    else:
        advice = "the file is damaged, truncated or not PyTorch weights: copy or download it again"
    return WeightsLoadError(f"{path}: cannot load these weights ({type(error).__name__}: {cause[:1500]}); {advice}.")


def load_weights(network: torch.nn.Module, path: str, map_location: torch.device | str = "cpu") -> torch.nn.Module:
    """``network`` with the state dict of ``path`` (weights only), or a :class:`WeightsLoadError` naming it."""
    try:
        network.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    except Exception as e:
        raise weights_load_error(path, e) from e
    return network


class NamedCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` (same arguments) whose failure says which file could not be loaded, why,
    and what to do: a damaged or truncated file (it cannot be read) or another network's weights (the state dict
    does not fit: PyTorch's list of missing and unexpected keys follows)."""

    def __call__(self, engine: Engine) -> None:
        try:
            super().__call__(engine)
        except Exception as e:
            raise weights_load_error(self.load_path, e) from e
