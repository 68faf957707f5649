"""Loading weights into a network with a failure that names the weights file."""

from __future__ import annotations

from ignite.engine import Engine
from monai.handlers import CheckpointLoader

__all__ = ["WeightsLoadError", "NamedCheckpointLoader"]


class WeightsLoadError(RuntimeError):
    """A weights file cannot be read or does not fit the network it is loaded into."""


class NamedCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` (same arguments) whose failure says which file could not be loaded, why,
    and what to do: a damaged or truncated file (it cannot be read) or another network's weights (the state dict
    does not fit: PyTorch's list of missing and unexpected keys follows)."""

    def __call__(self, engine: Engine) -> None:
        try:
            super().__call__(engine)
        except Exception as e:
            cause = " ".join(str(e).split())
            if isinstance(e, RuntimeError) and "state_dict" in str(e):
                advice = ("the weights were saved for another network or other settings: load them with the "
                          "configs (and size settings) they were trained with")
            else:
                advice = "the file is damaged, truncated or not PyTorch weights: copy or download it again"
            raise WeightsLoadError(f"{self.load_path}: cannot load these weights ({type(e).__name__}: "
                                   f"{cause[:1500]}); {advice}.") from e
