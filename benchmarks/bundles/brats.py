"""BraTS 2020 slice segmentation: training rows from ``train.json``; whole-volume inference of ``inference.json``'s
inferer against the study's per-slice patch prediction; the U-Net exported."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.inferers import sliding_window_inference

from benchmarks.bundle_config import bundle_dir, parse
from benchmarks.export_rows import export_rows
from benchmarks.gpu_check import Step, torchrun_step, train_and_resume
from benchmarks.harness import Contenders, Row, compare
from benchmarks.training_rows import training_rows

NAME = "brats_mri_slice_segmentation"
# 3 mm demo volumes (80x80x52) and 64x64 patches: seconds on 2 CPU cores
QUICK = {"demo#voxel_size": 3.0, "demo#num_cases": 5, "pixdim": [3.0, 3.0, 3.0], "patch_size": [64, 64]}


BACKENDS = ("torch", "onnxruntime")  # inference rows: inference.json's --backend


def _overrides(quick: bool, workdir: Path) -> dict:
    where = {"ckpt_dir": str(workdir / "models"), "output_dir": str(workdir / "eval")}
    if quick:
        return {**QUICK, **where, "demo#dir": str(workdir / "demo")}
    return where


# the study's whole-volume prediction: each axial slice on its own, its 128x128 patches one a forward pass, blended
STUDY_WINDOWS = {"overlap": 0.125, "mode": "gaussian", "cval": -1.0}


def label_agreement(ours: torch.Tensor, theirs: torch.Tensor, image: torch.Tensor, background: float = -1.0) -> dict:
    """How the two logit volumes' label maps agree: the fraction of brain voxels with the same label, and the Dice
    of each tumour label between them (nan where neither has the label)."""
    a, b = ours.argmax(1), theirs.argmax(1)
    brain = (image != background).any(1)
    result = {"label_agreement_in_brain": round(float((a == b)[brain].float().mean()), 4)}
    for label in range(1, ours.shape[1]):
        both = int(((a == label) & (b == label)).sum())
        total = int((a == label).sum() + (b == label).sum())
        result[f"dice_label_{label}"] = round(2 * both / total, 4) if total else float("nan")
    return result


def inference_contenders(quick: bool, workdir: Path, backend: str = "torch") -> Contenders:
    parser = parse(NAME, ["inference.json"], {**_overrides(quick, workdir), "backend": backend})
    case = parser.get_parsed_content("cases").valid[0]
    volume = parser.get_parsed_content("preprocessing")(case)["image"].as_tensor()[None]
    network = parser.get_parsed_content("network").eval()
    trained = bundle_dir(NAME) / "models" / "model.pt"
    weights = "untrained (no models/model.pt)"
    if not quick and trained.is_file():  # label maps compared with trained weights where there are
        network.load_state_dict(torch.load(trained, map_location="cpu", weights_only=True))
        weights = "the bundle's models/model.pt"
    inferer = parser.get_parsed_content("inferer")
    roi_size = parse(NAME, ["train.json"], _overrides(quick, workdir)).get_parsed_content("patch_size")

    def bundle():
        with torch.inference_mode():
            return inferer(volume, network)

    def study():
        with torch.no_grad():
            return torch.stack([sliding_window_inference(volume[..., z], roi_size, 1, network, **STUDY_WINDOWS)
                                for z in range(volume.shape[-1])], dim=-1)

    def agreement(ours, theirs) -> dict:
        return {**label_agreement(ours, theirs, volume), "weights": weights}

    return Contenders(f"whole volume {tuple(volume.shape[2:])}: inference.json's {type(inferer.inferer).__name__} "
                      f"({inferer.batch_size} slices a batch, inference_mode) vs the study's per-slice loop, "
                      f"{tuple(roi_size)} patches one a forward pass, overlap {STUDY_WINDOWS['overlap']}", bundle,
                      study, agreement)


DICOM_DESCRIPTIONS = {"flair": "AX T2 FLAIR", "t1": "AX T1", "t1ce": "AX T1 POST GD", "t2": "AX T2 FSE"}


def write_dicom_study(case_dir: Path, study: Path) -> None:
    """A BraTS case folder's four NIfTI files as one DICOM study, its series mixed in one folder."""
    import nibabel as nib
    import numpy as np

    from shared.writers.dicom_series import write_mr_series

    identity: dict = {"PatientID": case_dir.name}
    for number, (modality, description) in enumerate(DICOM_DESCRIPTIONS.items(), start=1):
        image = nib.load(next(case_dir.glob(f"*_{modality}.nii*")))
        write_mr_series(np.asarray(image.dataobj), image.affine, str(study), description, study=identity,
                        series_number=number, file_prefix=f"S{number}_")


