"""The study's 3D residual U-Net (MONAI ``UNet``) in two presets, with the preset recorded in the weights."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import UNet

__all__ = ["PRESETS", "BabyAIUNet", "babyai_unet"]

# channel 0: isotropic T1w; channel 1: anisotropic T2w interpolated onto the T1w grid; output: isotropic T2w
PRESETS: dict[str, dict[str, Any]] = {
    # exactly the study's constructor: 379,053,826 parameters, the hub's pretrained_weights.pth loads strictly
    "published": {"channels": (32, 64, 128, 256, 512, 1024), "strides": (2, 2, 2, 2, 2), "num_res_units": 10},
    # the same design at a size that trains on 2 CPU cores in minutes, learning the correction to the
    # interpolated T2w (a global residual), which is what makes minutes of training enough
    "small": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 2, "residual": True},
}


class BabyAIUNet(UNet):
    """``monai.networks.nets.UNet(spatial_dims=3, in_channels=2, out_channels=1, norm=None, **PRESETS[preset])``
    whose state dict records ``preset`` (as the module's extra state), so weights say which network they belong
    to. A state dict without that record (the study's plain ``pretrained_weights.pth``) is read as the preset's own;
    one recorded for another preset is refused, naming both. A preset with ``residual`` adds the input's T2w
    channel to the output (the network learns the correction to the interpolation) and starts with its last block
    at zero, so training starts from the interpolation itself; ``published`` does not."""

    def __init__(self, preset: str = "published") -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown network preset {preset!r}; choose one of {sorted(PRESETS)}.")
        settings = dict(PRESETS[preset])
        self.residual: bool = bool(settings.pop("residual", False))
        super().__init__(spatial_dims=3, in_channels=2, out_channels=1, norm=None, **settings)
        self.preset = preset
        if self.residual:
            # the top block's convolutions start at zero (not its PReLU, whose slope carries the first gradients),
            # so the correction starts at 0
            for module in self.model[-1].modules():
                if isinstance(module, torch.nn.modules.conv._ConvNd):
                    torch.nn.init.zeros_(module.weight)
                    torch.nn.init.zeros_(module.bias)
        self._register_load_state_dict_pre_hook(self._accept_unrecorded_preset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out + x[:, 1:2] if self.residual else out

    def get_extra_state(self) -> dict[str, str]:
        return {"preset": self.preset}

    def set_extra_state(self, state: dict[str, str]) -> None:
        if state.get("preset") != self.preset:
            raise ValueError(
                f"these weights belong to the {state.get('preset')!r} network preset, not {self.preset!r}: "
                f"build the network with preset={state.get('preset')!r} (inference.json does so unless --preset is given)."
            )

    def _accept_unrecorded_preset(self, state_dict: dict, prefix: str, *args: Any) -> None:
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())


def babyai_unet(preset: str | None = "published") -> BabyAIUNet:
    """The study's network in ``preset`` (``None``: ``published``)."""
    return BabyAIUNet(preset or "published")
