"""Video metrics: where the sprite is (against its known trajectory) and whether a continuation
is coherent with the given frames (against the exact conditional of a video mixture).

Frame masks are (B, F) with 1 = known frame, as in `diffnotes.video`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffnotes.analytic import GaussianMixture
from diffnotes.util import check_batch, check_in, check_instance

__all__ = [
    "sprite_positions",
    "sprite_position_error",
    "frame_consistency",
    "position_errors",
    "continuation_error",
    "continuation_modes",
    "mode_tv",
    "incoherent_fraction",
    "off_mode_distance",
]


def _videos(videos: Tensor) -> Tensor:
    if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[1] != 1:
        shape = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
        raise ValueError(f"videos must be (N, 1, F, s, s) in [-1, 1], got {shape}")
    check_batch(videos, "videos")  # N >= 1, finite
    return videos.detach().double().cpu()


def _tensor(value: object, name: str, dtype: torch.dtype | None = None) -> Tensor:
    try:
        return torch.as_tensor(value, dtype=dtype).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a tensor, got {value!r:.40}") from None


def _modes(modes: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Mode indices (N,) long and exact weights (K,) float64, both checked."""
    weights, modes = _tensor(weights, "weights", torch.float64), _tensor(modes, "modes")
    if (
        weights.ndim != 1
        or not weights.numel()
        or not weights.isfinite().all()
        or (weights < 0).any()
    ):
        raise ValueError(
            f"weights must be a finite (K,) tensor of weights >= 0, got {weights.tolist()}"
        )
    K = len(weights)
    whole = not modes.is_floating_point() or bool((modes == modes.round()).all())
    if (
        modes.ndim != 1
        or modes.numel() == 0
        or not whole
        or (modes < 0).any()
        or (modes >= K).any()
    ):
        raise ValueError(f"modes must be a non-empty (N,) tensor of indices < {K}")
    return modes.long(), weights


def _unknown(samples: Tensor, cond: GaussianMixture, known: Tensor) -> Tensor:
    """The unknown coordinates x_b (N, D_b) of samples, float64, checked against cond."""
    check_batch(samples, "samples")
    check_instance(cond, "cond", GaussianMixture, "a GaussianMixture (from .conditional)")
    known = _tensor(known, "known", torch.bool)
    flat = samples.detach().reshape(samples.shape[0], -1).double().cpu()
    if known.shape != (flat.shape[1],):
        raise ValueError(f"known must be a bool mask of shape ({flat.shape[1]},)")
    xb = flat[:, ~known]
    if xb.shape[1] != cond.dim:
        raise ValueError(f"cond has {cond.dim} unknown coordinates, the samples {xb.shape[1]}")
    return xb


def sprite_positions(videos: Tensor, *, background: float = 0.0) -> Tensor:
    """Centre of mass (N, F, 2) as (x, y) pixels of each frame, as `data.sprites` defines them.

    ``background`` (in [0, 1) of the [0, 1] intensity) is subtracted first, so a faint haze over
    a generated frame does not pull the centre towards the middle; 0 is exact on real data.
    """
    check_in(background, "background", 0, 1, "[)")
    v = _videos(videos)[:, 0]  # (N, F, H, W)
    w = (((v + 1) / 2).clamp(0, 1) - background).clamp(min=0)
    H, W = w.shape[-2:]
    mass = w.sum((-2, -1)).clamp(min=1e-9)
    x = (w.sum(-2) * torch.arange(W, dtype=w.dtype)).sum(-1) / mass
    y = (w.sum(-1) * torch.arange(H, dtype=w.dtype)).sum(-1) / mass
    return torch.stack([x, y], -1).float()


def sprite_position_error(videos: Tensor, positions: Tensor, *, background: float = 0.0) -> float:
    """Mean distance in pixels between each frame's sprite centre and the true trajectory."""
    return float(position_errors(videos, positions, background=background).mean())


def frame_consistency(videos: Tensor) -> float:
    """Mean relative change of the sprite's mass between consecutive frames (0 for real sprites)."""
    v = _videos(videos)[:, 0]
    if v.shape[1] < 2:
        raise ValueError("videos need at least 2 frames")
    mass = ((v + 1) / 2).clamp(0, 1).sum((-2, -1))  # (N, F)
    return float(
        ((mass[:, 1:] - mass[:, :-1]).abs() / mass.mean(1, keepdim=True).clamp(min=1e-9)).mean()
    )


def position_errors(videos: Tensor, positions: Tensor, *, background: float = 0.0) -> Tensor:
    """Distance in pixels (N, F) of each frame's sprite centre from the true trajectory."""
    est = sprite_positions(videos, background=background)
    positions = _tensor(positions, "positions", torch.float32)
    if positions.shape != est.shape:
        raise ValueError(
            f"positions must have shape (N, F, 2) = {tuple(est.shape)}, "
            f"got {tuple(positions.shape)}"
        )
    return (est - positions).norm(dim=-1)


def continuation_error(
    videos: Tensor, positions: Tensor, mask: Tensor, *, background: float = 0.0
) -> float:
    """Mean position error over the generated (mask 0) frames: the continuation's error."""
    err = position_errors(videos, positions, background=background)
    mask = _tensor(mask, "mask", torch.float32)
    if mask.ndim != 2 or mask.shape[1] != err.shape[1] or mask.shape[0] not in (1, err.shape[0]):
        raise ValueError(
            f"mask must have shape (N, F) or (1, F) with F = {err.shape[1]}, "
            f"got {tuple(mask.shape)}"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask values must be 0 or 1 (1 = known frame)")
    unknown = (1.0 - mask).expand_as(err)
    if unknown.sum() == 0:
        raise ValueError("mask marks every frame known: there is no continuation to score")
    return float((err * unknown).sum() / unknown.sum())


def continuation_modes(samples: Tensor, cond: GaussianMixture, known: Tensor) -> Tensor:
    """The component (N,) of the conditional mixture whose mean is nearest each sample's x_b.

    ``cond`` is `GaussianMixture.conditional(known, x_obs)`: the same components with the
    weights p(k | x_a); ``known`` is the flat (D,) bool mask it was built with.
    """
    return torch.cdist(_unknown(samples, cond, known), cond.means).argmin(1)


def mode_tv(modes: Tensor, weights: Tensor) -> float:
    """Total variation 0.5 sum_k |freq_k - w_k| between the sampled modes and the exact weights."""
    modes, weights = _modes(modes, weights)
    freq = torch.bincount(modes, minlength=len(weights)).double() / modes.numel()
    return float(0.5 * (freq - weights).abs().sum())


def incoherent_fraction(modes: Tensor, weights: Tensor, floor: float = 1e-3) -> float:
    """Share of continuations in a mode the given frames rule out (exact weight below ``floor``)."""
    check_in(floor, "floor", 0, 1, "()")
    modes, weights = _modes(modes, weights)
    return float((weights[modes] < floor).double().mean())


def off_mode_distance(
    samples: Tensor, cond: GaussianMixture, known: Tensor, floor: float = 1e-3
) -> float:
    """RMS distance per coordinate of each x_b from the nearest mean the given frames allow.

    Allowed: the components of ``cond`` (from `GaussianMixture.conditional`) with weight at
    least ``floor``. A continuation in a ruled-out mode, or one that wanders between modes, is
    far; an exact sample is about one component standard deviation away.
    """
    check_in(floor, "floor", 0, 1, "()")
    xb = _unknown(samples, cond, known)
    allowed = cond.means[cond.weights >= floor]
    d = torch.cdist(xb, allowed).min(1).values / xb.shape[1] ** 0.5
    return float(d.pow(2).mean().sqrt())
