"""Unit tests of the shared transforms, dataset helpers and network shortcut, with exact expected values."""

from functools import partial

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from shared.data.case_names import case_name
from shared.data.slice_patches import SlicePatchDataset, plane_windows
from shared.networks.flexible_unet import ExportableFlexibleUNet, ZeroPadShortcut
from shared.transforms.intensity import MaskedPercentileRescale, MaskedPercentileRescaled
from shared.transforms.validation import CheckImageContent, CheckImageContentd, UnusableImageError
from shared.writers.naming import case_name_formatter


def test_rescale_full_range_of_nonzero_voxels():
    img = torch.tensor([[0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    out = MaskedPercentileRescale(lower=0, upper=100)(img)
    # nonzero range [1, 5] -> [-1, 1]; background 0 lies below it and clips to -1
    assert torch.allclose(out, torch.tensor([[-1.0, -1.0, -1.0, -0.5, 0.0, 0.5, 1.0]]))


def test_rescale_percentiles_clip_both_ends():
    img = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    out = MaskedPercentileRescale(lower=25, upper=75)(img)
    # quartiles of [1..5] are 2 and 4 (linear interpolation), so x -> x - 3, clipped to [-1, 1]
    assert torch.allclose(out, torch.tensor([[-1.0, -1.0, -1.0, 0.0, 1.0, 1.0]]))


def test_rescale_uses_explicit_mask_per_channel_and_handles_constant_channels():
    img = torch.tensor([[10.0, 20.0, 30.0, 1000.0], [7.0, 7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out = MaskedPercentileRescale(lower=0, upper=100, b_min=0.0, b_max=1.0)(img, mask)
    assert torch.allclose(out[0], torch.tensor([0.0, 0.5, 1.0, 1.0]))  # 1000 is outside the mask: clipped
    assert torch.equal(out[1], torch.zeros(4))  # constant channel -> b_min


def test_rescale_keeps_metadata_and_numpy_type():
    img = MetaTensor(torch.tensor([[0.0, 2.0, 4.0]]), meta={"filename_or_obj": "x.nii.gz"})
    out = MaskedPercentileRescaled("image", lower=0, upper=100)({"image": img})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.nii.gz"
    assert np.allclose(MaskedPercentileRescale(0, 100)(np.array([[0.0, 2.0, 4.0]])), [[-1.0, -1.0, 1.0]])


def test_rescale_rejects_bad_percentiles():
    with pytest.raises(ValueError, match="lower < upper"):
        MaskedPercentileRescale(lower=60, upper=40)


def test_check_finite_names_the_file():
    img = MetaTensor(torch.tensor([[1.0, float("nan"), float("inf")]]), meta={"filename_or_obj": "/data/a_t2.nii.gz"})
    with pytest.raises(ValueError, match=r"/data/a_t2.nii.gz: 2 voxel\(s\) are NaN or infinite"):
        CheckImageContentd("t2")({"t2": img})
    ok = torch.arange(3.0)[None]
    assert CheckImageContent()(ok) is ok


def test_blank_and_empty_images_are_unusable():
    blank = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/data/b_flair.nii.gz"})
    with pytest.raises(UnusableImageError, match="/data/b_flair.nii.gz: every voxel is 0: the image is blank"):
        CheckImageContentd("flair")({"flair": blank})
    with pytest.raises(UnusableImageError, match="has no voxels"):
        CheckImageContent()(torch.zeros(1, 0, 4))
    constant_mask = torch.zeros(1, 4, 4)
    assert CheckImageContent(allow_constant=True)(constant_mask) is constant_mask


@pytest.mark.parametrize(
    "size,patch,overlap,expected",
    [(10, 4, 0.0, [0, 4, 6]), (10, 4, 0.5, [0, 2, 4, 6]), (3, 4, 0.0, [0]), (8, 4, 0.0, [0, 4])],
)
def test_patch_starts(size, patch, overlap, expected):
    windows = plane_windows((size, size), (patch, patch), overlap)
    assert sorted({y for y, _, _, _ in windows}) == expected == sorted({x for _, _, x, _ in windows})
    assert all(y1 - y == min(size, patch) for y, y1, _, _ in windows)


def _volume_case():
    image = torch.arange(2 * 6 * 5 * 3, dtype=torch.float32).reshape(2, 6, 5, 3)
    label = torch.zeros(1, 6, 5, 3)
    label[0, 4:6, 3:5, 1] = 2  # a 2x2 tumour in slice z=1, at the far corner
    return {"image": image, "label": label}


def test_slice_patch_dataset_keeps_only_tumour_patches_and_pads():
    case = _volume_case()
    ds = SlicePatchDataset([case], transform=None, volume_transform=Compose([]), patch_size=(4, 4),
                           min_tumour_fraction=4 / 16, patch_overlap=0.0, num_workers=0)
    # y starts [0, 2], x starts [0, 1]; only the window (y=2, x=1) holds all 4 tumour pixels
    assert ds.index.tolist() == [[0, 1, 2, 1]]
    item = ds[0]
    assert item["image"].shape == (2, 4, 4) and item["label"].shape == (1, 4, 4)
    assert torch.equal(item["image"], case["image"][:, 2:6, 1:5, 1])
    assert int((item["label"] > 0).sum()) == 4

    loose = SlicePatchDataset([case], None, Compose([]), patch_size=(4, 8), min_tumour_fraction=0.01,
                              patch_overlap=0.0, num_workers=0)
    assert loose.index.tolist() == [[0, 1, 2, 0]]  # x is shorter than the patch: one start, padded
    padded = loose[0]
    assert padded["image"].shape == (2, 4, 8)
    assert torch.all(padded["image"][:, :, 5:] == -1.0) and torch.all(padded["label"][:, :, 5:] == 0)


def test_slice_patch_dataset_without_tumour_raises():
    case = _volume_case()
    case["label"].zero_()
    with pytest.raises(ValueError, match="no \\(4, 4\\) patch"):
        SlicePatchDataset([case], None, Compose([]), patch_size=(4, 4), num_workers=0)


def test_case_names():
    assert case_name("/x/BraTS20_Training_001_flair.nii.gz") == "BraTS20_Training_001"
    assert case_name("sub-01_T1CE.nii") == "sub-01"
    assert case_name("scan.nii.gz") == "scan"
    assert case_name_formatter({"filename_or_obj": "/a/b/c_t2.nii.gz"}, None) == {"subject": "c", "idx": None}


def test_zero_pad_shortcut_matches_monai_partial_and_scripts():
    from monai.networks.nets.resnet import ResNet

    torch.manual_seed(0)
    net = ExportableFlexibleUNet(3, 4, "resnet34", spatial_dims=2).eval()
    shortcuts = [m.downsample for m in net.modules() if isinstance(getattr(m, "downsample", None), ZeroPadShortcut)]
    assert len(shortcuts) == 3  # resnet34 layers 2-4 start with a strided "A" shortcut
    x = torch.randn(2, 64, 17, 18)
    reference = partial(ResNet._downsample_basic_block, None, planes=128, stride=2, spatial_dims=2)
    assert torch.equal(ZeroPadShortcut(128, 2, 2)(x), reference(x))
    scripted = torch.jit.script(net)
    for shape in [(1, 3, 64, 64), (2, 3, 96, 160)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(scripted(x), net(x), atol=1e-5)


@pytest.mark.parametrize("axis,factor,offset", [(0, 3, 1), (1, 4, 0), (2, 5, 4), (2, 2, 1)])
def test_simulated_anisotropy_is_scipys_cubic_spline_over_the_kept_slices(axis, factor, offset):
    from scipy import ndimage

    from shared.transforms.anisotropy import SimulateAnisotropy, kept_slices

    volume = np.random.default_rng(axis + factor).random((2, 17, 13, 11), dtype=np.float32)
    out = SimulateAnisotropy(factor=factor, axis=axis, offset=offset)(torch.as_tensor(volume))
    kept = kept_slices(volume.shape[axis + 1], factor, offset)
    thick = np.take(volume, kept, axis=axis + 1)
    grid = list(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in volume.shape[1:]], indexing="ij"))
    grid[axis] = (grid[axis] - offset) / factor
    reference = np.stack([ndimage.map_coordinates(c, np.stack(grid), order=3, mode="nearest") for c in thick])
    assert isinstance(out, torch.Tensor) and out.shape == volume.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(np.take(out.numpy(), kept, axis=axis + 1), thick, atol=1e-6)


@pytest.mark.parametrize("profile", ["box", "gaussian"])
def test_a_slice_profile_of_one_voxel_is_the_identity_and_thicker_ones_average(profile):
    from shared.transforms.slice_profile import SimulateThickSlices, slice_profile_matrix

    volume = torch.as_tensor(np.random.default_rng(0).random((1, 15, 12, 10), dtype=np.float32))
    for axis in (0, 1, 2):
        assert torch.allclose(SimulateThickSlices(1.0, axis, profile=profile)(volume), volume, atol=1e-6)
    weights = slice_profile_matrix(20, 4.0, 5.0, 1.5, profile)
    assert weights.shape == (4, 20) and np.allclose(weights.sum(axis=1), 1)  # slices at 1.5, 6.5, 11.5, 16.5
    assert np.allclose(weights[1:3] @ np.arange(20), [6.5, 11.5])  # each profile (away from the edges) centred
    assert np.allclose(weights[1][:7][::-1], weights[1][7:14])  # and symmetric about it
    if profile == "box":  # exactly the 4 voxels 0-3 of the slice [-0.5, 3.5]
        assert np.allclose(weights[0][:4], 0.25) and np.all(weights[0][4:] == 0)
    # a thick acquisition of a constant is the constant; of a ramp along the axis, still the ramp inside it
    ramp = torch.arange(30, dtype=torch.float32).reshape(1, 1, 1, 30).expand(1, 4, 4, 30)
    out = SimulateThickSlices(4.0, 2, spacing=4.5, offset=2.0, profile=profile)(ramp)
    assert torch.allclose(out[..., 8:26], ramp[..., 8:26], atol=0.15)  # a cubic spline through the slices


def test_the_thick_slice_acquisition_matches_a_point_sampled_one_at_one_voxel_and_its_random_draws_are_bounded():
    from shared.transforms.anisotropy import SimulateAnisotropy
    from shared.transforms.slice_profile import RandSimulateThickSlicesd, SimulateThickSlices

    volume = torch.as_tensor(np.random.default_rng(1).random((1, 16, 13, 11), dtype=np.float32))
    for factor, offset in ((3, 1), (4, 0)):
        assert torch.allclose(SimulateThickSlices(1.0, 1, spacing=factor, offset=offset)(volume),
                              SimulateAnisotropy(factor, 1, offset)(volume), atol=1e-5)
        # a point profile keeps the centre slices whatever the thickness: "keep every k-th slice"
        assert torch.allclose(SimulateThickSlices(4.0, 1, spacing=factor, offset=offset, profile="point")(volume),
                              SimulateAnisotropy(factor, 1, offset)(volume), atol=1e-5)
    transform = RandSimulateThickSlicesd(["a", "b"], thickness_range=(2, 6), gap_range=(0, 0.2), axes=(0, 2))
    transform.set_random_state(0)
    for _ in range(20):
        out = transform({"a": volume, "b": volume.clone()})
        a = transform.acquisition
        assert 2 <= a["thickness"] <= 6 and a["thickness"] <= a["spacing"] <= 1.2 * a["thickness"] + 1e-9
        assert a["axis"] in (0, 2) and a["profile"] in ("box", "gaussian", "point")
        assert torch.equal(out["a"], out["b"]) and out["a"].shape == volume.shape  # one draw for every key
    with pytest.raises(ValueError, match="thickness_range"):
        RandSimulateThickSlicesd("a", thickness_range=(0.5, 2))
