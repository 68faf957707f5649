"""A NIfTI writer that keeps every spatial axis of the image it writes."""

from __future__ import annotations

from monai.data import NibabelWriter

__all__ = ["ShapeKeepingNibabelWriter"]


class ShapeKeepingNibabelWriter(NibabelWriter):
    """``monai.data.NibabelWriter`` that writes an image with exactly its own spatial axes: with
    ``squeeze_end_dims`` it drops only a singleton channel axis and never a singleton spatial one, and it adds none.
    A (1, X, Y, 1) prediction for a 64x64x1 input is saved as 64x64x1 (not 64x64), a (1, X, Y) one for a 2D slice as
    X x Y (not X x Y x 1). Give it to ``SaveImage(d)`` as ``writer``."""

    @classmethod
    def convert_to_channel_last(cls, data, channel_dim=0, squeeze_end_dims=True, spatial_ndim=3, contiguous=False):
        data = super().convert_to_channel_last(data, channel_dim, False, None, contiguous)
        return data[..., 0] if squeeze_end_dims and data.shape[-1] == 1 else data
