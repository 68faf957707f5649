"""CycleGAN networks (Zhu et al. 2017, https://arxiv.org/abs/1703.10593): the ResNet generator and the 70x70
PatchGAN discriminator, with the paper's N(0, 0.02) weight initialisation.

:class:`ResnetGenerator` keeps the module layout (``model.<i>``, ``model.<i>.conv_block.<j>``) of the authors'
``ResnetGenerator`` with instance norm and no dropout, so its state dict has the same keys as theirs.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers import Act
from monai.networks.nets import PatchDiscriminator
from monai.networks.utils import normal_init

from shared.networks.recorded_settings import RecordedSettings

__all__ = ["init_cyclegan_weights", "ResnetBlock", "ResnetGenerator", "PatchGANDiscriminator"]


def init_cyclegan_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise ``module`` and all its submodules as the paper does: convolution and linear weights from
    N(0, ``std``), batch norm weights from N(1, ``std``), biases 0. Returns ``module``."""
    module.apply(lambda m: normal_init(m, std=std))
    return module


class ResnetBlock(nn.Module):
    """Residual block: two reflection-padded 3x3 convolutions with instance norm, ReLU between them, plus the input.

    Args:
        channels: number of input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(RecordedSettings, nn.Module):
    """CycleGAN's ResNet generator: c7s1-64, d128, d256, ``num_residual_blocks`` R256, u128, u64, c7s1-3, tanh.

    The output lies in [-1, 1] and has the input's spatial size when that is divisible by
    ``2 ** num_downsamplings`` (4 by default). The state dict records the arguments below (see
    ``shared.networks.recorded_settings``), so the inference configs build the generator the weights fit.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        base_channels: channels of the first convolution, doubled by each downsampling.
        num_residual_blocks: residual blocks at the lowest resolution (9 for 256x256 images in the paper, 6 for
            128x128).
        num_downsamplings: stride-2 convolutions before, and transposed convolutions after, the residual blocks.

    Examples::

        # the paper's generator for 256x256 RGB images
        net = ResnetGenerator()
        fake = net(torch.rand(1, 3, 256, 256) * 2 - 1)  # (1, 3, 256, 256), in [-1, 1]
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 64,
        num_residual_blocks: int = 9,
        num_downsamplings: int = 2,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, base_channels, kernel_size=7),
            nn.InstanceNorm2d(base_channels),
            nn.ReLU(inplace=True),
        ]
        channels = base_channels
        for _ in range(num_downsamplings):
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1),
                nn.InstanceNorm2d(channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        layers += [ResnetBlock(channels) for _ in range(num_residual_blocks)]
        for _ in range(num_downsamplings):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_cyclegan_weights(self)
        self.record_settings(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                             num_residual_blocks=num_residual_blocks, num_downsamplings=num_downsamplings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchGANDiscriminator(PatchDiscriminator):
    """The 70x70 PatchGAN of pix2pix and CycleGAN: C64-C128-C256-C512 (4x4 convolutions, strides 2, 2, 2, 1,
    LeakyReLU 0.2, instance norm on all but the first), then a 1-channel 4x4 convolution with stride 1.

    MONAI's ``PatchDiscriminator`` with these settings (same modules, same state dict), returning only the final
    patch map: one real/fake score for each 70x70 patch of the input, (N, 1, 30, 30) for a 256x256 input.

    Args:
        in_channels: number of input channels.
        channels: channels of the first convolution, doubled by each further one.
        num_layers_d: convolutions after the first; 3 gives the 70x70 receptive field (1: 16x16, 4: 142x142).
        norm: feature normalisation of all but the first convolution.
        spatial_dims: number of spatial dimensions.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 64,
        num_layers_d: int = 3,
        norm: str | tuple = "INSTANCE",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=in_channels,
            out_channels=1,
            num_layers_d=num_layers_d,
            kernel_size=4,
            activation=(Act.LEAKYRELU, {"negative_slope": 0.2}),
            norm=norm,
            bias=True,  # as in the authors' code with instance norm
            padding=1,
            last_conv_kernel_size=4,
        )
        init_cyclegan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x)
        return x
