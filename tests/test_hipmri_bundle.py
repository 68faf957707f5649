"""The HipMRI bundle through its real configs: VQ-VAE train -> evaluate -> inference, prior -> generate, the demo,
the network preset, best-checkpoint selection, publishing and bad inputs."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import HIPMRI, ORACLE_ENV, REPO, TINY_HIPMRI, oracle_weights, overrides, run_bundle
from helpers.bundle_scripts import bundle_module
from shared.networks.code_grid_transformer import CodeGridTransformer

CONFIGS = HIPMRI / "configs"
ORACLE = ORACLE_ENV


def test_network_preset_gives_the_study_latent_grid():
    networks = bundle_module(HIPMRI, "networks")
    vqvae = networks.hipmri_vqvae().eval()
    x = torch.randn(1, 1, 256, 128)
    with torch.no_grad():
        reconstruction, loss = vqvae(x)
        codes = vqvae.index_quantize(x)
    assert reconstruction.shape == x.shape and loss.ndim == 0
    assert codes.shape == (1, 64, 32) and codes.max() < 512
    assert networks.latent_size([256, 128]) == [64, 32]
    assert vqvae.num_embeddings == 512 and vqvae.embedding_dim == 64


class _CodesOf(torch.nn.Module):
    """A stand-in VQ-VAE whose codes are the image's pixels."""
    num_embeddings = 7

    def index_quantize(self, images):
        return images[:, 0].long()


