"""The BABY-AI bundle through its real configs: presets and the study's weights, the demo and its split, train ->
evaluate -> inference (geometry, registration) -> synthesize, the published weights from the hub, bad inputs. (The
multi-GPU config runs with torchrun in tests/test_published_bundles.py, on the published copy.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import BABYAI, ORACLE_ENV, REPO, TINY_BABYAI, oracle_weights, overrides, run_bundle
from helpers.bundle_scripts import bundle_module
from helpers.hub_fixtures import hub_env, run_python, sha
from shared.transforms.anisotropy import SimulateAnisotropy
from shared.data.weights_record import preset_of_weights
from shared.networks import babyai_unet as networks

CONFIGS = BABYAI / "configs"
ORACLE = ORACLE_ENV
# inference over the tiny demo's grid, with a stand-in network that returns the interpolated T2w
TINY_INFERENCE = {k: TINY_BABYAI[k] for k in ("demo#num_subjects", "demo#voxel_size", "pixdim", "patch_size")}
ORACLE_NETWORK = {"handlers": "[]", "checkpoint": "None", "network_def": "{'_target_': 'oracle.T2wChannel'}"}


def _session(demo: Path, subject: str = "D01", session: str = "1mo") -> tuple[Path, Path]:
    anat = demo / f"sub-{subject}" / f"ses-{session}" / "anat"
    stem = f"sub-{subject}_ses-{session}_space-INFANTMNIacpc"
    return anat / f"{stem}_T1w.nii.gz", anat / f"{stem}_T2w.nii.gz"


def test_published_preset_is_the_study_network_and_loads_its_state_dict_strictly(tmp_path):
    from monai.networks.nets import UNet

    published = networks.babyai_unet("published")
    assert sum(p.numel() for p in published.parameters()) == 379_053_826
    study = UNet(spatial_dims=3, in_channels=2, out_channels=1, channels=(32, 64, 128, 256, 512, 1024),
                 strides=(2, 2, 2, 2, 2), num_res_units=10, norm=None)
    plain = study.state_dict()  # the hub's pretrained_weights.pth is such a plain state dict
    published.load_state_dict(plain, strict=True)
    del study
    published.load_state_dict(published.state_dict(), strict=True)  # its own state dict, preset recorded
    key = "model.0.conv.unit0.conv.weight"
    with pytest.raises(RuntimeError, match=f"Missing key.*{re.escape(key)}"):
        published.load_state_dict({k: v for k, v in plain.items() if k != key})
    with pytest.raises(RuntimeError, match=f"size mismatch for {re.escape(key)}"):
        published.load_state_dict({**plain, key: torch.zeros(1, 2, 3, 3, 3)})
    small = networks.babyai_unet("small")
    torch.save(small.state_dict(), tmp_path / "small.pt")
    with pytest.raises(ValueError, match="belong to the 'small' network preset, not 'published'"):
        published.load_state_dict(torch.load(tmp_path / "small.pt", weights_only=True))
    torch.save(plain, tmp_path / "plain.pth")
    assert preset_of_weights(str(tmp_path / "small.pt")) == "small"
    assert preset_of_weights(str(tmp_path / "plain.pth")) == "published"
    assert preset_of_weights(str(tmp_path / "none.pt")) == "published"
    assert preset_of_weights(str(tmp_path / "small.pt"), preset="published") == "published"
    x = torch.rand(1, 2, 16, 16, 16)
    with torch.no_grad():  # the small preset learns the correction to the interpolated T2w
        assert torch.equal(small(x), x[:, 1:2])  # it starts as the interpolation itself
        torch.nn.init.normal_(small.model[-1][0].conv.weight)
        assert torch.allclose(small(x), x[:, 1:2] + small.model(x)) and not torch.equal(small(x), x[:, 1:2])


def test_foreground_windows_give_the_plain_inferers_result_in_the_foreground():
    from monai.inferers import SlidingWindowInferer

    from shared.inferers.foreground_sliding_window import ForegroundSlidingWindowInferer

    network = networks.babyai_unet("small").eval()
    image = torch.zeros(1, 2, 40, 48, 40)
    image[:, :, 4:20, 6:30, 8:24] = torch.rand(1, 2, 16, 24, 16)
    calls = []

    def counted(x):
        calls.append(x.shape[0])
        return network(x)

    settings = {"roi_size": (16, 16, 16), "sw_batch_size": 4, "overlap": 0.5, "mode": "constant"}
    with torch.no_grad():
        plain = SlidingWindowInferer(**settings)(image, network)
        skipping = ForegroundSlidingWindowInferer(**settings)(image, counted)
    foreground = (image != 0).any(1, keepdim=True)
    assert torch.allclose(plain[foreground], skipping[foreground], atol=1e-6)
    assert sum(calls) < 4 * 5 * 4  # windows of pure background were not run


def test_demo_is_bids_with_infant_like_contrast_and_a_split_by_subject(babyai_demo, tmp_path):
    t1w, t2w = _session(babyai_demo, "D03", "6mo")
    a, b = nib.load(t1w), nib.load(t2w)
    assert a.shape == b.shape == (61, 73, 61) and np.allclose(a.affine, b.affine)
    assert np.allclose(np.abs(np.diag(a.affine)[:3]), 3.0)
    assert (babyai_demo / "derivatives" / "atlas" / "infant_atlas.nii.gz").is_file()
    t2 = np.asarray(b.dataobj).astype(float)
    t1 = np.asarray(a.dataobj).astype(float)
    brain = t1 > 0
    # bright CSF and dark white matter in the T2w: its brightest brain voxels are among the T1w's darkest
    bright_t2 = t2 > np.percentile(t2[brain], 95)
    assert np.median(t1[bright_t2 & brain]) < np.percentile(t1[brain], 30)
    layout = bundle_module(BABYAI, "layout")
    split = layout.build_babyai_datalist(str(babyai_demo), str(tmp_path / "datalist.json"))
    subjects = {part: {s["subject"] for s in split[part]} for part in ("training", "validation", "test")}
    assert sum(len(split[p]) for p in subjects) == 5 and len(subjects["test"]) == 1
    assert not (subjects["training"] & subjects["validation"] or subjects["training"] & subjects["test"])
    both = [s for part in subjects for s in split[part] if s["subject"] == "D03"]
    assert len({part for part in subjects if "D03" in subjects[part]}) == 1 and len(both) == 2


@pytest.fixture(scope="module")
def work(babyai_demo, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("babyai_run")
    return {**TINY_BABYAI, "demo#dir": str(babyai_demo), "ckpt_dir": str(root / "models"),
            "output_dir": str(root / "eval")}


@pytest.fixture(scope="module")
def trained(work, tmp_path_factory) -> tuple[dict, str]:
    """Two short epochs of the small preset, from an unrelated working directory."""
    log = run_bundle(["run", "training", "--config_file", str(CONFIGS / "train.json"),
                      *overrides({**work, "train#trainer#max_epochs": "2"})],
                     cwd=tmp_path_factory.mktemp("elsewhere")).stdout
    return work, log


@pytest.mark.slow
def test_training_validates_against_cubic_and_records_the_preset(trained):
    work, log = trained
    psnr = re.findall(r"Epoch\[\d\] Metrics -- val_psnr: ([0-9.]+) val_psnr_cubic: ([0-9.]+)", log)
    assert len(psnr) == 2 and all(float(c) > 10 for _, c in psnr)
    weights = Path(work["ckpt_dir"]) / "model.pt"
    assert weights.is_file() and (weights.parent / "model.pt.sha256").is_file()
    assert preset_of_weights(str(weights)) == "small"
    assert list((Path(work["ckpt_dir"]) / "training_state").glob("state_iteration=*.pt"))


@pytest.mark.slow
def test_evaluate_compares_with_cubic_per_thickness_and_axis(trained, tmp_path):
    """evaluate.json with an oracle network that returns the interpolated T2w it is given: its scores are the cubic
    interpolation's, row by row."""
    work, _ = trained
    evaluation = {k: v for k, v in work.items() if "num_workers" not in k}  # evaluate reads cases one by one
    oracle = {"network_def": "{'_target_': 'oracle.T2wChannel'}", "checkpoint": oracle_weights(tmp_path)}
    run_bundle(["run", "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']",
                *overrides({**evaluation, "slice_axes": "[2]", **oracle})], cwd=REPO, env=ORACLE)
    result = json.loads((Path(work["output_dir"]) / "test_metrics.json").read_text())
    heldout = json.loads((Path(work["output_dir"]) / "heldout_metrics.json").read_text())
    for row in result["items"] + heldout["items"]:
        for metric in ("psnr", "ssim", "nrmse", "mse"):
            assert row[f"{metric}_model"] == pytest.approx(row[f"{metric}_cubic"], rel=1e-4, abs=1e-6), metric
    # the held-out generator's 2 test subjects, each acquired 3 ways, measured in the brain
    assert heldout["num_volumes"] == 6 and heldout["region"] == "the brain"
    assert [(g["factor"], g["axis"]) for g in heldout["by_factor_and_axis"]] == [(3, 1), (4, 2), (5, 0)]
    assert json.loads((Path(work["output_dir"]) / "heldout_evaluation_report.json").read_text())["failed"] == []
    assert result["num_volumes"] == 2 and len(result["sessions"]) == 1  # 1 test session x 2 thicknesses x 1 axis
    assert [(g["factor"], g["axis"]) for g in result["by_factor_and_axis"]] == [(2, 2), (4, 2)]
    by_factor = {g["factor"]: g for g in result["by_factor"]}
    assert by_factor[4]["psnr_cubic"] < by_factor[2]["psnr_cubic"]  # thicker slices lose more
    assert all(0 < g["ssim_model"] <= 1 and g["nrmse_cubic"] > 0 for g in result["by_factor_and_axis"])
    header = (Path(work["output_dir"]) / "test_metrics.csv").read_text().splitlines()[0]
    assert header.startswith("case,session,factor,axis,psnr_model,psnr_cubic")
    assert "| 4 | axial (z) |" in (Path(work["output_dir"]) / "test_metrics.md").read_text()


