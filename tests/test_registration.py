"""Rigid registration to an atlas and back (shared.transforms.registration), on the MNI152 template at 2 mm moved by
a known rigid transform: recovered within 1 mm and 1 degree, mapped back onto the native grid, clear errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from shared.data.mni_template import load_mni_template
from shared.transforms.registration import (RegistrationError, RigidRegister, RigidRegisterd, map_back,
                                            resample_to_grid, rigid_register)

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute")  # ITK's SWIG types

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(4)
    m[i, i] = m[j, j] = np.cos(a)
    m[i, j], m[j, i] = -np.sin(a), np.sin(a)
    return m


def translation(offset) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = offset
    return m


def rigid(center: np.ndarray, degrees=(4.0, -3.0, 5.0), shift=(3.0, -2.0, 4.0)) -> np.ndarray:
    """Rotations about the three axes through ``center``, then a shift (mm): a fixed-to-moving RAS matrix."""
    rotate = rotation(0, degrees[0]) @ rotation(1, degrees[1]) @ rotation(2, degrees[2])
    return translation(shift) @ translation(center) @ rotate @ translation(-center)


def transform_error(estimated: np.ndarray, true: np.ndarray, corners: np.ndarray) -> tuple[float, float]:
    """(largest displacement in mm over the brain's bounding-box corners, rotation angle in degrees) between two."""
    displacement = np.linalg.norm(((estimated - true) @ corners)[:3], axis=0).max()
    relative = estimated[:3, :3].T @ true[:3, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)))
    return float(displacement), float(angle)


def image(array: np.ndarray, affine: np.ndarray, name: str) -> MetaTensor:
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None],
                      affine=torch.as_tensor(affine, dtype=torch.float64), meta={"filename_or_obj": name})


@pytest.fixture(scope="module")
def atlas():
    """The MNI152 T1 at 2 mm (99x117x95), a T2-like contrast of it (CSF bright, white matter dark), brain corners."""
    template = load_mni_template()
    affine = template.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    t1 = image(template.t1[::2, ::2, ::2], affine, "/atlas/mni152_t1_2mm.nii.gz")
    t2_like = template.csf + 0.6 * template.gm + 0.25 * template.wm
    t2 = image(t2_like[::2, ::2, ::2], affine, "/atlas/mni152_t2like_2mm.nii.gz")
    index = np.argwhere(template.brain)
    lo, hi = index.min(0), index.max(0)
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    corners = template.affine @ corners.T
    center = corners[:3].mean(axis=1)
    return {"t1": t1, "t2": t2, "corners": corners, "center": center}


@pytest.fixture(scope="module")
def subject(atlas):
    """A subject in its own scanner space: the atlas moved by a known rigid transform (fixed-to-moving ``true``),
    a T1w on a 2 mm grid and an anisotropic T2w (1.6 x 1.6 x 4 mm, rotated slab) in the same scanner space."""
    true = rigid(atlas["center"])
    t1_grid = ((104, 124, 100), translation((-104.0, -130.0, -76.0)) @ np.diag([2.0, 2.0, 2.0, 1.0]))
    slab = translation((-110.0, -130.0, -80.0)) @ rotation(0, 10.0) @ np.diag([1.6, 1.6, 4.0, 1.0])
    t2_grid = ((138, 150, 50), slab)
    # moving(p) = atlas(inv(true) @ p): resample the atlas with the native-to-atlas matrix
    t1w = resample_to_grid(atlas["t1"], t1_grid, np.linalg.inv(true), mode="cubic")
    t2w = resample_to_grid(atlas["t2"], t2_grid, np.linalg.inv(true), mode="cubic")
    t1w.meta["filename_or_obj"], t2w.meta["filename_or_obj"] = "/data/sub-01_T1w.nii.gz", "/data/sub-01_T2w.nii.gz"
    return {"t1w": t1w, "t2w": t2w, "true": true}


def test_recovers_a_rigid_transform_written_in_the_affine(atlas):
    """Same voxels, affine moved by ``true`` (and far away in scanner space): the registration returns ``true``.
    This checks the RAS <-> LPS conversion independently of the resampling."""
    far = translation((400.0, -300.0, 150.0))
    for offset in (np.eye(4), far):
        true = offset @ rigid(atlas["center"])
        moving = image(atlas["t1"][0].numpy(), true @ atlas["t1"].affine.numpy(), "/data/sub-02_T1w.nii.gz")
        result = rigid_register(atlas["t1"], moving)
        displacement, angle = transform_error(result.matrix, true, atlas["corners"])
        assert displacement < 1.0 and angle < 1.0, (displacement, angle)
        assert result.converged and result.overlap > 0.95 and result.metric_value < 0 and result.iterations > 0


