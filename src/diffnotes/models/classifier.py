"""Noise-conditioned classifier p_phi(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021).

Own code: the encoder half of our U-Net (same blocks, same time embedding) then global average
pooling and a linear head, as guided-diffusion's ``EncoderUNetModel`` with ``pool='adaptive'``;
small and readable, no diffusers dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnotes.models.unet import (
    AttentionBlock,
    Backbone,
    TimeEmbedding,
    as_time,
    check_config,
    check_input,
)


@dataclass
class ClassifierConfig:
    image_size: int = 16
    in_channels: int = 1
    num_classes: int = 10
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)
    num_heads: int = 1
    dropout: float = 0.0
    num_groups: int = 8
    time_scale: float = 1.0  # set 1000 for continuous t in [0, 1]


class NoisyClassifier(nn.Module):
    """Logits (B, num_classes) of p(y | x_t, t) for noisy images x_t (B, C, H, W)."""

    def __init__(self, cfg: ClassifierConfig | None = None, **overrides: object):
        super().__init__()
        cfg = cfg or ClassifierConfig(**overrides)
        check_config(cfg.image_size, cfg.channel_mults, cfg.base_channels, cfg.num_groups)
        self.cfg = cfg
        emb_dim = 4 * cfg.base_channels
        self.time_embed = TimeEmbedding(cfg.base_channels, emb_dim, cfg.time_scale)

        def mixers(ch: int, res: int) -> list[nn.Module]:
            if res not in cfg.attention_resolutions:
                return []
            return [AttentionBlock(ch, cfg.num_heads, cfg.num_groups)]

        self.encoder = Backbone(
            cfg.in_channels,
            0,
            cfg.base_channels,
            cfg.channel_mults,
            cfg.num_res_blocks,
            cfg.image_size,
            emb_dim,
            mixers,
            cfg.dropout,
            cfg.num_groups,
            decoder=False,
        )
        ch = self.encoder.out_channels
        self.head = nn.Sequential(
            nn.GroupNorm(cfg.num_groups, ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(ch, cfg.num_classes)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (B, C_low)."""
        cfg = self.cfg
        check_input(x, (cfg.in_channels, cfg.image_size, cfg.image_size))
        emb = self.time_embed(as_time(t, x.shape[0], x.device))
        return self.head(self.encoder(x, emb))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x, t))  # (B, num_classes)

    def grad_log_prob(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_x log p_phi(y | x_t, t) (B, C, H, W): the term guidance scales (D&N Alg. 1-2)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_p = F.log_softmax(self(x, t), dim=-1)
            selected = log_p[torch.arange(len(y), device=x.device), torch.as_tensor(y).long()]
            return torch.autograd.grad(selected.sum(), x)[0]
