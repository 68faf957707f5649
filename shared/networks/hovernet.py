"""MONAI's HoVer-Net with its size settings recorded in its weights."""

from __future__ import annotations

from monai.networks.nets import HoVerNet

from shared.networks.recorded_settings import RecordedSettings

__all__ = ["RecordedHoVerNet"]


class RecordedHoVerNet(RecordedSettings, HoVerNet):
    """``monai.networks.nets.HoVerNet`` (same arguments) whose state dict records ``mode``, ``in_channels``,
    ``np_out_channels``, ``out_classes`` and ``adapt_standard_resnet`` (see ``shared.networks.recorded_settings``):
    the settings that decide which weights fit it. Weights without a record, such as the MONAI model zoo's
    ``pathology_nuclei_segmentation_classification``, load as before."""

    def __init__(self, mode: str = "fast", in_channels: int = 3, np_out_channels: int = 2, out_classes: int = 0,
                 adapt_standard_resnet: bool = False, **kwargs) -> None:
        super().__init__(mode=mode, in_channels=in_channels, np_out_channels=np_out_channels,
                         out_classes=out_classes, adapt_standard_resnet=adapt_standard_resnet, **kwargs)
        self.record_settings(mode=str(mode).lower(), in_channels=in_channels, np_out_channels=np_out_channels,
                             out_classes=out_classes, adapt_standard_resnet=bool(adapt_standard_resnet))
