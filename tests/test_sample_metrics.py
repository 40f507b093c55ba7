"""Sliced Wasserstein, energy distance, mode statistics and the sampling-noise floor."""

import math

import pytest
import torch
from torch.testing import assert_close

from diffnotes.analytic import GaussianMixture, ring_mixture
from diffnotes.metrics.samples import energy_distance, mode_stats, noise_floor, sliced_wasserstein


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sliced_wasserstein_of_a_shift():
    a = torch.randn(500, 3, generator=_gen(0), dtype=torch.float64)
    assert sliced_wasserstein(a, a) == 0.0
    d = torch.tensor([0.6, -0.3, 0.2], dtype=torch.float64)
    # a shift d moves each projection by theta.d: SW2^2 = E (theta.d)^2 = |d|^2 / D
    sw = sliced_wasserstein(a, a + d, n_projections=4000)
    assert_close(sw, float(d.norm()) / math.sqrt(3), rtol=0.03, atol=0)
    # a random permutation of rows changes nothing; directions are fixed without a generator
    perm = a[torch.randperm(500, generator=_gen(1))]
    assert_close(sliced_wasserstein(perm, a + d, n_projections=4000), sw)
    # unequal sizes: the quantile functions are compared
    assert sliced_wasserstein(a, torch.cat([a, a])) < 1e-12


def test_energy_distance():
    a = torch.randn(400, 2, generator=_gen(0))
    b = torch.randn(400, 2, generator=_gen(1))
    same = energy_distance(a, b)
    assert abs(same) < 0.02
    assert energy_distance(a, b + torch.tensor([1.0, 0.0])) > 10 * abs(same) + 0.1


def test_mode_stats():
    mix = ring_mixture(n_modes=8, weights=[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    x, y = mix.sample(8000, _gen(0), return_labels=True)
    st = mode_stats(x, mix.means, 0.05, weights=mix.weights)
    assert st["coverage"] == 1.0
    assert st["frac_within"] > 0.98  # P(|z| <= 3) = 1 - exp(-4.5) in 2-D
    assert_close(st["weights"], mix.weights, rtol=0, atol=0.02)
    assert st["weight_error"] < 0.03
    # drop two modes: coverage 6/8, large weight error against the true weights
    keep = (y != 0) & (y != 1)
    st = mode_stats(x[keep], mix.means, 0.05, weights=mix.weights)
    assert st["coverage"] == 0.75 and st["weight_error"] > 0.4
    # far-away points count as outside every mode
    st = mode_stats(torch.full((10, 2), 10.0), mix.means, 0.05)
    assert st["frac_within"] == 0.0 and st["coverage"] == 0.0


def test_noise_floor():
    mix = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.1, 0.1])
    small, large = noise_floor(mix, 200), noise_floor(mix, 3200)
    assert 0 < large < small
    assert noise_floor(mix, 200) == small  # seeded
    assert noise_floor(mix, 200, energy_distance, repeats=2) < 0.05


def test_bad_input():
    a = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(a, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="b"):
        energy_distance(a, torch.full((10, 2), float("nan")))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(a, a, n_projections=0)
    with pytest.raises(ValueError, match="std"):
        mode_stats(a, torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="means"):
        mode_stats(a, torch.zeros(3, 3), 1.0)
    with pytest.raises(ValueError, match="n must"):
        noise_floor(ring_mixture(), 1)
