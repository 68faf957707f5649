"""How much of its codebook a VQ-VAE uses: the share of codes used and their perplexity."""

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
