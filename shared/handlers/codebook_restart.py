"""Restarting a VQ-VAE's unused codes on encoder outputs, so that a codebook updated by moving averages does not collapse."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events

__all__ = ["CodebookRestart"]


class CodebookRestart:
    """A trainer handler that gives unused codes a new start: every ``every`` iterations, the codes whose
    exponential-moving-average usage (``ema_cluster_size`` of MONAI's ``EMAQuantizer``, about the number of times a
    batch picks them) is below ``threshold`` are moved onto encoder outputs drawn from the current batch.

    MONAI's VQVAE updates its codebook by moving averages: a code that no encoder output picks early on drifts away
    and is never picked again, and on the demo the codebook collapsed to a single code. Restarts (as in Jukebox,
    Dhariwal et al. 2020) keep the codebook in use; the study's gradient updates did without them. On torchrun,
    rank 0's codebook is broadcast so that every process keeps the same one.
    """

    def __init__(self, network: torch.nn.Module, every: int = 20, threshold: float = 1.0, image_key: str = "image") -> None:
        self.network, self.every, self.threshold, self.image_key = network, every, threshold, image_key
        self.restarted = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)

    def __call__(self, engine: Engine) -> None:
        vqvae = self.network.module if isinstance(self.network, torch.nn.parallel.DistributedDataParallel) else self.network
        quantizer = vqvae.quantizer.quantizer
        dead = torch.nonzero(quantizer.ema_cluster_size < self.threshold).flatten()
        if len(dead):
            batch = engine.state.batch
            images = torch.stack([b[self.image_key] for b in batch]) if isinstance(batch, list) else batch[self.image_key]
            with torch.no_grad():
                encoded = vqvae.encode(torch.as_tensor(images).to(quantizer.embedding.weight.device))
                flat = encoded.movedim(1, -1).reshape(-1, encoded.shape[1])
                picked = flat[torch.randint(len(flat), (len(dead),), device=flat.device)]
                quantizer.embedding.weight.data[dead] = picked
                quantizer.ema_w.data[dead] = picked * self.threshold
                quantizer.ema_cluster_size.data[dead] = self.threshold
            self.restarted += len(dead)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in (quantizer.embedding.weight, quantizer.ema_w, quantizer.ema_cluster_size):
                torch.distributed.broadcast(tensor.data, src=0)
