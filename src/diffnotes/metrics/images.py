"""Offline image metrics that mean something: shapes and likelihood (digits, video: own modules).

- shapes: a transparent rule-based factor reader (background from the border, colour from the
  pixels farthest from it, shape from image moments): exact on real data and needs no training;
  caption adherence is the fraction whose shape and colour match the caption.
- NLL in bits/dim through the probability-flow ODE of `diffnotes.sde`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor

from diffnotes.util import check_batch, check_int

# ---------------------------------------------------------------------------------------------
# shapes


def _palette() -> tuple[Tensor, tuple[str, ...], tuple[str, ...]]:
    from diffnotes.data.images import COLOURS, RGB, SHAPES

    return torch.as_tensor(RGB, dtype=torch.float32), COLOURS, SHAPES


@torch.no_grad()
def shapes_factors(images: Tensor) -> dict[str, Tensor]:
    """Read (shape, colour, background) indices (N,) each from shapes images (N, 3, s, s).

    Background: the border's median colour; colour: the mean of the pixels farthest from it; both
    snapped to the palette. Shape from the coverage mask's central moments: a triangle is skewed
    in y (skewness -0.57), and mu22 / sqrt(mu40 mu04) is 1/3 for a disc and 5/9 for a square.
    """
    ok = isinstance(images, Tensor) and images.ndim == 4 and images.shape[1] == 3
    if not ok or min(images.shape[2:]) < 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be shapes images (N, 3, s, s) in [-1, 1], got {shape}")
    check_batch(images, "images")
    rgb, _, _ = _palette()
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)  # (N, 3, H, W)
    N, _, H, W = x.shape
    border = torch.cat(
        [x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1
    )  # (N, 3, P)
    bg_idx = torch.cdist(border.median(-1).values, rgb).argmin(1)
    bg = rgb[bg_idx][:, :, None, None]  # (N, 3, 1, 1)
    dist = (x - bg).norm(dim=1)  # (N, H, W)
    far = dist >= 0.5 * dist.flatten(1).max(1).values[:, None, None]
    fg_mean = (x * far[:, None]).sum((2, 3)) / far.sum((1, 2)).clamp(min=1)[:, None]
    d = torch.cdist(fg_mean, rgb)
    d[torch.arange(N), bg_idx] = float("inf")  # the shape never has the background's colour
    colour_idx = d.argmin(1)
    fg = rgb[colour_idx][:, :, None, None]
    # coverage: projection of each pixel on the background -> colour segment
    m = (((x - bg) * (fg - bg)).sum(1) / (fg - bg).square().sum(1)).clamp(0, 1)
    m = torch.where(m > 0.2, m, torch.zeros_like(m))  # noise in samples must not move the moments
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    m = m.double()
    mass = m.sum((1, 2)).clamp(min=1e-9)
    cx = (m * xs).sum((1, 2)) / mass
    cy = (m * ys).sum((1, 2)) / mass
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]

    def mu(p: int, q: int) -> Tensor:
        return (m * dx**p * dy**q).sum((1, 2)) / mass

    skew = mu(0, 3) / mu(0, 2).clamp(min=1e-9) ** 1.5
    kurt = mu(2, 2) / (mu(4, 0) * mu(0, 4)).clamp(min=1e-12).sqrt()
    # SHAPES = (circle, square, triangle)
    shape_idx = torch.where(skew.abs() > 0.28, 2, torch.where(kurt > 0.44, 1, 0))
    return dict(shape=shape_idx, colour=colour_idx, background=bg_idx)


_CAPTION = re.compile(r"^an? (\w+) (\w+) on an? (\w+) background$")


def parse_caption(caption: str) -> tuple[int, int, int]:
    """(shape, colour, background) indices of 'a red circle on a blue background'."""
    _, colours, shapes = _palette()
    if not isinstance(caption, str):
        raise ValueError(f"captions must be strings, got {type(caption).__name__}")
    match = _CAPTION.match(caption.strip().lower())
    if not match or match[1] not in colours or match[2] not in shapes or match[3] not in colours:
        raise ValueError(
            f"captions must read 'a <colour> <shape> on a <colour> background' with colour in "
            f"{colours} and shape in {shapes}, got {caption!r}"
        )
    return shapes.index(match[2]), colours.index(match[1]), colours.index(match[3])


def shapes_adherence(images: Tensor, captions: list[str]) -> float:
    """Caption adherence: fraction of images whose shape and colour match the caption (real: 1)."""
    check_batch(images, "images")
    if isinstance(captions, str) or len(captions) != len(images):
        raise ValueError(f"captions must be a list with one caption per image ({len(images)})")
    want = torch.tensor([parse_caption(c)[:2] for c in captions], dtype=torch.long)  # (N, 2)
    got = shapes_factors(images)
    ok = (got["shape"] == want[:, 0]) & (got["colour"] == want[:, 1])
    return float(ok.double().mean())


# ---------------------------------------------------------------------------------------------
# likelihood


def nll_bits_per_dim(
    model: Callable[[Tensor, Tensor], Tensor],
    sde: object,
    x0: Tensor,
    *,
    data_bins: int | None = 256,
    dequantize: bool = False,
    generator: torch.Generator | None = None,
    **kwargs: object,
) -> Tensor:
    """NLL (B,) in bits/dim from the PF-ODE likelihood (Song et al. 2021, App. D.2).

    ``data_bins`` adds the log2(data_bins / 2) offset of data quantised on [-1, 1] (None: the
    continuous density); ``dequantize`` first adds uniform noise of one bin's width. Other keywords
    go to `diffnotes.likelihood.log_likelihood` (exact_divergence, n_hutchinson, rtol, atol).
    """
    from diffnotes.likelihood import bits_per_dim, log_likelihood

    if not isinstance(x0, Tensor) or x0.ndim < 2:
        raise ValueError(f"x0 must be a batch (B, ...), got {x0!r:.60}")
    if data_bins is not None:
        check_int(data_bins, "data_bins", 2)
    if dequantize:
        if data_bins is None:
            raise ValueError("dequantize needs data_bins")
        u = torch.rand(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x0 = x0 + (u - 0.5) * (2.0 / data_bins)
    nats = log_likelihood(model, sde, x0, generator=generator, **kwargs)
    return bits_per_dim(nats, x0[0].numel(), data_bins=data_bins)
