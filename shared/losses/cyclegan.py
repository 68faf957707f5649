"""CycleGAN losses (Zhu et al. 2017, https://arxiv.org/abs/1703.10593): least-squares adversarial losses (MONAI's
``PatchAdversarialLoss``), the cycle-consistency L1 loss and the identity L1 loss, weighted as in the authors'
code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from torch import nn

__all__ = ["CycleGANLoss"]


class CycleGANLoss(nn.Module):
    """The CycleGAN objective, one method per term. Domains are A and B; ``G_AB`` maps A to B, ``G_BA`` B to A,
    ``D_A`` scores domain-A images and ``D_B`` domain-B images. Every term is returned already weighted, so the
    generators' loss is ``generator_adversarial + cycle + identity``.

    Args:
        lambda_cycle: weight of each cycle-consistency L1 term (the paper's lambda, 10).
        lambda_identity: weight of each identity L1 term relative to ``lambda_cycle`` (the authors' code uses
            ``lambda_identity * lambda_cycle``, i.e. 5 by default); 0 turns the identity loss off.
        adversarial_loss: loss of discriminator scores against real / fake, called as MONAI's
            ``PatchAdversarialLoss`` is; defaults to its least-squares criterion (LSGAN, Mao et al. 2017: the mean
            squared error against 1 / 0) on the raw scores, as the paper.
    """

    def __init__(
        self, lambda_cycle: float = 10.0, lambda_identity: float = 0.5, adversarial_loss: nn.Module | None = None
    ) -> None:
        super().__init__()
        if lambda_cycle < 0 or lambda_identity < 0:
            raise ValueError(f"loss weights must be non-negative, got {lambda_cycle=} and {lambda_identity=}.")
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
        self.adversarial_loss = adversarial_loss or PatchAdversarialLoss(criterion="least_squares",
                                                                        no_activation_leastsq=True)

    def _adversarial(self, scores: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
        # under autocast, the loss in full precision
        return self.adversarial_loss(scores.float(), target_is_real=real, for_discriminator=for_discriminator)

    @property
    def uses_identity(self) -> bool:
        """Whether the identity term counts, i.e. whether the trainer needs ``G_BA(real_A)`` and ``G_AB(real_B)``."""
        return self.lambda_identity > 0 and self.lambda_cycle > 0

    def generator_adversarial(self, scores_fake_a: torch.Tensor, scores_fake_b: torch.Tensor) -> torch.Tensor:
        """Generators' adversarial loss: ``D_A(G_BA(real_B))`` and ``D_B(G_AB(real_A))`` should score as real."""
        return self._adversarial(scores_fake_a, True, False) + self._adversarial(scores_fake_b, True, False)

    def cycle(
        self, real_a: torch.Tensor, rec_a: torch.Tensor, real_b: torch.Tensor, rec_b: torch.Tensor
    ) -> torch.Tensor:
        """Weighted cycle-consistency loss: ``rec_a = G_BA(G_AB(real_a))`` should be ``real_a``, likewise for B."""
        return self.lambda_cycle * (F.l1_loss(rec_a.float(), real_a.float()) + F.l1_loss(rec_b.float(), real_b.float()))

    def identity(
        self, real_a: torch.Tensor, same_a: torch.Tensor, real_b: torch.Tensor, same_b: torch.Tensor
    ) -> torch.Tensor:
        """Weighted identity loss: a generator fed an image of its target domain should return it unchanged,
        ``same_a = G_BA(real_a)`` and ``same_b = G_AB(real_b)``."""
        weight = self.lambda_cycle * self.lambda_identity
        return weight * (F.l1_loss(same_a.float(), real_a.float()) + F.l1_loss(same_b.float(), real_b.float()))

    def discriminator(self, scores_real: torch.Tensor, scores_fake: torch.Tensor) -> torch.Tensor:
        """One discriminator's loss, halved as in the paper to slow the discriminator relative to the generators."""
        return 0.5 * (self._adversarial(scores_real, True, True) + self._adversarial(scores_fake, False, True))
