"""BraTS layout discovery, header checks, splits and the demo generator."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import BRATS
from helpers.bundle_scripts import bundle_module
from shared.data.errors import InvalidInputError
from shared.data.nifti_checks import check_nifti_group
from shared.data.splits import split_cases

layout = bundle_module(BRATS, "layout")
build_datalist, check_cases = layout.build_datalist, layout.check_cases
discover_cases, find_case_files = layout.discover_cases, layout.find_case_files

MODALITIES = ("flair", "t1", "t1ce", "t2")


def test_demo_layout_labels_and_geometry(brats_demo_dir):
    cases = sorted(p.name for p in brats_demo_dir.iterdir() if p.is_dir())
    assert cases == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    case = brats_demo_dir / cases[0]
    names = sorted(p.name for p in case.iterdir())
    assert names == sorted(f"{cases[0]}_{m}.nii.gz" for m in (*MODALITIES, "seg"))
    seg = nib.load(case / f"{cases[0]}_seg.nii.gz")
    flair = nib.load(case / f"{cases[0]}_flair.nii.gz")
    assert seg.shape == flair.shape == (80, 80, 52)
    assert nib.aff2axcodes(seg.affine) == ("L", "P", "S")  # BraTS-like LPS storage
    assert np.allclose(np.abs(np.diag(seg.affine))[:3], 3.0)
    labels = np.asarray(seg.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and {2, 4} <= set(np.unique(labels))
    data = np.asarray(flair.dataobj)
    assert data[labels == 0].mean() < data[labels == 2].mean()  # oedema is bright on FLAIR


def test_demo_is_deterministic(brats_demo_dir, tmp_path):
    ensure_brats_demo = bundle_module(BRATS, "demo").ensure_brats_demo
    again = ensure_brats_demo(str(tmp_path / "again"), num_cases=1, voxel_size=3.0)
    a = nib.load(brats_demo_dir / "BraTS20_Training_001" / "BraTS20_Training_001_t1ce.nii.gz").get_fdata()
    b = nib.load(f"{again}/BraTS20_Training_001/BraTS20_Training_001_t1ce.nii.gz").get_fdata()
    assert np.array_equal(a, b)


def test_case_355_misnamed_label_is_found(brats_demo_dir, tmp_path):
    case = tmp_path / "BraTS20_Training_355"
    shutil.copytree(brats_demo_dir / "BraTS20_Training_001", case)
    for p in case.iterdir():
        p.rename(case / p.name.replace("BraTS20_Training_001", "BraTS20_Training_355"))
    (case / "BraTS20_Training_355_seg.nii.gz").rename(case / "W39_1998.09.19_Segm.nii.gz")
    files = find_case_files(str(case))
    assert files["label"].endswith("W39_1998.09.19_Segm.nii.gz")
    assert files["flair"].endswith("_flair.nii.gz") and "t1" not in files  # T1 is not a network input
    assert discover_cases(str(case)) == [files]  # a single case folder works as dataset_dir too


def _copy_case(src, dst):
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.rename(dst / p.name.replace(src.name, dst.name))
    return dst


def test_bad_cases_are_rejected_with_the_file_and_problem(brats_demo_dir, tmp_path):
    good = _copy_case(brats_demo_dir / "BraTS20_Training_001", tmp_path / "good")
    missing = _copy_case(good, tmp_path / "missing")
    (missing / "missing_t1ce.nii.gz").unlink()
    text = _copy_case(good, tmp_path / "text")
    (text / "text_t2.nii.gz").write_text("not an image")
    shape = _copy_case(good, tmp_path / "shape")
    img = nib.load(shape / "shape_flair.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), img.affine), shape / "shape_flair.nii.gz")
    channels = _copy_case(good, tmp_path / "channels")
    nib.save(nib.Nifti1Image(np.zeros((*img.shape, 2), np.int16), img.affine), channels / "channels_t2.nii.gz")

    checked = check_cases(discover_cases(str(tmp_path)), require_label=True)
    assert [c["case"] for c in checked.valid] == ["good"]
    errors = {r["case"]: r["error"] for r in checked.rejected}
    assert "missing input(s) ['t1ce']" in errors["missing"]
    assert "text_t2.nii.gz: not a readable NIfTI file" in errors["text"]
    assert "shape_t1ce.nii.gz: shape (80, 80, 52) differs from flair" in errors["shape"]
    assert "channels_t2.nii.gz: expected one 3D volume (t2), found shape (80, 80, 52, 2)" in errors["channels"]


def test_nonexistent_paths_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="nope.nii.gz: file does not exist"):
        check_nifti_group({"flair": str(tmp_path / "nope.nii.gz")}, ["flair"])
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        discover_cases(str(tmp_path / "missing_dir"))
    with pytest.raises(FileNotFoundError, match="no BraTS cases"):
        discover_cases(str(tmp_path))


def test_split_is_deterministic_disjoint_and_by_case():
    cases = [{"case": f"c{i:02d}"} for i in range(20)]
    a = split_cases(cases, 0.15, 0.15, seed=0)
    b = split_cases(list(reversed(cases)), 0.15, 0.15, seed=0)
    assert a == b
    assert [len(a[k]) for k in ("training", "validation", "test")] == [14, 3, 3]
    names = [c["case"] for k in a for c in a[k]]
    assert sorted(names) == sorted(c["case"] for c in cases)
    assert split_cases(cases, 0.15, 0.15, seed=1) != a
    with pytest.raises(ValueError, match="too few"):
        split_cases(cases[:2], 0.3, 0.3)


def test_build_datalist_writes_json(brats_demo_dir, tmp_path):
    out = tmp_path / "dl.json"
    datalist = build_datalist(str(brats_demo_dir), str(out), 0.2, 0.2, seed=0)
    saved = json.loads(out.read_text())
    assert saved["training"] == datalist["training"] and len(saved["training"]) == 3
    assert set(saved["training"][0]) == {"case", "flair", "t1ce", "t2", "label"}
    assert saved["excluded"] == [] and saved["dataset_dir"] == str(brats_demo_dir)
