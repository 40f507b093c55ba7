"""The DDPM U-Net trunk (Ho et al. 2020, App. B) and the config every image network shares.

`BackboneConfig` declares the trunk's hyperparameters once; the U-Net, classifier, latent and video
U-Net and GAN configs extend it, and the autoencoder's extends its convolutional part,
`ConvConfig`. `Backbone` is the U-Net skeleton they all build on: the whole U-Net, or with
``decoder=False`` its encoder half, whose pooled features feed a classifier or a discriminator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from diffnotes.models.blocks import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    ResBlock,
    TimeEmbedding,
    Upsample,
    zero_module,
)


@dataclass(kw_only=True)
class ConvConfig:
    """Widths and depth of a GroupNorm conv net that halves the resolution at each level."""

    base_channels: int = 32  # DDPM: 128 on CIFAR-10; 32 trains on a CPU
    channel_mults: tuple[int, ...] = (1, 2)  # one level each; DDPM CIFAR-10: (1, 2, 2, 2)
    num_res_blocks: int = 1  # DDPM: 2 per level; 1 is 30% cheaper on a CPU
    num_groups: int = 8  # GroupNorm groups; DDPM: 32

    def check(self, image_size: int) -> None:
        """Raise ValueError for an image size the down/up path cannot halve, or bad group counts."""
        factor = 2 ** (len(self.channel_mults) - 1)
        if image_size < factor or image_size % factor:
            raise ValueError(
                f"image_size must be a multiple of {factor} = 2^(len(channel_mults) - 1), "
                f"got {image_size}"
            )
        widths = [self.base_channels * m for m in self.channel_mults]
        if any(w % self.num_groups for w in widths):
            raise ValueError(
                f"num_groups ({self.num_groups}) must divide every base_channels * mult ({widths})"
            )


@dataclass(kw_only=True)
class BackboneConfig(ConvConfig):
    """The time-conditioned U-Net trunk: `ConvConfig` plus attention, dropout and the time input."""

    attention_resolutions: tuple[int, ...] = (8,)  # DDPM: attention at 16x16 of 32x32 CIFAR
    num_heads: int = 1
    dropout: float = 0.0  # DDPM: 0.1 on CIFAR-10; short CPU runs underfit, so none
    time_scale: float = 1.0  # set 1000 for continuous t in [0, 1]

    @property
    def emb_dim(self) -> int:
        """Width of the time embedding, 4x the base width as in DDPM."""
        return 4 * self.base_channels


def time_embedding(cfg: BackboneConfig) -> TimeEmbedding:
    """The sinusoidal time embedding (B, emb_dim) that every ResBlock of the trunk receives."""
    return TimeEmbedding(cfg.base_channels, cfg.emb_dim, cfg.time_scale)


class TimeConditioned(nn.Module):
    """A network over a `BackboneConfig`: the config, checked at the input size, and time_embed."""

    def __init__(self, cfg: BackboneConfig, size: int) -> None:
        super().__init__()
        cfg.check(size)
        self.cfg = cfg
        self.time_embed = time_embedding(cfg)


MixerFactory = Callable[[int, int], list[nn.Module]]


def self_attention(cfg: BackboneConfig) -> MixerFactory:
    """Mixers for DDPM: one self-attention block at each of ``cfg.attention_resolutions``."""

    def mixers(ch: int, res: int) -> list[nn.Module]:
        if res not in cfg.attention_resolutions:
            return []
        return [AttentionBlock(ch, cfg.num_heads, cfg.num_groups)]

    return mixers


def pooled_head(groups: int, channels: int) -> list[nn.Module]:
    """GroupNorm-SiLU then global average pooling to (B, C): guided-diffusion's pool='adaptive'."""
    return [nn.GroupNorm(groups, channels), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]


class Backbone(nn.Module):
    """The U-Net skeleton: conv_in, down levels, middle, up levels with skip connections, conv_out.

    ``mixers(channels, resolution)`` returns the token-mixing blocks (attention) placed after each
    ResBlock at that feature-map resolution (default: `self_attention`); with ``decoder=False`` it
    stops after the middle.
    """

    def __init__(
        self,
        cfg: BackboneConfig,
        in_channels: int,
        out_channels: int,
        image_size: int,
        mixers: MixerFactory | None = None,
        decoder: bool = True,
    ):
        super().__init__()
        mixers = mixers or self_attention(cfg)
        base, mults, blocks = cfg.base_channels, cfg.channel_mults, cfg.num_res_blocks

        def res_block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, cfg.emb_dim, cfg.dropout, cfg.num_groups)

        res, ch = image_size, base
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, chans = nn.ModuleList(), [ch]
        for level, mult in enumerate(mults):
            for _ in range(blocks):
                block = [res_block(ch, base * mult)]
                ch = base * mult
                self.down.append(EmbedSequential(block + mixers(ch, res)))
                chans.append(ch)
            if level < len(mults) - 1:
                self.down.append(EmbedSequential([Downsample(ch)]))
                chans.append(ch)
                res //= 2
        self.mid = EmbedSequential([res_block(ch, ch), *mixers(ch, res)] + [res_block(ch, ch)])
        self.out_channels = ch
        self.decoder = decoder
        if not decoder:
            return
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(blocks + 1):
                block = [res_block(ch + chans.pop(), base * mult)]
                ch = base * mult
                block += mixers(ch, res)
                if level and i == blocks:
                    block.append(Upsample(ch))
                    res *= 2
                self.up.append(EmbedSequential(block))
        self.conv_out = nn.Sequential(
            nn.GroupNorm(cfg.num_groups, ch),
            nn.SiLU(),
            zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None, **kw: object) -> torch.Tensor:
        h = self.conv_in(x)  # (B, base, H, W)
        skips = [h]
        for block in self.down:
            h = block(h, emb, **kw)
            skips.append(h)
        h = self.mid(h, emb, **kw)  # (B, C_low, H / 2^(L-1), W / 2^(L-1))
        if not self.decoder:
            return h
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, **kw)
        return self.conv_out(h)  # (B, out, H, W)
