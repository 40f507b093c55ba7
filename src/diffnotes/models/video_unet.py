"""Factorised space-time U-Net for video (Ho et al. 2022, "Video Diffusion Models", Sec. 3).

Own code: the 2-D U-Net (``backbone``) applied to every frame (frames folded into the batch), with
temporal attention over the F frames at each spatial position after every residual block, so
space and time are mixed by separate, cheap operations. Conditioning on known frames (prediction,
interpolation) is by frame mask: the network also sees x_cond * mask and a per-frame mask channel,
so known frames are given clean. Readable and CPU-sized; no diffusers dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from diffnotes.models.backbone import Backbone, BackboneConfig, TimeConditioned
from diffnotes.models.blocks import (
    AttentionBlock,
    Mixer,
    as_time,
    attend,
    check_input,
    make_config,
    timestep_embedding,
    zero_module,
)


@dataclass(kw_only=True)
class VideoUNetConfig(BackboneConfig):
    """The video's shape on top of `BackboneConfig`.

    ``attention_resolutions`` places the spatial self-attention; temporal attention follows every
    ResBlock at every resolution.
    """

    frames: int = 8
    image_size: int = 16
    in_channels: int = 1


class TemporalAttention(Mixer):
    """Self-attention across frames at each pixel: (B F, C, H, W) -> tokens (B H W, F, C)."""

    def __init__(self, channels: int, heads: int = 1, groups: int = 8):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, frames: int = 1, **_: object) -> torch.Tensor:
        bf, c, h, w = x.shape
        b = bf // frames
        tokens = self.norm(x).reshape(b, frames, c, h * w).permute(0, 3, 1, 2)  # (B, HW, F, C)
        tokens = tokens.reshape(b * h * w, frames, c)
        # Relative order of frames comes from a sinusoidal frame-index embedding.
        pos = timestep_embedding(torch.arange(frames, device=x.device), c)[None]  # (1, F, C)
        q, k, v = self.qkv(tokens + pos.to(tokens.dtype)).chunk(3, dim=-1)
        out = self.proj(attend(q, k, v, self.heads))  # (B HW, F, C)
        out = out.reshape(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return x + out


class VideoUNet(TimeConditioned):
    """eps_theta(x_t, t | x_cond, mask) for videos (B, C, F, H, W); mask (B, F) 1 = known frame."""

    def __init__(self, cfg: VideoUNetConfig | None = None, **overrides: object):
        cfg = make_config(cfg, VideoUNetConfig, overrides)
        super().__init__(cfg, cfg.image_size)

        def mixers(ch: int, res: int) -> list[nn.Module]:
            spatial = [AttentionBlock(ch, cfg.num_heads, cfg.num_groups)]
            temporal = [TemporalAttention(ch, cfg.num_heads, cfg.num_groups)]
            return (spatial if res in cfg.attention_resolutions else []) + temporal

        # Input channels: x_t, the known frames x_cond * mask, and the mask itself.
        c, size = cfg.in_channels, cfg.image_size
        self.backbone = Backbone(cfg, 2 * c + 1, c, size, mixers)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg = self.cfg
        s = cfg.image_size
        if x.ndim != 5 or x.shape[1] != cfg.in_channels or tuple(x.shape[3:]) != (s, s):
            raise ValueError(
                f"x must have shape (B, {cfg.in_channels}, F, {s}, {s}), got {tuple(x.shape)}"
            )
        b, c, f = x.shape[:3]
        if mask is None:
            mask = x.new_zeros(b, f)
        if not isinstance(mask, torch.Tensor) or mask.shape != (b, f):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must have shape (B, F) = ({b}, {f}), got {got}")
        if x_cond is None:
            if mask.bool().any():
                raise ValueError("x_cond must be given when mask marks known frames")
            x_cond = torch.zeros_like(x)
        check_input(x_cond, tuple(x.shape[1:]), "x_cond")
        m = mask.to(x.dtype)[:, None, :, None, None].expand(b, 1, f, s, s)  # (B, 1, F, H, W)
        h = torch.cat([x, x_cond * m, m], dim=1)  # (B, 2C + 1, F, H, W)
        h = h.transpose(1, 2).reshape(b * f, 2 * c + 1, s, s)  # frames into the batch
        emb = self.time_embed(as_time(t, b, x.device)).repeat_interleave(f, dim=0)  # (B F, E)
        out = self.backbone(h, emb, frames=f)  # (B F, C, H, W)
        return out.reshape(b, f, c, s, s).transpose(1, 2)  # (B, C, F, H, W)
