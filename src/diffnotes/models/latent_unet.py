"""Latent U-Net with cross-attention to a text embedding (Rombach et al. 2022, Sec. 3.3, Eq. 3).

Own code: the DDPM U-Net (``backbone``) with each attention level holding self-attention and
cross-attention, Attention(Q = W_Q phi(z_t), K = W_K tau(y), V = W_V tau(y)), to a context
(B, L, E). A learned null token is always prepended to the context: ``context=None`` or a
``drop`` flag leaves only it, which is the unconditional branch CFG needs. Also a tiny word-level
caption encoder tau for the shapes captions. Readable, small, no diffusers dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from diffnotes.models.backbone import Backbone, BackboneConfig, TimeConditioned
from diffnotes.models.blocks import AttentionBlock, as_time, check_input, make_config
from diffnotes.util import check_int


@dataclass(kw_only=True)
class LatentUNetConfig(BackboneConfig):
    """The latents and text context of the LDM U-Net, and its trunk's changes to the defaults."""

    latent_channels: int = 4
    latent_size: int = 8  # 32x32 images at f = 4
    context_dim: int = 64  # E of the text embedding
    base_channels: int = 48
    attention_resolutions: tuple[int, ...] = (8, 4)  # self + cross attention here
    num_heads: int = 4


class LatentUNet(TimeConditioned):
    """eps_theta(z_t, t, tau(y)) for latents z (B, c, h, w) and context (B, L, E)."""

    def __init__(self, cfg: LatentUNetConfig | None = None, **overrides: object):
        cfg = make_config(cfg, LatentUNetConfig, overrides)
        super().__init__(cfg, cfg.latent_size)
        self.null_token = nn.Parameter(torch.randn(1, 1, cfg.context_dim) * 0.02)

        def mixers(ch: int, res: int) -> list[nn.Module]:
            if res not in cfg.attention_resolutions:
                return []
            return [
                AttentionBlock(ch, cfg.num_heads, cfg.num_groups),
                AttentionBlock(ch, cfg.num_heads, cfg.num_groups, context_dim=cfg.context_dim),
            ]

        c, size = cfg.latent_channels, cfg.latent_size
        self.backbone = Backbone(cfg, c, c, size, mixers)

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """context (B, L, E), context_mask (B, L) True = real token, drop (B,) True = null only."""
        cfg = self.cfg
        check_input(z, (cfg.latent_channels, cfg.latent_size, cfg.latent_size), "z")
        b = z.shape[0]
        if context is None:
            context = z.new_zeros(b, 0, cfg.context_dim)
        check_input(context, (context.shape[1], cfg.context_dim), "context")
        if context.shape[0] != b:
            raise ValueError(f"context must have batch size {b}, got {context.shape[0]}")
        keep = torch.ones(context.shape[:2], dtype=torch.bool, device=z.device)
        if context_mask is not None:
            if context_mask.shape != context.shape[:2]:
                raise ValueError(
                    f"context_mask must have shape {tuple(context.shape[:2])}, "
                    f"got {tuple(context_mask.shape)}"
                )
            keep = keep & context_mask.bool()
        if drop is not None:
            if not isinstance(drop, torch.Tensor) or drop.shape != (b,):
                got = tuple(drop.shape) if isinstance(drop, torch.Tensor) else type(drop).__name__
                raise ValueError(f"drop must be a (B,) = ({b},) bool tensor, got {got}")
            keep = keep & ~drop.bool().reshape(b, 1)
        # The null token is always visible, so a dropped or empty context never masks every key.
        context = torch.cat([self.null_token.expand(b, 1, -1).to(context.dtype), context], dim=1)
        keep = torch.cat([keep.new_ones(b, 1), keep], dim=1)  # (B, 1 + L)
        emb = self.time_embed(as_time(t, b, z.device))  # (B, 4C)
        return self.backbone(z, emb, context=context, context_mask=keep)  # (B, c, h, w)


def _check_captions(captions: object, name: str, empty: bool = True) -> None:
    """A list of strings (not one string, which would be read as its characters)."""
    ok = isinstance(captions, (list, tuple, set, frozenset)) and (empty or len(captions) > 0)
    if not ok or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"{name} must be a non-empty list of strings, got {captions!r:.60}")


class CaptionEncoder(nn.Module):
    """tau(y): word-level tokens -> embeddings + positions -> a small Transformer encoder (B, L, E).

    Built from the captions it will see (``from_captions``); unknown words map to <unk>.
    """

    def __init__(self, vocab: Sequence[str], dim: int = 64, max_len: int = 16, layers: int = 2):
        super().__init__()
        _check_captions(vocab, "vocab")
        check_int(dim, "dim", 4)
        if dim % 4:
            raise ValueError(f"dim must be a multiple of 4 (the attention heads), got {dim}")
        check_int(max_len, "max_len", 1)
        check_int(layers, "layers", 1)
        self.vocab = ["<pad>", "<unk>", *sorted(set(vocab) - {"<pad>", "<unk>"})]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = max_len
        self.tokens = nn.Embedding(len(self.vocab), dim)
        self.positions = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    @classmethod
    def from_captions(cls, captions: Sequence[str], **kw: int) -> CaptionEncoder:
        return cls(sorted({w for c in captions for w in c.lower().split()}), **kw)

    def tokenise(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, L) long, mask (B, L) bool) with L = the longest caption, <= max_len."""
        _check_captions(captions, "captions", empty=False)
        words = [c.lower().split()[: self.max_len] for c in captions]
        length = max(1, max(len(w) for w in words))
        ids = torch.zeros(len(words), length, dtype=torch.long)
        for i, ws in enumerate(words):
            ids[i, : len(ws)] = torch.tensor([self.index.get(w, 1) for w in ws], dtype=torch.long)
        return ids, ids != 0

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (B, L, E), mask (B, L)) for a list of captions."""
        ids, mask = self.tokenise(captions)
        ids, mask = ids.to(self.positions.device), mask.to(self.positions.device)
        h = self.tokens(ids) + self.positions[:, : ids.shape[1]]  # (B, L, E)
        h = self.encoder(h, src_key_padding_mask=~mask)
        return self.norm(h), mask
