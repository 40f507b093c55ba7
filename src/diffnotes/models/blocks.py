"""Layers every network of ``diffnotes.models`` is built from (DDPM, Ho et al. 2020, App. B).

Time embedding, residual block, attention, down/up sampling, the class embedding with a null class
(for CFG) and the input checks: defined once here, so the U-Nets, the classifier, the GAN parts, the
autoencoder and the MLP all share one version of each.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffnotes.util import check_in, check_instance, check_int, check_number

C = TypeVar("C")
# config fields: integers >= 1 (widths, sizes, counts), >= 0, None or >= 1, numbers >= 0
_POSITIVE = (
    "dim hidden image_size in_channels latent_channels latent_size context_dim base_channels "
    "num_res_blocks num_groups num_heads frames z_dim codebook_size"
).split()
_OPTIONAL = ("out_channels", "num_classes")


def make_config(cfg: C | None, kind: type[C], overrides: dict[str, object]) -> C:
    """``cfg``, or ``kind(**overrides)`` when it is None, with every field checked.

    A config of another kind, or a config together with keyword overrides (which would be
    silently ignored), is refused; so is a width, size or count < 1, a NaN, or a dropout >= 1.
    """
    if cfg is not None and overrides:
        raise ValueError(f"pass cfg or keyword overrides, not both (got cfg and {list(overrides)})")
    fields = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
    if set(overrides) - set(fields):
        unknown = sorted(set(overrides) - set(fields))
        raise ValueError(f"overrides must be fields of {kind.__name__} {fields}, got {unknown}")
    cfg = kind(**overrides) if cfg is None else cfg
    check_instance(cfg, "cfg", kind, f"a {kind.__name__} or None")
    for name, value in dataclasses.asdict(cfg).items():  # type: ignore[call-overload]
        if name in _POSITIVE or (name in _OPTIONAL and value is not None):
            check_int(value, name, 1)
        elif name == "depth":
            check_int(value, name, 0)
        elif name in ("channel_mults", "attention_resolutions"):
            ok = isinstance(value, (tuple, list)) and (value or name == "attention_resolutions")
            if not ok or not all(isinstance(v, int) and v >= 1 for v in value):
                empty = "" if name == "attention_resolutions" else "non-empty "
                raise ValueError(f"{name} must be a {empty}tuple of integers >= 1, got {value!r}")
        elif name in ("kl_weight", "commitment"):
            check_number(value, name, minimum=0.0)
        elif name == "time_scale":
            check_number(value, name, positive=True)
        elif name == "dropout":
            check_in(value, name, 0, 1, "[)")
    return cfg


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of t (B,) (Vaswani et al. 2017, as used by DDPM)."""
    check_instance(t, "t", torch.Tensor, "a tensor of times (B,)")
    check_int(dim, "dim", 1)
    check_number(max_period, "max_period", positive=True)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def as_time(t: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
    """Check t is (B,) ints or floats (a scalar is broadcast) and return it as float (B,)."""
    if t is None or isinstance(t, (str, bytes)):
        raise ValueError(f"t must be a tensor of times (B,) or a number, got {type(t).__name__}")
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
    return t.float()


def check_input(x: torch.Tensor, shape: tuple[int, ...], name: str = "x") -> None:
    """Raise ValueError naming the argument when x is not a tensor (B, *shape)."""
    if (
        not isinstance(x, torch.Tensor)
        or x.ndim != len(shape) + 1
        or tuple(x.shape[1:]) != tuple(shape)
    ):
        want = ", ".join(str(s) for s in ("B", *shape))
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must have shape ({want}), got {got}")


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch so each block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    check_instance(model, "model", nn.Module, "an nn.Module")
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


def label_embedding(num_classes: int | None, dim: int) -> nn.Embedding | None:
    """Embedding of num_classes labels plus the null class (index num_classes); None: no labels."""
    return nn.Embedding(num_classes + 1, dim) if num_classes is not None else None


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
    y = torch.as_tensor(y, device=device)
    if y.is_floating_point():  # a float label would be truncated silently
        raise ValueError(f"y must be integer class labels, got dtype {y.dtype}")
    y = y.long()
    if y.shape != (batch,):
        raise ValueError(f"y must have shape (B,) = ({batch},), got {tuple(y.shape)}")
    if (y > null).any():
        raise ValueError(f"y must be in 0..{null} ({null} = null class), got max {int(y.max())}")
    return embed(torch.where(y < 0, torch.full_like(y, null), y))


class ClassConditioned(nn.Module):
    """An eps-model conditioned on t and optionally a label y, with a null class for CFG.

    Subclasses set ``cfg`` (with ``num_classes``), ``time_embed`` and ``class_embed``
    (`label_embedding`); y=None or y < 0 is the null class, the unconditional branch.
    """

    cfg: Any
    time_embed: TimeEmbedding
    class_embed: nn.Embedding | None

    @property
    def null_class(self) -> int | None:
        """Label index that means 'no class' (CFG's unconditional branch)."""
        return self.cfg.num_classes

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Time embedding plus class embedding (B, E) for the batch x."""
        emb = self.time_embed(as_time(t, x.shape[0], x.device))  # (B, E)
        return emb + class_embedding(self.class_embed, y, x.shape[0], x.device)


def squash_variance(out: torch.Tensor) -> torch.Tensor:
    """(eps, v) on dim 1 with v mapped to [-1, 1] by tanh, as iDDPM's Eq. 15 convention asks."""
    eps, v = out.chunk(2, dim=1)
    return torch.cat([eps, torch.tanh(v)], dim=1)