def test_the_heldout_set_is_made_another_way_with_real_thick_slice_files(tmp_path):
    """The second generator's subjects: their own grid, contrast and T1w/T2w alignment, and thick-slice files whose
    slices average the signal over their thickness, on their own grid."""
    heldout = bundle_module(BABYAI, "heldout")
    root = Path(heldout.ensure_babyai_heldout(str(tmp_path / "heldout"), num_subjects=3, validation_subjects=1,
                                              voxel_size=3.0))
    validation, test = heldout.heldout_items(str(root), "validation"), heldout.heldout_items(str(root), "test")
    assert [i["session"] for i in validation] == ["sub-H01_ses-1mo"] * 3 and len(test) == 6
    assert {(i["factor"], i["axis"], i["profile"]) for i in test} == {(4, 2, "box"), (5, 0, "gaussian"),
                                                                      (3, 1, "gaussian")}
    assert heldout.heldout_items(str(root), "test", factors=[4])[0]["case"] == "sub-H02_ses-1mo_acq-4mmaxial"
    item = test[0]
    t1w, iso, thick = (nib.load(item[k]) for k in ("t1w", "label", "t2w"))
    assert t1w.shape == iso.shape == (56, 68, 57) and np.allclose(t1w.affine, iso.affine)  # another grid than the demo
    spacing = (item["factor"] + item["gap"]) / 3.0  # in voxels of the 3 mm grid
    axis = item["axis"]
    assert np.isclose(np.linalg.norm(thick.affine[:3, axis]), 3.0 * spacing)
    assert abs(thick.shape[axis] - iso.shape[axis] / spacing) <= 1  # a slice every (thickness + gap)
    # resampled back onto the T1w grid it agrees with the isotropic T2w, not with the T1w
    from monai.transforms import LoadImaged, ResampleToMatchd
    data = ResampleToMatchd("t2w", key_dst="label", mode=3, padding_mode="border")(
        LoadImaged(["t2w", "label", "t1w"], ensure_channel_first=True)(item))
    back, truth, t1 = (np.asarray(data[k][0]) for k in ("t2w", "label", "t1w"))
    brain = truth > 0
    assert np.corrcoef(back[brain], truth[brain])[0, 1] > 0.85
    assert np.corrcoef(truth[brain & (t1 > 0)], t1[brain & (t1 > 0)])[0, 1] < 0.5  # another contrast
    assert 0.8 < (brain & (t1 > 0)).sum() / brain.sum() < 1.0  # the T2w moved against the T1w: not the same mask


