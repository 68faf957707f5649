"""MONAI's HoVer-Net with its size settings recorded in its weights, and fast mode on windows of any size."""

from __future__ import annotations

import torch
from monai.networks.nets import HoVerNet
from monai.networks.nets.hovernet import HoVerNetBranch, HoVerNetMode

from shared.networks.recorded_settings import RecordedSettings

__all__ = ["FAST_MODE_BORDER", "WINDOW_MULTIPLE", "fast_output_size", "RecordedHoVerNet"]

FAST_MODE_BORDER = 46  # fast mode's valid convolutions trim this many pixels off each side of its input
WINDOW_MULTIPLE = 8  # the encoder halves its input three times


def fast_output_size(window: int) -> int:
    """The side of fast mode's output for a ``window``-pixel input side (164 for MONAI's 256)."""
    return int(window) - 2 * FAST_MODE_BORDER


class RecordedHoVerNet(RecordedSettings, HoVerNet):
    """``monai.networks.nets.HoVerNet`` (same arguments) whose state dict records ``mode``, ``in_channels``,
    ``np_out_channels``, ``out_classes`` and ``adapt_standard_resnet`` (see ``shared.networks.recorded_settings``):
    the settings that decide which weights fit it. Weights without a record, such as the MONAI model zoo's
    ``pathology_nuclei_segmentation_classification``, load as before.

    In fast mode it also takes inputs other than MONAI's 256x256: the network is convolutional, so any side that is
    a multiple of 8 (above 92) gives the same maps less :data:`FAST_MODE_BORDER` pixels a side (a 1024-pixel window
    keeps 83 % of its output, a 256-pixel one 41 %). The original mode keeps MONAI's 270x270."""

    def __init__(self, mode: str = "fast", in_channels: int = 3, np_out_channels: int = 2, out_classes: int = 0,
                 adapt_standard_resnet: bool = False, **kwargs) -> None:
        super().__init__(mode=mode, in_channels=in_channels, np_out_channels=np_out_channels,
                         out_classes=out_classes, adapt_standard_resnet=adapt_standard_resnet, **kwargs)
        self.record_settings(mode=str(mode).lower(), in_channels=in_channels, np_out_channels=np_out_channels,
                             out_classes=out_classes, adapt_standard_resnet=bool(adapt_standard_resnet))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # MONAI's HoVerNet.forward with fast mode's 256x256 check widened (written to stay TorchScript-able)
        height, width = x.shape[-2], x.shape[-1]
        if self.mode == HoVerNetMode.ORIGINAL.value:
            if height != 270 or width != 270:
                raise ValueError("Input size should be 270 x 270 when using HoVerNetMode.ORIGINAL")
        elif height % 8 != 0 or width % 8 != 0 or height <= 92 or width <= 92:
            raise ValueError("HoVer-Net fast mode needs an input whose sides are multiples of 8 above 92; got "
                             + str(height) + "x" + str(width) + ".")
        x = self.conv0(x)
        short_cuts: list[torch.Tensor] = []
        for i, block in enumerate(self.res_blocks):
            x = block.forward(x)
            if i <= 2:
                short_cuts.append(x)
        x = self.upsample(self.bottleneck(x))
        output = {HoVerNetBranch.NP.value: self.nucleus_prediction(x, short_cuts),
                  HoVerNetBranch.HV.value: self.horizontal_vertical(x, short_cuts)}
        if self.type_prediction is not None:
            output[HoVerNetBranch.NC.value] = self.type_prediction(x, short_cuts)
        return output
