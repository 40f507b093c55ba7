"""Schedules: closed forms of the papers, conversions, step lists and bad input."""

import math

import pytest
import torch
from torch.testing import assert_close

from diffnotes.schedules import (
    DiscreteSchedule,
    cosine_schedule,
    from_alphas_cumprod,
    from_betas,
    get_schedule,
    linear_schedule,
    respace,
    scaled_linear_schedule,
    sigma_ladder,
    space_timesteps,
    spaced_steps,
    to_diffusers,
)


def test_linear_alpha_bar_is_the_product_of_one_minus_beta():
    s = linear_schedule(1000)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    for t in (0, 1, 10, 500, 999):
        want = math.prod(1 - b for b in betas[: t + 1])
        assert_close(s.alpha_bar(t).item(), want, rtol=1e-12, atol=0)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64
    assert_close(s.sigma(7), torch.sqrt(1 - s.alpha_bar(7)))
    assert_close(s.snr(7), s.alpha_bar(7) / (1 - s.alpha_bar(7)))
    assert s.alpha_bar(-1).item() == 1.0


def test_scaled_linear_is_linear_in_sqrt_beta():
    s = scaled_linear_schedule(1000)
    assert_close(s.betas[0].item(), 0.00085)
    assert_close(s.betas[-1].item(), 0.012)
    root = s.betas.sqrt()
    assert_close(root[1:] - root[:-1], torch.full((999,), root[1] - root[0], dtype=torch.float64))


def test_cosine_alpha_bar_matches_eq17_and_clips_beta():
    T, s_ = 1000, 0.008
    sched = cosine_schedule(T)

    def f(t):
        return math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2

    for t in (0, 100, 500, 900):
        assert_close(sched.alpha_bar(t).item(), f(t + 1) / f(0), rtol=1e-12, atol=0)
    assert sched.betas.max().item() == pytest.approx(0.999)  # the clip bites at t = T
    assert (sched.betas <= 0.999).all()


def test_posterior_variance_is_ho_eq7():
    s = linear_schedule(100)
    for t in (1, 2, 50, 99):
        ab, ab_prev, beta = s.alpha_bar(t), s.alpha_bar(t - 1), s.betas[t]
        assert_close(s.posterior_variance[t], (1 - ab_prev) / (1 - ab) * beta)
    assert s.posterior_variance[0].item() == 0.0
    assert_close(s.posterior_log_variance_clipped[0], torch.log(s.posterior_variance[1]))


def test_from_betas_and_alphas_cumprod_round_trip():
    s = cosine_schedule(200)
    assert_close(from_betas(s.betas).alphas_cumprod, s.alphas_cumprod)
    r = from_alphas_cumprod(s.alphas_cumprod)
    assert_close(r.betas, s.betas, rtol=1e-10, atol=1e-14)
    kw = to_diffusers(s)
    assert kw["num_train_timesteps"] == 200 and len(kw["trained_betas"]) == 200


def test_get_schedule_names_and_errors():
    for name in ("linear", "scaled_linear", "cosine"):
        assert get_schedule(name, 10).T == 10
    with pytest.raises(ValueError, match="name"):
        get_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="T"):
        get_schedule("linear", 0)
    with pytest.raises(ValueError, match="T"):
        linear_schedule(-3)
    with pytest.raises(ValueError, match="betas"):
        DiscreteSchedule([0.1, 1.5])
    with pytest.raises(ValueError, match="alphas_cumprod"):
        from_alphas_cumprod([0.9, 0.95])
    with pytest.raises(ValueError, match="t must"):
        linear_schedule(10).alpha_bar(10)


def test_spaced_steps_hand_values():
    assert spaced_steps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert spaced_steps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert spaced_steps(10, 4, "linspace").tolist() == [9, 6, 3, 0]
    assert spaced_steps(7, 7, "trailing").tolist() == list(range(6, -1, -1))
    for spacing in ("leading", "trailing", "linspace"):
        steps = spaced_steps(1000, 37, spacing)
        assert steps.dtype == torch.long and len(steps) == 37
        assert (steps[1:] < steps[:-1]).all() and steps.min() >= 0 and steps.max() <= 999
    with pytest.raises(ValueError, match="spacing"):
        spaced_steps(100, 10, "uniform")
    with pytest.raises(ValueError, match="n must"):
        spaced_steps(100, 101)
    with pytest.raises(ValueError, match="n must"):
        spaced_steps(100, 0)


def test_space_timesteps_sections_and_ddim():
    # iDDPM's docstring example: 300 steps, sections of 100 strided to 10, 15 and 20
    steps = space_timesteps(300, [10, 15, 20])
    assert len(steps) == 45 and steps == sorted(steps)
    assert steps[:10] == [round(i * 99 / 9) for i in range(10)]
    assert steps[10] == 100 and steps[24] == 199 and steps[-1] == 299
    assert space_timesteps(300, "10,15,20") == steps
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    assert space_timesteps(1000, "ddim1000") == list(range(1000))
    assert space_timesteps(10, "4") == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="section_counts"):
        space_timesteps(1000, "ddim7x")
    with pytest.raises(ValueError, match="section_counts"):
        space_timesteps(10, "ddim7")  # no integer stride gives 7 of 10
    with pytest.raises(ValueError, match="section_counts"):
        space_timesteps(10, [20])


def test_respace_keeps_alpha_bar_and_timesteps():
    s = linear_schedule(1000)
    kept = space_timesteps(1000, "ddim50")
    r = respace(s, kept)
    assert r.T == 50 and r.timesteps.tolist() == kept
    assert_close(r.alphas_cumprod, s.alphas_cumprod[kept])
    # a decreasing sampling list works the same way
    r2 = respace(s, spaced_steps(1000, 50, "leading"))
    assert_close(r2.alphas_cumprod, r.alphas_cumprod)
    with pytest.raises(ValueError, match="steps"):
        respace(s, [0, 1000])
    with pytest.raises(ValueError, match="steps"):
        respace(s, [3, 3])


def test_check_steps():
    s = linear_schedule(10)
    assert s.check_steps(None) == list(range(9, -1, -1))
    assert s.check_steps(torch.tensor([9, 5, 0])) == [9, 5, 0]
    with pytest.raises(ValueError, match="ts must be strictly decreasing"):
        s.check_steps([0, 5, 9])
    with pytest.raises(ValueError, match="ts must lie"):
        s.check_steps([10, 5])
    with pytest.raises(ValueError, match="ts must lie"):
        s.check_steps([5, -1])


def test_sigma_ladder_is_geometric():
    sig = sigma_ladder(1.0, 0.01, 10)
    assert sig.dtype == torch.float64 and len(sig) == 10
    assert_close(sig[0].item(), 1.0) and assert_close(sig[-1].item(), 0.01)
    ratios = sig[1:] / sig[:-1]
    assert_close(ratios, torch.full_like(ratios, 0.01 ** (1 / 9)))
    with pytest.raises(ValueError, match="sigma_min"):
        sigma_ladder(0.01, 1.0)
    with pytest.raises(ValueError, match="L"):
        sigma_ladder(L=1)
