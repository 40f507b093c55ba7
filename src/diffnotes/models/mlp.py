"""Time-conditioned MLP for 2-D points: the eps-model of the toy chapters.

Own code: a dozen lines a reader can hold in mind, no diffusers dependency. Residual blocks with
the sinusoidal time embedding (and optionally a class embedding with a null class, for CFG)
added to the hidden state, as in the U-Net.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from diffnotes.models.blocks import (
    ClassConditioned,
    TimeEmbedding,
    check_input,
    label_embedding,
    make_config,
    squash_variance,
)


@dataclass
class MLPConfig:
    dim: int = 2  # data dimension D
    hidden: int = 128
    depth: int = 3  # residual blocks
    num_classes: int | None = None  # class-conditional with a null class (index num_classes)
    learned_variance: bool = False  # iDDPM: output (eps, v), 2D values
    time_scale: float = 1.0  # set 1000 for continuous t in [0, 1]


class TimeMLP(ClassConditioned):
    """eps_theta(x_t, t[, y]) for points (B, D); y=None (or y < 0) is the null class."""

    def __init__(self, cfg: MLPConfig | None = None, **overrides: object):
        super().__init__()
        cfg = make_config(cfg, MLPConfig, overrides)
        self.cfg = cfg
        h = cfg.hidden
        self.time_embed = TimeEmbedding(h, h, cfg.time_scale)
        self.class_embed = label_embedding(cfg.num_classes, h)
        self.inp = nn.Linear(cfg.dim, h)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
            for _ in range(cfg.depth)
        )
        self.out = nn.Sequential(
            nn.LayerNorm(h), nn.SiLU(), nn.Linear(h, cfg.dim * (2 if cfg.learned_variance else 1))
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_input(x, (self.cfg.dim,))
        emb = self.embed(x, t, y)  # (B, H)
        h = self.inp(x)  # (B, H)
        for block in self.blocks:
            h = h + block(h + emb)
        out = self.out(h)  # (B, D) or (B, 2D)
        return squash_variance(out) if self.cfg.learned_variance else out
