"""Training, scoring and sampling a whole-grid prior over a VQ-VAE's codes
(``shared.networks.code_grid_transformer.CodeGridTransformer``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.inferers import Inferer

from shared.networks.code_grid_transformer import CodeGridTransformer

__all__ = ["CodeGridPriorInferer", "sample_code_grids"]


class CodeGridPriorInferer(Inferer):
    """``inferer(images, prior)`` as a trainer or evaluator calls it: the frozen ``vqvae`` encodes the images, the
    prior reads their code grids as tokens after a begin-of-sequence token and predicts each next token, over the
    whole grid in one pass. Returns ``(logits (B, L, K), codes (B, L))`` for ``CodeSequenceLoss``, L the grid's
    code count."""

    def __init__(self, vqvae: torch.nn.Module) -> None:
        super().__init__()
        self.vqvae = vqvae

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        prior: CodeGridTransformer = getattr(network, "module", network)
        with torch.no_grad():
            tokens = prior.to_tokens(self.vqvae.index_quantize(inputs).long())
        begin = prior.begin_token.expand(len(tokens), 1, -1)
        logits = network(torch.cat((begin, tokens[:, :-1]), dim=1))
        return logits.flatten(1, 2), tokens.flatten(1, 2)


@torch.inference_mode()
def sample_code_grids(prior: CodeGridTransformer, count: int, temperature: float = 1.0, top_k: int | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` code grids (count, X, Y) drawn block by block from ``prior``, all advancing together, each step
    reusing the earlier steps' keys and values. ``generator`` (on the prior's device) makes the draw repeatable."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, not {temperature}.")
    cache = prior.start_cache(count)
    token = prior.begin_token.expand(count, -1)
    drawn = []
    for _ in range(prior.seq_len):
        logits = prior.step(token, cache).float() / temperature
        if top_k is not None:
            threshold = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
            logits = logits.masked_fill(logits < threshold, -float("inf"))
        probabilities = F.softmax(logits, dim=-1).flatten(0, 1)
        token = torch.multinomial(probabilities, 1, generator=generator).reshape(count, prior.codes_per_token)
        drawn.append(token)
    return prior.to_grid(torch.stack(drawn, dim=1))
