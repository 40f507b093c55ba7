"""DDPM-style U-Net (Ho et al. 2020, App. B; Nichol & Dhariwal 2021 for learned variance).

Own code rather than diffusers' ``UNet2DModel``: the whole network is one readable page, small
enough to train on 16x16 digits on a CPU, and free of a diffusers dependency. Its trunk
(`backbone.Backbone`) and layers (`blocks`) are shared with the classifier, latent and video
U-Nets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffnotes.models.backbone import Backbone, BackboneConfig, TimeConditioned
from diffnotes.models.blocks import (
    ClassConditioned,
    check_input,
    count_parameters,
    label_embedding,
    make_config,
    squash_variance,
    timestep_embedding,
)

# count_parameters and timestep_embedding lived here first; scripts still import them from here.
__all__ = ["UNet", "UNetConfig", "count_parameters", "timestep_embedding"]


@dataclass(kw_only=True)
class UNetConfig(BackboneConfig):
    """The data and outputs of the U-Net; its trunk's hyperparameters are `BackboneConfig`'s."""

    image_size: int = 16  # 16x16 digits on a CPU
    in_channels: int = 1
    out_channels: int | None = None  # None: in_channels (x2 with learned_variance)
    num_classes: int | None = None  # class-conditional with a null class (index num_classes)
    learned_variance: bool = False  # iDDPM: output (eps, v), 2x channels


class UNet(ClassConditioned, TimeConditioned):
    """eps_theta(x_t, t[, y]) for images (B, C, H, W); y=None (or y < 0) is the null class (CFG).

    With ``learned_variance`` the output is (B, 2C, H, W): eps then v in [-1, 1] (iDDPM Eq. 15
    interpolates log beta and log beta_tilde with frac = (v + 1) / 2).
    """

    def __init__(self, cfg: UNetConfig | None = None, **overrides: object):
        cfg = make_config(cfg, UNetConfig, overrides)
        super().__init__(cfg, cfg.image_size)
        out = cfg.out_channels or cfg.in_channels
        self.out_channels = 2 * out if cfg.learned_variance else out
        self.class_embed = label_embedding(cfg.num_classes, cfg.emb_dim)
        self.backbone = Backbone(cfg, cfg.in_channels, self.out_channels, cfg.image_size)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.cfg
        check_input(x, (cfg.in_channels, cfg.image_size, cfg.image_size))
        out = self.backbone(x, self.embed(x, t, y))  # (B, out_channels, H, W)
        return squash_variance(out) if cfg.learned_variance else out
