"""The faster nuclei inference finds the nuclei the slower one did: HoVer-Net fast mode on windows of any size (the
same maps as MONAI's at 256), windows fitted to each region and stitched exactly, batch norms folded, the
agreement measure itself, and the bundle's inference.json against the MONAI model zoo's recipe (256-pixel windows,
MONAI's post-processing) on the same H&E region with the same (oracle) HoVer-Net: the same nuclei, the same types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import HoVerNet
from PIL import Image

from benchmarks.nuclei_side_by_side import zoo_recipe
from conftest import PATHOLOGY
from helpers.oracle import DarkNucleiHoVerNet
from shared.inferers.hovernet_windows import FittedHoVerNetInferer, fitted_windows
from shared.inferers.onnx_runtime import BackendInferer, fold_batch_norm
from shared.metrics.nuclei_agreement import nuclei_agreement
from shared.networks.hovernet import RecordedHoVerNet
from test_pathology_inference import discs_image


class ShiftEquivariant(torch.nn.Module):
    """A stand-in for HoVer-Net fast whose output at a pixel depends only on the input there (less 46 pixels a
    side), with a call counter: stitched windows must give back the input exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.shapes = 0, set()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += x.shape[0]
        self.shapes.add(tuple(x.shape[-2:]))
        inner = x[..., 46:-46, 46:-46]
        return {"nucleus_prediction": inner[:, :2] * 2.0, "horizontal_vertical": inner[:, 1:] - 1.0}


def test_fast_mode_takes_any_window_with_monai_maps_at_256():
    torch.manual_seed(0)
    network = RecordedHoVerNet(mode="fast", out_classes=3).eval()
    reference = HoVerNet(mode="fast", out_classes=3).eval()
    reference.load_state_dict(network.state_dict(), strict=False)
    x = torch.rand(1, 3, 264, 256)
    with torch.no_grad():
        ours, theirs = network(x[..., :256, :]), reference(x[..., :256, :])
        wider = network(x)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key])
        assert wider[key].shape[-2:] == (172, 164)  # 46 pixels off each side, any multiple of 8
    with pytest.raises(ValueError, match="multiples of 8 above 92; got 260x256"):
        network(torch.rand(1, 3, 260, 256))


@pytest.mark.parametrize("side, max_window, expected", [
    (164, 256, (1, 256)), (100, 1024, (1, 192)), (1024, 384, (4, 352)), (2304, 1024, (3, 864)), (2304, 384, (8, 384))])
def test_fitted_windows_are_the_fewest_smallest_that_cover(side, max_window, expected):
    count, window = fitted_windows(side, max_window)
    assert (count, window) == expected
    assert window <= max_window and window % 8 == 0 and count * (window - 92) >= side
    assert (count - 1) * (fitted_windows(10**6, max_window)[1] - 92) < side  # one window fewer would not cover it


@pytest.mark.parametrize("size", [(700, 1000), (120, 90), (300, 300)])
def test_fitted_windows_stitch_every_pixel_once(size):
    network = ShiftEquivariant()
    inferer = FittedHoVerNetInferer(max_window=384)
    x = torch.rand(1, 3, *size)
    out = inferer(x, network)
    assert torch.equal(out["nucleus_prediction"], x[:, :2] * 2.0)
    assert torch.equal(out["horizontal_vertical"], x[:, 1:] - 1.0)
    counts = [fitted_windows(side, 384)[0] for side in size]
    assert network.calls == counts[0] * counts[1]
    assert network.shapes == {tuple(fitted_windows(side, 384)[1] for side in size)}


