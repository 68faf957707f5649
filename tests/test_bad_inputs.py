"""Issue 24, second reliability round, through the bundles' real inference configs and MONAI's CLI: inputs that
would write outputs under one name stop the run before its first case, naming them; a case name cannot place an
output outside the output folder; distinct inputs get distinct outputs, and the report counts every input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import BABYAI, HIPMRI, ORACLE_ENV, PATHOLOGY, TINY_BABYAI, overrides, run_bundle
from shared.data.case_names import checked_case_names
from shared.writers.naming import case_name_formatter, output_path

HIPMRI_ORACLE = {"handlers": "[]", "checkpoint": "None", "network_def": "{'_target_': 'oracle.IdentityReconstruction'}"}
PATHOLOGY_ORACLE = {"handlers": "[]", "network_def": "{'_target_': 'oracle.DarkNucleiHoVerNet'}", "stain": "he",
                    "regions#progress": "False"}
BABYAI_ORACLE = {"handlers": "[]", "checkpoint": "None", "network_def": "{'_target_': 'oracle.T2wChannel'}",
                 **{k: TINY_BABYAI[k] for k in ("pixdim", "patch_size")}}


def _run(bundle: Path, config: str, args: dict[str, str], cwd: Path):
    return run_bundle(["run", "--config_file", str(bundle / "configs" / config), *overrides(args)], cwd=cwd,
                      env=ORACLE_ENV, check=False)


def _slice(path: Path, value: float = 1.0) -> Path:
    pixels = np.zeros((32, 16), np.float32)
    pixels[8:24, 4:12] = value
    nib.save(nib.Nifti1Image(pixels, np.diag([1.5, 1.5, 1.0, 1.0])), path)
    return path


def _tile(path: Path) -> Path:
    pixels = np.full((48, 48, 3), 230, np.uint8)
    pixels[10:20, 10:20] = (60, 40, 130)
    if path.suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, pixels, photometric="rgb")
    else:
        Image.fromarray(pixels).save(path)
    return path


def _written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- outputs with the same name ----------------------------------------------------------------------------------
def test_case_names_are_checked_before_a_run():
    named = checked_case_names([{"image": "/a/x_t1.nii.gz"}, {"image": "/a/y.nii.gz", "case": "y"}])
    assert [n["case"] for n in named] == ["x", "y"]
    with pytest.raises(ValueError, match=r"2 inputs share a case name.*'x'.*/a/x_t1.nii.gz.*/b/x.nii.gz"):
        checked_case_names([{"image": "/a/x_t1.nii.gz"}, {"image": "/b/x.nii.gz"}])
    for bad in ("../elsewhere/evil", "/tmp/evil", "a/b", "..", "a\\b"):
        with pytest.raises(ValueError, match="cannot name output files"):
            checked_case_names([{"image": "/a/x.png", "case": bad}])


def test_writers_keep_every_output_inside_the_output_folder(tmp_path):
    assert output_path(str(tmp_path), "a_pred.nii.gz") == str((tmp_path / "a_pred.nii.gz").resolve())
    for bad in ("../a.png", "/tmp/a.png", "x/../../a.png"):
        with pytest.raises(ValueError, match="outside the output folder"):
            output_path(str(tmp_path), bad)
    assert case_name_formatter({"case": "p1", "filename_or_obj": "/d/p1_t1.nii.gz"}, None)["subject"] == "p1"
    with pytest.raises(ValueError, match="cannot name output files"):
        case_name_formatter({"case": "../p1", "filename_or_obj": "/d/p1_t1.nii.gz"}, None)


def test_hipmri_inputs_of_one_name_stop_the_run_and_distinct_ones_are_all_written(tmp_path):
    """``coll.nii`` and ``coll.nii.gz`` would both write ``coll_recon``: refused before any case. ``x_t1`` and
    ``x_t2`` (names the MRI suffix cleanup once merged) get one output each, and the report counts both."""
    clash = tmp_path / "clash"
    clash.mkdir()
    _slice(clash / "coll.nii.gz")
    nib.save(nib.load(clash / "coll.nii.gz"), clash / "coll.nii")
    result = _run(HIPMRI, "inference.json", {**HIPMRI_ORACLE, "dataset_dir": str(clash),
                                              "output_dir": str(tmp_path / "clash_out")}, tmp_path)
    assert result.returncode != 0
    assert "share a case name" in result.stdout and str(clash / "coll.nii") in result.stdout
    assert str(clash / "coll.nii.gz") in result.stdout and "case(s) done" not in result.stdout
    assert _written(tmp_path / "clash_out") == []

    distinct = tmp_path / "distinct"
    distinct.mkdir()
    _slice(distinct / "x_t1.nii.gz", 1.0)
    _slice(distinct / "x_t2.nii.gz", 2.0)
    result = _run(HIPMRI, "inference.json", {**HIPMRI_ORACLE, "dataset_dir": str(distinct),
                                              "output_dir": str(tmp_path / "out")}, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 case(s) done, 0 failed" in result.stdout
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert sorted(report["succeeded"]) == ["x_t1", "x_t2"]
    for name, value in (("x_t1", 1.0), ("x_t2", 2.0)):
        assert nib.load(tmp_path / "out" / f"{name}_recon.nii.gz").get_fdata().max() == pytest.approx(value, rel=1e-2)


def test_pathology_inputs_of_one_name_stop_the_run(tmp_path):
    """``a.png`` beside ``a.tif`` is named ``a_png``, as is ``a_png.png``: refused before any case, both named."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    for name in ("a.png", "a.tif", "a_png.png"):
        _tile(folder / name)
    result = _run(PATHOLOGY, "inference.json", {**PATHOLOGY_ORACLE, "dataset_dir": str(folder),
                                                 "output_dir": str(tmp_path / "out")}, tmp_path)
    assert result.returncode != 0 and "share a case name" in result.stdout
    assert str(folder / "a.png") in result.stdout and str(folder / "a_png.png") in result.stdout
    assert _written(tmp_path / "out") == []


