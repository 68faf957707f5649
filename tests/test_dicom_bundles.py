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


def _read_series(folder: Path) -> tuple[np.ndarray, np.ndarray, list]:
    from monai.transforms import LoadImage

    from shared.transforms.dicom_io import DicomSeriesReader

    files = sorted(str(p) for p in folder.iterdir())
    image = LoadImage(reader=DicomSeriesReader(), image_only=True)(files)
    return np.asarray(image), np.asarray(image.affine), [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def _assert_derived(series_dir: Path, source_file: str, expected: nib.Nifti1Image, description: str) -> None:
    """A derived series: in the source's study, a new series, on the expected NIfTI's grid and values (16 bits)."""
    values, affine, headers = _read_series(series_dir)
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    assert {h.StudyInstanceUID for h in headers} == {source.StudyInstanceUID}
    assert {h.PatientID for h in headers} == {source.PatientID}
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and headers[0].SeriesInstanceUID != source.SeriesInstanceUID
    assert headers[0].SeriesDescription == description and list(headers[0].ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert values.shape == expected.shape and np.allclose(affine, expected.affine, atol=1e-4)
    data = expected.get_fdata()
    assert np.abs(values - data).max() <= (data.max() - data.min()) / 65535 + 1e-3


def test_hipmri_reconstructs_a_dicom_series_into_a_derived_series(hipmri_demo, tmp_path):
    """HipMRI's inference.json on a study with one T2 series (an identity network): the NIfTI is the input volume
    and the derived series holds the same values on the same grid, in the source's study."""
    test = hipmri_demo / "keras_slices_test"
    volume = np.stack([np.asarray(nib.load(test / f"case_033_week_1_slice_{i}.nii.gz").dataobj) for i in range(6)], -1)
    affine = np.diag([1.6, 1.6, 2.5, 1.0])
    written = _write_study(tmp_path / "dicom", "pelvis", {"t2": volume, "t1": volume // 3}, affine,
                           descriptions={"t2": "T2 AX pelvis", "t1": "T1 AX"})
    args = {"dataset_dir": str(tmp_path / "dicom"), "output_dir": str(tmp_path / "out"), "handlers": "[]",
            "checkpoint": "None", "network_def": "{'_target_': 'oracle.IdentityReconstruction'}",
            "output_format": "both"}
    run_bundle(["run", "--config_file", str(REPO / "bundles" / "hipmri_pelvis_vqvae" / "configs" / "inference.json"),
                *overrides(args)], cwd=tmp_path, env=ORACLE_ENV)
    recon = nib.load(tmp_path / "out" / "pelvis_recon.nii.gz")
    assert np.allclose(recon.affine, affine, atol=1e-4)
    assert np.allclose(recon.get_fdata(), volume, atol=1e-2 * volume.std())
    metadata = json.loads((REPO / "bundles" / "hipmri_pelvis_vqvae" / "configs" / "metadata.json").read_text())
    _assert_derived(tmp_path / "out" / "pelvis_recon_dicom", written["t2"][0], recon,
                    f"{metadata['name']} {metadata['version']}: VQ-VAE reconstruction")


def test_babyai_super_resolves_dicom_t1w_and_t2w_series_into_a_derived_series(babyai_demo, tmp_path):
    """BABY-AI's inference.json on a study with an isotropic T1w and a thick-slice T2w series (a network that
    returns its T2w channel): the DICOM path's NIfTI is the NIfTI path's, and the derived series holds it."""
    from conftest import BABYAI, TINY_BABYAI

    anat = babyai_demo / "sub-D01" / "ses-1mo" / "anat"
    t1w = nib.load(next(anat.glob("*_T1w.nii.gz")))
    t2w = nib.load(next(anat.glob("*_T2w.nii.gz")))
    thick = np.asarray(t2w.dataobj)[..., ::2]
    thick_affine = t2w.affine @ np.diag([1.0, 1.0, 2.0, 1.0])
    nifti = tmp_path / "nifti" / "sub-X" / "ses-1" / "anat"
    nifti.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(t1w.dataobj), t1w.affine), nifti / "sub-X_ses-1_T1w.nii.gz")
    nib.save(nib.Nifti1Image(thick, thick_affine), nifti / "sub-X_ses-1_T2w.nii.gz")
    study = {"PatientID": "X", "PatientName": "X^"}
    write_mr_series(np.asarray(t1w.dataobj), t1w.affine, str(tmp_path / "dicom" / "sub-X" / "t1"), "T1w MPRAGE",
                    study=study, series_number=1)
    t2_files = write_mr_series(thick, thick_affine, str(tmp_path / "dicom" / "sub-X" / "t2"), "T2w TSE ax thick",
                               study=study, series_number=2, slice_axis=2)
    config = str(BABYAI / "configs" / "inference.json")
    common = {"pixdim": TINY_BABYAI["pixdim"], "patch_size": TINY_BABYAI["patch_size"], "handlers": "[]",
              "checkpoint": "None", "network_def": "{'_target_': 'oracle.T2wChannel'}"}
    run_bundle(["run", "--config_file", config, *overrides({**common, "dataset_dir": str(tmp_path / "nifti"),
                                                            "output_dir": str(tmp_path / "nifti_out")})],
               cwd=tmp_path, env=ORACLE_ENV)
    run_bundle(["run", "--config_file", config, *overrides({**common, "dataset_dir": str(tmp_path / "dicom"),
                                                            "output_dir": str(tmp_path / "out"),
                                                            "output_format": "both"})],
               cwd=tmp_path, env=ORACLE_ENV)
    expected = nib.load(tmp_path / "nifti_out" / "sub-X_ses-1_T2w_sr.nii.gz")
    from_dicom = nib.load(tmp_path / "out" / "sub-X_sr.nii.gz")  # named after the study, not a DICOM file
    assert np.allclose(from_dicom.affine, expected.affine, atol=1e-4)
    assert np.allclose(from_dicom.get_fdata(), expected.get_fdata(), atol=1e-3 * expected.get_fdata().max())
    metadata = json.loads((BABYAI / "configs" / "metadata.json").read_text())
    _assert_derived(tmp_path / "out" / "sub-X_sr_dicom", t2_files[0], from_dicom,
                    f"{metadata['name']} {metadata['version']}: isotropic T2w")
