"""The autoregressive prior over the VQ-VAE's code grid: a transformer that attends to a window of recent codes but
knows where each code lies in the whole grid, its training inferer, and its sampler.

MONAI's ``VQVAETransformerInferer`` crops sequences longer than the transformer's ``max_seq_len`` and numbers the
positions inside the crop, so a windowed prior cannot tell the top of a slice from its bottom and samples only local
texture. Here the window's offset in the grid is passed on, so each code gets its absolute position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.networks.nets import DecoderOnlyTransformer
from monai.networks.nets.transformer import AbsolutePositionalEmbedding
from monai.utils.ordering import Ordering

__all__ = ["GridCodePrior", "CodePriorInferer", "sample_codes"]


class GridCodePrior(DecoderOnlyTransformer):
    """``DecoderOnlyTransformer`` over at most ``window`` codes (``max_seq_len``) of a sequence of ``grid_len``,
    with a positional embedding for each of the ``grid_len`` positions: ``forward(x, offset=s)`` reads ``x`` as the
    codes at positions ``s .. s + len(x) - 1``."""

    def __init__(self, num_tokens: int, grid_len: int, window: int, attn_layers_dim: int, attn_layers_depth: int,
                 attn_layers_heads: int) -> None:
        super().__init__(num_tokens=num_tokens, max_seq_len=window, attn_layers_dim=attn_layers_dim,
                         attn_layers_depth=attn_layers_depth, attn_layers_heads=attn_layers_heads)
        self.grid_len = grid_len
        self.position_embeddings = AbsolutePositionalEmbedding(max_seq_len=grid_len, embedding_dim=attn_layers_dim)
        # MONAI builds each block's cross-attention norm even without cross-attention; it never gets a gradient, and
        # DistributedDataParallel would wait for one ("Expected to have finished reduction")
        for block in self.blocks:
            block.norm_cross_attn.requires_grad_(False)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        if x.shape[1] > self.max_seq_len or offset + x.shape[1] > self.grid_len:
            raise ValueError(f"{x.shape[1]} codes at offset {offset} exceed the window ({self.max_seq_len}) or the "
                             f"grid ({self.grid_len} codes).")
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)
        hidden = self.embedding_dropout(self.token_embeddings(x) + self.position_embeddings.embedding(positions))
        for block in self.blocks:
            hidden = block(hidden, context=context)
        return self.to_logits(hidden)


def _code_sequences(vqvae: torch.nn.Module, images: torch.Tensor, ordering: Ordering) -> torch.Tensor:
    with torch.no_grad():
        codes = vqvae.index_quantize(images)
    return codes.reshape(len(codes), -1)[:, ordering.get_sequence_ordering()].long()


def _windows(length: int, window: int) -> list[int]:
    """Window starts that cover ``length`` codes, each new one half a window on, the last ending at the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, max(1, window // 2)))
    return starts if starts[-1] == length - window else starts + [length - window]


class CodePriorInferer(Inferer):
    """``inferer(images, prior)`` as a trainer or evaluator calls it: the frozen ``vqvae`` encodes the images, the
    codes are put in ``ordering`` after a begin-of-sequence token (the codebook size), and the prior predicts each
    next code. Training scores one random window a batch; evaluation scores every code once, each with at least half
    a window of context. Returns ``(logits (B, L, K), codes (B, L))`` for the loss."""

    def __init__(self, vqvae: torch.nn.Module, ordering: Ordering) -> None:
        super().__init__()
        self.vqvae, self.ordering = vqvae, ordering

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        codes = _code_sequences(self.vqvae, inputs, self.ordering)
        tokens = F.pad(codes, (1, 0), value=self.vqvae.num_embeddings)[:, :-1]
        window = getattr(network, "module", network).max_seq_len
        length = codes.shape[1]
        if network.training:
            start = int(torch.randint(0, max(1, length - window + 1), (1,)))
            return network(tokens[:, start : start + window], offset=start), codes[:, start : start + window]
        logits, scored = [], 0
        for start in _windows(length, window):
            part = network(tokens[:, start : start + window], offset=start)
            logits.append(part[:, scored - start :])
            scored = start + part.shape[1]
        return torch.cat(logits, dim=1), codes


@torch.inference_mode()
def sample_codes(prior: GridCodePrior, count: int, latent_size: Sequence[int], ordering: Ordering, bos: int,
                 temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """``count`` code grids of ``latent_size`` drawn code by code from ``prior``, each step seeing the last window of
    codes at their grid positions. The begin-of-sequence token ``bos`` is never drawn."""
    device = next(prior.parameters()).device
    sequence = torch.full((count, 1), bos, dtype=torch.long, device=device)
    for _ in range(int(torch.tensor(latent_size).prod())):
        start = max(0, sequence.shape[1] - prior.max_seq_len)
        logits = prior(sequence[:, start:], offset=start)[:, -1].float() / temperature
        if top_k is not None:
            logits[logits < torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]] = -float("inf")
        logits[:, bos] = -float("inf")
        sequence = torch.cat((sequence, torch.multinomial(F.softmax(logits, dim=-1), 1)), dim=1)
    codes = sequence[:, 1:][:, ordering.get_revert_sequence_ordering()]
    return codes.reshape(count, *latent_size)
