"""The study's objectives: reconstruction + VQ loss for the VQ-VAE, next-code cross-entropy for the prior."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["VQVAELoss", "CodeSequenceLoss"]


class VQVAELoss(nn.Module):
    """``MSE(reconstruction, target) + quantization loss`` for the ``(reconstruction, quantization_loss)`` that
    ``monai.networks.nets.VQVAE`` returns (its quantization loss carries the commitment cost)."""

    def forward(self, output: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        reconstruction, quantization_loss = output[0], output[1]
        return nn.functional.mse_loss(reconstruction, target) + quantization_loss


class CodeSequenceLoss(nn.CrossEntropyLoss):
    """Mean cross-entropy (nats per code) of next-code logits (B, L, K) against the codes (B, L): given
    ``(logits, codes)`` as ``CodeGridPriorInferer`` returns them, or as two arguments."""

    def forward(self, output, codes: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(output, (tuple, list)):
            output, codes = output[0], output[1]
        return super().forward(output.transpose(1, 2), codes)
