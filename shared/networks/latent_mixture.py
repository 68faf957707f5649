"""A Gaussian mixture over the principal components of a trained autoencoder's latents: an ex-post density estimate
(Ghosh et al., "From Variational to Deterministic Autoencoders", ICLR 2020), from which new latents are drawn for
the autoencoder to decode (a VQ-VAE quantises them first).

It is fitted in seconds (scikit-learn's ``PCA`` and ``GaussianMixture``) and sampled in one batch. It models only
what its principal components span: with few training images, a draw is a weighted sum of the training latents of
one mixture component, and an edge that sits at different places in them shows twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from shared.networks.recorded_settings import RecordedSettings

__all__ = ["LatentGaussianMixture"]


class LatentGaussianMixture(RecordedSettings, nn.Module):
    """``num_mixtures`` full-covariance Gaussians over the first ``num_components`` principal components of latents of
    shape ``latent_shape`` (e.g. (channels, X, Y)). :meth:`fit` sets every buffer; :meth:`sample` draws latents."""

    def __init__(self, latent_shape: Sequence[int], num_components: int = 160, num_mixtures: int = 48) -> None:
        super().__init__()
        self.latent_shape = [int(s) for s in latent_shape]
        self.num_components, self.num_mixtures = int(num_components), int(num_mixtures)
        size = math.prod(self.latent_shape)
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("components", torch.zeros(self.num_components, size))
        self.register_buffer("weights", torch.full((self.num_mixtures,), 1.0 / self.num_mixtures))
        self.register_buffer("means", torch.zeros(self.num_mixtures, self.num_components))
        self.register_buffer("scale_tril", torch.eye(self.num_components).repeat(self.num_mixtures, 1, 1))
        self.record_settings(latent_shape=self.latent_shape, num_components=self.num_components,
                             num_mixtures=self.num_mixtures)

    @torch.no_grad()
    def fit(self, latents: torch.Tensor, spread: float = 1.0, reg_covar: float = 1e-3,
            seed: int = 0) -> LatentGaussianMixture:
        """Fit to ``latents`` (N, *latent_shape). ``spread`` scales the fitted standard deviations (a mixture
        component fitted to few latents underestimates its spread); ``reg_covar`` is added to each covariance's
        diagonal. Deterministic under ``seed``."""
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        if tuple(latents.shape[1:]) != tuple(self.latent_shape):
            raise ValueError(f"latents of shape {tuple(latents.shape[1:])} do not fit a mixture over "
                             f"{tuple(self.latent_shape)}.")
        if len(latents) <= self.num_components:
            raise ValueError(f"{len(latents)} latents cannot give {self.num_components} principal components; "
                             "fit on more images or lower num_components.")
        if len(latents) < self.num_mixtures:
            raise ValueError(f"{len(latents)} latents cannot fit {self.num_mixtures} Gaussians; fit on more images or "
                             "lower num_mixtures.")
        flat = latents.reshape(len(latents), -1).double().cpu().numpy()
        pca = PCA(self.num_components, random_state=seed).fit(flat)
        mixture = GaussianMixture(self.num_mixtures, covariance_type="full", reg_covar=reg_covar,
                                  random_state=seed).fit(pca.transform(flat))
        for name, value in (("mean", pca.mean_), ("components", pca.components_), ("weights", mixture.weights_),
                            ("means", mixture.means_), ("scale_tril", mixture.covariances_)):
            value = torch.as_tensor(value, dtype=torch.float64)
            if name == "scale_tril":
                value = torch.linalg.cholesky(value) * spread
            getattr(self, name).copy_(value)
        self.explained_variance = float(pca.explained_variance_ratio_.sum())
        return self

    @torch.no_grad()
    def sample(self, count: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` latents (count, *latent_shape): a mixture component each (by weight), then a Gaussian draw with
        its standard deviations times ``temperature``. ``generator`` (on the buffers' device) makes it repeatable."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, not {temperature}.")
        which = torch.multinomial(self.weights, count, replacement=True, generator=generator)
        noise = torch.randn(count, self.num_components, 1, generator=generator, device=self.means.device)
        coefficients = self.means[which] + temperature * (self.scale_tril[which] @ noise).squeeze(-1)
        return (coefficients @ self.components + self.mean).reshape(count, *self.latent_shape)