@pytest.mark.parametrize("block", [(1, 1), (2, 2)])
def test_prior_reads_blocks_in_raster_order_and_predicts_each_from_earlier_ones_only(block):
    from shared.inferers.code_grid_prior import CodeGridPriorInferer

    torch.manual_seed(0)
    prior = CodeGridTransformer(7, (6, 4), block, dim=16, depth=2, heads=2).eval()
    grid = torch.arange(24).reshape(1, 6, 4) % 7
    tokens = prior.to_tokens(grid)
    assert tokens.shape == (1, 24 // math.prod(block), math.prod(block)) and torch.equal(prior.to_grid(tokens), grid)
    assert tokens[0, 1].tolist() == grid[0, : block[0], block[1] : 2 * block[1]].flatten().tolist()  # 2nd block
    images = torch.randint(0, 7, (2, 1, 6, 4)).float()
    with torch.no_grad():
        logits, targets = CodeGridPriorInferer(_CodesOf())(images, prior)
        assert logits.shape == (2, 24, 7) and torch.equal(targets, prior.to_tokens(images[:, 0].long()).flatten(1))
        changed = images.clone()
        changed[:, 0, -1, -1] = (changed[:, 0, -1, -1] + 1) % 7  # the last code: no prediction may change
        assert torch.equal(CodeGridPriorInferer(_CodesOf())(changed, prior)[0], logits)
        changed = images.clone()
        changed[:, 0, 0, 0] = (changed[:, 0, 0, 0] + 1) % 7  # the first code: only the first block's own don't
        moved = CodeGridPriorInferer(_CodesOf())(changed, prior)[0]
        k = math.prod(block)
        assert torch.equal(moved[:, :k], logits[:, :k]) and not torch.allclose(moved[:, k:], logits[:, k:])
    with pytest.raises(ValueError, match="divisible"):
        CodeGridTransformer(7, (6, 4), (4, 4))


@pytest.mark.parametrize("block", [(1, 1), (2, 2)])
def test_cached_sampling_gives_the_full_pass_logits_and_repeats_under_a_seed(block):
    from shared.inferers.code_grid_prior import sample_code_grids

    torch.manual_seed(0)
    prior = CodeGridTransformer(7, (6, 4), block, dim=16, depth=2, heads=2).eval()
    tokens = torch.cat((prior.begin_token.expand(3, 1, -1), prior.to_tokens(torch.randint(0, 7, (3, 6, 4)))[:, :-1]), 1)
    with torch.no_grad():
        cache = prior.start_cache(3)
        stepped = torch.stack([prior.step(tokens[:, i], cache) for i in range(prior.seq_len)], dim=1)
        assert torch.allclose(stepped, prior(tokens), atol=1e-5)
    first = sample_code_grids(prior, 5, generator=torch.Generator().manual_seed(1))
    assert first.shape == (5, 6, 4) and 0 <= first.min() and first.max() < 7  # the begin code is never drawn
    assert torch.equal(first, sample_code_grids(prior, 5, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(first, sample_code_grids(prior, 5, generator=torch.Generator().manual_seed(2)))
    greedy = sample_code_grids(prior, 5, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(greedy, sample_code_grids(prior, 5, top_k=1, generator=torch.Generator().manual_seed(2)))


def test_every_parameter_of_the_prior_gets_a_gradient():
    """What DistributedDataParallel needs of a network (else: "Expected to have finished reduction")."""
    prior = CodeGridTransformer(512, (16, 8), (2, 2), dim=32, depth=2, heads=2)
    tokens = torch.cat((prior.begin_token.expand(2, 1, -1), torch.randint(0, 512, (2, prior.seq_len - 1, 4))), 1)
    prior(tokens).sum().backward()
    assert [n for n, p in prior.named_parameters() if p.grad is None] == []


def test_two_sample_test_tells_different_sets_apart_and_not_alike_ones():
    from shared.metrics.two_sample_test import classifier_two_sample_test

    noise = torch.Generator().manual_seed(0)
    first, second = torch.randn(32, 1, 32, 16, generator=noise), torch.randn(32, 1, 32, 16, generator=noise)
    disk = ((torch.linspace(-1, 1, 32)[:, None] ** 2 + torch.linspace(-1, 1, 16) ** 2) < 0.5).float()
    settings = {"folds": 4, "epochs": 10, "channels": (8, 16)}
    assert classifier_two_sample_test(first, first.clone(), **settings)["accuracy"] == 0.5  # the same images
    alike = classifier_two_sample_test(first, second, **settings)
    assert abs(alike["accuracy"] - 0.5) < 4 * alike["chance_sd"] and alike["n"] == 32
    assert classifier_two_sample_test(first, disk + 0.3 * second, **settings)["accuracy"] >= 0.95
    uneven = classifier_two_sample_test(first, second[:20], **settings)
    assert uneven["n"] == 20 and uneven["sizes"] == [32, 20]  # balanced accuracy: no set is cut
    assert uneven["chance_sd"] == pytest.approx(0.25 * math.sqrt(1 / 32 + 1 / 20))
    state = torch.random.get_rng_state()
    classifier_two_sample_test(first, second, **settings)
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="at least 4 groups"):
        classifier_two_sample_test(first, second, first_groups=[i % 3 for i in range(32)], **settings)


def test_group_folds_keep_each_groups_images_in_one_fold_and_match_folds_across_sets():
    from shared.metrics.two_sample_test import group_folds

    parts = group_folds(["a", "b", "a", "c", "b", "a"], 2, order=["c", "b", "a"])
    assert sorted(map(sorted, parts)) == [[0, 2, 5], [1, 3, 4]]
    groups = [f"man {i % 7}" for i in range(40)]
    folds = group_folds(groups, 5, order=sorted(set(groups)))
    assert sorted(i for fold in folds for i in fold) == list(range(40))  # every image in exactly one fold
    assert all(len([f for f in folds if any(groups[i] == g for i in f)]) == 1 for g in set(groups))
    again = group_folds(groups[::-1], 5, order=sorted(set(groups)))  # the same men and sizes in another set
    assert [{groups[::-1][i] for i in f} for f in again] == [{groups[i] for i in f} for f in folds]


def test_the_known_bad_references_blend_two_mens_slices_and_shift_by_a_fraction_of_a_pixel():
    from shared.metrics.reference_sets import blend_pairs, blurred, pixel_blends, shifted, standardised

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 16, 8, generator=generator)
    groups = [i // 3 for i in range(12)]  # 4 men, 3 slices each
    pairs = blend_pairs(10, groups, generator)
    assert pairs.shape == (10, 2) and all(groups[a] != groups[b] for a, b in pairs.tolist())
    blends = pixel_blends(images, pairs)
    assert torch.allclose(blends, standardised(images[pairs[:, 0]] + images[pairs[:, 1]]), atol=1e-5)
    ramp = torch.arange(8.0).expand(1, 1, 16, 8)
    moved = shifted(ramp, 0.5)  # half a pixel: a ramp stays linear inside, its border pixel repeated
    steps = moved[..., 2:7] - moved[..., 1:6]
    assert torch.allclose(steps, steps[..., :1].expand_as(steps), atol=1e-4)
    assert torch.allclose(moved[..., -1], moved[..., -2], atol=0.6 * float(steps[0, 0, 0, 0]))
    assert not torch.allclose(moved, standardised(ramp), atol=1e-2)
    assert blurred(images).std(dim=(2, 3)).mean() < 1.01 and not torch.allclose(blurred(images), standardised(images))


def test_nearest_ssim_is_monais_ssim_to_the_closest_reference():
    from monai.metrics import SSIMMetric
    from monai.transforms import GaussianSmooth

    generation = bundle_module(HIPMRI, "generation")
    generator = torch.Generator().manual_seed(0)
    samples, references = torch.rand(4, 1, 48, 32, generator=generator), torch.rand(9, 1, 48, 32, generator=generator)
    references[5] = 0.5 * samples[1] + 0.2  # a copy, in other units
    blur, ssim = GaussianSmooth(1.0), SSIMMetric(spatial_dims=2, data_range=1.0)
    smooth = [torch.stack([torch.as_tensor(blur(i)) for i in generation._unit(x)]) for x in (samples, references)]
    expected = torch.tensor([float(ssim(s[None].expand_as(smooth[1]), smooth[1]).max()) for s in smooth[0]])
    nearest = generation.nearest_ssim(samples, references, chunk=4)
    assert torch.allclose(nearest, expected, atol=1e-5) and nearest[1] == pytest.approx(1.0, abs=1e-5)


def test_demo_layout_and_anatomy(hipmri_demo):
    folders = sorted(p.name for p in hipmri_demo.iterdir() if p.is_dir())
    assert folders == ["keras_slices_seg_test", "keras_slices_seg_train", "keras_slices_seg_validate",
                       "keras_slices_test", "keras_slices_train", "keras_slices_validate"]
    train = sorted(p.name for p in (hipmri_demo / "keras_slices_train").iterdir())
    assert "case_001_week_0_slice_0.nii.gz" in train and len(train) == 10 * 2 * 12
    image = nib.load(hipmri_demo / "keras_slices_train" / "case_001_week_0_slice_0.nii.gz")
    labels = np.asarray(nib.load(hipmri_demo / "keras_slices_seg_train" / "seg_case_001_week_0_slice_0.nii.gz").dataobj)
    assert image.shape == labels.shape == (256, 128)
    assert nib.load(hipmri_demo / "keras_slices_train" / "case_004_week_0_slice_0.nii.gz").shape == (240, 112)
    data = np.asarray(image.dataobj).astype(float)
    assert {0, 1, 2}.issubset(np.unique(labels)) and data[labels == 0].mean() < data[labels == 1].mean()


def test_datalist_draws_validation_from_training_when_there_is_no_validation_folder(hipmri_demo, tmp_path):
    layout = bundle_module(HIPMRI, "layout")
    split = layout.build_hipmri_datalist(str(hipmri_demo), str(tmp_path / "dl.json"),
                                         {"training": "keras_slices_train", "validation": None, "test": "keras_slices_test"},
                                         val_fraction=0.2, seed=3)
    patients = {k: {s["patient"] for s in v} for k, v in split.items()}
    assert len(patients["validation"]) == 2 and len(patients["training"]) == 8
    assert not patients["validation"] & patients["training"]  # by man, never by slice
    again = layout.build_hipmri_datalist(str(hipmri_demo), str(tmp_path / "dl2.json"),
                                         {"training": "keras_slices_train", "validation": None}, val_fraction=0.2, seed=3)
    assert [s["case"] for s in again["validation"]] == [s["case"] for s in split["validation"]]


@pytest.fixture(scope="module")
def work(hipmri_demo, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hipmri_run")
    return {**TINY_HIPMRI, "demo#dir": str(hipmri_demo), "ckpt_dir": str(root / "models"),
            "output_dir": str(root / "eval")}


@pytest.fixture(scope="module")
def trained(work, tmp_path_factory) -> tuple[dict, str]:
    """Three short epochs of the VQ-VAE, from an unrelated working directory."""
    log = run_bundle(["run", "training", "--config_file", str(CONFIGS / "train.json"),
                      *overrides({**work, "train#trainer#max_epochs": "3"})],
                     cwd=tmp_path_factory.mktemp("elsewhere")).stdout
    return work, log


@pytest.mark.slow
def test_training_keeps_the_epoch_of_best_validation_ssim(trained):
    work, log = trained
    ssim = [float(v) for v in re.findall(r"Epoch\[\d+\] Metrics -- .*val_ssim: ([0-9.]+)", log)]
    assert len(ssim) == 3 and "val_codebook_perplexity" in log and "val_psnr" in log
    best = int(np.argmax(ssim)) + 1
    state = torch.load(next(Path(work["ckpt_dir"]).glob("training_state/state_iteration=*.pt")), weights_only=True)
    assert state["validator"]["best_metric_epoch"] == best
    saves = re.findall(r"best weights so far \(key metric [0-9.]+ at epoch (\d+)\)", log)
    assert int(saves[-1]) == best and (Path(work["ckpt_dir"]) / "model.pt.sha256").is_file()
    datalist = json.loads((Path(work["output_dir"]) / "datalist.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [240, 48, 72]


@pytest.mark.slow
def test_evaluate_gives_an_oracle_network_its_exact_scores(trained, tmp_path):
    """evaluate.json with a network that reconstructs exactly: SSIM 1, MSE 0 and an infinite PSNR on every slice."""
    from helpers.oracle import IdentityReconstruction

    work, _ = trained
    oracle = {"network_def": "{'_target_': 'oracle.IdentityReconstruction'}",
              "checkpoint": oracle_weights(tmp_path, IdentityReconstruction().state_dict())}
    run_bundle(["run", "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']",
                *overrides({**work, **oracle})], cwd=REPO, env=ORACLE_ENV)
    result = json.loads((Path(work["output_dir"]) / "test_metrics.json").read_text())
    assert result["num_items"] == 72
    assert result["ssim"]["mean"] == pytest.approx(1.0, abs=1e-6) and result["mse"]["mean"] == 0.0
    assert all(math.isinf(item["psnr"]) for item in result["items"])
    rows = (Path(work["output_dir"]) / "test_metrics.csv").read_text().splitlines()
    assert rows[0] == "case,ssim,psnr,mse" and rows[1].startswith("case_031_week_0_slice_0,1.0000,") and len(rows) == 73
    assert "test image(s)" in (Path(work["output_dir"]) / "test_metrics.md").read_text()


def _inputs(hipmri_demo: Path, folder: Path) -> Path:
    """A 2D slice of the study's size, one of another size, and a 3D volume of slices."""
    folder.mkdir(parents=True)
    test = hipmri_demo / "keras_slices_test"
    shutil.copy(test / "case_031_week_0_slice_3.nii.gz", folder / "study_slice.nii.gz")
    shutil.copy(test / "case_032_week_0_slice_3.nii.gz", folder / "other_size.nii.gz")  # 240x112
    volume = np.stack([np.asarray(nib.load(test / f"case_033_week_1_slice_{i}.nii.gz").dataobj) for i in range(6)], -1)
    nib.save(nib.Nifti1Image(volume, np.diag([1.6, 1.6, 2.5, 1.0])), folder / "volume.nii.gz")
    return folder


@pytest.mark.slow
def test_inference_keeps_each_input_geometry_and_intensity_scale(hipmri_demo, tmp_path):
    """With a network that reconstructs exactly, what is written is the input itself: shape, affine, values."""
    cases = _inputs(hipmri_demo, tmp_path / "in")
    args = {"dataset_dir": str(cases), "output_dir": str(tmp_path / "out"), "handlers": "[]", "checkpoint": "None",
            "network_def": "{'_target_': 'oracle.IdentityReconstruction'}"}
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"), *overrides(args)], cwd=tmp_path, env=ORACLE)
    for name in ("study_slice", "other_size", "volume"):
        source = nib.load(cases / f"{name}.nii.gz")
        output = nib.load(tmp_path / "out" / f"{name}_recon.nii.gz")
        assert output.shape == source.shape and np.allclose(output.affine, source.affine), name
        a, b = np.asarray(source.dataobj).astype(float), output.get_fdata()
        if name == "other_size":  # resized to 256x128 and back: close, not equal
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98 and abs(a.mean() - b.mean()) < 0.02 * a.std()
        else:
            assert np.allclose(a, b, atol=1e-2 * a.std()), name


@pytest.mark.slow
def test_trained_inference_on_a_volume_and_the_prior_generates_new_slices(trained, hipmri_demo, tmp_path):
    work, _ = trained
    cases = _inputs(hipmri_demo, tmp_path / "in")
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                *overrides({"dataset_dir": str(cases / "volume.nii.gz"), "output_dir": str(tmp_path / "out"),
                            "ckpt_dir": work["ckpt_dir"], "image_size": TINY_HIPMRI["image_size"]})], cwd=tmp_path)
    recon = nib.load(tmp_path / "out" / "volume_recon.nii.gz")
    assert recon.shape == (256, 128, 6) and np.isfinite(recon.get_fdata()).all()
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                *overrides({"dataset_dir": str(cases / "volume.nii.gz"), "output_dir": str(tmp_path / "onnx"),
                            "ckpt_dir": work["ckpt_dir"], "image_size": TINY_HIPMRI["image_size"],
                            "backend": "onnxruntime"})], cwd=tmp_path)
    onnx = nib.load(tmp_path / "onnx" / "volume_recon.nii.gz")
    assert np.allclose(onnx.get_fdata(), recon.get_fdata(), atol=1e-4 * recon.get_fdata().std())
    assert np.allclose(onnx.affine, recon.affine)
    prior = {**work, "output_dir": str(tmp_path / "eval")}
    run_bundle(["run", "training", "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'train_prior.json'}']",
                *overrides(prior)], cwd=tmp_path)
    assert (Path(work["ckpt_dir"]) / "prior.pt").is_file()
    generate = [str(CONFIGS / c) for c in ("train.json", "train_prior.json", "generate.json")]
    for out in (tmp_path / "generated", tmp_path / "again"):
        run_bundle(["run", "--config_file", str(generate), *overrides({**prior, "generated_dir": str(out),
                                                                        "num_samples": "3"})], cwd=tmp_path)
    for i in range(3):
        sample = nib.load(out / f"sample_{i:03d}.nii.gz").get_fdata()
        assert sample.shape == (64, 32) and np.isfinite(sample).all()
        assert np.array_equal(sample, nib.load(tmp_path / "generated" / f"sample_{i:03d}.nii.gz").get_fdata())
    record = json.loads((out / "generation.json").read_text())
    assert record["num_samples"] == 3 and record["samples_per_second"] > 0 and record["seed"] == 0
    # the two-sample test and the statistics, through the real config: 8 samples and the references
    run_bundle(["run", "--config_file", str([*generate, str(CONFIGS / "evaluate_generation.json")]),
                *overrides({**prior, "num_samples": "8", "two_sample_test#epochs": "1"})], cwd=tmp_path)
    report = json.loads((tmp_path / "eval" / "generation" / "report.json").read_text())
    tests = report["two_sample_test"]
    assert [t["role"] for t in tests.values()] == ["result", "floor", "limit", "limit", "known bad", "known bad",
                                                   "sensitivity", "sensitivity", "ceiling"]
    sizes = [t["sizes"][0] for t in tests.values()]  # the samples; every other set has one image a held-out slice
    assert sizes[0] == 8 and len(set(sizes[1:])) == 1 and sizes[1] >= 8
    assert all(0 <= t["accuracy"] <= 1 for t in tests.values())
    assert isinstance(report["calibration"]["calibrated"], bool)
    assert report["calibration"]["calibrated"] == (not report["calibration"]["failures"])
    assert report["statistics"]["samples"]["count"] == 8 and report["statistics"]["samples"]["copies"] == 0
    assert "| samples | result | 8 |" in (tmp_path / "eval" / "generation" / "report.md").read_text()
    grid = np.asarray(Image.open(tmp_path / "eval" / "generation" / "samples_vs_real.png"))
    assert grid.shape == (3 * 32, 2 * 3 * 64 + 8)  # 8 samples beside 8 real slices, 3 a row, X across the page
    assert (out / "samples.png").is_file()
    # a folder of training slices given as samples: each is a copy
    generation = bundle_module(HIPMRI, "generation")
    vqvae = bundle_module(HIPMRI, "networks").hipmri_vqvae(channels=(8, 8), num_res_channels=(4, 4),
                                                         num_embeddings=16, embedding_dim=4).eval()
    training = torch.rand(6, 1, 64, 32)
    stats = generation.distribution_statistics(training[:3], training, training[3:], vqvae)
    assert stats["copies"] == 3 and stats["nearest_training_ssim"]["mean"] > 0.999


@pytest.mark.slow
def test_the_latent_mixture_prior_is_fitted_and_sampled_through_its_configs(trained, tmp_path):
    work, _ = trained
    mixture = {**work, "output_dir": str(tmp_path / "eval"), "prior#num_components": "4", "prior#num_mixtures": "2"}
    run_bundle(["run", "training", "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'fit_prior.json'}']",
                *overrides(mixture)], cwd=tmp_path)
    record = json.loads((Path(work["ckpt_dir"]) / "prior_mixture.json").read_text())
    assert record["slices"] > 4 and record["num_mixtures"] == 2 and 0 < record["explained_variance"] <= 1
    assert (Path(work["ckpt_dir"]) / "prior_mixture.pt.sha256").is_file()
    generate = [str(CONFIGS / c) for c in ("train.json", "fit_prior.json", "generate.json")]
    for out in (tmp_path / "generated", tmp_path / "again"):
        run_bundle(["run", "--config_file", str(generate), *overrides({**mixture, "generated_dir": str(out),
                                                                        "num_samples": "3"})], cwd=tmp_path)
    first = [nib.load(tmp_path / "generated" / f"sample_{i:03d}.nii.gz").get_fdata() for i in range(3)]
    assert all(s.shape == (64, 32) and np.isfinite(s).all() for s in first)
    assert all(np.array_equal(s, nib.load(out / f"sample_{i:03d}.nii.gz").get_fdata()) for i, s in enumerate(first))
    assert not np.array_equal(first[0], first[1])
    # generate.json alone on the VQ-VAE names the prior configs to stack it on
    failed = run_bundle(["run", "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'generate.json'}']",
                         *overrides({**work, "output_dir": str(tmp_path / "eval")})], cwd=tmp_path, check=False)
    assert failed.returncode != 0 and "generate.json is stacked on train.json + fit_prior.json" in failed.stdout


@pytest.mark.slow
def test_the_deformed_code_prior_and_the_decoders_noise_through_their_configs(trained, tmp_path):
    work, _ = trained
    noise = json.loads((Path(work["ckpt_dir"]) / "noise_model.json").read_text())  # fitted by train.json
    assert noise["slices"] > 4 and noise["relative_noise_median"] > 0
    prior = {**work, "output_dir": str(tmp_path / "eval")}
    stack = [str(CONFIGS / c) for c in ("train.json", "fit_deformation_prior.json")]
    run_bundle(["run", "training", "--config_file", str(stack), *overrides(prior)], cwd=tmp_path)
    assert (Path(work["ckpt_dir"]) / "prior_deformation.pt.sha256").is_file()
    samples = {}
    for noisy in ("True", "False"):
        out = tmp_path / f"generated_{noisy}"
        run_bundle(["run", "--config_file", str([*stack, str(CONFIGS / "generate.json")]),
                    *overrides({**prior, "generated_dir": str(out), "num_samples": "3", "decoder_noise": noisy})],
                   cwd=tmp_path)
        samples[noisy] = [nib.load(out / f"sample_{i:03d}.nii.gz").get_fdata() for i in range(3)]
        assert all(s.shape == (64, 32) and np.isfinite(s).all() for s in samples[noisy])
        assert json.loads((out / "generation.json").read_text())["noise_model"] == (noisy == "True")
    assert not np.array_equal(samples["True"][0], samples["True"][1])
    assert not np.allclose(samples["True"][0], samples["False"][0])  # the same draw, with and without the noise


@pytest.mark.slow
def test_bad_inputs_are_named_and_the_run_goes_on(hipmri_demo, tmp_path):
    cases = _inputs(hipmri_demo, tmp_path / "in")
    data = np.asarray(nib.load(cases / "study_slice.nii.gz").dataobj).astype(np.float32)
    data[10, 10] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), cases / "nan.nii.gz")
    (cases / "broken.nii.gz").write_text("not a NIfTI file")
    (cases / "notes.txt").write_text("a stray file")
    base = {"output_dir": str(tmp_path / "out"), "handlers": "[]", "checkpoint": "None",
            "network_def": "{'_target_': 'oracle.IdentityReconstruction'}"}
    result = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                         *overrides({**base, "dataset_dir": str(cases)})], cwd=tmp_path, env=ORACLE, check=False)
    assert result.returncode != 0 and "3 of 6 case(s) failed" in result.stdout
    failed = {f["case"]: f["error"] for f in json.loads((tmp_path / "out" / "inference_report.json").read_text())["failed"]}
    assert "nan.nii.gz: 1 voxel(s) are NaN or infinite" in failed["nan"]
    assert "broken.nii.gz: not a readable NIfTI file" in failed["broken"]
    assert "notes.txt: not a NIfTI file" in failed["notes.txt"]
    assert (tmp_path / "out" / "volume_recon.nii.gz").is_file()  # the good ones are written
    slices_only = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                              *overrides({**base, "dataset_dir": str(cases / "volume.nii.gz"), "input_dims": "[2]"})],
                             cwd=tmp_path, env=ORACLE, check=False)
    assert slices_only.returncode != 0 and "volume.nii.gz: is a 3D volume of shape (256, 128, 6); a 2D slice" in slices_only.stdout
    volumes_only = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                               *overrides({**base, "dataset_dir": str(cases / "study_slice.nii.gz"), "input_dims": "[3]"})],
                              cwd=tmp_path, env=ORACLE, check=False)
    assert volumes_only.returncode != 0 and "is a 2D slice of shape (256, 128); a 3D volume is expected" in volumes_only.stdout
    (tmp_path / "empty").mkdir()
    empty = run_bundle(["run", "--config_file", str(CONFIGS / "inference.json"),
                        *overrides({**base, "dataset_dir": str(tmp_path / "empty")})], cwd=tmp_path, env=ORACLE, check=False)
    assert empty.returncode != 0 and "holds no files" in empty.stdout


