"""The multimodal VAE (``shared.networks.multimodal_vae``), its loss and the VAE batch augmentation, and the I-SPY2
configs' presets of it."""

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import ISPY2
from helpers.bundle_scripts import bundle_module
from shared.engines.vae_augmentation import VAEBatchAugmentation
from shared.losses.multimodal_vae import MultimodalVAELoss, gaussian_kl
from shared.networks.multimodal_vae import MultimodalVAE

networks = bundle_module(ISPY2, "networks")


def ispy2_vae(inputs=("t2", "mask"), preset: str = "study") -> MultimodalVAE:
    """The VAE as I-SPY2's configs build it (``vae_def`` of ``train.json``, trained by ``train_vae.json``)."""
    parser = ConfigParser()
    parser.read_config([str(ISPY2 / "configs" / "train.json"), str(ISPY2 / "configs" / "train_vae.json")])
    parser.update({"vae_inputs": list(inputs), "vae_preset": preset})
    return parser.get_parsed_content("network_def")


def test_study_preset_shapes_and_mask_range():
    torch.manual_seed(0)
    net = ispy2_vae()
    recon, mu, log_sigma, z = net(torch.randn(3, 2, 128, 128))
    assert recon.shape == (3, 2, 128, 128)
    assert mu.shape == log_sigma.shape == z.shape == (3, 32, 4, 4)
    assert recon[:, 1].min() >= 0 and recon[:, 1].max() <= 1  # sigmoid mask head
    assert recon[:, 0].min() < 0  # linear T2 head is not squashed


def test_brats_style_preset_three_images_and_a_label():
    net = MultimodalVAE(4, decoder_channels=(3, 1), decoder_activations=("linear", "sigmoid"))
    recon, mu, _, _ = net(torch.randn(2, 4, 128, 128))
    assert recon.shape == (2, 4, 128, 128) and mu.shape == (2, 32, 4, 4)
    assert 0 <= recon[:, 3].min() and recon[:, 3].max() <= 1
    with pytest.raises(ValueError, match="expected 4 input channels, got 2"):
        net(torch.randn(1, 2, 128, 128))
    single = MultimodalVAE(1, (1,), ("linear",))  # a single-modality VAE is the same class
    assert single(torch.randn(1, 1, 64, 64))[0].shape == (1, 1, 64, 64)


def test_gaussian_kl_values():
    zeros = torch.zeros(2, 32, 4, 4)
    assert gaussian_kl(zeros, zeros).item() == 0.0
    mu = torch.full((1, 2), 1.0)
    log_sigma = torch.log(torch.full((1, 2), 2.0))
    # per element 0.5 * (1 + 4 - 1 - 2 ln 2); two elements
    assert abs(gaussian_kl(mu, log_sigma).item() - (4 - 2 * torch.log(torch.tensor(2.0)).item())) < 1e-6


def test_reparameterisation_uses_noise_and_eval_mean_is_deterministic():
    torch.manual_seed(0)
    net = ispy2_vae()
    x = torch.randn(2, 2, 128, 128)
    net.train()
    _, mu, log_sigma, z1 = net(x)
    _, _, _, z2 = net(x)
    assert not torch.allclose(z1, z2) and not torch.allclose(z1, mu)
    net.eval()
    with torch.no_grad():
        a, mu_eval, _, z = net(x)
        b = net(x)[0]
    assert torch.equal(z, mu_eval) and torch.equal(a, b)
    net.use_mean_at_eval = False
    with torch.no_grad():
        assert not torch.equal(net(x)[3], net(x)[3])


def test_vae_loss_terms():
    loss = MultimodalVAELoss(kl_weight=0.0, mask_weight=0.0)
    target = torch.zeros(1, 2, 4, 4)
    recon = torch.ones(1, 2, 4, 4)
    zeros = torch.zeros(1, 3)
    assert loss((recon, zeros, zeros), target).item() == pytest.approx(1.0)  # MSE of the image channel
    perfect_mask = MultimodalVAELoss(image_weight=0.0, kl_weight=0.0)
    mask = torch.zeros(1, 2, 4, 4)
    mask[:, 1, :2] = 1
    assert perfect_mask((mask, zeros, zeros), mask).item() < 1e-4


def test_vae_augmentation_appends_the_configured_fraction():
    torch.manual_seed(0)
    aug = VAEBatchAugmentation(ispy2_vae(), fraction=0.2, latent_noise_std=0.5)
    images, labels = torch.randn(10, 1, 128, 128), (torch.rand(10, 1, 128, 128) > 0.5).float()
    out_images, out_labels = aug({"image": images, "label": labels})  # the trainer's prepare_batch
    out = {"image": out_images, "label": out_labels}
    assert out["image"].shape == (12, 1, 128, 128) and out["label"].shape == (12, 1, 128, 128)
    assert torch.equal(out["image"][:10], images) and torch.equal(out["label"][:10], labels)
    generated = out["label"][10:]
    assert generated.min() >= 0 and generated.max() <= 1 and torch.isfinite(out["image"][10:]).all()
    small_images, _ = aug({"image": images[:2], "label": labels[:2]})
    assert small_images.shape[0] == 3  # at least one generated pair
    with pytest.raises(ValueError):
        VAEBatchAugmentation(ispy2_vae(), fraction=1.5)


def test_single_modality_vae_augments_with_the_sources_masks():
    torch.manual_seed(0)
    t2_only = VAEBatchAugmentation(ispy2_vae(["t2"]), fraction=0.5)
    images, labels = torch.randn(4, 1, 64, 64), (torch.rand(4, 1, 64, 64) > 0.5).float()
    out_images, out_labels = t2_only({"image": images, "label": labels})
    assert out_images.shape == out_labels.shape == (6, 1, 64, 64)
    assert not torch.equal(out_images[4:], images[:2]) and torch.isfinite(out_images).all()
    assert all(any(torch.equal(g, s) for s in labels) for g in out_labels[4:])  # generated images keep real masks
    assert networks.vae_checkpoint_name(["t2"]) == "vae_t2.pt"
    assert networks.vae_checkpoint_name(["t2", "mask"]) == "vae_t2_mask.pt"


def test_fine_preset_keeps_a_finer_latent_grid_with_a_similar_parameter_count():
    study, fine = ispy2_vae(), ispy2_vae(preset="fine")
    x = torch.randn(2, 2, 128, 128)
    with torch.no_grad():
        out_study, mu_study, _, _ = study.eval()(x)
        out_fine, mu_fine, _, _ = fine.eval()(x)
    assert out_study.shape == out_fine.shape == x.shape
    assert mu_study.shape == (2, 32, 4, 4) and mu_fine.shape == (2, 16, 16, 16)
    count = [sum(p.numel() for p in n.parameters()) for n in (study, fine)]
    assert 0.5 < count[1] / count[0] < 1.5
    assert networks.vae_checkpoint_name(["t2", "mask"], "fine") == "vae_t2_mask_fine.pt"
    with pytest.raises(RuntimeError, match="vae_presets"):
        ispy2_vae(preset="huge")
