"""An autoregressive prior over a VQ-VAE's code grid: a transformer that attends to a window of recent codes but knows
where each code lies in the whole grid (its training inferer and sampler: ``shared.inferers.code_prior``).

MONAI's ``VQVAETransformerInferer`` crops sequences longer than the transformer's ``max_seq_len`` and numbers the
positions inside the crop, so a windowed prior cannot tell the top of a slice from its bottom and samples only local
texture. Here the window's offset in the grid is passed on, so each code gets its absolute position.
"""

from __future__ import annotations

import torch
from monai.networks.nets import DecoderOnlyTransformer
from monai.networks.nets.transformer import AbsolutePositionalEmbedding

__all__ = ["GridCodePrior"]


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
