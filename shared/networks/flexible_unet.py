"""MONAI's FlexibleUNet with ResNet shortcuts that TorchScript can script and trace correctly.

MONAI's ResNet "A" shortcut (ResNet-18/34) is a ``functools.partial`` of ``ResNet._downsample_basic_block``, which
``torch.jit.script`` rejects; tracing accepts it but records ``out.data`` as a constant, so a traced model silently
reuses the trace input's residual on every later input. :class:`ZeroPadShortcut` computes the same values as an
``nn.Module``; it has no parameters, so checkpoints of either class load into the other.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.resnet import ResNet

__all__ = ["ZeroPadShortcut", "make_shortcuts_exportable", "ExportableFlexibleUNet"]


class ZeroPadShortcut(torch.nn.Module):
    """Identity shortcut with stride: subsample by ``stride`` and zero-pad channels up to ``planes``."""

    def __init__(self, planes: int, stride: int, spatial_dims: int) -> None:
        super().__init__()
        self.planes, self.stride, self.spatial_dims = planes, stride, spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 2:
            out = x[:, :, :: self.stride, :: self.stride]
        elif self.spatial_dims == 3:
            out = x[:, :, :: self.stride, :: self.stride, :: self.stride]
        else:
            out = x[:, :, :: self.stride]
        return F.pad(out, [0, 0] * self.spatial_dims + [0, self.planes - x.shape[1]])


def make_shortcuts_exportable(network: torch.nn.Module) -> torch.nn.Module:
    """Replace every ResNet "A" shortcut partial in ``network`` by a :class:`ZeroPadShortcut`, in place."""
    for module in network.modules():
        shortcut = getattr(module, "downsample", None)
        if isinstance(shortcut, partial) and getattr(shortcut.func, "__func__", None) is ResNet._downsample_basic_block:
            kw = shortcut.keywords
            module.downsample = ZeroPadShortcut(kw["planes"], kw["stride"], kw.get("spatial_dims", 3))
    return network


class ExportableFlexibleUNet(FlexibleUNet):
    """``monai.networks.nets.FlexibleUNet`` (same arguments, same state dict) that scripts and traces correctly."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        make_shortcuts_exportable(self)