def _reoriented(t1w: Path, t2w: Path, folder: Path) -> tuple[Path, Path]:
    """The session stored LPS-flipped (another orientation and origin) with a thick-slice T2w (every 3rd axial
    slice, its own grid), as a scanner might write them."""
    synthesize = bundle_module(BABYAI, "synthesize")
    folder.mkdir(parents=True)
    a = nib.load(t1w)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(a.shape[:2]) - 1
    affine = a.affine @ flip
    nib.save(nib.Nifti1Image(np.asarray(a.dataobj)[::-1, ::-1], affine), folder / "sub-X_T1w.nii.gz")
    t2 = np.asarray(nib.load(t2w).dataobj)[::-1, ::-1].astype(np.float32)
    thick, thick_affine = synthesize.thick_slice_volume(t2, affine, 3, 2)
    nib.save(nib.Nifti1Image(thick, thick_affine), folder / "sub-X_T2w.nii.gz")
    return folder / "sub-X_T1w.nii.gz", folder / "sub-X_T2w.nii.gz"


@pytest.mark.slow
def test_inference_writes_each_output_on_its_t1w_grid(babyai_demo, tmp_path):
    """A stand-in network that returns the interpolated T2w: the output is the T2w brought onto the T1w's own grid."""
    t1w, t2w = _reoriented(*_session(babyai_demo), tmp_path / "in")
    pairs = [{"t1w": str(t1w), "t2w": str(t2w)}]
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                *overrides({**TINY_INFERENCE, **ORACLE_NETWORK, "datalist": repr(pairs),
                            "output_dir": str(tmp_path / "out")})], cwd=tmp_path, env=ORACLE)
    source, output = nib.load(t1w), nib.load(tmp_path / "out" / "sub-X_T2w_sr.nii.gz")
    assert output.shape == source.shape and np.allclose(output.affine, source.affine)
    truth = np.asarray(nib.load(_session(babyai_demo)[1]).dataobj)[::-1, ::-1].astype(np.float32)
    cubic = SimulateAnisotropy(3, 2)(truth[None])[0]  # what the stand-in returns, on the T1w's grid
    sr = output.get_fdata()
    brain = truth > 0
    assert 0 <= sr.min() and sr.max() <= 1.0 + 1e-5
    assert np.corrcoef(sr[brain], cubic[brain])[0, 1] > 0.98
    assert json.loads((tmp_path / "out" / "inference_report.json").read_text())["succeeded"] == ["sub-X_T2w"]


