"""A multimodal variational autoencoder: one convolutional encoder over all input channels (any number of
modalities and masks, stacked), one decoder per output group (images with a linear head, masks with a sigmoid head).

The I-SPY2 study's network (input [T2, tumour mask] 2x128x128, latent 32x4x4) is this class with
``in_channels=2, decoder_channels=(1, 1), decoder_activations=("linear", "sigmoid"), encoder_channels=(8, 16),
latent_channels=32``; a single-modality VAE is the same class with one input channel and one decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MultimodalVAE"]


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2), nn.MaxPool2d(2)
    )


def _up(cin: int, cout: int, kernel: int, stride: int, last: bool) -> nn.Sequential:
    padding = (kernel - stride + 1) // 2  # output = input * stride for k3/s2 and k5/s4
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=padding, output_padding=stride - kernel + 2 * padding)
    ]
    if not last:
        layers += [nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class MultimodalVAE(nn.Module):
    """Shared encoder, one decoder per output group.

    Encoder: for each of ``encoder_channels``, Conv(k3, s2) + BN + LeakyReLU + MaxPool(2); then two Conv(k3, s2)
    heads give ``mu`` and ``log_sigma`` with ``latent_channels`` channels (the input shrinks by 2 * 4**stages).
    Each decoder mirrors it: ConvTranspose(k3, s2) to the last encoder width, then ConvTranspose(k5, s4) per encoder
    stage, with BN + LeakyReLU between layers and the group's head activation at the end.

    Args:
        in_channels: input channels (all modalities and masks, stacked).
        decoder_channels: output channels of each decoder, e.g. ``(1, 1)`` for (T2, mask).
        decoder_activations: ``"linear"`` (images) or ``"sigmoid"`` (masks), one per decoder.
        encoder_channels: widths of the encoder stages.
        latent_channels: channels of the latent map.
        use_mean_at_eval: in eval mode decode ``mu`` instead of a sample (deterministic reconstructions).

    ``forward`` returns ``(reconstruction, mu, log_sigma, z)`` like ``monai.networks.nets.VarAutoEncoder``; the
    reconstruction concatenates the decoders' outputs along channels.
    """

    def __init__(
        self,
        in_channels: int,
        decoder_channels: Sequence[int],
        decoder_activations: Sequence[str],
        encoder_channels: Sequence[int] = (8, 16),
        latent_channels: int = 32,
        use_mean_at_eval: bool = True,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(decoder_activations):
            raise ValueError("decoder_channels and decoder_activations need one entry per decoder.")
        unknown = set(decoder_activations) - {"linear", "sigmoid"}
        if unknown:
            raise ValueError(f"decoder activations must be 'linear' or 'sigmoid', got {sorted(unknown)}.")
        self.in_channels, self.use_mean_at_eval = in_channels, use_mean_at_eval
        self.decoder_channels, self.decoder_activations = tuple(decoder_channels), tuple(decoder_activations)
        widths = [in_channels, *encoder_channels]
        self.encoder = nn.Sequential(*(_down(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.mu = nn.Conv2d(widths[-1], latent_channels, 3, stride=2, padding=1)
        self.log_sigma = nn.Conv2d(widths[-1], latent_channels, 3, stride=2, padding=1)
        self.decoders = nn.ModuleList()
        for out_channels in decoder_channels:
            ups = [_up(latent_channels, widths[-1], 3, 2, last=False)]
            rev = widths[1:][::-1]
            for i, cin in enumerate(rev):
                last = i == len(rev) - 1
                ups.append(_up(cin, out_channels if last else rev[i + 1], 5, 4, last=last))
            self.decoders.append(nn.Sequential(*ups))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}.")
        h = self.encoder(x)
        return self.mu(h), self.log_sigma(h)

    def reparameterize(self, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        if not self.training and self.use_mean_at_eval:
            return mu
        return mu + torch.exp(log_sigma) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        outputs = []
        for decoder, activation in zip(self.decoders, self.decoder_activations):
            out = decoder(z)
            outputs.append(torch.sigmoid(out) if activation == "sigmoid" else out)
        return torch.cat(outputs, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.encode(x)
        z = self.reparameterize(mu, log_sigma)
        return self.decode(z), mu, log_sigma, z
