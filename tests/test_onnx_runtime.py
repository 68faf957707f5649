"""``shared.inferers.onnx_runtime``: a config's inferer with the network run by ONNX Runtime gives the eager outputs,
in the network's structure, for every batch size the inferer sends."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from shared.inferers.onnx_runtime import BackendInferer, OnnxRuntimeModule


class TwoBranches(torch.nn.Module):
    """A network with named outputs, as HoVer-Net returns them, and extra state, as the BABY-AI presets keep."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.relu(self.conv(x))
        return {"mask": torch.sigmoid(self.head(features)), "features": features}

    def get_extra_state(self) -> dict:
        return {"preset": "test"}

    def set_extra_state(self, state: dict) -> None:
        pass


def test_sliding_windows_under_onnxruntime_give_the_eager_dict_outputs():
    torch.manual_seed(0)
    network = TwoBranches().eval()
    image = torch.randn(1, 2, 50, 70)
    windows = SlidingWindowInferer(roi_size=(32, 32), sw_batch_size=3, overlap=0.25)  # last batch smaller
    with torch.no_grad():
        eager = BackendInferer(windows, "torch")(image, network)
        onnx = BackendInferer(windows, "onnxruntime")(image, network)
    assert set(onnx) == {"mask", "features"}
    for key in eager:
        assert onnx[key].shape == eager[key].shape
        assert torch.allclose(onnx[key], eager[key], atol=1e-5), key


def test_tuple_outputs_keep_their_structure_and_one_export_serves_every_batch_size():
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1)).eval()

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = network

        def forward(self, x):
            y = self.net(x)
            return y, y.mean()

    module = OnnxRuntimeModule(Pair().eval())
    for batch in (1, 4):
        x = torch.randn(batch, 1, 16, 16)
        out = module(x)
        assert isinstance(out, tuple) and torch.allclose(out[0], network(x), atol=1e-5)
    assert len(module._sessions) == 1


def test_channels_last_gives_the_eager_outputs_with_the_weights_converted_once_loaded():
    torch.manual_seed(0)
    network = TwoBranches().eval()
    image = torch.randn(1, 2, 50, 70)
    windows = SlidingWindowInferer(roi_size=(32, 32), sw_batch_size=3, overlap=0.25)
    inferer = BackendInferer(windows, "torch", channels_last=True)
    with torch.no_grad():
        eager = BackendInferer(windows, "torch")(image, network)
        assert network.conv.weight.is_contiguous()  # nothing converted before the first call
        converted = inferer(image, network)
    assert network.conv.weight.is_contiguous(memory_format=torch.channels_last)
    for key in eager:
        assert torch.allclose(converted[key], eager[key], atol=1e-5), key
    assert BackendInferer(windows, "onnxruntime", channels_last=True)._network(network).__class__ is OnnxRuntimeModule


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="onnxruntime"):
        BackendInferer(SlidingWindowInferer(roi_size=(8, 8)), "tensorrt")


class NoisyBranches(torch.nn.Module):
    """Outputs that differ on every call (random noise added), so any comparison of two runs must fail."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.conv, self.as_dict = torch.nn.Conv2d(1, 2, 3, padding=1), as_dict

    def forward(self, x: torch.Tensor):
        out = self.conv(x) + torch.rand_like(x)
        return {"noisy": out} if self.as_dict else out


def test_monai_convert_to_onnx_verifies_nothing_for_named_outputs_which_is_why_the_bundles_compare_themselves():
    """What MONAI's ``convert_to_onnx(verify=True)`` lacks, kept in ``shared.inferers.onnx_runtime.export_onnx``'s
    docstring: with a tensor output a mismatch is caught; with a dict of outputs (HoVer-Net's) it passes unseen."""
    from monai.networks.utils import convert_to_onnx

    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(AssertionError):
        convert_to_onnx(NoisyBranches(as_dict=False), [x], verify=True, use_ort=True, dynamo=False)
    convert_to_onnx(NoisyBranches(as_dict=True), [x], verify=True, use_ort=True, dynamo=False)  # no error raised