@pytest.mark.slow
def test_inference_registers_to_the_atlas_and_maps_back(babyai_demo, tmp_path):
    """A session turned by 6 degrees and shifted: registered to the atlas, inferred there, and written on its own grid."""
    t1w, t2w = _session(babyai_demo, "D02")
    angle = np.deg2rad(6.0)
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    turn[:3, 3] = [4.0, -3.0, 2.0]
    folder = tmp_path / "in"
    folder.mkdir()
    for source, name in ((t1w, "moved_T1w.nii.gz"), (t2w, "moved_T2w.nii.gz")):
        image = nib.load(source)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), turn @ image.affine), folder / name)
    pairs = [{"t1w": str(folder / "moved_T1w.nii.gz"), "t2w": str(folder / "moved_T2w.nii.gz")}]
    atlas = babyai_demo / "derivatives" / "atlas" / "infant_atlas.nii.gz"
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                *overrides({**TINY_INFERENCE, **ORACLE_NETWORK, "datalist": repr(pairs), "register": "True",
                            "atlas": str(atlas), "output_dir": str(tmp_path / "out")})], cwd=tmp_path, env=ORACLE)
    output = nib.load(tmp_path / "out" / "moved_T2w_sr.nii.gz")
    moved = nib.load(folder / "moved_T1w.nii.gz")
    assert output.shape == moved.shape and np.allclose(output.affine, moved.affine)
    truth = np.asarray(moved.dataobj).astype(float)
    sr = output.get_fdata()
    brain = (truth > 0) & (sr > 0)
    assert brain.sum() > 0.8 * (truth > 0).sum()  # the output covers the brain where it is in the input
    t2 = np.asarray(nib.load(folder / "moved_T2w.nii.gz").dataobj).astype(float)
    assert np.corrcoef(sr[brain], t2[brain])[0, 1] > 0.8


