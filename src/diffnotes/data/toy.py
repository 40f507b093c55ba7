"""Two-dimensional toy datasets: the classic rings, grids, rolls and boards of the diffusion papers.

All draws go through a numpy ``Generator`` seeded by ``seed``, so the same call returns the same
points on every machine; outputs are float32 torch tensors of shape (n, 2) with coordinates in
roughly [-3, 3] so one model size fits them all.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffnotes.util import check_choice, check_int

TWO_D = ("eight_gaussians", "twentyfive_gaussians", "swiss_roll", "moons", "checkerboard")


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    # Same ring as analytic.ring_mixture(n_modes=8, radius=2.0, std=0.05): modes at 2 pi k / 8.
    k = rng.integers(0, 8, size=n)
    angle = 2 * math.pi * k / 8
    centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + 0.05 * rng.standard_normal((n, 2))


def _twentyfive_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    # 5 x 5 grid at integer coordinates -2..2, as in the WGAN-GP / PacGAN mode-collapse benchmark.
    centres = rng.integers(-2, 3, size=(n, 2)).astype(np.float64)
    return centres + 0.05 * rng.standard_normal((n, 2))


def _swiss_roll(rng: np.random.Generator, n: int) -> np.ndarray:
    # scikit-learn's make_swiss_roll (x, z) plane, scaled by 1/5 to fit in [-3, 3].
    t = 1.5 * math.pi * (1 + 2 * rng.random(n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    return (points + 0.5 * rng.standard_normal((n, 2))) / 5.0


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    # scikit-learn's make_moons (noise 0.05), centred and scaled by 1.5.
    upper = rng.random(n) < 0.5
    angle = math.pi * rng.random(n)
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + 0.05 * rng.standard_normal((n, 2))
    return 1.5 * (points - np.array([0.5, 0.25]))


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    # FFJORD's checkerboard: 8 unit squares of a 4 x 4 board on [-2, 2]^2.
    x1 = 4 * rng.random(n) - 2
    x2 = rng.random(n) - 2 * rng.integers(0, 2, size=n) + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1)


_MAKERS = {
    "eight_gaussians": _eight_gaussians,
    "twentyfive_gaussians": _twentyfive_gaussians,
    "swiss_roll": _swiss_roll,
    "moons": _moons,
    "checkerboard": _checkerboard,
}


def two_d(name: str, n: int, *, seed: int = 0) -> torch.Tensor:
    """Draw n points (n, 2) float32 from a named 2-D toy distribution, deterministic in seed."""
    check_choice(name, "name", TWO_D)
    n = check_int(n, "n", 1)
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    return torch.from_numpy(_MAKERS[name](rng, n).astype(np.float32))
