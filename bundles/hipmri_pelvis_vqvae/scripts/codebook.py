"""How much of its codebook the VQ-VAE uses."""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine, Events

__all__ = ["code_usage", "CodebookUsage"]


def code_usage(counts: torch.Tensor) -> tuple[float, float]:
    """``(share of codes used, perplexity)`` of code ``counts``: the perplexity (exp of the codes' entropy) is the
    number of equally used codes the usage amounts to."""
    p = counts.double() / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).double().mean()), float(math.exp(entropy))


class CodebookUsage:
    """An evaluator handler that encodes the evaluated images with ``network`` (a ``VQVAE``) and puts the codebook
    usage and perplexity of the epoch into ``engine.state.metrics`` (``<prefix>_codebook_usage``,
    ``<prefix>_codebook_perplexity``), where the stats and TensorBoard handlers listed after it log them."""

    def __init__(self, network: torch.nn.Module, image_key: str = "image", prefix: str = "val") -> None:
        self.network, self.image_key, self.prefix = network, image_key, prefix
        self.counts: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: setattr(self, "counts", None))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.compute)

    def _vqvae(self) -> torch.nn.Module:
        return self.network.module if isinstance(self.network, torch.nn.parallel.DistributedDataParallel) else self.network

    def update(self, engine: Engine) -> None:
        batch = engine.state.batch
        images = torch.stack([b[self.image_key] for b in batch]) if isinstance(batch, list) else batch[self.image_key]
        vqvae = self._vqvae()
        with torch.no_grad():
            codes = vqvae.index_quantize(torch.as_tensor(images).to(next(vqvae.parameters()).device))
        counts = torch.bincount(codes.flatten().cpu(), minlength=vqvae.num_embeddings)
        self.counts = counts if self.counts is None else self.counts + counts

    def compute(self, engine: Engine) -> None:
        if self.counts is not None:
            usage, perplexity = code_usage(self.counts)
            engine.state.metrics[f"{self.prefix}_codebook_usage"] = usage
            engine.state.metrics[f"{self.prefix}_codebook_perplexity"] = perplexity


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
