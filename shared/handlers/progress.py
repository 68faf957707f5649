"""A terminal progress bar declared as a bundle handler."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ignite.engine import Engine
from ignite.handlers import ProgressBar
from monai.handlers import from_engine

__all__ = ["TrainingProgressBar"]


class TrainingProgressBar(ProgressBar):
    """ignite's tqdm ``ProgressBar`` (epoch and iteration, with the loss) whose ``attach`` options are constructor
    arguments, so a bundle config can list it among ``train#handlers``. By default it shows the output's ``loss``."""

    def __init__(
        self,
        output_transform: Callable | None = None,
        metric_names: str | Sequence[str] | None = None,
        persist: bool = True,
        **tqdm_kwargs,
    ) -> None:
        super().__init__(persist=persist, **tqdm_kwargs)
        self._output_transform, self._metric_names = output_transform or _loss_of, metric_names

    def attach(self, engine: Engine, metric_names=None, output_transform=None, **kwargs) -> None:  # type: ignore[override]
        super().attach(
            engine,
            metric_names=metric_names or self._metric_names,
            output_transform=output_transform or self._output_transform,
            **kwargs,
        )


def _loss_of(output) -> dict:
    return {"loss": from_engine(["loss"], first=True)(output)}
