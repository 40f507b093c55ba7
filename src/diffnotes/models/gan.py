"""Small generator / discriminator parts for Diffusion-GAN (Wang et al. 2023) and DDGAN (Xiao et al.
2022), each as an MLP for 2-D points (``kind='mlp'``) or a small conv net for images (``'conv'``).

- Diffusion-GAN: a plain generator G(z) and a timestep-dependent discriminator D(y, t) that judges
  real and generated samples after the same forward diffusion y ~ q(y_t | x).
- DDGAN: the denoising step is a conditional GAN; G(x_t, z, t) predicts x_0 (then x_{t-1} is drawn
  from the posterior q(x_{t-1} | x_t, x_0)) and D(x_{t-1}, x_t, t) judges the pair (Eq. 4-5).

Own code reusing the U-Net blocks: a few readable lines each, CPU-sized, no diffusers dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from diffnotes.models.backbone import Backbone, BackboneConfig, pooled_head, time_embedding
from diffnotes.models.blocks import (
    ResBlock,
    TimeEmbedding,
    Upsample,
    as_time,
    check_input,
    make_config,
)

KINDS = ("mlp", "conv")


@dataclass(kw_only=True)
class GANConfig(BackboneConfig):
    """Every GAN part: an MLP for points, or for images the U-Net trunk of `BackboneConfig`.

    The conv discriminators and DDGAN's generator are `Backbone`s (one ResBlock a level and no
    attention by default); of the trunk's fields, Diffusion-GAN's G(z) reads only base_channels,
    channel_mults and num_groups.
    """

    kind: str = "mlp"  # 'mlp': points (B, dim) | 'conv': images (B, C, S, S)
    dim: int = 2  # mlp: data dimension
    in_channels: int = 1  # conv
    image_size: int = 16  # conv: a multiple of 4
    z_dim: int = 32  # latent noise z ~ N(0, I)
    hidden: int = 128  # mlp width
    depth: int = 3  # mlp layers
    channel_mults: tuple[int, ...] = (1, 2, 2)  # conv levels: 16 -> 8 -> 4
    attention_resolutions: tuple[int, ...] = ()


def _data_shape(cfg: GANConfig) -> tuple[int, ...]:
    if cfg.kind == "mlp":
        return (cfg.dim,)
    return (cfg.in_channels, cfg.image_size, cfg.image_size)


class TimeMLPNet(nn.Module):
    """MLP (B, in) -> (B, out) with an embedding (B, hidden) added before every hidden layer."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, out_dim)
        self.act = nn.LeakyReLU(0.2)  # GAN custom: no dead units in the discriminator

    def forward(self, x: torch.Tensor, emb: torch.Tensor | float = 0.0) -> torch.Tensor:
        h = self.act(self.inp(x))
        for layer in self.layers:
            h = self.act(layer(h + emb))
        return self.out(h)


class _Part(nn.Module):
    """A generator or discriminator for ``cfg.kind`` data; checks the config and keeps it."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        if cfg.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {cfg.kind!r}")
        if cfg.kind == "conv":
            cfg.check(cfg.image_size)
        self.cfg = cfg


def _time_embedding(cfg: GANConfig) -> TimeEmbedding:
    """As wide as the hidden layers for the MLP; the trunk's embedding for the conv parts."""
    if cfg.kind == "mlp":
        return TimeEmbedding(cfg.hidden, cfg.hidden, cfg.time_scale)
    return time_embedding(cfg)