@pytest.mark.slow
def test_trained_inference_over_a_bids_folder_and_synthesize(trained, babyai_demo, tmp_path):
    work, _ = trained
    synthesized = tmp_path / "anisotropic"
    run_bundle(["run", "--config_file", str(CONFIGS / "synthesize.json"),
                *overrides({"demo#dir": str(babyai_demo), "demo#num_subjects": TINY_BABYAI["demo#num_subjects"],
                            "demo#voxel_size": TINY_BABYAI["demo#voxel_size"], "synthesis_dir": str(synthesized),
                            "slice_factors": "[3]", "slice_axes": "[1, 2]"})], cwd=tmp_path)
    report = json.loads((synthesized / "synthesis_report.json").read_text())
    assert len(report["succeeded"]) == 5 and len(report["written"]) == 10 and not report["failed"]
    t1w, t2w = _session(babyai_demo)
    thick = nib.load(synthesized / "sub-D01" / "ses-1mo" / "anat"
                     / "sub-D01_ses-1mo_acq-k3axial_space-INFANTMNIacpc_T2w.nii.gz")
    original = nib.load(t2w)
    assert thick.shape == (61, 73, 21) and np.allclose(thick.affine[:3, 2], 3 * original.affine[:3, 2])
    assert np.array_equal(np.asarray(thick.dataobj), np.asarray(original.dataobj)[:, :, ::3].astype(np.float32))
    assert (synthesized / "sub-D01" / "ses-1mo" / "anat" / t1w.name).is_file()
    out = tmp_path / "out"
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                *overrides({**TINY_INFERENCE, "dataset_dir": str(synthesized), "ckpt_dir": work["ckpt_dir"],
                            "t2w_pattern": "sub-*/ses-*/anat/*_acq-k3axial_*_T2w.nii.gz", "output_dir": str(out)})],
               cwd=tmp_path)
    written = sorted(p.name for p in out.glob("*_sr.nii.gz"))
    assert len(written) == 5 and written[0] == "sub-D01_ses-1mo_acq-k3axial_space-INFANTMNIacpc_T2w_sr.nii.gz"
    sr = nib.load(out / written[0])
    assert sr.shape == original.shape and np.allclose(sr.affine, original.affine)
    assert np.isfinite(sr.get_fdata()).all()


