"""DDPM-style U-Net (Ho et al. 2020, App. B; Nichol & Dhariwal 2021 for learned variance).

Own code rather than diffusers' ``UNet2DModel``: the whole network is one readable page, small
enough to train on 16x16 digits on a CPU, and free of a diffusers dependency. Its building blocks
(time embedding, residual block, attention, the U-Net skeleton) are reused by the classifier,
latent and video U-Nets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of t (B,) (Vaswani et al. 2017, as used by DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def as_time(t: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
    """Check t is (B,) ints or floats (a scalar is broadcast) and return it as float (B,)."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
    return t.float()


def check_input(x: torch.Tensor, shape: tuple[int, ...], name: str = "x") -> None:
    """Raise ValueError naming the argument when x is not (B, *shape)."""
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        want = ", ".join(str(s) for s in ("B", *shape))
        raise ValueError(f"{name} must have shape ({want}), got {tuple(x.shape)}")


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch so each block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t followed by a 2-layer MLP (DDPM)."""

    def __init__(self, channels: int, emb_dim: int, time_scale: float = 1.0):
        super().__init__()
        self.channels, self.time_scale = channels, time_scale
        self.mlp = nn.Sequential(
            nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t * self.time_scale, self.channels))  # (B, E)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between (DDPM's ResNet block)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0, groups: int = 8):
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1)
        )
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout)) if emb_dim else None
        self.out_layers = nn.Sequential(
            nn.GroupNorm(groups, cout),
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_module(nn.Conv2d(cout, cout, 3, padding=1)),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.in_layers(x)  # (B, Cout, H, W)
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head softmax(q k^T / sqrt(d)) v for (N, L, C) tokens; mask (N, Lk) True = attend."""
    n, lq, c = q.shape
    q, k, v = (z.reshape(n, -1, heads, c // heads).transpose(1, 2) for z in (q, k, v))
    attn_mask = None if mask is None else mask[:, None, None, :].bool()  # (N, 1, 1, Lk)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (N, heads, Lq, d)
    return out.transpose(1, 2).reshape(n, lq, c)


class Mixer(nn.Module):
    """Marker for blocks that mix tokens (attention); they take the keyword inputs of the U-Net."""


class AttentionBlock(Mixer):
    """Self-attention over the H*W positions, or cross-attention to a context (B, L, E)."""

    def __init__(
        self, channels: int, heads: int = 1, groups: int = 8, context_dim: int | None = None
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"num_heads must divide the channels ({channels}), got {heads}")
        self.heads, self.cross = heads, context_dim is not None
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim or channels, 2 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        source, mask = (context, context_mask) if self.cross else (tokens, None)
        k, v = self.kv(source).chunk(2, dim=-1)
        out = self.proj(attend(self.q(tokens), k, v, self.heads, mask))  # (B, HW, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution (avoids checkerboard artefacts)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.ModuleList):
    """Run layers in turn, giving ResBlocks the embedding and Mixers the keyword inputs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None, **kw: object) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, Mixer):
                x = layer(x, **kw)
            else:
                x = layer(x)
        return x


MixerFactory = Callable[[int, int], list[nn.Module]]


class Backbone(nn.Module):
    """The U-Net skeleton: conv_in, down levels, middle, up levels with skip connections, conv_out.

    ``mixers(channels, resolution)`` returns the token-mixing blocks (attention) placed after each
    ResBlock at that feature-map resolution; with ``decoder=False`` it stops after the middle.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        image_size: int,
        emb_dim: int,
        mixers: MixerFactory,
        dropout: float = 0.0,
        groups: int = 8,
        decoder: bool = True,
    ):
        super().__init__()
        res, ch = image_size, base_channels
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, chans = nn.ModuleList(), [ch]
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                block = [ResBlock(ch, base_channels * mult, emb_dim, dropout, groups)]
                ch = base_channels * mult
                self.down.append(EmbedSequential(block + mixers(ch, res)))
                chans.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(EmbedSequential([Downsample(ch)]))
                chans.append(ch)
                res //= 2
        self.mid = EmbedSequential(
            [ResBlock(ch, ch, emb_dim, dropout, groups), *mixers(ch, res)]
            + [ResBlock(ch, ch, emb_dim, dropout, groups)]
        )
        self.out_channels = ch
        self.decoder = decoder
        if not decoder:
            return
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(num_res_blocks + 1):
                block = [ResBlock(ch + chans.pop(), base_channels * mult, emb_dim, dropout, groups)]
                ch = base_channels * mult
                block += mixers(ch, res)
                if level and i == num_res_blocks:
                    block.append(Upsample(ch))
                    res *= 2
                self.up.append(EmbedSequential(block))
        self.conv_out = nn.Sequential(
            nn.GroupNorm(groups, ch),
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


def check_config(
    image_size: int, channel_mults: tuple[int, ...], base_channels: int, num_groups: int
) -> None:
    """Raise ValueError for an image size the down/up path cannot halve, or bad group counts."""
    factor = 2 ** (len(channel_mults) - 1)
    if image_size < factor or image_size % factor:
        raise ValueError(
            f"image_size must be a multiple of {factor} = 2^(len(channel_mults) - 1), "
            f"got {image_size}"
        )
    if any((base_channels * m) % num_groups for m in channel_mults):
        raise ValueError(
            f"num_groups ({num_groups}) must divide every base_channels * mult "
            f"({[base_channels * m for m in channel_mults]})"
        )


@dataclass
class UNetConfig:
    image_size: int = 16  # 16x16 digits on a CPU
    in_channels: int = 1
    out_channels: int | None = None  # None: in_channels (x2 with learned_variance)
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)  # resolutions 16, 8
    num_res_blocks: int = 1  # DDPM: 2 per level; 1 is 30% cheaper on a CPU
    attention_resolutions: tuple[int, ...] = (8,)  # DDPM: attention at 16x16 of 32x32 CIFAR
    num_heads: int = 1
    dropout: float = 0.0  # DDPM: 0.1 on CIFAR-10; short CPU runs underfit, so none
    num_groups: int = 8
    num_classes: int | None = None  # class-conditional with a null class (index num_classes)
    learned_variance: bool = False  # iDDPM: output (eps, v), 2x channels
    time_scale: float = 1.0  # set 1000 for continuous t in [0, 1]


class UNet(nn.Module):
    """eps_theta(x_t, t[, y]) for images (B, C, H, W); y=None (or y < 0) is the null class (CFG).

    With ``learned_variance`` the output is (B, 2C, H, W): eps then v in [-1, 1] (iDDPM Eq. 15
    interpolates log beta and log beta_tilde with frac = (v + 1) / 2).
    """

    def __init__(self, cfg: UNetConfig | None = None, **overrides: object):
        super().__init__()
        cfg = cfg or UNetConfig(**overrides)
        check_config(cfg.image_size, cfg.channel_mults, cfg.base_channels, cfg.num_groups)
        self.cfg = cfg
        out = cfg.out_channels or cfg.in_channels
        self.out_channels = 2 * out if cfg.learned_variance else out
        emb_dim = 4 * cfg.base_channels
        self.time_embed = TimeEmbedding(cfg.base_channels, emb_dim, cfg.time_scale)
        self.class_embed = (
            nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes is not None else None
        )

        def mixers(ch: int, res: int) -> list[nn.Module]:
            if res not in cfg.attention_resolutions:
                return []
            return [AttentionBlock(ch, cfg.num_heads, cfg.num_groups)]

        self.backbone = Backbone(
            cfg.in_channels,
            self.out_channels,
            cfg.base_channels,
            cfg.channel_mults,
            cfg.num_res_blocks,
            cfg.image_size,
            emb_dim,
            mixers,
            cfg.dropout,
            cfg.num_groups,
        )

    @property
    def null_class(self) -> int | None:
        """Label index that means 'no class' (CFG's unconditional branch)."""
        return self.cfg.num_classes

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.cfg
        check_input(x, (cfg.in_channels, cfg.image_size, cfg.image_size))
        emb = self.time_embed(as_time(t, x.shape[0], x.device))  # (B, 4C)
        emb = emb + class_embedding(self.class_embed, y, x.shape[0], x.device)
        out = self.backbone(x, emb)  # (B, out_channels, H, W)
        if cfg.learned_variance:
            eps, v = out.chunk(2, dim=1)
            out = torch.cat([eps, torch.tanh(v)], dim=1)  # v in [-1, 1] as the convention asks
        return out


def class_embedding(
    embed: nn.Embedding | None, y: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor | float:
    """Embedding of labels y (B,); None or negative entries map to the null class (last row)."""
    if embed is None:
        if y is not None:
            raise ValueError("y must be None for a model built with num_classes=None")
        return 0.0
    null = embed.num_embeddings - 1
    if y is None:
        y = torch.full((batch,), null, device=device, dtype=torch.long)
    y = torch.as_tensor(y, device=device).long()
    if y.shape != (batch,):
        raise ValueError(f"y must have shape (B,) = ({batch},), got {tuple(y.shape)}")
    if (y > null).any():
        raise ValueError(f"y must be in 0..{null} ({null} = null class), got max {int(y.max())}")
    return embed(torch.where(y < 0, torch.full_like(y, null), y))
