"""The latent Gaussian mixture (shared.networks.latent_mixture): what it fits, what it draws, and its weights."""

from __future__ import annotations

import pytest
import torch

from shared.networks.latent_mixture import LatentGaussianMixture


def _two_clusters(count: int = 400) -> torch.Tensor:
    """Latents (count, 2, 3, 2) near one of two points, each varying along one direction only."""
    generator = torch.Generator().manual_seed(0)
    centre = torch.stack([torch.full((12,), -2.0), torch.full((12,), 2.0)])
    direction = torch.eye(12)[:2]
    which = torch.arange(count) % 2
    latents = centre[which] + torch.randn(count, 1, generator=generator) * direction[which]
    return latents.reshape(count, 2, 3, 2).double()


def test_draws_follow_the_fitted_clusters_and_repeat_under_a_seed():
    mixture = LatentGaussianMixture([2, 3, 2], num_components=3, num_mixtures=2).fit(_two_clusters())
    draws = mixture.sample(2000, generator=torch.Generator().manual_seed(1)).reshape(2000, -1)
    low = draws[:, 2:].mean(1) < 0  # the coordinates that only the centre sets: -2 or +2
    assert 0.45 < low.float().mean() < 0.55
    for cluster, axis in ((draws[low], 0), (draws[~low], 1)):
        assert torch.allclose(cluster[:, 2:].mean(0), torch.full((10,), -2.0 if axis == 0 else 2.0), atol=0.1)
        spread = cluster.std(0)
        assert 0.9 < spread[axis] < 1.1 and spread[2:].max() < 0.1  # each cluster varies along its own direction
    again = mixture.sample(2000, generator=torch.Generator().manual_seed(1)).reshape(2000, -1)
    assert torch.equal(draws, again)
    wider = mixture.sample(2000, temperature=2.0, generator=torch.Generator().manual_seed(1)).reshape(2000, -1)
    assert 1.8 < wider[low][:, 0].std() < 2.2


def test_spread_scales_the_fitted_deviation_as_temperature_does_at_draw_time():
    wide = LatentGaussianMixture([2, 3, 2], num_components=3, num_mixtures=2).fit(_two_clusters(), spread=1.5)
    plain = LatentGaussianMixture([2, 3, 2], num_components=3, num_mixtures=2).fit(_two_clusters())
    assert torch.allclose(wide.sample(50, generator=torch.Generator().manual_seed(2)),
                          plain.sample(50, temperature=1.5, generator=torch.Generator().manual_seed(2)), atol=1e-5)


def test_too_few_latents_or_another_shape_is_refused():
    mixture = LatentGaussianMixture([2, 3, 2], num_components=8, num_mixtures=2)
    with pytest.raises(ValueError, match="6 latents cannot give 8 principal components"):
        mixture.fit(_two_clusters(6))
    with pytest.raises(ValueError, match="10 latents cannot fit 12 Gaussians"):
        LatentGaussianMixture([2, 3, 2], num_components=3, num_mixtures=12).fit(_two_clusters(10))
    with pytest.raises(ValueError, match=r"latents of shape \(12,\) do not fit"):
        mixture.fit(torch.zeros(20, 12))


def test_weights_record_their_settings():
    mixture = LatentGaussianMixture([2, 3, 2], num_components=3, num_mixtures=2).fit(_two_clusters())
    loaded = LatentGaussianMixture([2, 3, 2], num_components=3, num_mixtures=2)
    loaded.load_state_dict(mixture.state_dict())
    assert torch.equal(loaded.sample(5, generator=torch.Generator().manual_seed(3)),
                       mixture.sample(5, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="num_mixtures 2 in the weights, 3 here"):
        LatentGaussianMixture([2, 3, 2], num_components=3, num_mixtures=3).load_state_dict(mixture.state_dict())