@pytest.mark.slow
def test_bad_inputs_are_named_and_the_folder_run_goes_on(babyai_demo, tmp_path):
    data = shutil.copytree(babyai_demo, tmp_path / "data", ignore=shutil.ignore_patterns("derivatives"))
    t1w, t2w = _session(data, "D01")
    volume = nib.load(t2w)
    nan = np.asarray(volume.dataobj).astype(np.float32)
    nan[30, 30, 30] = np.nan
    nib.save(nib.Nifti1Image(nan, volume.affine), t2w)
    t1w_2d, t2w_2d = _session(data, "D02")
    nib.save(nib.Nifti1Image(np.asarray(nib.load(t2w_2d).dataobj)[:, :, 30], volume.affine), t2w_2d)
    t1w_4d, _ = _session(data, "D03")
    four_d = np.asarray(nib.load(t1w_4d).dataobj)
    nib.save(nib.Nifti1Image(np.stack([four_d, four_d], -1), volume.affine), t1w_4d)
    _session(data, "D04")[0].unlink()  # a T2w without its T1w
    result = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                         *overrides({**TINY_INFERENCE, **ORACLE_NETWORK, "dataset_dir": str(data),
                                     "output_dir": str(tmp_path / "out")})], cwd=tmp_path, env=ORACLE, check=False)
    assert result.returncode != 0 and "4 of 5 case(s) failed" in result.stdout
    failed = {f["case"]: f["error"] for f in json.loads((tmp_path / "out" / "inference_report.json").read_text())["failed"]}
    assert "1 voxel(s) are NaN or infinite" in failed["sub-D01_ses-1mo_space-INFANTMNIacpc_T2w"]
    assert f"{t2w_2d}: is a 2D" in failed["sub-D02_ses-1mo_space-INFANTMNIacpc_T2w"]
    assert f"{t1w_4d}:" in failed["sub-D03_ses-1mo_space-INFANTMNIacpc_T2w"]
    assert "the T1w file of pair" in failed["sub-D04_ses-1mo_space-INFANTMNIacpc_T2w"]
    assert (tmp_path / "out" / "sub-D03_ses-6mo_space-INFANTMNIacpc_T2w_sr.nii.gz").is_file()  # the good one
    # a pair that cannot be registered: the T1w is a slab of 6 slices, too little of the atlas's brain to place
    t1w_full, t2w_full = _session(babyai_demo, "D03", "6mo")
    full = nib.load(t1w_full)
    nib.save(nib.Nifti1Image(np.asarray(full.dataobj)[:, :, 27:33], full.affine), tmp_path / "slab_T1w.nii.gz")
    pairs = [{"t1w": str(tmp_path / "slab_T1w.nii.gz"), "t2w": str(t2w_full)}]
    unregistrable = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                                *overrides({**TINY_INFERENCE, **ORACLE_NETWORK, "datalist": repr(pairs),
                                            "register": "True", "output_dir": str(tmp_path / "out2"),
                                            "atlas": str(babyai_demo / "derivatives" / "atlas" / "infant_atlas.nii.gz")})],
                               cwd=tmp_path, env=ORACLE, check=False)
    assert unregistrable.returncode != 0
    report = json.loads((tmp_path / "out2" / "inference_report.json").read_text())
    error = report["failed"][0]["error"]
    assert f"{tmp_path / 'slab_T1w.nii.gz'}: rigid registration" in error and "overlap" in error


