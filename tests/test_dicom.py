"""DICOM in and out: series read by position into the NIfTI path's array and affine, studies found and their series
chosen by rules, every refusal named, a DICOM SEG on its source frames, a derived MR series in its source study."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.fileset import FileSet
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from shared.data.dicom_studies import find_dicom_studies, is_dicom_folder
from shared.transforms.dicom_io import DicomSeriesReader, series_problem
from shared.transforms.io import CheckedNibabelReader, StrictLoadImage, UnreadableImageError
from shared.writers.dicom_seg import SaveDicomSegd
from shared.writers.dicom_series import SaveDicomSeriesd, write_mr_series

RULES = {"flair": "flair", "t2": "^(?!.*flair).*t2"}


def _oblique_affine(angle: float = 0.35) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = [-12.0, 30.5, 7.25]
    return affine


def _volume(shape=(18, 14, 9), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 900, shape).astype(np.int16)


def _world_equal(a: MetaTensor, b: MetaTensor) -> bool:
    """Same values at the same world points: ``b`` resampled onto ``a``'s voxels by the two affines (a permutation
    and flips when the grids coincide)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in a.shape[-3:]], indexing="ij")).reshape(3, -1)
    world = np.asarray(a.affine, float) @ np.vstack([index, np.ones(index.shape[1])])
    in_b = np.rint(np.linalg.inv(np.asarray(b.affine, float)) @ world)[:3].astype(int)
    assert np.abs(np.linalg.inv(np.asarray(b.affine, float)) @ world - np.rint(
        np.linalg.inv(np.asarray(b.affine, float)) @ world)).max() < 1e-3, "grids do not coincide"
    values_b = np.asarray(b)[..., in_b[0], in_b[1], in_b[2]]
    return np.array_equal(np.asarray(a).reshape(*a.shape[:-3], -1), values_b)


@pytest.mark.parametrize("slice_axis", [2, 0, 1])
def test_a_series_reads_back_as_the_volume_it_was_written_from(tmp_path, slice_axis):
    """Axial, sagittal and coronal slicing of an oblique volume, files shuffled and numbered against position: the
    reader stacks by position and gives the NIfTI reader's values at the same world points."""
    volume, affine = _volume(), _oblique_affine()
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "v.nii.gz")
    files = write_mr_series(volume, affine, str(tmp_path / "series"), "T2", slice_axis=slice_axis)
    for i, path in enumerate(reversed(files)):  # instance numbers opposite to positions
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = i + 1
        ds.save_as(path)
    random.Random(0).shuffle(files)
    dicom = LoadImage(reader=DicomSeriesReader(), image_only=True)(files)
    nifti = LoadImage(reader=CheckedNibabelReader(), image_only=True)(str(tmp_path / "v.nii.gz"))
    assert _world_equal(nifti, dicom)
    if slice_axis == 2:
        assert np.array_equal(np.asarray(dicom), volume) and np.allclose(dicom.affine, affine, atol=1e-6)


