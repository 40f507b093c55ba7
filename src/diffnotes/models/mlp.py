"""Time-conditioned MLP for 2-D points: the eps-model of the toy chapters.

Own code: a dozen lines a reader can hold in mind, no diffusers dependency. Residual blocks with
the sinusoidal time embedding (and optionally a class embedding with a null class, for CFG)
added to the hidden state, as in the U-Net.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from diffnotes.models.unet import TimeEmbedding, as_time, check_input, class_embedding


@dataclass
class MLPConfig:
    dim: int = 2  # data dimension D
    hidden: int = 128
    depth: int = 3  # residual blocks
    num_classes: int | None = None  # class-conditional with a null class (index num_classes)
    learned_variance: bool = False  # iDDPM: output (eps, v), 2D values
    time_scale: float = 1.0  # set 1000 for continuous t in [0, 1]


class TimeMLP(nn.Module):
    """eps_theta(x_t, t[, y]) for points (B, D); y=None (or y < 0) is the null class."""

    def __init__(self, cfg: MLPConfig | None = None, **overrides: object):
        super().__init__()
        cfg = cfg or MLPConfig(**overrides)
        self.cfg = cfg
        h = cfg.hidden
        self.time_embed = TimeEmbedding(h, h, cfg.time_scale)
        self.class_embed = (
            nn.Embedding(cfg.num_classes + 1, h) if cfg.num_classes is not None else None
        )
        self.inp = nn.Linear(cfg.dim, h)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
            for _ in range(cfg.depth)
        )
        self.out = nn.Sequential(
            nn.LayerNorm(h), nn.SiLU(), nn.Linear(h, cfg.dim * (2 if cfg.learned_variance else 1))
        )

    @property
    def null_class(self) -> int | None:
        return self.cfg.num_classes

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_input(x, (self.cfg.dim,))
        emb = self.time_embed(as_time(t, x.shape[0], x.device))  # (B, H)
        emb = emb + class_embedding(self.class_embed, y, x.shape[0], x.device)
        h = self.inp(x)  # (B, H)
        for block in self.blocks:
            h = h + block(h + emb)
        out = self.out(h)  # (B, D) or (B, 2D)
        if self.cfg.learned_variance:
            eps, v = out.chunk(2, dim=-1)
            out = torch.cat([eps, torch.tanh(v)], dim=-1)
        return out
