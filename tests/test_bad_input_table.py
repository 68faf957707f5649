"""Issue 24's bad-input table (``tests/helpers/bad_inputs.py``), one inference run a bundle through its real config
and MONAI's CLI, with an oracle network: every input is reported once, each ``written`` one has its output and each
``failed`` one is failed with its file named and the reason on one line; the run exits non-zero and says how many
cases failed of how many inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import pytest

from conftest import (BABYAI, BRATS, HIPMRI, ISPY2, ORACLE_ENV, PATHOLOGY, TINY_BABYAI, TINY_BRATS, TINY_ISPY2,
                      overrides,
                      run_bundle)
from helpers.bad_inputs import IMAGE_VARIANTS, NIFTI_VARIANTS, Variant, nifti_case

pytestmark = pytest.mark.slow

# HipMRI takes 2D slices and 3D volumes of them: two slices stacked are a volume; a blank slice (the body's outside)
# is a valid input whose reconstruction is blank
HIPMRI_OUTCOMES = {"two_volumes": "written", "all_zero": "written", "constant": "written"}


def _check(result, report_file: Path, expected: dict[str, tuple[Variant, Path]], output: Callable) -> None:
    report = json.loads(report_file.read_text())
    failures = {f["case"]: f["error"] for f in report["failed"]}
    assert sorted([*report["succeeded"], *failures]) == sorted(expected), "every input reported once"
    wrong = []
    for case, (variant, bad_file) in expected.items():
        if variant.expected == "written":
            if case not in report["succeeded"] or not output(case).is_file():
                wrong.append(f"{case}: expected written, got {failures.get(case)}")
        elif case not in failures:
            wrong.append(f"{case}: expected failed, but it was written")
        else:
            error = failures[case]
            if str(bad_file) not in error or variant.reason not in error or "\n" in error:
                wrong.append(f"{case}: the failure does not name {bad_file} with {variant.reason!r}: {error}")
    assert not wrong, "\n".join(wrong)
    failed = sum(v.expected == "failed" for v, _ in expected.values())
    assert result.returncode != 0 and f"{failed} of {len(expected)} case(s) failed" in result.stdout


def _run(bundle: Path, args: dict[str, str], cwd: Path):
    return run_bundle(["run", "--config_file", str(bundle / "configs" / "inference.json"), *overrides(args)],
                      cwd=cwd, env=ORACLE_ENV, check=False)


def test_hipmri(hipmri_demo, tmp_path):
    good = hipmri_demo / "keras_slices_test" / "case_031_week_0_slice_3.nii.gz"
    folder = tmp_path / "in"
    folder.mkdir()
    expected = {}
    for variant in NIFTI_VARIANTS:
        outcome = HIPMRI_OUTCOMES.get(variant.name, variant.expected)
        variant = Variant(variant.name, outcome, variant.reason, variant.make)
        expected[variant.name] = (variant, variant.make(nib.load(good), folder / variant.name))
    assert len(expected) >= 30
    out = tmp_path / "out"
    result = _run(HIPMRI, {"dataset_dir": str(folder), "output_dir": str(out), "handlers": "[]", "checkpoint": "None",
                           "network_def": "{'_target_': 'oracle.IdentityReconstruction'}"}, tmp_path)
    _check(result, out / "inference_report.json", expected, lambda case: out / f"{case}_recon.nii.gz")


def test_brats(brats_demo_dir, tmp_path):
    source = brats_demo_dir / "BraTS20_Training_002"
    good = {m: source / f"BraTS20_Training_002_{m}.nii.gz" for m in ("flair", "t1ce", "t2")}
    expected = {}
    for variant in NIFTI_VARIANTS:
        files = nifti_case(variant, good, tmp_path / "in" / variant.name, {m: f"{variant.name}_{m}" for m in good})
        expected[variant.name] = (variant, files["flair"])
    out = tmp_path / "out"
    result = _run(BRATS, {"dataset_dir": str(tmp_path / "in"), "output_dir": str(out), "handlers": "[]",
                          "checkpoint": "None", "network_def": "{'_target_': 'oracle.FlairThreshold'}",
                          "pixdim": TINY_BRATS["pixdim"]}, tmp_path)
    _check(result, out / "inference_report.json", expected, lambda case: out / f"{case}_pred.nii.gz")


def test_ispy2(breast_demo, tmp_path):
    patient = sorted(p for p in breast_demo.iterdir() if p.is_dir())[0]
    good = {"t2": next(patient.glob("*_t2.nii*"))}
    expected = {}
    for variant in NIFTI_VARIANTS:
        files = nifti_case(variant, good, tmp_path / "in" / variant.name, {"t2": f"{variant.name}_t2"})
        expected[variant.name] = (variant, files["t2"])
    out = tmp_path / "out"
    result = _run(ISPY2, {"dataset_dir": str(tmp_path / "in"), "output_dir": str(out), "handlers": "[]",
                          "checkpoint": "None", "network_def": "{'_target_': 'oracle.BrightSlice'}",
                          "pixdim": TINY_ISPY2["pixdim"], "slice_size": TINY_ISPY2["slice_size"]}, tmp_path)
    _check(result, out / "inference_report.json", expected, lambda case: out / f"{case}_mask.nii.gz")


def test_babyai(babyai_demo, tmp_path):
    t1w = sorted(babyai_demo.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))[0]
    good = {"t2w": Path(str(t1w).replace("_T1w", "_T2w")), "t1w": t1w}
    expected, pairs = {}, []
    for variant in NIFTI_VARIANTS:
        files = nifti_case(variant, good, tmp_path / "in" / variant.name,
                           {"t2w": f"{variant.name}_T2w", "t1w": f"{variant.name}_T1w"})
        pairs.append({k: str(v) for k, v in files.items()})
        expected[f"{variant.name}_T2w"] = (variant, files["t2w"])
    out = tmp_path / "out"
    result = _run(BABYAI, {"datalist": json.dumps(pairs), "output_dir": str(out), "handlers": "[]",
                           "checkpoint": "None", "network_def": "{'_target_': 'oracle.T2wChannel'}",
                           **{k: TINY_BABYAI[k] for k in ("pixdim", "patch_size")}}, tmp_path)
    _check(result, out / "inference_report.json", expected, lambda case: out / f"{case}_sr.nii.gz")


def test_pathology(tmp_path):
    from helpers.bundle_scripts import bundle_module
    from shared.data.integrity import save_with_sha256
    from shared.networks.cyclegan import ResnetGenerator

    pixels = bundle_module(PATHOLOGY, "demo").source_ihc()[:96, :96]
    folder = tmp_path / "in"
    folder.mkdir()
    expected = {variant.name: (variant, variant.make(pixels, folder / variant.name)) for variant in IMAGE_VARIANTS}
    assert len(expected) >= 30
    models = tmp_path / "models"
    save_with_sha256(ResnetGenerator(base_channels=4, num_residual_blocks=1).state_dict(),
                     models / "generator_ihc_to_he.pt")
    save_with_sha256({}, models / "hovernet.pt")
    out = tmp_path / "out"
    result = _run(PATHOLOGY, {"dataset_dir": str(folder), "output_dir": str(out), "ckpt_dir": str(models),
                              "base_channels": "4", "num_residual_blocks": "1", "regions#progress": "False",
                              "network_def": "{'_target_': 'oracle.DarkNucleiHoVerNet'}"}, tmp_path)
    _check(result, out / "inference_report.json", expected, lambda case: out / f"{case}_nuclei.json")
