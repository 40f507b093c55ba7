"""The first stage of latent diffusion (Rombach et al. 2022): a linear (PCA) and a KL one.

`PCAStage` is the exact case: a linear encoder keeps a Gaussian mixture with isotropic
components a Gaussian mixture, so the latent model's eps is exact and everything a sample lacks
is the first stage's doing. `shapes_autoencoder` is the book's trained KL-regularised
autoencoder on `shapes` (the recipe pattern of `diffnotes.recipes`: trained once, cached).
`latent_scale` is LDM's ``scale_by_std``: 1 / std of the latents, so z * scale has unit variance.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import Tensor, nn

from diffnotes.analytic import GaussianMixture
from diffnotes.cache import cached
from diffnotes.models.autoencoder import Autoencoder, AutoencoderConfig
from diffnotes.profile import Profile
from diffnotes.train import train

__all__ = ["PCAStage", "autoencoder_config", "latent_scale", "shapes_autoencoder"]

FACTORS = (2, 4, 8)


class PCAStage:
    """E(x) = U_d^T (x - m), D(z) = U_d z + m: the top-d principal axes of a mixture's covariance.

    For a mixture of isotropic Gaussians N(mu_k, s_k^2 I), E pushes it forward to the mixture
    N(U_d^T (mu_k - m), s_k^2 I_d): `latent_mixture` is that exact latent distribution.
    """

    def __init__(self, mixture: GaussianMixture, d: int) -> None:
        if not isinstance(mixture, GaussianMixture) or not mixture.isotropic:
            raise ValueError("mixture must be a GaussianMixture with isotropic covariances (K,)")
        if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= mixture.dim:
            raise ValueError(f"d must be an int in 1..{mixture.dim}, got {d!r}")
        w, mu, var = mixture.weights, mixture.means, mixture.covs
        self.mixture, self.d = mixture, d
        self.mean = (w[:, None] * mu).sum(0)  # (D,)
        centred = mu - self.mean
        cov = torch.diag((w * var).sum().expand(mixture.dim)) + (w[:, None] * centred).T @ centred
        evals, vecs = torch.linalg.eigh(cov)  # ascending
        self.U = vecs.flip(1)[:, :d]  # (D, d), the top-d axes
        self.explained = float(evals.flip(0)[:d].sum() / evals.sum())

    def encode(self, x: Tensor) -> Tensor:
        """z (B, d) of x (B, D)."""
        return (x.reshape(x.shape[0], -1).double() - self.mean) @ self.U

    def decode(self, z: Tensor) -> Tensor:
        """x (B, D) of z (B, d)."""
        if z.ndim != 2 or z.shape[1] != self.d:
            raise ValueError(f"z must have shape (B, {self.d}), got {tuple(z.shape)}")
        return z.double() @ self.U.T + self.mean

    def latent_mixture(self) -> GaussianMixture:
        """The exact distribution of E(x) for x ~ mixture."""
        m = self.mixture
        return GaussianMixture(m.weights, (m.means - self.mean) @ self.U, m.covs)


def latent_scale(z: Tensor) -> float:
    """LDM's scale_by_std: 1 / std of a batch of latents (SD 1.x: 0.18215, SDXL: 0.13025)."""
    if not isinstance(z, Tensor) or z.numel() < 2 or not bool(torch.isfinite(z).all()):
        raise ValueError("z must be a finite tensor of latents with at least 2 entries")
    return float(1.0 / z.detach().float().std())


def autoencoder_config(profile: Profile, factor: int = 4, latent_channels: int = 4):
    """The shapes autoencoder at downsampling ``factor`` (2, 4, 8) for this profile."""
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}")
    if not isinstance(latent_channels, int) or latent_channels < 1:
        raise ValueError(f"latent_channels must be an int >= 1, got {latent_channels!r}")
    levels = {2: 2, 4: 3, 8: 4}[factor]
    base = profile.pick(ci=8, book=16, gpu=64)
    mults = (1, 2, 2, 2)[:levels]
    return AutoencoderConfig(
        image_size=32,
        base_channels=base,
        channel_mults=mults,
        num_groups=8,
        latent_channels=latent_channels,
        kl_weight=1e-6,  # LDM's KL weight (App. G)
    )


def shapes_autoencoder(
    profile: Profile, *, factor: int = 4, latent_channels: int = 4, seed: int | None = None
) -> nn.Module:
    """KL-regularised autoencoder on 32x32 `shapes` (Rombach et al. Sec. 3.1): x -> z -> x_hat.

    Reconstruction MSE + 1e-6 KL, no perceptual or adversarial loss; trained on 2,048 shapes
    (seed 0 data; ``seed``, default ``profile.seed``, sets the weights and batches). Returns the
    EMA model in eval mode on ``profile.device``.
    """
    seed = profile.seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (or None for the profile's), got {seed!r}")
    cfg = autoencoder_config(profile, factor, latent_channels)
    hp = profile.pick(
        ci=dict(steps=150, batch_size=32, lr=2e-3),
        book=dict(steps=600, batch_size=32, lr=2e-3),
        gpu=dict(steps=20000, batch_size=64, lr=4.5e-6 * 64),
    )
    config = dict(data="shapes32/2048", ae=asdict(cfg), seed=seed, **hp)

    def build() -> nn.Module:
        return Autoencoder(cfg).to(profile.device)

    def fit(model: nn.Module) -> nn.Module:
        from diffnotes.data import shapes

        x = shapes(2048, 32, seed=0).images.to(profile.device)

        def loss(m: nn.Module, batch: Tensor, g: torch.Generator) -> Tensor:
            return m.loss(batch, g)

        return train(model, loss, x, seed=seed, progress=profile.progress, **hp).ema

    model = cached(
        f"latent/shapes_autoencoder_f{factor}_c{latent_channels}",
        config,
        build,
        fit,
        profile=profile.name,
        seed=seed,
    )
    model.requires_grad_(False)
    return model