@pytest.mark.slow
def test_a_volume_among_training_slices_is_set_aside(hipmri_demo, tmp_path):
    layout = bundle_module(HIPMRI, "layout")
    data = shutil.copytree(hipmri_demo, tmp_path / "data")
    volume = np.zeros((256, 128, 4), np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), data / "keras_slices_train" / "case_001_week_0_slice_0.nii.gz")
    split = layout.build_hipmri_datalist(str(data), str(tmp_path / "dl.json"))
    excluded = json.loads((tmp_path / "dl.json").read_text())["excluded"]
    assert [e["case"] for e in excluded] == ["case_001_week_0_slice_0"]
    assert "is a 3D volume of shape (256, 128, 4); a 2D slice is expected" in excluded[0]["error"]
    assert len(split["training"]) == 239




def test_prior_weights_of_other_settings_are_refused_naming_the_file(tmp_path):
    from shared.handlers.weights_loader import WeightsLoadError

    weights = tmp_path / "prior.pt"
    torch.save(CodeGridTransformer(7, (6, 4), (2, 2), dim=16, depth=1, heads=2).state_dict(), weights)
    frozen = bundle_module(HIPMRI, "networks").frozen
    assert frozen(CodeGridTransformer(7, (6, 4), (2, 2), dim=16, depth=1, heads=2), str(weights)).settings["dim"] == 16
    with pytest.raises(WeightsLoadError, match=f"{weights}: cannot load these weights.*other settings"):
        frozen(CodeGridTransformer(7, (6, 4), (1, 1), dim=16, depth=1, heads=2), str(weights))
