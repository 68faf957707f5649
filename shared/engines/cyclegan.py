"""Training CycleGAN (Zhu et al. 2017, https://arxiv.org/abs/1703.10593) as a MONAI trainer, so that MONAI's
handlers (stats, TensorBoard, checkpoints, validation, LR schedules) and ``shared.handlers`` work with it.

Validation of the A -> B generator on paired data needs no engine of its own: MONAI's ``SupervisedEvaluator`` with
``network`` set to ``G_AB`` and ``prepare_batch`` set to :class:`PreparePairedBatch` puts ``image`` (real A),
``label`` (real B) and ``pred`` (fake B) in its output, which MONAI's metric handlers compare::

    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "network": "@generator_ab",
        "prepare_batch": {"_target_": "shared.engines.cyclegan.PreparePairedBatch", "source_key": "A",
                          "target_key": "B"},
        "key_val_metric": {"val_psnr": {"_target_": "IgniteMetricHandler",
                                        "metric_fn": {"_target_": "PSNRMetric", "max_val": 2.0},
                                        "output_transform": "$from_engine(['pred', 'label'])"}},
        ...
    }

(the generator's images lie in [-1, 1], hence ``max_val`` 2, or rescale ``pred`` and ``label`` in
``postprocessing``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from ignite.engine import Engine, EventEnum
from ignite.metrics import Metric
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, PrepareBatch, default_metric_cmp_fn
from monai.engines.workflow import Workflow
from monai.transforms import Transform
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from shared.losses.cyclegan import CycleGANLoss

__all__ = [
    "ImagePool",
    "GradScalerPair",
    "CycleGANTrainer",
    "PreparePairedBatch",
    "linear_decay_lambda",
]


class ImagePool:
    """History of generated images (Shrivastava et al. 2017) that CycleGAN trains its discriminators on, so that
    they do not forget what earlier generators produced.

    Until the pool holds ``size`` images, :meth:`query` stores each image and returns it. Afterwards each image is,
    with probability 1/2, returned as it is, or else swapped for a random stored image, which is returned while the
    new one takes its place. Draws come from torch's global generator, so a seed makes them reproducible. The pool
    is saved and loaded with ``state_dict`` / ``load_state_dict``: pass it to
    ``shared.handlers.training_state.TrainingState`` so that a resumed run continues with the same history.

    Args:
        size: number of images kept; 0 disables the pool (:meth:`query` returns its input).
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"size must be non-negative, got {size}.")
        self.size = size
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch like ``images`` (N, C, ...), drawn from ``images`` and the pool; updates the pool."""
        if self.size == 0:
            return images
        returned = []
        # plain tensors in the pool (not MetaTensors), so that a saved state loads with weights_only=True
        for image in images.detach().as_subclass(torch.Tensor).split(1):
            if len(self.images) < self.size:
                self.images.append(image.clone())  # a copy, so the pool does not keep the whole batch alive
                returned.append(image)
            elif torch.rand(()) < 0.5:
                index = int(torch.randint(self.size, ()))
                returned.append(self.images[index].to(image))
                self.images[index] = image.clone()
            else:
                returned.append(image)
        return torch.cat(returned)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "images": list(self.images)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["size"] != self.size:
            raise ValueError(f"the saved image pool holds up to {state['size']} images, this one {self.size}.")
        self.images = list(state["images"])


class GradScalerPair:
    """The generators' and the discriminators' AMP gradient scalers, saved and loaded as one object (a trainer's
    ``scaler``, which ``shared.handlers.training_state.TrainingState`` saves with the training state).

    Args:
        device_type: device type the scalers work on, e.g. ``"cuda"``.
    """

    def __init__(self, device_type: str = "cuda") -> None:
        self.generator = torch.amp.GradScaler(device_type)
        self.discriminator = torch.amp.GradScaler(device_type)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])


@contextmanager
def _frozen(*networks: torch.nn.Module) -> Iterator[None]:
    """Turn ``requires_grad`` off for the parameters of ``networks`` inside the block, then restore it."""
    params = [p for network in networks for p in network.parameters()]
    required = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, required):
            p.requires_grad_(flag)


class CycleGANTrainer(Trainer):
    """CycleGAN training on unpaired batches ``{"A": images of domain A, "B": images of domain B}``.

    Each iteration first updates both generators (discriminators frozen) with
    ``loss_G = adversarial + cycle + identity`` (see ``shared.losses.cyclegan.CycleGANLoss``), then both
    discriminators on real images against generated ones drawn through the image pools. ``G_AB`` maps A to B,
    ``G_BA`` B to A; ``D_A`` scores domain-A images (real A against ``G_BA``'s), ``D_B`` domain-B images.

    ``engine.state.output`` holds the detached images ``real_A``, ``real_B``, ``fake_A`` (``G_BA(real_B)``),
    ``fake_B`` (``G_AB(real_A)``), ``rec_A`` (``G_BA(fake_B)``), ``rec_B`` (``G_AB(fake_A)``) and the losses as
    floats: ``loss_G`` (the generators' total), ``loss_G_adv``, ``loss_cycle``, ``loss_identity`` (weighted, so
    they sum to ``loss_G``), ``loss_D_A``, ``loss_D_B``. With ``decollate`` (the default) it is a list of
    per-image dicts, so ``from_engine(['loss_G'], first=True)`` gives the generators' loss.

    With ``amp``, the forward passes run under ``torch.autocast`` on the device's type, and each optimizer has its
    own ``torch.amp.GradScaler``; both sit in ``self.scaler`` (a :class:`GradScalerPair`).

    Args:
        device: device to train on.
        max_epochs: number of epochs (the paper: 100 at the initial learning rate, then 100 of linear decay).
        train_data_loader: loader of dict batches holding ``keys``.
        generator_ab: generator from domain A to domain B.
        generator_ba: generator from domain B to domain A.
        discriminator_a: discriminator of domain-A images.
        discriminator_b: discriminator of domain-B images.
        generator_optimizer: optimizer of both generators' parameters (the paper: Adam, lr 2e-4, betas (0.5, 0.999)).
        discriminator_optimizer: optimizer of both discriminators' parameters (same settings).
        loss_function: the CycleGAN objective; defaults to ``CycleGANLoss()`` (LSGAN, cycle 10, identity 0.5).
        image_pool_a: history of generated domain-A images for ``D_A``; defaults to ``ImagePool(50)``.
        image_pool_b: history of generated domain-B images for ``D_B``; defaults to ``ImagePool(50)``.
        keys: batch keys of the domain-A and domain-B images.
        epoch_length: iterations an epoch; defaults to ``len(train_data_loader)``.
        non_blocking: copy batches to the device asynchronously where possible.
        iteration_update: replaces :meth:`_iteration` if given.
        postprocessing: transform applied to the (decollated) output after each iteration.
        key_train_metric: ignite metric computed on the output, saved in ``engine.state.metrics``.
        additional_metrics: more ignite metrics.
        metric_cmp_fn: whether a key metric value is better than the best so far.
        train_handlers: handlers with an ``attach`` method (stats, checkpoints, validation, LR schedules, ...).
        amp: automatic mixed precision; off by default.
        event_names: more events to register.
        event_to_attr: map from events to state attributes, see ``ignite.engine.Engine.register_events``.
        decollate: split the output into per-image dicts after each iteration.
        optim_set_to_none: zero gradients by setting them to ``None``.
        to_kwargs: other arguments of ``Tensor.to`` when moving a batch to ``device``.
        amp_kwargs: other arguments of ``torch.autocast``, e.g. ``{"dtype": torch.bfloat16}``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        generator_ab: torch.nn.Module,
        generator_ba: torch.nn.Module,
        discriminator_a: torch.nn.Module,
        discriminator_b: torch.nn.Module,
        generator_optimizer: Optimizer,
        discriminator_optimizer: Optimizer,
        loss_function: CycleGANLoss | None = None,
        image_pool_a: ImagePool | None = None,
        image_pool_b: ImagePool | None = None,
        keys: Sequence[str] = ("A", "B"),
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        if len(keys) != 2:
            raise ValueError(f"keys must name the domain-A and domain-B images, got {keys}.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.generator_ab, self.generator_ba = generator_ab, generator_ba
        self.discriminator_a, self.discriminator_b = discriminator_a, discriminator_b
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer
        self.loss_function = CycleGANLoss() if loss_function is None else loss_function
        self.image_pool_a = ImagePool() if image_pool_a is None else image_pool_a
        self.image_pool_b = ImagePool() if image_pool_b is None else image_pool_b
        self.keys = tuple(keys)
        self.optim_set_to_none = optim_set_to_none
        self.device_type = self.state.device.type
        self.scaler = GradScalerPair(self.device_type) if amp else None

    def run(self) -> None:  # type: ignore[override]
        # Trainer.run would replace the scaler pair by a single CUDA scaler.
        Workflow.run(self)

    def _autocast(self) -> Any:
        return torch.autocast(self.device_type, **self.amp_kwargs) if self.amp else nullcontext()

    def _scalers(self) -> tuple[torch.amp.GradScaler | None, torch.amp.GradScaler | None]:
        return (None, None) if self.scaler is None else (self.scaler.generator, self.scaler.discriminator)

    @staticmethod
    def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
        (loss if scaler is None else scaler.scale(loss)).backward()

    @staticmethod
    def _step(optimizer: Optimizer, scaler: torch.amp.GradScaler | None) -> None:
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()

    def _iteration(self, engine: CycleGANTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Update the generators, then the discriminators, on one batch; return the output described above."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        real_a, real_b = (
            batchdata[key].to(engine.state.device, non_blocking=engine.non_blocking, **engine.to_kwargs)
            for key in engine.keys
        )
        g_ab, g_ba, d_a, d_b = engine.generator_ab, engine.generator_ba, engine.discriminator_a, engine.discriminator_b
        loss = engine.loss_function
        generator_scaler, discriminator_scaler = engine._scalers()
        for network in (g_ab, g_ba, d_a, d_b):
            network.train()

        engine.state.output = output = {"real_A": real_a, "real_B": real_b}

        # generators
        engine.generator_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with _frozen(d_a, d_b):
            with engine._autocast():
                fake_b, fake_a = g_ab(real_a), g_ba(real_b)
                rec_a, rec_b = g_ba(fake_b), g_ab(fake_a)
                output.update(fake_A=fake_a.detach(), fake_B=fake_b.detach(), rec_A=rec_a.detach(),
                              rec_B=rec_b.detach())
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                loss_adv = loss.generator_adversarial(d_a(fake_a), d_b(fake_b))
                loss_cycle = loss.cycle(real_a, rec_a, real_b, rec_b)
                if loss.uses_identity:
                    loss_identity = loss.identity(real_a, g_ba(real_a), real_b, g_ab(real_b))
                else:
                    loss_identity = torch.zeros((), device=loss_cycle.device)
                loss_g = loss_adv + loss_cycle + loss_identity
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            engine._backward(loss_g, generator_scaler)
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine._step(engine.generator_optimizer, generator_scaler)

        # discriminators, on real images against generated ones from the history pools
        engine.discriminator_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            loss_d_a = loss.discriminator(d_a(real_a), d_a(engine.image_pool_a.query(output["fake_A"])))
            loss_d_b = loss.discriminator(d_b(real_b), d_b(engine.image_pool_b.query(output["fake_B"])))
        engine._backward(loss_d_a + loss_d_b, discriminator_scaler)
        engine._step(engine.discriminator_optimizer, discriminator_scaler)

        losses = {"loss_G": loss_g, "loss_G_adv": loss_adv, "loss_cycle": loss_cycle, "loss_identity": loss_identity,
                  "loss_D_A": loss_d_a, "loss_D_B": loss_d_b}
        values = torch.stack([value.detach().float() for value in losses.values()]).tolist()  # one device sync
        output.update(zip(losses, values))
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class PreparePairedBatch(PrepareBatch):
    """``prepare_batch`` for MONAI's ``SupervisedEvaluator`` (or ``SupervisedTrainer``) on paired dict batches:
    returns ``(batch[source_key], batch[target_key])`` on ``device``, so the network maps the source image and the
    output's ``label`` is the target.

    Args:
        source_key: key of the network's input, e.g. the IHC image ``"A"``.
        target_key: key of the image the output is compared with, e.g. the H&E image ``"B"``.
    """

    def __init__(self, source_key: str = "A", target_key: str = "B") -> None:
        self.source_key, self.target_key = source_key, target_key

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            batchdata[self.source_key].to(device=device, non_blocking=non_blocking, **kwargs),
            batchdata[self.target_key].to(device=device, non_blocking=non_blocking, **kwargs),
        )


def linear_decay_lambda(n_epochs: int, n_epochs_decay: int) -> Callable[[int], float]:
    """The paper's learning-rate schedule as a ``torch.optim.lr_scheduler.LambdaLR`` factor of the epoch index:
    1 for the first ``n_epochs`` epochs, then falling linearly over ``n_epochs_decay`` epochs, by
    ``1 / (n_epochs_decay + 1)`` an epoch, reaching 0 just after the last (as in the authors' code). Step the
    scheduler once an epoch (MONAI's ``LrScheduleHandler`` with ``epoch_level=True``) and train for
    ``n_epochs + n_epochs_decay`` epochs."""
    if n_epochs < 0 or n_epochs_decay < 0:
        raise ValueError(f"epoch counts must be non-negative, got {n_epochs=} and {n_epochs_decay=}.")

    def factor(epoch: int) -> float:
        return max(0.0, 1.0 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1))

    return factor