@pytest.mark.slow
def test_study_weights_from_the_hub_are_trusted_on_first_use_then_pinned(hub, babyai_demo, tmp_path):
    """The study's repo on the loopback hub (its weights: here a small-preset state dict, to keep the test small)."""
    weights = tmp_path / "pretrained_weights.pth"
    torch.save(networks.babyai_unet("small").state_dict(), weights)
    repo = "almalennartsson/baby-ai"
    hub.repos[repo] = {"private": False, "refs": {"main": "c" * 40}, "order": ["c" * 40],
                       "commits": {"c" * 40: {"pretrained_weights.pth": weights.read_bytes()}}}
    models = tmp_path / "models"
    code = ("import sys\nfrom shared.hub import ensure_weights\n"
            f"print(ensure_weights({str(models / 'pretrained_weights.pth')!r}, {str(BABYAI)!r}, "
            "'models/pretrained_weights.pth', use_published=True, trust_on_first_use=True))\n")
    home = tmp_path / "hf"
    first = run_python(["-c", code], hub_env(hub, home), cwd=tmp_path)
    assert first.returncode == 0, first.stdout
    assert "trusting this first download" in first.stdout and "hash_val" in first.stdout
    trusted = json.loads((models / "trusted_sha256.json").read_text())
    assert trusted == {f"{repo}@main/pretrained_weights.pth": sha(weights)}
    assert (models / "pretrained_weights.pth.sha256").read_text().split()[0] == sha(weights)
    served = len(hub.requests)
    again = run_python(["-c", code], hub_env(hub, home), cwd=tmp_path)  # the local copy: never fetched twice
    assert again.returncode == 0 and len(hub.requests) == served
    for f in models.glob("pretrained_weights.pth*"):
        f.unlink()
    offline = run_python(["-c", code], hub_env(hub, home, offline=True), cwd=tmp_path)  # from the HF cache
    assert offline.returncode == 0, offline.stdout
    assert len(hub.requests) == served
    no_cache = run_python(["-c", code.replace(str(models), str(tmp_path / "other"))],
                          hub_env(hub, tmp_path / "empty_hf", offline=True), cwd=tmp_path)
    assert no_cache.returncode != 0 and "not in the local Hugging Face cache" in no_cache.stdout
    for f in models.glob("pretrained_weights.pth*"):
        f.unlink()
    # the file changes upstream: a new commit on main
    hub.repos[repo]["commits"]["d" * 40] = {"pretrained_weights.pth": weights.read_bytes() + b"changed"}
    hub.repos[repo]["order"].append("d" * 40)
    hub.repos[repo]["refs"]["main"] = "d" * 40
    changed = run_python(["-c", code], hub_env(hub, home), cwd=tmp_path)
    assert changed.returncode != 0 and "does not match the trusted" in changed.stdout
    assert not (models / "pretrained_weights.pth").exists()
    # main back at the trusted commit: the whole inference config fetches it (from the cache) and runs
    hub.repos[repo]["refs"]["main"] = "c" * 40
    result = run_python(["-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json"),
                         *overrides({**TINY_INFERENCE, "demo#dir": str(babyai_demo), "use_published_weights": "True",
                                     "preset": "small",  # the stand-in for the study's weights is a small network
                                     "ckpt_dir": str(models),
                                     "output_dir": str(tmp_path / "out")})], hub_env(hub, home), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    assert len(list((tmp_path / "out").glob("*_sr.nii.gz"))) == 1


def _train_transform(name: str, prob: float):
    """The transform ``train#<name>`` of train.json, as the config builds it with ``--train#<name>#prob``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["bundle_root"] = str(BABYAI)
    assert parser[f"train#{name}#prob"] == 0.0  # off in the kept recipe
    parser[f"train#{name}#prob"] = prob
    return parser.get_parsed_content(f"train#{name}")


@pytest.mark.parametrize("name", ["t2w_contrast", "t1w_contrast"])
def test_the_contrast_augmentations_remap_intensities_monotonically(name):
    transform = _train_transform(name, 0.8)
    transform.set_random_state(0)
    key = name.split("_")[0]
    ramp = torch.linspace(0, 1, 40 ** 3).reshape(1, 40, 40, 40)
    changed = 0
    for _ in range(10):
        out = torch.as_tensor(transform({key: ramp.clone()})[key]).flatten()
        assert torch.all(out[1:] >= out[:-1] - 1e-6)  # the order of intensities is kept
        assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
        changed += not torch.allclose(out, ramp.flatten(), atol=1e-3)
    assert changed >= 5  # prob 0.8: most draws change the contrast


def test_the_guide_misregistration_is_rigid_and_bounded():
    transform = _train_transform("t1w_misregistration", 0.5)
    transform.set_random_state(0)
    volume = torch.rand(1, 24, 24, 24)
    moved = 0
    for _ in range(20):
        out = transform({"t1w": volume})
        if torch.equal(torch.as_tensor(out["t1w"]), volume):
            continue
        moved += 1
        matrix = transform.rand_affine.rand_affine_grid.get_transformation_matrix().double()
        rotation, translation = matrix[:3, :3], matrix[:3, 3]
        assert torch.allclose(rotation.T @ rotation, torch.eye(3, dtype=torch.float64), atol=1e-5)  # rigid
        angle = torch.rad2deg(torch.arccos(((torch.trace(rotation) - 1) / 2).clamp(-1, 1)))
        assert angle <= 1.5 * 3 ** 0.5 + 1e-6 and translation.abs().max() <= 1.0  # degrees, voxels
    assert 5 <= moved <= 15  # prob 0.5
