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
from helpers.bad_inputs import NIFTI_VARIANTS
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


# --- damaged files: one message naming the file, the problem and what to do --------------------------------------
def _damaged_niftis(folder: Path, good: Path) -> dict[str, str]:
    """Damaged copies of the NIfTI ``good`` in ``folder``, made by the bad-input table's variants; return ``{stem: what
    the error must say}``."""
    variants = {v.name: v for v in NIFTI_VARIANTS}
    size = "x".join(["30000"] * nib.load(good).ndim)
    expected = {"truncated_gz": "its voxels cannot be read (EOFError",
                "zero_voxel_size": "a size that is zero, negative", "huge_header": f"its header declares {size} voxels "
                "of float32", "complex": "complex-valued voxels (complex64)"}
    for name in expected:
        variants[name].make(nib.load(good), folder / name)
    return expected


def test_damaged_hipmri_slices_are_named_and_the_good_one_written(hipmri_demo, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = Path(shutil.copy(hipmri_demo / "keras_slices_test" / "case_031_week_0_slice_3.nii.gz",
                            folder / "good.nii.gz"))
    expected = _damaged_niftis(folder, good)
    result = _run(HIPMRI, "inference.json", {**HIPMRI_ORACLE, "dataset_dir": str(folder),
                                              "output_dir": str(tmp_path / "out")}, tmp_path)
    assert result.returncode != 0 and "4 of 5 case(s) failed" in result.stdout
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert report["succeeded"] == ["good"] and (tmp_path / "out" / "good_recon.nii.gz").is_file()
    errors = {f["case"]: f["error"] for f in report["failed"]}
    for stem, message in expected.items():
        assert str(next(folder.glob(f"{stem}.nii*"))) in errors[stem] and message in errors[stem], errors[stem]
        assert "\n" not in errors[stem]


def _pair(folder: Path, t1w: np.ndarray, t2w: np.ndarray, affine: np.ndarray, t2w_affine=None) -> dict[str, str]:
    folder.mkdir()
    nib.save(nib.Nifti1Image(t1w, affine), folder / f"{folder.name}_T1w.nii.gz")
    nib.save(nib.Nifti1Image(t2w, affine if t2w_affine is None else t2w_affine), folder / f"{folder.name}_T2w.nii.gz")
    return {"t1w": str(folder / f"{folder.name}_T1w.nii.gz"), "t2w": str(folder / f"{folder.name}_T2w.nii.gz")}


def test_babyai_inference_fails_garbage_pairs_with_the_reason(babyai_demo, tmp_path):
    """A pair without overlap, a binary pair, a truncated T2w and a complex T1w each fail with the file and the
    reason (they once came out as blank "successes" or bare library errors); the good pair is written."""
    t1w_file = sorted(babyai_demo.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))[0]
    t1w, t2w = (nib.load(str(t1w_file).replace("_T1w", m)) for m in ("_T1w", "_T2w"))
    a, b, affine = np.asarray(t1w.dataobj, np.float32), np.asarray(t2w.dataobj, np.float32), t1w.affine
    shifted = affine.copy()
    shifted[:3, 3] += 1000.0
    pairs = [_pair(tmp_path / "good", a, b, affine), _pair(tmp_path / "apart", a, b, affine, shifted),
             _pair(tmp_path / "binary", (a > np.median(a)).astype(np.uint8), (b > np.median(b)).astype(np.uint8),
                   affine),
             _pair(tmp_path / "truncated", a, b, affine),
             _pair(tmp_path / "complex", a.astype(np.complex64), b, affine)]
    t2w_bytes = Path(pairs[3]["t2w"]).read_bytes()
    Path(pairs[3]["t2w"]).write_bytes(t2w_bytes[: len(t2w_bytes) // 2])
    result = _run(BABYAI, "inference.json", {**BABYAI_ORACLE, "datalist": json.dumps(pairs).replace('"', "'"),
                                              "output_dir": str(tmp_path / "out")}, tmp_path)
    assert result.returncode != 0 and "4 of 5 case(s) failed" in result.stdout
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert report["succeeded"] == ["good_T2w"] and (tmp_path / "out" / "good_T2w_sr.nii.gz").is_file()
    errors = {f["case"]: f["error"] for f in report["failed"]}
    assert f"{pairs[1]['t2w']} covers 0% of the space of {pairs[1]['t1w']}" in errors["apart_T2w"]
    assert f"{pairs[2]['t1w']}: only 2 distinct intensity value(s)" in errors["binary_T2w"]
    assert f"{pairs[3]['t2w']}: its voxels cannot be read" in errors["truncated_T2w"]
    assert f"{pairs[4]['t1w']}: complex-valued voxels" in errors["complex_T2w"]
    assert _written(tmp_path / "out") == ["good_T2w_sr.nii.gz", "inference_report.json"]


def test_weights_that_cannot_be_loaded_are_named_before_anything_runs(babyai_demo, hipmri_demo, tmp_path):
    from shared.data.integrity import save_with_sha256, sidecar_path
    from shared.networks.babyai_unet import babyai_unet

    models = tmp_path / "babyai_models"
    weights = models / "model.pt"
    save_with_sha256(babyai_unet("small").state_dict(), weights)
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    args = {**{k: TINY_BABYAI[k] for k in ("pixdim", "patch_size", "demo#num_subjects", "demo#voxel_size")},
            "demo#dir": str(babyai_demo), "ckpt_dir": str(models), "output_dir": str(tmp_path / "out")}
    result = _run(BABYAI, "inference.json", args, tmp_path)
    assert result.returncode != 0 and f"{weights}: its sha256 is not the" in result.stdout  # not a pickle error
    sidecar_path(weights).unlink()
    result = _run(BABYAI, "inference.json", args, tmp_path)
    assert result.returncode != 0 and f"{weights}: cannot read these weights" in result.stdout
    assert "copy or download it again" in result.stdout and _written(tmp_path / "out") == []

    hipmri_weights = tmp_path / "hipmri_models" / "model.pt"
    hipmri_weights.parent.mkdir()
    hipmri_weights.write_bytes(whole[: len(whole) // 2])  # no sha256 beside it: only loading can find it damaged
    result = _run(HIPMRI, "inference.json", {"dataset_dir": str(hipmri_demo / "keras_slices_test"),
                                              "ckpt_dir": str(hipmri_weights.parent),
                                              "output_dir": str(tmp_path / "hipmri_out")}, tmp_path)
    assert result.returncode != 0 and f"WeightsLoadError: {hipmri_weights}: cannot load these weights" in result.stdout
    assert "case(s) done" not in result.stdout and not list((tmp_path / "hipmri_out").glob("*_recon.nii.gz"))


# --- no reader falls back on another; datalists hold absolute paths ----------------------------------------------
def test_a_broken_png_is_named_without_trying_other_readers(tmp_path, monkeypatch):
    """MONAI's LoadImaged falls back on ITKReader, which changes the working directory while caching threads open
    relative paths; StrictLoadImaged reads with the named reader only."""
    import monai.data

    from shared.transforms.io import StrictLoadImaged, UnreadableImageError

    for name in ("ITKReader", "NumpyReader", "NibabelReader"):
        monkeypatch.setattr(getattr(monai.data, name), "read", lambda *a, **k: pytest.fail("another reader was tried"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot a PNG after all")
    good = _tile(tmp_path / "good.png")
    monkeypatch.chdir(tmp_path)
    load = StrictLoadImaged(["A"], reader="PILReader", image_only=True)
    assert load({"A": "good.png"})["A"].shape == (48, 48, 3)
    with pytest.raises(UnreadableImageError, match=rf"{broken.name}: not a readable image file for PILReader"):
        load({"A": "broken.png"})
    assert Path.cwd() == tmp_path and good.is_file()


def test_datasets_and_datalists_hold_absolute_paths(tmp_path, monkeypatch):
    from shared.data.screened_datasets import CaseDataset
    from shared.data.splits import write_datalist

    _tile(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    assert CaseDataset([{"image": "a.png"}]).data == [{"image": str(tmp_path / "a.png"), "case": "a"}]
    write_datalist({"training": [{"image": "a.png", "case": "a.png"}], "seed": 0}, "datalist.json")
    written = json.loads((tmp_path / "datalist.json").read_text())
    assert written == {"training": [{"image": str(tmp_path / "a.png"), "case": "a.png"}], "seed": 0}


# --- one odd training case is set aside, not fatal ----------------------------------------------------------------
def test_babyai_training_sets_aside_a_session_smaller_than_its_patches(babyai_demo, tmp_path):
    from helpers.bundle_scripts import bundle_module

    data = shutil.copytree(babyai_demo, tmp_path / "data")
    split = bundle_module(BABYAI, "layout").build_babyai_datalist(str(data), str(tmp_path / "probe.json"))
    small = split["training"][0]
    for key in ("t1w", "t2w"):
        image = nib.load(small[key])
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[20:32, 20:32, 20:32], image.affine), small[key])
    args = {**TINY_BABYAI, "dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval"), "train#trainer#max_epochs": "1"}
    result = run_bundle(["run", "training", "--config_file", str(BABYAI / "configs" / "train.json"),
                         *overrides(args)], cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    excluded = json.loads((tmp_path / "eval" / "datalist.json").read_text())["excluded"]
    reasons = [e["error"] for e in excluded if e["case"] == small["case"]]
    assert len(reasons) == 1 and "smaller than the (20, 20, 20) patches" in reasons[0], excluded
    assert small["t1w"] in reasons[0] and (tmp_path / "models" / "model.pt").is_file()


def test_cyclegan_pairs_without_a_partner_are_set_aside_with_the_reason(tmp_path):
    from helpers.bundle_scripts import bundle_module

    demo, layout = bundle_module(PATHOLOGY, "demo"), bundle_module(PATHOLOGY, "layout")
    root = Path(demo.ensure_bci_demo(str(tmp_path / "BCI"), image_size=64, num_train=5, num_test=2))
    lonely = sorted((root / "IHC" / "train").glob("*.png"))[0]
    (root / "HE" / "train" / lonely.name).unlink()
    split = layout.build_bci_datalist(str(root), str(tmp_path / "datalist.json"))
    assert sum(len(split[k]) for k in ("training", "validation")) == 4 and len(split["test"]) == 2
    excluded = json.loads((tmp_path / "datalist.json").read_text())["excluded"]
    assert excluded == [{"case": lonely.stem, "split": "train",
                         "error": f"{lonely}: no partner of the same name in {root / 'HE' / 'train'}."}]