def test_registers_an_anisotropic_t2w_of_another_contrast(atlas, subject):
    result = rigid_register(atlas["t1"], subject["t2w"])
    displacement, angle = transform_error(result.matrix, subject["true"], atlas["corners"])
    assert displacement < 1.0 and angle < 1.0, (displacement, angle)
    assert abs(result.rotation_degrees - rigid_angle(subject["true"])) < 1.0
    np.testing.assert_allclose(result.moving_to_fixed @ result.matrix, np.eye(4), atol=1e-9)


def rigid_angle(matrix: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))


def correlation_in_brain(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.numpy().ravel(), b.numpy().ravel()
    brain = b > 0.2 * b.max()
    return float(np.corrcoef(a[brain], b[brain])[0, 1])


def test_array_transform_maps_to_the_atlas_and_back_to_the_native_grid(atlas, subject):
    t1w = subject["t1w"]
    register = RigidRegister()
    registered = register(t1w, atlas["t1"])
    assert registered.shape == atlas["t1"].shape and torch.equal(registered.affine, atlas["t1"].affine)
    assert registered.meta["filename_or_obj"] == "/data/sub-01_T1w.nii.gz"
    matrix = registered.meta["rigid_to_fixed"].numpy()
    displacement, angle = transform_error(matrix, subject["true"], atlas["corners"])
    assert displacement < 1.0 and angle < 1.0, (displacement, angle)
    assert correlation_in_brain(registered, atlas["t1"]) > 0.95  # now on the atlas, in the atlas's position

    back = map_back(registered, matrix, t1w)
    assert back.shape == t1w.shape and torch.equal(back.affine, t1w.affine)
    assert correlation_in_brain(back, t1w) > 0.95
    as_registered = (registered.affine.clone(), len(registered.applied_operations))
    inverted = register.inverse(registered)  # the same through the applied operations
    assert inverted.shape == t1w.shape and torch.equal(inverted.affine, t1w.affine)
    assert torch.allclose(inverted, back) and not inverted.applied_operations
    # the caller's tensor is left as it was
    assert torch.equal(registered.affine, as_registered[0]) and len(registered.applied_operations) == as_registered[1]
    # an integer image inverted through a linear record is interpolated: float32, not truncated to integers
    assert register.inverse((registered > 0.5 * registered.max()).to(torch.uint8)).dtype == torch.float32
    # a known matrix is applied without registering again
    assert torch.allclose(register(t1w, atlas["t1"], matrix=matrix), registered)


def test_dictionary_transform_registers_t1w_to_an_atlas_file_and_moves_t2w_too(atlas, subject, tmp_path):
    atlas_file = tmp_path / "atlas_t1.nii.gz"
    nib.save(nib.Nifti1Image(atlas["t1"][0].numpy(), atlas["t1"].affine.numpy()), atlas_file)
    preprocessing = Compose([RigidRegisterd(["t1w", "t2w"], fixed=str(atlas_file), mode=["linear", "cubic"])])
    data = preprocessing({"t1w": subject["t1w"], "t2w": subject["t2w"]})
    for key in ("t1w", "t2w"):
        assert data[key].shape == atlas["t1"].shape
        np.testing.assert_allclose(data[key].affine.numpy(), atlas["t1"].affine.numpy(), atol=1e-5)
    displacement, angle = transform_error(data["rigid_to_fixed"], subject["true"], atlas["corners"])
    assert displacement < 1.0 and angle < 1.0, (displacement, angle)
    # the T2w was moved with the T1w's matrix: as with the true one
    expected = resample_to_grid(subject["t2w"], atlas["t1"], subject["true"], mode="cubic")
    assert correlation_in_brain(data["t2w"], expected) > 0.98

    # an "oracle network" output in atlas space, written on the T2w's own grid through MONAI's Invertd
    data["pred"] = 2.0 * data["t2w"]
    inverted = Invertd("pred", preprocessing, orig_keys="t2w", nearest_interp=False)(data)["pred"]
    t2w = subject["t2w"]
    assert inverted.shape == t2w.shape and torch.allclose(inverted.affine, t2w.affine)
    assert correlation_in_brain(inverted, t2w) > 0.9
    brain = t2w > 0.2 * t2w.max()
    assert abs(float(inverted[brain].mean() / t2w[brain].mean()) - 2.0) < 0.1
    # Invertd's default turns the recorded interpolation into nearest neighbour (for labels)
    data["pred"] = (data["t2w"] > 0.5).to(torch.uint8)
    labels = Invertd("pred", preprocessing, orig_keys="t2w")(data)["pred"]
    assert labels.dtype == torch.uint8 and labels.shape == t2w.shape and set(labels.unique().tolist()) == {0, 1}


def test_resampling_is_exact_for_a_one_voxel_shift_and_keeps_labels():
    data = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (10.0, -5.0, 7.0)
    img = MetaTensor(data, affine=torch.as_tensor(affine))
    same = resample_to_grid(img, img)
    assert torch.allclose(same, data) and torch.equal(same.affine, img.affine)
    # reference point p reads the image at p + (2, 0, 0) mm: one voxel further along the first axis
    shifted = resample_to_grid(img, img, translation((2.0, 0.0, 0.0)), mode="cubic")
    assert torch.allclose(shifted[:, :-1], data[:, 1:], atol=1e-3) and torch.all(shifted[:, -1] == 0)
    labels = MetaTensor(torch.randint(0, 4, (1, 4, 5, 6)), affine=torch.as_tensor(affine))
    moved = resample_to_grid(labels, labels, translation((0.0, -3.0, 0.0)), mode="nearest")
    assert moved.dtype == labels.dtype and torch.equal(moved[:, :, 1:], labels[:, :, :-1])
    # an image whose affine is in LPS (meta["space"]) lands on the same RAS grid
    lps = MetaTensor(data, affine=torch.as_tensor(FLIP @ affine), meta={"space": "LPS"})
    assert torch.allclose(resample_to_grid(lps, ((4, 5, 6), affine)), data)


def test_images_that_do_not_overlap_raise_a_registration_error_naming_the_file(atlas, subject):
    far = image(atlas["t1"][0].numpy(), translation((1000.0, 0.0, 0.0)) @ atlas["t1"].affine.numpy(),
                "/data/sub-03_T1w.nii.gz")
    with pytest.raises(RegistrationError, match=r"/data/sub-03_T1w.nii.gz: rigid registration .* overlap"):
        rigid_register(atlas["t1"], far, initializer=None)
    blank = image(np.zeros(atlas["t1"].shape[1:]), atlas["t1"].affine.numpy(), "/data/sub-04_T1w.nii.gz")
    with pytest.raises(RegistrationError, match=r"/data/sub-04_T1w.nii.gz: the image is constant"):
        RigidRegister()(blank, atlas["t1"])
    with pytest.raises(RegistrationError, match="sub-04_T1w.nii.gz"):
        RigidRegisterd("t1w", fixed_key="atlas")({"t1w": blank, "atlas": atlas["t1"]})
    # the check after the optimisation: too little of the atlas's foreground in the moving field of view
    with pytest.raises(RegistrationError, match=r"sub-01_T2w.nii.gz: .* did not converge to an overlapping position"):
        rigid_register(atlas["t1"], subject["t2w"], min_overlap=1.01)
    with pytest.raises(ValueError, match="exactly one of fixed_key"):
        RigidRegisterd("t1w", fixed_key="atlas", fixed=atlas["t1"])


@pytest.mark.parametrize("mode,order", [("linear", 1), ("cubic", 3), ("nearest", 0)])
def test_monai_resampling_gives_the_hand_written_scipy_resampling_it_replaced(atlas, subject, mode, order):
    """Before / after: MONAI's SpatialResample of the image placed in the reference world gives what
    ``scipy.ndimage.affine_transform`` through the voxel map gave (the module's resampling before MONAI did it)."""
    from scipy import ndimage

    image, reference, matrix = subject["t2w"], atlas["t1"], subject["true"]
    voxel_map = np.linalg.inv(image.affine.numpy()) @ matrix @ reference.affine.numpy()
    expected = ndimage.affine_transform(image[0].numpy(), voxel_map[:3, :3], offset=voxel_map[:3, 3],
                                        output_shape=reference.shape[1:], order=order, mode="constant", cval=0.0,
                                        prefilter=order > 1)
    resampled = resample_to_grid(image, reference, matrix, mode=mode)
    np.testing.assert_allclose(resampled[0].numpy(), expected, atol=1e-5)
    # and back: the map to the native grid is the same resampling with the inverse matrix
    back = map_back(resampled, matrix, image, mode=mode)
    inverse_map = np.linalg.inv(reference.affine.numpy()) @ np.linalg.inv(matrix) @ image.affine.numpy()
    expected_back = ndimage.affine_transform(resampled[0].numpy(), inverse_map[:3, :3], offset=inverse_map[:3, 3],
                                             output_shape=image.shape[1:], order=order, mode="constant", cval=0.0,
                                             prefilter=order > 1)
    np.testing.assert_allclose(back[0].numpy(), expected_back, atol=1e-5)


def test_itk_receives_the_geometry_in_lps(atlas):
    """The image handed to ITK by MONAI's bridge has the RAS affine's geometry in ITK's LPS space, as the module
    built it by hand before."""
    import itk

    from shared.transforms.registration import _itk_image

    affine = translation((7.0, -3.0, 2.0)) @ rotation(2, 20.0) @ atlas["t1"].affine.numpy()
    volume = atlas["t1"][0].numpy()
    handed = _itk_image(volume, affine, "atlas")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(np.asarray(handed.GetSpacing()), spacing)
    np.testing.assert_allclose(np.asarray(handed.GetOrigin()), (FLIP @ affine)[:3, 3])
    np.testing.assert_allclose(itk.array_from_matrix(handed.GetDirection()), (FLIP @ affine)[:3, :3] / spacing,
                               atol=1e-12)
    assert np.array_equal(itk.array_from_image(handed), volume.T)  # ITK's index order (x fastest)