def dicom_loading_row(quick: bool, repeats: int, workdir: Path) -> Row:
    """The ``dicom_loading`` row: one demo case as a 4-series DICOM study (every slice a file, series mixed in one
    folder) found and loaded by inference.json (``cases`` and ``preprocessing``), against the same case's NIfTI
    files; the goal is at most 2 s added (a ratio of ``nifti / (nifti + 2 s)``)."""
    nifti_parser = parse(NAME, ["inference.json"], _overrides(quick, workdir))
    case = nifti_parser.get_parsed_content("cases").valid[0]
    case_dir = Path(case["flair"]).parent
    study = workdir / "dicom" / case["case"]
    write_dicom_study(case_dir, study)
    nifti_only = {**_overrides(quick, workdir), "dataset_dir": str(case_dir)}
    dicom_only = {**_overrides(quick, workdir), "dataset_dir": str(study)}

    def load(overrides: dict):
        def run():
            parser = parse(NAME, ["inference.json"], overrides)
            item = parser.get_parsed_content("cases").valid[0]
            return parser.get_parsed_content("preprocessing")(item)["image"]
        return run

    def same(dicom_image, nifti_image) -> dict:
        return {"max_abs_difference": float((dicom_image - nifti_image).abs().max()),
                "shape": list(dicom_image.shape[1:]), "files": sum(1 for _ in study.iterdir())}

    row = compare("dicom_loading", f"one study, 4 MR series of {sum(1 for _ in study.iterdir()) // 4} slices in one "
                  "folder: found (headers) and loaded by inference.json's DicomSeriesReader, against the same case "
                  "as NIfTI; both through the config's preprocessing", load(dicom_only), load(nifti_only), goal=0.0,
                  repeats=repeats, check=same)
    row.goal = row.reference_median / (row.reference_median + 2.0)
    row.extra["seconds_added"] = round(row.bundle_median - row.reference_median, 3)
    return row


def rows(quick: bool, repeats: int, workdir: Path) -> list[Row]:
    parser = parse(NAME, ["train.json"], _overrides(quick, workdir))
    result = training_rows(parser, "train.json", iterations=2 if quick else 10, repeats=repeats)
    result.append(dicom_loading_row(quick, repeats, workdir))
    patch = parser.get_parsed_content("patch_size")
    network = parse(NAME, ["inference.json"], _overrides(quick, workdir)).get_parsed_content("network_def")
    result += export_rows("U-Net (ResNet-34 encoder)", network, torch.randn(8 if quick else 64, 3, *patch), repeats)
    return result


def gpu_steps(quick: bool, work: Path) -> list[Step]:
    """``python -m benchmarks.gpu_check``: training (and its resume), evaluation, inference of one demo case, the
    multi-GPU stack, the U-Net exported."""
    common = _overrides(quick, work)
    demo = Path(common.get("demo#dir", bundle_dir(NAME) / "demo_data" / "MICCAI_BraTS2020_TrainingData"))
    split = {"split#val_fraction": 0.2, "split#test_fraction": 0.2} if quick else {}
    workers = {"train#dataset#num_workers": 0, "validate#dataset#num_workers": 0} if quick else {}
    train = {**common, **split, **workers}
    iterations = 2 if quick else 20
    inference = {k: v for k, v in common.items() if k in QUICK or k == "ckpt_dir"}
    return [
        *train_and_resume("train.json", ["train.json"], train, iterations),
        Step("evaluate", "run", ["train.json", "evaluate.json"], train, needs=("train.json",)),
        Step("inference", "infer", ["inference.json"],
             {**inference, "dataset_dir": str(demo / "BraTS20_Training_001"), "output_dir": str(work / "out")},
             needs=("train.json",), outputs=("*_pred.nii.gz",)),
        torchrun_step("train.json multi-GPU", ["train.json"], {**train, "training_state#dir": str(work / "ddp_state")},
                      iterations, needs=("train.json",)),
        Step("export", "export", ["inference.json"], inference, needs=("train.json",)),
        Step("deploy app", "app", [], needs=("train.json",), app_requires="monai.deploy",
             app=["deploy.brats_seg_app", "-i", str(work / "dicom_study"), "-o", str(work / "app_out"),
                  "-m", str(Path(common["ckpt_dir"]) / "model.pt")],
             prepare=lambda: write_dicom_study(demo / "BraTS20_Training_001", work / "dicom_study"),
             figures=lambda _: _seg_files(work / "app_out")),
    ]


def _seg_files(folder: Path) -> dict:
    """The deploy app's figures: the DICOM SEG files it wrote (one expected)."""
    count = len(list(folder.glob("*.dcm")))
    return {"seg_files": count} if count == 1 else {"ok": False, "error": f"{count} DICOM SEG files in {folder}"}
