"""The two generative blocks beside the latent mixture: Rician noise around an autoencoder's mean images
(shared.networks.rician_noise) and the deformed-code prior (shared.networks.deformed_codes)."""

from __future__ import annotations

import math

import pytest
import torch

from shared.networks.deformed_codes import DeformedCodePrior, deform, smooth_displacement
from shared.networks.rician_noise import RicianNoiseModel, rice_mean


def _phantoms(count: int, sigma: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude images of a bright square on an empty background, each with its own noise ``sigma``, standardised
    as the bundles prepare slices; and their exact mean images, standardised the same way."""
    signal = torch.zeros(count, 1, 64, 48)
    signal[:, :, 16:48, 12:36] = 10.0
    s = sigma[:, None, None, None]
    images = (signal + s * torch.randn(signal.shape, generator=generator)).hypot(s * torch.randn(signal.shape,
                                                                                                 generator=generator))
    means = s * rice_mean(signal / s).float()
    centre, scale = images.mean(dim=(1, 2, 3), keepdim=True), images.std(dim=(1, 2, 3), keepdim=True)
    return (images - centre) / scale, (means - centre) / scale


def test_the_rician_mean_is_the_rayleigh_mean_at_zero_and_the_signal_far_above_the_noise():
    mean = rice_mean(torch.tensor([0.0, 1.0, 50.0, 2000.0]))
    assert mean[0] == pytest.approx(math.sqrt(math.pi / 2))
    assert mean[1] == pytest.approx(1.5486, abs=1e-3)  # E|1 + N| for unit complex Gaussian noise
    assert mean[2] == pytest.approx(math.sqrt(50**2 + 1), rel=1e-4) and mean[3] == pytest.approx(2000, rel=1e-6)


def test_the_noise_model_measures_each_images_relative_noise_and_draws_it_back():
    generator = torch.Generator().manual_seed(0)
    sigma = torch.tensor([0.2, 0.2, 0.5, 0.5])
    images, means = _phantoms(4, sigma, generator)
    model = RicianNoiseModel(max_images=8).fit(images, means)
    assert int(model.count) == 4  # sigma 0.2 and 0.5 against a signal of 10, whatever the standardisation
    assert torch.allclose(model.relative_noise[:4], torch.tensor([0.02, 0.02, 0.05, 0.05]), rtol=0.1)
    # drawn around the means, the images have the real ones' noise: Rayleigh background, near-Gaussian tissue
    one = RicianNoiseModel(max_images=8).fit(images[2:3], means[2:3])
    drawn = one.sample(means[2:3].expand(16, -1, -1, -1), torch.Generator().manual_seed(1))
    for region in ((slice(0, 12), slice(0, 10)), (slice(20, 44), slice(16, 32))):
        real, fake = images[2:3][(..., *region)], drawn[(..., *region)]
        assert fake.mean() == pytest.approx(float(real.mean()), abs=0.02)
        assert fake.std() == pytest.approx(float(real.std()), rel=0.1)
    background = drawn[..., :12, :10]
    skew = ((background - background.mean()) ** 3).mean() / background.std() ** 3
    assert skew > 0.4  # a Rayleigh background is skewed (0.63), a Gaussian one would not be
    assert (background.mean() - background.min()) / background.std() < 2.2  # and bounded below (1.91 std)


def test_the_noise_model_refuses_to_draw_before_it_is_fitted_and_mismatched_images():
    model = RicianNoiseModel(max_images=2)
    with pytest.raises(ValueError, match="fit it first"):
        model.sample(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="1 to 2 images"):
        model.fit(torch.zeros(3, 1, 8, 8), torch.zeros(3, 1, 8, 8))


def test_a_deformation_moves_an_image_smoothly_and_none_leaves_it_as_it_is():
    image = torch.zeros(1, 1, 32, 16)
    image[:, :, 10:20, 4:10] = 1.0
    assert torch.allclose(deform(image, torch.zeros(1, 2, 32, 16)), image, atol=1e-6)
    shifted = deform(image, torch.full((1, 2, 32, 16), 2.0))  # two pixels along both axes
    assert torch.allclose(shifted[:, :, 8:18, 2:8], image[:, :, 10:20, 4:10], atol=1e-5)
    field = smooth_displacement(64, (32, 16), (4, 2), 1.5, torch.Generator().manual_seed(0))
    assert field.shape == (64, 2, 32, 16) and 1.0 < field.std() < 2.0
    assert (field[..., 1:, :] - field[..., :-1, :]).abs().max() < 1.0  # smooth: under a pixel between neighbours


def test_the_deformed_code_prior_keeps_its_codes_and_draws_moved_training_images():
    codes = torch.randint(0, 7, (5, 8, 4), generator=torch.Generator().manual_seed(0))
    table = torch.randn(7, generator=torch.Generator().manual_seed(1))

    def decode(indices: torch.Tensor) -> torch.Tensor:  # a stand-in decoder: each code a 4x4 block of its value
        return table[indices].repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]

    prior = DeformedCodePrior([8, 4], max_images=6, control_points=(2, 2), displacement=0.0, scale=0.0).fit(codes)
    draws = prior.sample(10, decode, generator=torch.Generator().manual_seed(2))
    assert draws.shape == (10, 1, 32, 16)
    training = decode(codes)
    assert all(any(torch.allclose(d, t, atol=1e-5) for t in training) for d in draws)  # no deformation: copies
    moved = DeformedCodePrior([8, 4], 6, (2, 2), displacement=2.0, scale=0.1)
    moved.load_state_dict(prior.state_dict())
    assert not any(torch.allclose(d, t, atol=1e-3) for d in moved.sample(10, decode) for t in training)
    with pytest.raises(ValueError, match="1 to 6"):
        DeformedCodePrior([8, 4], max_images=6).fit(torch.zeros(7, 8, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="fit it first"):
        DeformedCodePrior([8, 4]).sample(1, decode)
