"""Small convolutional autoencoder with KL or VQ regularisation, the first stage of an LDM.

Rombach et al. 2022 (Sec. 3.1, App. G): encoder E, decoder D, z = E(x) at a spatial downsampling
factor f = 2^(len(channel_mults) - 1); KL-reg. pulls q(z | x) towards N(0, I) with a tiny weight,
VQ-reg. (van den Oord et al. 2017, Eq. 3) snaps z to a learned codebook. Own code, no perceptual
or adversarial losses: small enough to train on shapes on a CPU, no diffusers dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnotes.models.backbone import ConvConfig
from diffnotes.models.blocks import Downsample, ResBlock, Upsample, check_input, make_config

REGULARISATIONS = ("kl", "vq")


@dataclass(kw_only=True)
class AutoencoderConfig(ConvConfig):
    """The images, latents and regulariser; the widths and depth are `ConvConfig`'s."""

    image_size: int = 32
    in_channels: int = 3
    latent_channels: int = 4  # LDM's f=4 / f=8 models use 3-4 latent channels
    channel_mults: tuple[int, ...] = (1, 2, 2)  # f = 4: 32x32 images -> 8x8 latents
    regularisation: str = "kl"  # 'kl' | 'vq'
    kl_weight: float = 1e-6  # LDM's KL-reg. weight (App. G)
    codebook_size: int = 256  # VQ: number of codes
    commitment: float = 0.25  # VQ-VAE beta


class AutoencoderOutput(NamedTuple):
    recon: torch.Tensor  # (B, C, H, W)
    z: torch.Tensor  # (B, latent, H / f, W / f)
    reg_loss: torch.Tensor  # scalar: KL or codebook + commitment
    indices: torch.Tensor | None  # (B, H / f, W / f) codes for VQ, else None


class Autoencoder(nn.Module):
    """x (B, C, H, W) in [-1, 1] <-> z (B, latent_channels, H / f, W / f)."""

    def __init__(self, cfg: AutoencoderConfig | None = None, **overrides: object):
        super().__init__()
        cfg = make_config(cfg, AutoencoderConfig, overrides)
        if cfg.regularisation not in REGULARISATIONS:
            raise ValueError(
                f"regularisation must be one of {REGULARISATIONS}, got {cfg.regularisation!r}"
            )
        cfg.check(cfg.image_size)
        self.cfg = cfg
        self.factor = 2 ** (len(cfg.channel_mults) - 1)
        g, base, mults = cfg.num_groups, cfg.base_channels, cfg.channel_mults
        kl = cfg.regularisation == "kl"

        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, base, 3, padding=1)]
        ch = base
        for level, mult in enumerate(mults):
            for _ in range(cfg.num_res_blocks):
                enc.append(ResBlock(ch, base * mult, 0, groups=g))
                ch = base * mult
            if level < len(mults) - 1:
                enc.append(Downsample(ch))
        z_out = 2 * cfg.latent_channels if kl else cfg.latent_channels  # KL: mean and log var
        enc += [ResBlock(ch, ch, 0, groups=g), nn.GroupNorm(g, ch), nn.SiLU()]
        enc.append(nn.Conv2d(ch, z_out, 3, padding=1))
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)]
        dec.append(ResBlock(ch, ch, 0, groups=g))
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(cfg.num_res_blocks):
                dec.append(ResBlock(ch, base * mult, 0, groups=g))
                ch = base * mult
            if level:
                dec.append(Upsample(ch))
        dec += [nn.GroupNorm(g, ch), nn.SiLU(), nn.Conv2d(ch, cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        if not kl:
            self.codebook = nn.Embedding(cfg.codebook_size, cfg.latent_channels)
            nn.init.uniform_(self.codebook.weight, -1 / cfg.codebook_size, 1 / cfg.codebook_size)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, H / f, W / f)."""
        s = self.cfg.image_size // self.factor
        return (self.cfg.latent_channels, s, s)

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        check_input(x, (cfg.in_channels, cfg.image_size, cfg.image_size))
        return self.encoder(x)

    def encode(
        self,
        x: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """z (B, latent, h, w): KL: the posterior mean (or a sample); VQ: the quantised latent."""
        h = self._moments(x)
        if self.cfg.regularisation == "vq":
            return self.quantise(h)[0]
        mean, logvar = h.chunk(2, dim=1)
        if not sample:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat (B, C, H, W) from z (B, latent, h, w)."""
        check_input(z, self.latent_shape, "z")
        return self.decoder(z)

    def quantise(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest codebook entries with straight-through gradients; (z_q, indices, VQ loss)."""
        if self.cfg.regularisation != "vq":
            raise ValueError("quantise needs regularisation='vq', this autoencoder is 'kl'")
        b, c, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, c)  # (B h w, c)
        indices = torch.cdist(flat, self.codebook.weight).argmin(dim=1)
        z_q = self.codebook(indices).reshape(b, h, w, c).permute(0, 3, 1, 2)
        # VQ-VAE Eq. 3: ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2
        loss = F.mse_loss(z_q, z_e.detach()) + self.cfg.commitment * F.mse_loss(z_e, z_q.detach())
        z_q = z_e + (z_q - z_e).detach()  # straight-through estimator
        return z_q, indices.reshape(b, h, w), loss

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> AutoencoderOutput:
        h = self._moments(x)
        if self.cfg.regularisation == "vq":
            z, indices, reg = self.quantise(h)
            return AutoencoderOutput(self.decoder(z), z, reg, indices)
        mean, logvar = h.chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * noise
        # KL(N(mean, var) || N(0, I)), summed over latent dims, averaged over the batch.
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
        return AutoencoderOutput(self.decoder(z), z, kl, None)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction MSE plus the regulariser (kl_weight * KL, or the VQ loss)."""
        out = self(x, generator)
        weight = self.cfg.kl_weight if self.cfg.regularisation == "kl" else 1.0
        return F.mse_loss(out.recon, x) + weight * out.reg_loss