def test_strict_loader_picks_the_reader_by_format(tmp_path):
    volume, affine = _volume(), np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "v.nii.gz")
    files = write_mr_series(volume, affine, str(tmp_path / "s"), "T2")
    load = StrictLoadImage([CheckedNibabelReader, DicomSeriesReader], image_only=True)
    assert np.array_equal(np.asarray(load(str(tmp_path / "v.nii.gz"))), np.asarray(load(files)))
    assert np.array_equal(np.asarray(load(str(tmp_path / "s"))), volume)  # a folder holding one series
    with open(files[3], "r+b") as f:  # a file with truncated pixels is named
        f.truncate(os.path.getsize(files[3]) - 100)
    with pytest.raises(UnreadableImageError, match=f"{os.path.basename(files[3])}: its pixels cannot be read"):
        load(files)
    with open(files[5], "r+b") as f:  # one truncated inside its header too
        f.truncate(os.path.getsize(files[5]) // 2)
    with pytest.raises(UnreadableImageError, match=f"have no ImageOrientationPatient .e.g. .*{os.path.basename(files[5])}"):
        load(files)


def test_series_values_are_stored_exactly_or_scaled_never_wrapped(tmp_path):
    """Integers that fit 16 bits are stored exactly; -100..40000 does not fit int16 and is scaled, not wrapped."""
    wide = np.zeros((6, 5, 3), np.int32)
    wide[0, 0, 0], wide[1, 1, 1] = -100, 40000
    files = write_mr_series(wide, np.eye(4), str(tmp_path / "wide"), "T2")
    back = np.asarray(LoadImage(reader=DicomSeriesReader(), image_only=True)(files))
    assert np.allclose(back, wide, atol=40100 / 65535 + 1e-3)
    with pytest.raises(ValueError, match="do not fit 16-bit integers"):
        write_mr_series(wide, np.eye(4), str(tmp_path / "refused"), "T2", integer=True)


def test_files_of_two_series_are_not_stacked_into_one_volume(tmp_path):
    first = write_mr_series(_volume(), np.diag([1.0, 1.0, 2.0, 1.0]), str(tmp_path / "a"), "T2")
    shifted = np.diag([1.0, 1.0, 2.0, 1.0])
    shifted[2, 3] = 18.0  # the next 9 slices, as a second series
    second = write_mr_series(_volume(seed=1), shifted, str(tmp_path / "b"), "T2")
    with pytest.raises(UnreadableImageError, match="belong to 2 series"):
        StrictLoadImage(DicomSeriesReader, image_only=True)(first + second)


def _headers(files):
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def test_series_problems_are_named(tmp_path):
    files = write_mr_series(_volume(), np.diag([1.0, 1.0, 2.0, 1.0]), str(tmp_path / "s"), "AX T2")
    assert series_problem(_headers(files), "s") is None
    assert "missing slice between positions 6.000 and 10.000" in series_problem(_headers(files[:4] + files[5:]), "s")
    assert "'AX T2'" in series_problem(_headers(files[:4] + files[5:]), "s")
    tilted = _headers(files)
    tilted[2].ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    assert "mixes 2 slice orientations" in series_problem(tilted, "s")
    spacing = _headers(files)
    spacing[1].PixelSpacing = [0.5, 0.5]
    assert "mixes pixel spacings" in series_problem(spacing, "s")
    echoes = _headers(files) + _headers(files[:1])
    assert "two images at one slice position" in series_problem(echoes, "s")
    localizer = _headers(files)
    localizer[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert "is a localizer" in series_problem(localizer, "s")
    assert "single slice" in series_problem(_headers(files[:1]), "s")
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=[pydicom.dcmread(f) for f in files], series_instance_uid=hd.UID(), series_number=5,
        sop_instance_uid=hd.UID(), instance_number=1)
    assert "multi-frame (enhanced) object" in series_problem([enhanced], "s")


def _study(root: Path, name: str, series: dict, mixed: bool = False, affine=None, study=None) -> dict:
    """Write ``series`` (description -> volume) as one study; return description -> files."""
    study = study if study is not None else {"PatientID": name}
    affine = np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine
    written = {}
    for number, (description, volume) in enumerate(series.items(), start=1):
        folder = root / name if mixed else root / name / f"SE{number}"
        written[description] = write_mr_series(volume, affine, str(folder), description, study=study,
                                               series_number=number, file_prefix=f"S{number}_")
    return written


def test_studies_are_found_and_their_series_chosen_by_rules(tmp_path):
    flair, t2 = _volume(seed=1), _volume(seed=2)
    good = _study(tmp_path, "good", {"AX T2 FLAIR": flair, "AX T2 FSE": t2, "T1 SAG": _volume(seed=3)}, mixed=True)
    _study(tmp_path, "two_flairs", {"AX FLAIR": flair, "FLAIR repeat": flair, "T2": t2})
    _study(tmp_path, "no_t2", {"AX FLAIR": flair})
    grid = _study(tmp_path, "grids", {"AX FLAIR": flair})
    grid_study = pydicom.dcmread(grid["AX FLAIR"][0])
    write_mr_series(t2, np.diag([1.0, 1.0, 2.0, 1.0]) @ np.array([[1, 0, 0, 3.0], [0, 1, 0, 0], [0, 0, 1, 0],
                                                                     [0, 0, 0, 1]]),
                    str(tmp_path / "grids" / "SE2"), "AX T2", study=grid_study, series_number=2)
    gap = _study(tmp_path, "gap", {"AX FLAIR": flair, "AX T2": t2})
    os.remove(gap["AX T2"][4])
    loc = _study(tmp_path, "localizer_only", {"FLAIR loc": flair[..., :3], "T2": t2})
    for path in loc["FLAIR loc"]:
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(path)
    single = _study(tmp_path, "single_valued_localizer", {"AX FLAIR loc": flair[..., :3], "T2": t2})
    for path in single["AX FLAIR loc"]:
        ds = pydicom.dcmread(path)
        ds.ImageType = "LOCALIZER"  # one value, not a list
        ds.save_as(path)
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert is_dicom_folder(str(tmp_path))

    cases = {c["case"]: c for c in find_dicom_studies(str(tmp_path), RULES)}
    assert set(cases) == {"good", "two_flairs", "no_t2", "grids", "gap", "localizer_only", "single_valued_localizer"}
    assert "other than a localizer" in cases["single_valued_localizer"]["error"]
    assert cases["good"]["flair"] == good["AX T2 FLAIR"] and cases["good"]["t2"] == good["AX T2 FSE"]
    assert "error" not in cases["good"]
    assert "DICOM study two_flairs" in cases["two_flairs"]["error"]
    assert "2 series match 'flair'" in cases["two_flairs"]["error"] and "'FLAIR repeat'" in cases["two_flairs"]["error"]
    assert "no MR series for 't2'" in cases["no_t2"]["error"]
    assert "'t2' (18x14x9) is not on the grid of 'flair'" in cases["grids"]["error"]
    assert "'t2'" in cases["gap"]["error"] and "missing slice" in cases["gap"]["error"]
    assert "other than a localizer" in cases["localizer_only"]["error"]
    assert all("flair" not in c for c in cases.values() if "error" in c)
    # two studies in one folder with the same Study ID are told apart by a counter
    for patient in ("p1", "p2"):
        identity = {"PatientID": patient, "StudyID": "1"}
        for number, (description, volume) in enumerate({"AX FLAIR": flair, "AX T2": t2}.items(), start=1):
            write_mr_series(volume, np.diag([1.0, 1.0, 2.0, 1.0]), str(tmp_path / "shared_folder" / "studies"),
                            description, study=identity, series_number=number, file_prefix=f"{patient}_S{number}_")
    names = sorted(c["case"] for c in find_dicom_studies(str(tmp_path / "shared_folder"), RULES))
    assert names == ["studies_1", "studies_2"]
    # one study's own folder (its series in sub-folders) is named after that folder, not after a series folder
    (single,) = find_dicom_studies(str(tmp_path / "gap"), {"flair": "flair"})
    assert single["case"] == "gap" and single["flair"] == gap["AX FLAIR"]


def test_a_dicomdir_export_is_found(tmp_path):
    """A PACS-style export: DICOMDIR at the root, files under DICOM/ with no suffix."""
    written = _study(tmp_path / "export", "DICOM", {"AX FLAIR": _volume(seed=1), "AX T2": _volume(seed=2)})
    fileset = FileSet()
    for files in written.values():
        for path in files:
            fileset.add(path)
    fileset.write(str(tmp_path / "dicomdir_export"))
    assert (tmp_path / "dicomdir_export" / "DICOMDIR").is_file()
    (case,) = find_dicom_studies(str(tmp_path / "dicomdir_export"), RULES)
    assert "error" not in case and len(case["flair"]) == len(case["t2"]) == 9
    volume = LoadImage(reader=DicomSeriesReader(), image_only=True)(case["t2"])
    assert np.array_equal(np.asarray(volume), _volume(seed=2))


def _label_map(shape, seed=0) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    rng = np.random.default_rng(seed)
    labels[3:9, 4:10, 2:6] = 2
    labels[5:7, 5:8, 3:5] = 4
    labels[rng.random(shape) > 0.97] = 1
    return labels


def _seg_on_grid(seg_path: Path, affine: np.ndarray, shape, values: dict[int, int]) -> np.ndarray:
    """A SEG's frames put back on a grid, from the SEG's own plane positions and orientation."""
    seg = pydicom.dcmread(seg_path)
    shared_groups = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared_groups.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    spacing = np.asarray(shared_groups.PixelMeasuresSequence[0].PixelSpacing, float)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    to_voxel = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)
    out = np.zeros(shape, np.uint8)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        identification = getattr(group, "SegmentIdentificationSequence", None) or \
            shared_groups.SegmentIdentificationSequence  # shared when there is one segment
        number = int(identification[0].ReferencedSegmentNumber)
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        r, c = np.nonzero(frame)
        world = position[:, None] + np.outer(orientation[3:], r * spacing[0]) + np.outer(orientation[:3], c * spacing[1])
        voxel = np.rint(to_voxel @ np.vstack([world, np.ones(r.size)]))[:3].astype(int)
        out[voxel[0], voxel[1], voxel[2]] = values[number]
    return out