def test_babyai_pairs_whose_t2w_files_share_a_name_stop_the_run(babyai_demo, tmp_path):
    """Two ``--datalist`` pairs from different folders whose T2w files share a name would write one output."""
    t2w = sorted(babyai_demo.glob("sub-*/ses-*/anat/*_T2w.nii.gz"))[:2]
    pairs = []
    for folder, source in zip(("first", "second"), t2w):
        (tmp_path / folder).mkdir()
        pairs.append({"t1w": str(shutil.copy(str(source).replace("_T2w", "_T1w"), tmp_path / folder / "s_T1w.nii.gz")),
                      "t2w": str(shutil.copy(source, tmp_path / folder / "s_T2w.nii.gz"))})
    result = _run(BABYAI, "inference.json", {**BABYAI_ORACLE, "datalist": json.dumps(pairs).replace('"', "'"),
                                              "output_dir": str(tmp_path / "out")}, tmp_path)
    assert result.returncode != 0 and "share a case name" in result.stdout
    assert all(p["t2w"] in result.stdout for p in pairs) and "case(s) done" not in result.stdout
    assert _written(tmp_path / "out") == []


# --- a case name cannot leave the output folder -------------------------------------------------------------------
@pytest.mark.parametrize("case", ["../elsewhere/evil", "/abs/evil"])
def test_a_case_name_with_a_path_writes_nothing_anywhere(tmp_path, case):
    tile = _tile(tmp_path / "tile.png")
    (tmp_path / "run").mkdir()
    datalist = json.dumps([{"image": str(tile), "case": case.replace("/abs", str(tmp_path))}]).replace('"', "'")
    result = _run(PATHOLOGY, "inference.json", {**PATHOLOGY_ORACLE, "datalist": datalist,
                                                 "output_dir": str(tmp_path / "run" / "out")}, tmp_path / "run")
    assert result.returncode != 0 and "cannot name output files" in result.stdout
    assert _written(tmp_path / "run") == [] and not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tile.png"]
    nifti = _slice(tmp_path / "slice.nii.gz")
    result = _run(HIPMRI, "inference.json",
                  {**HIPMRI_ORACLE, "datalist": datalist.replace(str(tile), str(nifti)),
                   "output_dir": str(tmp_path / "run" / "out")}, tmp_path / "run")
    assert result.returncode != 0 and "cannot name output files" in result.stdout
    assert _written(tmp_path / "run") == [] and not (tmp_path / "elsewhere").exists()
