"""Inpainting masks: the families of RePaint's evaluation (Lugmayr et al. 2022, Sec. 5.1).

Every mask is a float tensor (N, 1, s, s) of 0 and 1 with 1 = known pixel, 0 = to fill, the
convention of `diffnotes.inpaint`. The families: ``half`` (one half missing), ``expand`` (only a
centred square known), ``alternating lines`` (every other row missing), ``super-resolve 2x``
(only every second pixel in each direction known), and random brush strokes ``thin`` and
``thick`` (the paper's narrow and wide masks, drawn from LaMa's generator; ours are a few
straight strokes, scaled to the image).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffnotes.util import check_in, check_int

__all__ = [
    "FAMILIES",
    "make_mask",
    "half",
    "expand",
    "alternating_lines",
    "super_resolve",
    "strokes",
]

FAMILIES = ("half", "expand", "alternating lines", "super-resolve 2x", "thin", "thick")
SIDES = ("left", "right", "top", "bottom")


def _check(n: int, size: int) -> None:
    check_int(n, "n", 1)
    if not isinstance(size, int) or isinstance(size, bool) or size < 4 or size % 2:
        raise ValueError(f"size must be an even int >= 4, got {size!r}")


def half(n: int, size: int, side: str = "right") -> Tensor:
    """The half of the image on ``side`` ('left', 'right', 'top', 'bottom') is missing."""
    _check(n, size)
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    m = torch.ones(n, 1, size, size)
    h = size // 2
    region = {
        "left": (..., slice(None), slice(0, h)),
        "right": (..., slice(None), slice(h, None)),
        "top": (..., slice(0, h), slice(None)),
        "bottom": (..., slice(h, None), slice(None)),
    }[side]
    m[region] = 0.0
    return m


def expand(n: int, size: int, keep: float = 0.5) -> Tensor:
    """Only a centred square of side ``keep * size`` is known: the model extends the image."""
    _check(n, size)
    check_in(keep, "keep", 0, 1, "()")
    side = max(1, round(keep * size))
    lo = (size - side) // 2
    m = torch.zeros(n, 1, size, size)
    m[..., lo : lo + side, lo : lo + side] = 1.0
    return m


def alternating_lines(n: int, size: int) -> Tensor:
    """Every other row is missing (rows 1, 3, 5, ...)."""
    _check(n, size)
    m = torch.ones(n, 1, size, size)
    m[..., 1::2, :] = 0.0
    return m


def super_resolve(n: int, size: int, factor: int = 2) -> Tensor:
    """Only the pixels on a stride-``factor`` grid are known: upsampling as inpainting."""
    _check(n, size)
    if not isinstance(factor, int) or factor < 2 or size % factor:
        raise ValueError(f"factor must be an int >= 2 dividing size {size}, got {factor!r}")
    m = torch.zeros(n, 1, size, size)
    m[..., ::factor, ::factor] = 1.0
    return m


def strokes(
    n: int,
    size: int,
    *,
    width: int,
    num_strokes: int = 3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random straight brush strokes of ``width`` pixels are missing (the rest is known)."""
    _check(n, size)
    check_int(width, "width", 1, size // 2)
    check_int(num_strokes, "num_strokes", 1)
    ends = torch.rand(n, num_strokes, 2, 2, generator=generator) * (size - 1)  # (N, k, 2 ends, xy)
    a, b = ends[:, :, 0, None, None, :], ends[:, :, 1, None, None, :]  # (N, k, 1, 1, 2)
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    p = torch.stack([xs, ys], -1)  # (s, s, 2)
    ab = b - a
    u = ((p - a) * ab).sum(-1) / ab.square().sum(-1).clamp(min=1e-9)  # projection on the segment
    dist = (p - (a + u.clamp(0, 1)[..., None] * ab)).norm(dim=-1)  # (N, k, s, s)
    hit = (dist <= width / 2).any(1)  # (N, s, s)
    return (~hit).float()[:, None]


def make_mask(
    family: str, n: int, size: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """n masks (N, 1, size, size) of one of `FAMILIES` (1 = known, 0 = to fill).

    Fixed families ignore ``generator``; ``half`` removes the right half, ``thin`` strokes are
    one pixel wide and ``thick`` ones a quarter of the image (paper: narrow and wide masks).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    _check(n, size)
    if family == "half":
        return half(n, size, "right")
    if family == "expand":
        return expand(n, size)
    if family == "alternating lines":
        return alternating_lines(n, size)
    if family == "super-resolve 2x":
        return super_resolve(n, size, 2)
    if family == "thin":
        return strokes(n, size, width=1, num_strokes=4, generator=generator)
    return strokes(n, size, width=max(2, size // 4), num_strokes=2, generator=generator)