class Generator(_Part):
    """Diffusion-GAN's generator G(z) -> x, z (B, z_dim)."""

    def __init__(self, cfg: GANConfig | None = None, **overrides: object):
        super().__init__(make_config(cfg, GANConfig, overrides))
        cfg = self.cfg
        if cfg.kind == "mlp":
            self.net = TimeMLPNet(cfg.z_dim, cfg.dim, cfg.hidden, cfg.depth)
            return
        ups = len(cfg.channel_mults) - 1
        ch, self.start = cfg.base_channels * cfg.channel_mults[-1], cfg.image_size // 2**ups
        self.fc = nn.Linear(cfg.z_dim, ch * self.start**2)
        layers: list[nn.Module] = []
        for mult in reversed(cfg.channel_mults[:-1]):
            layers += [
                Upsample(ch),
                ResBlock(ch, cfg.base_channels * mult, 0, groups=cfg.num_groups),
            ]
            ch = cfg.base_channels * mult
        layers += [nn.GroupNorm(cfg.num_groups, ch), nn.SiLU()]
        layers.append(nn.Conv2d(ch, cfg.in_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_input(z, (self.cfg.z_dim,), "z")
        if self.cfg.kind == "mlp":
            return self.net(z)  # (B, D)
        h = self.fc(z).reshape(len(z), -1, self.start, self.start)  # (B, C, S / 2^L, S / 2^L)
        return self.net(h)  # (B, C, S, S)


class _TimeDiscriminator(_Part):
    """Logits (B,) of D(inputs..., t) for `parts` data-shaped inputs concatenated on channels."""

    def __init__(self, cfg: GANConfig, parts: int):
        super().__init__(cfg)
        self.time_embed = _time_embedding(cfg)
        if cfg.kind == "mlp":
            self.net = TimeMLPNet(parts * cfg.dim, 1, cfg.hidden, cfg.depth)
            return
        self.encoder = Backbone(cfg, parts * cfg.in_channels, 0, cfg.image_size, decoder=False)
        ch = self.encoder.out_channels
        self.head = nn.Sequential(*pooled_head(cfg.num_groups, ch), nn.Linear(ch, 1))

    def _logits(
        self, inputs: list[torch.Tensor], t: torch.Tensor, distinct: bool = False
    ) -> torch.Tensor:
        b = inputs[0].shape[0]
        t = as_time(t, b, inputs[0].device)
        if distinct:  # a batch holds few distinct t: embed each once, then gather (B, E)
            levels, index = torch.unique(t, return_inverse=True)
            emb = self.time_embed(levels)[index]
        else:
            emb = self.time_embed(t)
        h = torch.cat(inputs, dim=1)
        if self.cfg.kind == "mlp":
            return self.net(h, emb)[:, 0]
        return self.head(self.encoder(h, emb))[:, 0]  # (B,)


class Discriminator(_TimeDiscriminator):
    """Diffusion-GAN's timestep-dependent discriminator D(y_t, t) -> logits (B,)."""

    def __init__(self, cfg: GANConfig | None = None, **overrides: object):
        super().__init__(make_config(cfg, GANConfig, overrides), parts=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, distinct: bool = True) -> torch.Tensor:
        """``distinct``: embed each distinct t once (the same logits; off under torch.func.vmap)."""
        check_input(x, _data_shape(self.cfg))
        return self._logits([x], t, distinct=distinct)


class DDGANDiscriminator(_TimeDiscriminator):
    """DDGAN's D(x_{t-1}, x_t, t) -> logits (B,): is x_{t-1} a real denoising of x_t?"""

    def __init__(self, cfg: GANConfig | None = None, **overrides: object):
        super().__init__(make_config(cfg, GANConfig, overrides), parts=2)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_input(x_prev, _data_shape(self.cfg), "x_prev")
        check_input(x_t, _data_shape(self.cfg), "x_t")
        return self._logits([x_prev, x_t], t)


class DDGANGenerator(_Part):
    """DDGAN's G(x_t, z, t) -> x0 prediction; z enters with the time embedding (Sec. 4.2)."""

    def __init__(self, cfg: GANConfig | None = None, **overrides: object):
        super().__init__(make_config(cfg, GANConfig, overrides))
        cfg = self.cfg
        self.time_embed = _time_embedding(cfg)
        if cfg.kind == "mlp":
            self.net = TimeMLPNet(cfg.dim + cfg.z_dim, cfg.dim, cfg.hidden, cfg.depth)
            return
        self.z_embed = nn.Sequential(nn.Linear(cfg.z_dim, cfg.emb_dim), nn.SiLU())
        self.net = Backbone(cfg, cfg.in_channels, cfg.in_channels, cfg.image_size)

    def forward(self, x_t: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_input(x_t, _data_shape(self.cfg), "x_t")
        check_input(z, (self.cfg.z_dim,), "z")
        emb = self.time_embed(as_time(t, x_t.shape[0], x_t.device))
        if self.cfg.kind == "mlp":
            return self.net(torch.cat([x_t, z], dim=1), emb)  # (B, D)
        return self.net(x_t, emb + self.z_embed(z))  # (B, C, H, W)
