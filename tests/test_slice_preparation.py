"""Training and inference prepare a slice the same way: the same volume through ``train.json``'s slice transforms
and through ``inference.json``'s ``slice_inferer`` (an oracle network records what it is given) gives the same
network inputs, and the inferer puts a reconstruction back on the input's grid and intensities."""

from __future__ import annotations

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from conftest import HIPMRI, ISPY2


class RecordingNetwork(torch.nn.Module):
    """Returns its input (as a reconstruction) and keeps every batch it was given."""

    def __init__(self, out_channels: int | None = None) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x if self.out_channels is None else x[:, :1].repeat(1, self.out_channels, 1, 1)


def _parsed(bundle, config: str, overrides: dict | None = None) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser.update(overrides or {})
    return parser


def _dict_transforms(parser: ConfigParser, config_id: str, first_target: str):
    """The transforms of the list ``config_id`` from the first one whose ``_target_`` is ``first_target``."""
    from monai.transforms import Compose

    items = parser[config_id]
    start = next(i for i, item in enumerate(items) if item["_target_"] == first_target)
    return Compose([parser.get_parsed_content(f"{config_id}#{i}") for i in range(start, len(items))
                    if items[i]["_target_"] != "EnsureTyped"])


def test_hipmri_training_and_inference_give_the_network_the_same_slices():
    sizes = {"image_size": [32, 16]}
    train = _dict_transforms(_parsed(HIPMRI, "train.json", sizes), "slice_preparation", "Resized")
    inferer = _parsed(HIPMRI, "inference.json", {**sizes, "slice_inferer#batch_size": 2}).get_parsed_content(
        "slice_inferer")
    x, y = torch.meshgrid(torch.linspace(0, 1, 50), torch.linspace(0, 1, 30), indexing="ij")
    smooth = 100 + 80 * torch.sin(3 * x) * torch.cos(2 * y)  # survives the resize round trip
    volume = (smooth[None, None, ..., None] * torch.rand(5)).contiguous()
    volume[..., 3] = 0.0  # outside the body: returned as it is, not predicted
    network = RecordingNetwork()
    with torch.no_grad():
        out = inferer(volume, network)
    seen = torch.cat(network.seen)
    expected = torch.stack([torch.as_tensor(train({"image": MetaTensor(volume[0, ..., z])})["image"])
                            for z in (0, 1, 2, 4)])
    torch.testing.assert_close(seen, expected, atol=1e-5, rtol=1e-5)
    assert out.shape == volume.shape and torch.equal(out[..., 3], volume[..., 3])
    # an identity network: the slice back on its grid and in its intensities, up to the resize round trip
    assert (out - volume).abs().mean() < 0.03 * volume.abs().mean()


def test_ispy2_training_and_inference_give_the_network_the_same_slices():
    sizes = {"slice_size": [40, 32], "image_size": [16, 16]}
    train = _dict_transforms(_parsed(ISPY2, "train.json", sizes), "train#slice_transforms", "ResizeWithPadOrCropd")
    inferer = _parsed(ISPY2, "inference.json", {**sizes, "slice_range": None, "slice_inferer#batch_size": 3}
                      ).get_parsed_content("slice_inferer")
    volume = torch.rand(1, 1, 37, 36, 6) * 1000  # crops X, pads Y
    network = RecordingNetwork(out_channels=1)
    with torch.no_grad():
        out = inferer(volume, network)
    seen = torch.cat(network.seen)
    expected = torch.stack([
        torch.as_tensor(train({"t2": MetaTensor(volume[0, ..., z]), "mask": MetaTensor(torch.zeros(1, 37, 36))})["t2"])
        for z in range(6)])
    torch.testing.assert_close(seen, expected, atol=1e-4, rtol=1e-5)
    assert out.shape == volume.shape
