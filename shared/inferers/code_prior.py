"""Training, scoring and sampling a windowed prior over a VQ-VAE's code grid (``shared.networks.grid_code_prior.GridCodePrior``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.utils.ordering import Ordering

from shared.networks.grid_code_prior import GridCodePrior

__all__ = ["CodePriorInferer", "sample_codes"]


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
