"""Distances between sample sets and mode statistics for mixtures (checks against exact samples)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffnotes.util import check_callable, check_int, check_number

__all__ = ["sliced_wasserstein", "energy_distance", "mode_stats", "noise_floor"]

_F64 = torch.float64


def _points(a: Any, name: str) -> Tensor:
    try:
        a = torch.as_tensor(a).detach()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name} must be a sample set of shape (N >= 2, D), got {a!r:.40}"
        ) from None
    if a.ndim < 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be a sample set of shape (N >= 2, D) or (N, ...)")
    a = a.reshape(a.shape[0], -1).to(dtype=_F64, device="cpu")
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    a, b = _points(a, "a"), _points(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    return a, b


def _quantiles(sorted_x: Tensor, n: int) -> Tensor:
    """The empirical quantile function of each column at the n midpoints (i + 1/2) / n."""
    m = sorted_x.shape[0]
    if m == n:
        return sorted_x
    idx = ((torch.arange(n, dtype=_F64) + 0.5) * m / n).floor().long().clamp(max=m - 1)
    return sorted_x[idx]


def sliced_wasserstein(
    a: Any, b: Any, *, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2: sqrt(E_theta W2^2(theta.a, theta.b)) over uniform directions.

    Each 1-D W2 is the L2 distance between quantile functions (sorted projections). Without a
    generator the directions are fixed (seed 0), so two calls compare like with like.
    """
    a, b = _pair(a, b)
    check_int(n_projections, "n_projections", 1)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    theta = torch.randn(a.shape[1], n_projections, generator=g, dtype=_F64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta).sort(0).values, (b @ theta).sort(0).values  # (N, P)
    n = max(pa.shape[0], pb.shape[0])
    w2 = ((_quantiles(pa, n) - _quantiles(pb, n)) ** 2).mean(0)
    return float(w2.mean().sqrt())


def energy_distance(a: Any, b: Any) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo 2004), U-statistic.

    Zero in expectation iff the distributions agree; the U-statistic can be slightly negative.
    """
    a, b = _pair(a, b)
    n, m = a.shape[0], b.shape[0]
    xy = torch.cdist(a, b).mean()
    xx = torch.cdist(a, a).sum() / (n * (n - 1))
    yy = torch.cdist(b, b).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)


def mode_stats(
    samples: Any,
    means: Any,
    std: float | Any,
    k: float = 3.0,
    *,
    weights: Any = None,
    min_count: int = 1,
) -> dict[str, Any]:
    """Mode coverage and weights of samples around known modes.

    Each sample goes to its nearest mean and counts as "within" when that distance is <= k std
    (std a scalar or (K,)). coverage: fraction of modes with >= min_count within-samples;
    weights (K,): share of the within-samples per mode; frac_within: within-samples / all;
    weight_error: total variation 1/2 sum |weights - true weights| (true: `weights`, else uniform).
    """
    x = _points(samples, "samples")
    try:
        mu = torch.as_tensor(means, dtype=_F64)
    except (TypeError, ValueError, RuntimeError):
        mu = torch.zeros(0)
    if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] != x.shape[1] or not mu.isfinite().all():
        raise ValueError("means must have shape (K >= 1, D) with the samples' D, and be finite")
    K = mu.shape[0]
    s = torch.as_tensor(std, dtype=_F64).reshape(-1)
    if s.numel() not in (1, K) or not (s > 0).all() or not s.isfinite().all():
        raise ValueError(f"std must be finite and > 0, a scalar or shape (K,) = ({K},)")
    check_number(k, "k", positive=True)
    check_int(min_count, "min_count", 1)
    true_w = torch.full((K,), 1 / K, dtype=_F64) if weights is None else torch.as_tensor(weights)
    true_w = true_w.to(_F64).reshape(-1)
    if true_w.shape != (K,) or not true_w.isfinite().all() or (true_w < 0).any():
        raise ValueError(f"weights must be finite, >= 0 and of shape (K,) = ({K},)")
    d = torch.cdist(x, mu)  # (N, K)
    dist, nearest = d.min(1)
    within = dist <= k * s.expand(K)[nearest]
    counts = torch.bincount(nearest[within], minlength=K).to(_F64)
    n_within = int(within.sum())
    w = counts / n_within if n_within else torch.zeros(K, dtype=_F64)
    return {
        "coverage": float((counts >= min_count).to(_F64).mean()),
        "weights": w,
        "frac_within": n_within / x.shape[0],
        "weight_error": float(0.5 * (w - true_w).abs().sum()),
    }


def noise_floor(
    mixture: Any,
    n: int,
    metric: Callable[[Tensor, Tensor], float] = sliced_wasserstein,
    *,
    repeats: int = 3,
    seed: int = 0,
) -> float:
    """The metric between two independent exact sample sets of size n, averaged over repeats.

    A sampler whose samples are exact scores about this value: the best one can hope to see.
    """
    check_int(n, "n", 2)
    check_int(repeats, "repeats", 1)
    check_int(seed, "seed", 0)
    if not callable(getattr(mixture, "sample", None)):
        raise ValueError(
            f"mixture must have a sample(n, generator) method, got {type(mixture).__name__}"
        )
    check_callable(metric, "metric", "(a, b) -> float, e.g. sliced_wasserstein")
    g = torch.Generator().manual_seed(seed)
    vals = [metric(mixture.sample(n, g), mixture.sample(n, g)) for _ in range(repeats)]
    return float(sum(vals) / repeats)
