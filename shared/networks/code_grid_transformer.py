"""An autoregressive prior over a whole VQ-VAE code grid, read as a raster of blocks of codes, with a key/value cache
for sampling (its training inferer and sampler: ``shared.inferers.code_grid_prior``).

A token is a ``block`` of neighbouring codes (``(1, 1)``: one code; ``(2, 2)``: four), so a 64x32 grid is a
sequence of 2048 or 512 tokens that the transformer attends to whole. A token's embedding is the sum of its codes'
embeddings, each with its place in the block; the output predicts every code of the next block (independently of
each other, given all earlier blocks).

MONAI's ``DecoderOnlyTransformer`` has no key/value cache: sampling with it recomputes every earlier position at each
of the grid's steps, which is what made sampling 2048 codes a slice take minutes on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shared.networks.recorded_settings import RecordedSettings

__all__ = ["CodeGridTransformer", "KeyValueCache"]


class KeyValueCache:
    """Each layer's keys and values of the positions seen so far, preallocated for ``length`` positions."""

    def __init__(self, depth: int, batch: int, heads: int, length: int, head_dim: int, device, dtype) -> None:
        shape = (batch, heads, length, head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.length = 0


class _CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, _ = x.shape
        return self.qkv(x).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(x)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(x.shape))

    def step(self, x: torch.Tensor, cache: KeyValueCache, layer: int) -> torch.Tensor:
        """``x`` (B, 1, dim) at position ``cache.length``, attending to the cached positions and itself."""
        q, k, v = self._split(x)
        end = cache.length + 1
        cache.keys[layer][:, :, cache.length : end] = k
        cache.values[layer][:, :, cache.length : end] = v
        attended = F.scaled_dot_product_attention(q, cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end])
        return self.out(attended.transpose(1, 2).reshape(x.shape))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = _CausalSelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def step(self, x: torch.Tensor, cache: KeyValueCache, layer: int) -> torch.Tensor:
        x = x + self.attention.step(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


class CodeGridTransformer(RecordedSettings, nn.Module):
    """Decoder-only transformer over the ``latent_size`` code grid of a VQ-VAE with ``num_embeddings`` codes, read in
    raster order of ``block``-sized tokens. Code ``num_embeddings`` is the begin-of-sequence code.

    ``forward(tokens)`` maps (B, T, k) codes (k codes a block, T <= the grid's block count) to (B, T, k,
    num_embeddings) logits for the codes of the next block; ``to_tokens`` / ``to_grid`` convert between (B, X, Y)
    grids and (B, T, k) tokens; ``start_cache`` and ``step`` sample one block at a time.
    """

    def __init__(self, num_embeddings: int, latent_size: Sequence[int], block: Sequence[int] = (1, 1),
                 dim: int = 128, depth: int = 4, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        latent_size, block = [int(s) for s in latent_size], [int(b) for b in block]
        if len(latent_size) != 2 or len(block) != 2 or any(s % b for s, b in zip(latent_size, block)):
            raise ValueError(f"the code grid {latent_size} must be 2D and divisible by the block {block}.")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}.")
        self.num_embeddings, self.latent_size, self.block = num_embeddings, latent_size, block
        self.codes_per_token = math.prod(block)
        self.seq_len = math.prod(latent_size) // self.codes_per_token
        self.heads, self.head_dim = heads, dim // heads
        self.code_embedding = nn.Embedding(num_embeddings + 1, dim)
        self.slot_embedding = nn.Parameter(torch.zeros(self.codes_per_token, dim))
        self.position_embedding = nn.Embedding(self.seq_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, self.codes_per_token * num_embeddings)
        self.record_settings(num_embeddings=num_embeddings, latent_size=latent_size, block=block, dim=dim,
                             depth=depth, heads=heads)

    @property
    def begin_token(self) -> torch.Tensor:
        """The begin-of-sequence token, (k,)."""
        return torch.full((self.codes_per_token,), self.num_embeddings, dtype=torch.long,
                          device=self.position_embedding.weight.device)

    def to_tokens(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, X, Y) codes -> (B, T, k) tokens, blocks in raster order."""
        (x, y), (bx, by) = self.latent_size, self.block
        blocks = grid.reshape(len(grid), x // bx, bx, y // by, by).permute(0, 1, 3, 2, 4)
        return blocks.reshape(len(grid), self.seq_len, self.codes_per_token)

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, k) tokens -> (B, X, Y) codes (the inverse of :meth:`to_tokens`)."""
        (x, y), (bx, by) = self.latent_size, self.block
        blocks = tokens.reshape(len(tokens), x // bx, y // by, bx, by).permute(0, 1, 3, 2, 4)
        return blocks.reshape(len(tokens), x, y)

    def _embed(self, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        positions = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)
        codes = (self.code_embedding(tokens) + self.slot_embedding).sum(dim=2)
        return self.dropout(codes + self.position_embedding(positions))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.to_logits(self.norm(hidden))
        return logits.reshape(*hidden.shape[:2], self.codes_per_token, self.num_embeddings)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.seq_len:
            raise ValueError(f"{tokens.shape[1]} tokens exceed the grid's {self.seq_len}.")
        hidden = self._embed(tokens, 0)
        for block in self.blocks:
            hidden = block(hidden)
        return self._logits(hidden)

    def start_cache(self, batch: int) -> KeyValueCache:
        weight = self.position_embedding.weight
        return KeyValueCache(len(self.blocks), batch, self.heads, self.seq_len, self.head_dim, weight.device,
                             weight.dtype)

    def step(self, tokens: torch.Tensor, cache: KeyValueCache) -> torch.Tensor:
        """Logits (B, k, num_embeddings) for the block after ``tokens`` (B, k), the token at position
        ``cache.length``; the cache then holds it."""
        if cache.length >= self.seq_len:
            raise ValueError(f"the cache already holds the grid's {self.seq_len} positions.")
        hidden = self._embed(tokens[:, None], cache.length)
        for layer, block in enumerate(self.blocks):
            hidden = block.step(hidden, cache, layer)
        cache.length += 1
        return self._logits(hidden)[:, 0]