def test_batch_norms_fold_into_their_convolutions_with_the_same_outputs():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                  torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
    folded = fold_batch_norm(network)
    kinds = [type(m).__name__ for m in folded]
    assert kinds == ["Conv2d", "Identity", "ReLU", "BatchNorm2d", "Conv2d", "Identity"]  # after a ReLU: kept
    assert isinstance(network[1], torch.nn.BatchNorm2d)  # the network itself is untouched
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), network(x), rtol=1e-5, atol=1e-5)
        inferer = BackendInferer(lambda data, net: net(data), fold_batch_norm=True, autocast_dtype="bfloat16")
        low = inferer(x, network)
    assert low.dtype == torch.float32 and torch.allclose(low, network(x), atol=0.1)
    with pytest.raises(ValueError, match="floating dtype"):
        BackendInferer(lambda data, net: net(data), autocast_dtype="int8")


def test_nuclei_agreement_matches_one_to_one_at_half_overlap():
    reference = np.zeros((20, 20), int)
    reference[2:6, 2:6], reference[10:14, 10:14], reference[15:18, 1:4] = 1, 2, 3
    candidate = np.zeros((20, 20), int)
    candidate[2:6, 2:5], candidate[10:12, 10:14], candidate[1:2, 15:18] = 7, 9, 4  # IoU 0.75, exactly 0.5, none
    types = (reference > 0).astype(int), np.where(candidate == 9, 2, (candidate > 0).astype(int))
    agreement = nuclei_agreement(reference, candidate, *types)
    assert (agreement.reference, agreement.candidate, agreement.matched) == (3, 3, 2)
    assert agreement.both_ways == pytest.approx(2 / 3) and agreement.same_type == 0.5
    assert agreement.mean_iou == pytest.approx((0.75 + 0.5) / 2)
    same = nuclei_agreement(reference, reference * 5)  # ids need not be equal
    assert same.both_ways == 1.0 and same.mean_iou == 1.0
    assert nuclei_agreement(np.zeros((4, 4)), np.zeros((4, 4))).both_ways == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        nuclei_agreement(reference, reference[:10])


# discs on and near the 256-pixel windows' seams (every 164 pixels from 0) and near the fitted windows' ones
SEAM_DISCS = [(164, 164), (100, 328), (328, 100), (330, 330), (492, 250), (250, 492), (60, 60), (480, 480),
              (164, 420), (420, 164), (292, 292), (292, 40), (40, 292), (510, 80), (80, 510), (200, 250)]


@pytest.mark.parametrize("regions", [False, True])
def test_bundle_inference_finds_the_zoo_recipes_nuclei(tmp_path, regions):
    """inference.json's inferer as the config builds it (fitted windows, folded batch norms, channels-last; as one
    region, or as 200-pixel slide-style regions with 128 pixels of margin) against the zoo's recipe, both with the
    oracle HoVer-Net, on a 600x560 H&E picture whose nuclei sit on window seams."""
    image = discs_image((600, 560), SEAM_DISCS, radius=12)
    Image.fromarray(image).save(tmp_path / "region.png")
    parser = ConfigParser()
    parser.read_config(str(PATHOLOGY / "configs" / "inference.json"))
    parser.update({"bundle_root": str(PATHOLOGY), "dataset_dir": str(tmp_path), "stain": "he",
                   "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "out"),
                   "regions#progress": False,
                   **({"regions#whole_image_max_pixels": 1, "regions#size": 200} if regions else {})})
    network = DarkNucleiHoVerNet()
    result = parser.get_parsed_content("inferer")(parser.get_parsed_content("dataset")[0]["image"], network)
    assert result.regions["mode"] == ("regions" if regions else "whole image")
    assert result.regions.get("processed", 1) == (9 if regions else 1)
    assert set(result.timings) == {"read", "translation", "hovernet", "postprocessing", "nuclei"}
    zoo_instances, zoo_types = zoo_recipe(image, network)
    agreement = nuclei_agreement(zoo_instances, result.instance_map, zoo_types, result.type_map)
    assert agreement.reference == len(SEAM_DISCS)
    assert agreement.both_ways >= 0.99 and agreement.same_type == 1.0, agreement
    assert agreement.mean_iou > 0.95
