"""ForegroundSliceInferer: a pointwise oracle network gives the whole-slice result inside the foreground box, zeros
outside, and only foreground slices, cut to multiples of k, reach the network."""

from __future__ import annotations

import pytest
import torch

from shared.inferers.foreground_slices import ForegroundSliceInferer, foreground_box


class PointwiseOracle(torch.nn.Module):
    """out = 2 * x + 1 per channel (position independent), recording the shapes it is given."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k, self.shapes = k, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        assert x.shape[-1] % self.k == 0 and x.shape[-2] % self.k == 0, x.shape
        return 2 * x + 1


def _volume(background: float = -1.0) -> torch.Tensor:
    volume = torch.full((1, 2, 40, 36, 12), background)
    volume[0, 0, 1:20, 20:36, 3:9] = torch.rand(19, 16, 6)  # the box grown to 48 passes Y's edge: padded
    volume[0, 1, 25:27, 2:4, 5] = 0.5
    return volume


@pytest.mark.parametrize("spatial_dim", [2, 0])
def test_foreground_gets_the_whole_slice_result_and_outside_is_zero(spatial_dim):
    volume, oracle = _volume(), PointwiseOracle(k=16)
    out = ForegroundSliceInferer(spatial_dim=spatial_dim, batch_size=4, k_divisible=16, background=-1.0)(volume, oracle)
    assert out.shape == volume.shape
    box = foreground_box(volume[0], -1.0)
    assert box == (slice(1, 27), slice(2, 36), slice(3, 9))
    inside = torch.zeros_like(volume, dtype=torch.bool)
    inside[(slice(None), slice(None)) + box] = True
    assert torch.equal(out[inside], (2 * volume + 1)[inside])
    assert torch.all((out == 0) | (out == 2 * volume + 1))  # the network's own result or zero, nothing blended
    outside_slices = torch.ones(volume.shape[2 + spatial_dim], dtype=torch.bool)
    outside_slices[box[spatial_dim]] = False
    assert not out.movedim(2 + spatial_dim, 0)[outside_slices].any()
    if spatial_dim == 2:  # X's box 1:27 grown to 32 about its centre and kept inside the volume: 0:32
        assert not out[:, :, 32:].any() and torch.equal(out[:, :, 0, 20, 3:9], (2 * volume + 1)[:, :, 0, 20, 3:9])
    slices_run = sum(shape[0] for shape in oracle.shapes)
    assert slices_run == {2: 6, 0: 26}[spatial_dim]  # the box's slices only, never the background ones
    assert max(shape[0] for shape in oracle.shapes) <= 4


def test_only_background_gives_zeros_and_other_ranks_are_refused():
    inferer = ForegroundSliceInferer(k_divisible=8, background=0.0)
    out = inferer(torch.zeros(1, 1, 9, 10, 3), PointwiseOracle(k=8))
    assert out.shape == (1, 1, 9, 10, 3) and not out.any()
    with pytest.raises(ValueError, match="3D volumes"):
        inferer(torch.zeros(1, 1, 9, 10), PointwiseOracle(k=8))
