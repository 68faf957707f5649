"""The BraTS bundle's inference.json on a folder of DICOM studies, as a PACS exports them: the labels of each study
identical to the NIfTI path's on the same scan (axial, sagittal and oblique series), the DICOM SEG on its source
frames, and every bad study set aside, named, while the others are written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import BRATS, ORACLE_ENV, REPO, overrides, run_bundle
from test_dicom import _oblique_affine, _seg_on_grid
from shared.writers.dicom_series import write_mr_series

pytestmark = pytest.mark.slow
DESCRIPTIONS = {"flair": "AX T2 FLAIR", "t1": "AX T1 MPRAGE", "t1ce": "AX T1 MPRAGE POST GD", "t2": "AX T2 FSE"}


def _write_study(root: Path, name: str, volumes: dict, affine: np.ndarray, slice_axis: int = 2,
                 mixed: bool = False, descriptions: dict = DESCRIPTIONS) -> dict[str, list[str]]:
    study = {"PatientID": name, "PatientName": f"{name}^"}
    written = {}
    for number, (modality, volume) in enumerate(volumes.items(), start=1):
        folder = root / name if mixed else root / name / f"SE{number:03d}"
        written[modality] = write_mr_series(volume, affine, str(folder), descriptions[modality], study=study,
                                            slice_axis=slice_axis, series_number=number, file_prefix=f"S{number}_")
    return written


@pytest.fixture(scope="module")
def studies(brats_demo_dir, tmp_path_factory) -> dict[str, Path]:
    """DICOM studies from two demo cases, and the same scans as NIfTI cases."""
    root = tmp_path_factory.mktemp("dicom_studies")
    dicom, nifti = root / "dicom", root / "nifti"
    source = {}
    for case in ("BraTS20_Training_002", "BraTS20_Training_004"):
        images = {m: nib.load(brats_demo_dir / case / f"{case}_{m}.nii.gz") for m in DESCRIPTIONS}
        source[case] = ({m: np.asarray(i.dataobj) for m, i in images.items()}, images["flair"].affine)
    volumes, affine = source["BraTS20_Training_002"]
    oblique = _oblique_affine(0.3)
    oblique[:3, :3] = oblique[:3, :3] @ np.diag([3 / 0.9, 3 / 1.1, 3 / 2.5])  # 3 mm voxels, tilted
    scans = {"axial": (volumes, affine, 2, True), "sagittal": (volumes, affine, 0, False),
             "oblique": (source["BraTS20_Training_004"][0], oblique, 2, False)}
    for name, (vols, aff, axis, mixed) in scans.items():
        written = _write_study(dicom, name, vols, aff, slice_axis=axis, mixed=mixed)
        (nifti / name).mkdir(parents=True)
        for modality, volume in vols.items():
            nib.save(nib.Nifti1Image(volume, aff), nifti / name / f"{name}_{modality}.nii.gz")
        if name == "axial":  # a localizer whose description matches FLAIR is not a candidate
            localizer = write_mr_series(vols["flair"][..., 20:23], aff, str(dicom / name / "loc"), "3-plane loc FLAIR",
                                        study=pydicom.dcmread(written["flair"][0]), series_number=99)
            for path in localizer:
                ds = pydicom.dcmread(path)
                ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
                ds.save_as(path)
    _write_study(dicom, "two_flairs", {**volumes, "t2": volumes["flair"]}, affine,
                 descriptions={**DESCRIPTIONS, "t2": "FLAIR repeat"})
    gap = _write_study(dicom, "missing_slice", volumes, affine)
    os.remove(gap["t2"][len(gap["t2"]) // 2])
    enhanced = _write_study(dicom, "enhanced", volumes, affine)
    datasets = [pydicom.dcmread(p) for p in enhanced["flair"]]
    multiframe = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=datasets, series_instance_uid=datasets[0].SeriesInstanceUID, series_number=1,
        sop_instance_uid=hd.UID(), instance_number=1)
    multiframe.SeriesDescription = DESCRIPTIONS["flair"]
    folder = Path(enhanced["flair"][0]).parent
    shutil.rmtree(folder)
    folder.mkdir()
    multiframe.save_as(folder / "enhanced_flair.dcm")
    return {"dicom": dicom, "nifti": nifti}


def _infer(dataset_dir: Path, out: Path, cwd: Path, output_format: str, check: bool = True):
    args = {"dataset_dir": str(dataset_dir), "output_dir": str(out), "pixdim": "[3.0, 3.0, 3.0]",
            "network_def": "{'_target_': 'oracle.FlairThreshold'}", "handlers": "[]", "checkpoint": "None",
            "dataloader#num_workers": "0", "output_format": output_format}
    return run_bundle(["run", "--config_file", str(BRATS / "configs" / "inference.json"), *overrides(args)],
                      cwd=cwd, env=ORACLE_ENV, check=check)


def test_dicom_studies_give_the_nifti_labels_as_a_seg_on_the_source_frames(studies, tmp_path):
    result = _infer(studies["dicom"], tmp_path / "dicom_out", tmp_path, "both", check=False)
    assert result.returncode != 0 and "3 of 6 case(s) failed: ['enhanced', 'missing_slice', 'two_flairs']" in \
        result.stdout
    report = json.loads((tmp_path / "dicom_out" / "inference_report.json").read_text())
    assert report["succeeded"] == ["axial", "oblique", "sagittal"]
    failed = {f["case"]: f["error"] for f in report["failed"]}
    assert "DICOM study two_flairs" in failed["two_flairs"] and "2 series match 'flair'" in failed["two_flairs"]
    assert "'t2'" in failed["missing_slice"] and "a missing slice between positions" in failed["missing_slice"]
    assert "multi-frame (enhanced) object" in failed["enhanced"] and "'AX T2 FLAIR'" in failed["enhanced"]

    _infer(studies["nifti"], tmp_path / "nifti_out", tmp_path, "nifti")
    for name in ("axial", "sagittal", "oblique"):
        expected = nib.load(tmp_path / "nifti_out" / f"{name}_pred.nii.gz")
        labels = np.asarray(expected.dataobj)
        assert (labels == 2).sum() > 100, name  # the oracle found oedema to compare
        seg_path = tmp_path / "dicom_out" / f"{name}_seg.dcm"
        on_grid = _seg_on_grid(seg_path, expected.affine, labels.shape, {1: 1, 2: 2, 3: 4})
        assert np.array_equal(on_grid, labels), name
        seg = hd.seg.segread(seg_path)
        flair = sorted((studies["dicom"] / name).rglob("S1_*.dcm"))
        (referenced,) = seg.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == pydicom.dcmread(flair[0]).SeriesInstanceUID
        assert len(referenced.ReferencedInstanceSequence) == len(flair) == labels.shape[0 if name == "sagittal" else 2]
        algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        metadata = json.loads((BRATS / "configs" / "metadata.json").read_text())
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (metadata["name"], metadata["version"])
        # "both" also writes the NIfTI, on the DICOM series' own grid
        both = nib.load(tmp_path / "dicom_out" / f"{name}_pred.nii.gz")
        world = np.linalg.inv(both.affine) @ expected.affine
        assert np.allclose(np.abs(world[:3, :3]).sum(0), 1, atol=1e-4), name  # a permutation of the NIfTI's axes


def test_dicom_output_of_a_nifti_input_is_refused_by_case(studies, tmp_path):
    result = _infer(studies["nifti"], tmp_path / "out", tmp_path, "dicom", check=False)
    assert result.returncode != 0
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert all("not a DICOM file, so there is no source series" in f["error"] for f in report["failed"])


def test_ispy2_dicom_t2_series_give_the_nifti_masks_as_a_seg(breast_demo, tmp_path):
    """I-SPY2 inference on T2 series written axially (mixed with a T1 series in one folder) and sagitally, as the
    study's scans are: the SEG back on the NIfTI grid is the NIfTI path's mask; a study without a T2 is named."""
    ispy2 = REPO / "bundles" / "ispy2_breast_mri_vae_augmentation"
    source = nib.load(breast_demo / "ISPY2-100001" / "ISPY2-100001_t2.nii.gz")
    volume = np.asarray(source.dataobj)
    dicom, nifti = tmp_path / "dicom", tmp_path / "nifti"
    for name, axis in (("axial", 2), ("sagittal", 0)):
        _write_study(dicom, name, {"t2": volume, "t1": volume // 2}, source.affine, slice_axis=axis,
                     mixed=axis == 2, descriptions={"t2": "T2 FSE", "t1": "T1 AX"})
        (nifti / name).mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume, source.affine), nifti / name / f"{name}_t2.nii.gz")
    _write_study(dicom, "no_t2", {"t1": volume}, source.affine, descriptions={"t1": "T1 AX"})
    args = {"output_dir": str(tmp_path / "out"), "pixdim": "[1.4, 1.4, 3.0]", "slice_size": "[256, 160]",
            "network_def": "{'_target_': 'oracle.BrightSlice'}", "handlers": "[]", "checkpoint": "None"}
    config = str(ispy2 / "configs" / "inference.json")
    result = run_bundle(["run", "--config_file", config, *overrides({**args, "dataset_dir": str(dicom),
                                                                     "output_format": "dicom"})],
                        cwd=tmp_path, env=ORACLE_ENV, check=False)
    assert result.returncode != 0 and "1 of 3 case(s) failed: ['no_t2']" in result.stdout
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert "no MR series for 't2'" in report["failed"][0]["error"] and "'T1 AX'" in report["failed"][0]["error"]
    assert not list((tmp_path / "out").glob("*.nii.gz"))  # "dicom" writes the SEG only
    run_bundle(["run", "--config_file", config, *overrides({**args, "dataset_dir": str(nifti),
                                                            "output_dir": str(tmp_path / "nifti_out")})],
               cwd=tmp_path, env=ORACLE_ENV)
    for name in ("axial", "sagittal"):
        expected = nib.load(tmp_path / "nifti_out" / f"{name}_mask.nii.gz")
        labels = np.asarray(expected.dataobj)
        assert labels.sum() > 50, name
        on_grid = _seg_on_grid(tmp_path / "out" / f"{name}_seg.dcm", expected.affine, labels.shape, {1: 1})
        assert np.array_equal(on_grid, labels), name
        seg = hd.seg.segread(tmp_path / "out" / f"{name}_seg.dcm")
        (segment,) = seg.SegmentSequence
        assert segment.SegmentLabel == "breast tumour" and segment.AnatomicRegionSequence[0].CodeValue == "76752008"