@pytest.mark.parametrize("slice_axis", [2, 0])
def test_a_seg_lies_on_its_source_frames_and_references_them(tmp_path, slice_axis):
    volume, affine = _volume(), _oblique_affine()
    files = write_mr_series(volume, affine, str(tmp_path / "case" / "flair"), "AX FLAIR", slice_axis=slice_axis)
    image = LoadImage(reader=DicomSeriesReader(), image_only=True)(files)
    labels_nifti_grid = _label_map(volume.shape)
    # the label map on the reader's grid, as Invertd leaves it: the NIfTI-grid labels at the same world points
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij")).reshape(3, -1)
    voxel = np.rint(np.linalg.inv(affine) @ np.asarray(image.affine) @ np.vstack([index, np.ones(index.shape[1])]))
    voxel = voxel[:3].astype(int)
    on_reader_grid = labels_nifti_grid[voxel[0], voxel[1], voxel[2]].reshape(image.shape)
    pred = MetaTensor(torch.as_tensor(on_reader_grid)[None], affine=image.affine, meta={**image.meta, "case": "c1"})
    segments = [{"label": "necrosis", "type": "Necrosis"}, {"label": "oedema", "type": "Edema"},
                {"label": "enhancing tumour", "type": "Neoplasm", "region": "Brain"}]
    writer = SaveDicomSegd("pred", str(tmp_path / "out"), [1, 2, 4], segments, algorithm="BraTS test", version="9.9")
    writer({"pred": pred, "image": image})
    seg_path = tmp_path / "out" / "c1_seg.dcm"
    assert _seg_on_grid(seg_path, affine, volume.shape, {1: 1, 2: 2, 3: 4}).tolist() == labels_nifti_grid.tolist()

    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.PatientID == sources[0].PatientID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources}
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["necrosis", "oedema", "enhancing tumour"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == [
        "6574001", "79654002", "108369006"]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("BraTS test", "9.9")
    # highdicom's own reading, frame by source instance, agrees
    by_instance = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], combine_segments=True)
    assert by_instance.shape == (len(sources), sources[0].Rows, sources[0].Columns)
    assert set(np.unique(by_instance)) == {0, 1, 2, 3}


def test_dicom_writers_refuse_a_nifti_input(tmp_path):
    pred = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": str(tmp_path / "x.nii.gz"), "case": "x"})
    with pytest.raises(ValueError, match="x.nii.gz: not a DICOM file"):
        SaveDicomSegd("pred", str(tmp_path), [1], [{"label": "t", "type": "Neoplasm"}], algorithm="a",
                      version="1")({"pred": pred})
    with pytest.raises(ValueError, match="x.nii.gz: not a DICOM file"):
        SaveDicomSeriesd("pred", str(tmp_path), "SR")({"pred": pred})


def test_a_derived_series_joins_its_source_study(tmp_path):
    volume, affine = _volume(), _oblique_affine()
    files = write_mr_series(volume, affine, str(tmp_path / "src"), "AX T2", study={"PatientID": "p7"})
    image = LoadImage(reader=DicomSeriesReader(), image_only=True)(files)
    output = image.float()[None] * 0.5 + 0.25  # a float output on the same grid
    output.meta["case"] = "p7"
    SaveDicomSeriesd("sr", str(tmp_path / "out"), "BABY-AI 1.0: super-resolved T2w")({"sr": output, "image": image})
    written = sorted((tmp_path / "out" / "p7_dicom").iterdir())
    headers = _headers(written)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert {h.StudyInstanceUID for h in headers} == {source.StudyInstanceUID}
    assert {h.PatientID for h in headers} == {"p7"} and {h.FrameOfReferenceUID for h in headers} == {
        source.FrameOfReferenceUID}
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and headers[0].SeriesInstanceUID != source.SeriesInstanceUID
    assert headers[0].SeriesDescription == "BABY-AI 1.0: super-resolved T2w"
    assert list(headers[0].ImageType)[:2] == ["DERIVED", "SECONDARY"]
    for keyword in ("EchoTime", "RepetitionTime", "PatientPosition"):  # type 2 attributes of MR images: present
        assert keyword in headers[0], keyword
    back = LoadImage(reader=DicomSeriesReader(), image_only=True)([str(p) for p in written])
    assert np.allclose(back.affine, image.affine, atol=1e-5)
    assert np.allclose(np.asarray(back), np.asarray(output[0]), atol=900 * 0.5 / 65535 + 1e-4)
    shutil.rmtree(tmp_path / "out")
