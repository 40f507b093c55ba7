"""Forward noising, the posterior q(x_{t'} | x_t, x0) and the parameterisation conversions."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from diffnotes.forward import q_posterior, q_sample
from diffnotes.param import (
    eps_model,
    eps_to_score,
    eps_to_v,
    eps_to_x0,
    score_model,
    score_to_eps,
    v_to_eps,
    v_to_x0,
    x0_model,
    x0_to_eps,
    x0_to_v,
)
from diffnotes.schedules import cosine_schedule, expand_as, linear_schedule

SCHEDULES = {"linear": linear_schedule(1000), "cosine": cosine_schedule(1000)}


def test_q_sample_matches_eq4_per_sample_t():
    s = linear_schedule(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    x_t = q_sample(s, x0, t, eps)
    for i in range(3):
        ab = s.alphas_cumprod[t[i]]
        assert_close(x_t[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i])
    assert_close(q_sample(s, x0, 500, eps)[1], x_t[1])
    with pytest.raises(ValueError, match="eps"):
        q_sample(s, x0, t, eps[:2])
    with pytest.raises(ValueError, match="t"):
        q_sample(s, x0, 1000, eps)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_posterior_is_the_gaussian_product(name):
    """Bayes with q(x_t'|x0) = N(sqrt(ab') x0, 1 - ab') and q(x_t|x_t') = N(sqrt(1 - b) x_t', b)."""
    s = SCHEDULES[name]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x_t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    for t, t_prev in ((1, 0), (10, 9), (999, 998), (500, 480), (20, -1)):
        ab, ab_prev = s.alpha_bar(t), s.alpha_bar(t_prev)
        b = 1 - ab / ab_prev
        mean, var, log_var = q_posterior(s, x0, x_t, t, t_prev)
        if t_prev >= 0:
            precision = 1 / (1 - ab_prev) + (1 - b) / b
            want_mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + (1 - b).sqrt() * x_t / b) / precision
            assert_close(var, 1 / precision)
            assert_close(mean, want_mean)
            assert_close(log_var, torch.log(1 / precision))
        else:
            assert_close(mean, x0)  # the clean end of the chain
            assert var.item() == 0.0
            assert_close(log_var, s.posterior_log_variance_clipped[0])


def test_q_posterior_defaults_to_previous_step_and_tables():
    s = linear_schedule(100)
    x0, x_t = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 50, 99])
    mean, var, log_var = q_posterior(s, x0, x_t, t)
    assert var.shape == (5, 1)
    assert_close(var[:, 0], s.posterior_variance[t])
    assert_close(log_var[:, 0], s.posterior_log_variance_clipped[t])
    assert_close(mean[0], x0[0])  # t = 0: the posterior mean is x0 itself
    with pytest.raises(ValueError, match="t_prev"):
        q_posterior(s, x0, x_t, 5, 7)
    with pytest.raises(ValueError, match="x_t"):
        q_posterior(s, x0, x_t[:2], 5)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes,
    t=st.integers(0, 999),
    name=st.sampled_from(["linear", "cosine"]),
    per_sample=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conversions_round_trip(shape, t, name, per_sample, seed):
    s = SCHEDULES[name]
    g = torch.Generator().manual_seed(seed)
    B = 3
    x0 = torch.randn(B, *shape, generator=g, dtype=torch.float64)
    eps = torch.randn(B, *shape, generator=g, dtype=torch.float64)
    ts = torch.full((B,), t) if per_sample else t
    ab = s.alpha_bar(ts)
    x_t = q_sample(s, x0, ts, eps)
    tol = dict(rtol=1e-6, atol=1e-6)
    assert_close(eps_to_x0(x_t, eps, ab), x0, **tol)
    assert_close(x0_to_eps(x_t, x0, ab), eps, **tol)
    v = eps_to_v(x_t, eps, ab)
    # v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022)
    assert_close(v, expand_as(ab.sqrt(), x0) * eps - expand_as((1 - ab).sqrt(), x0) * x0, **tol)
    assert_close(v_to_eps(x_t, v, ab), eps, **tol)
    assert_close(v_to_x0(x_t, v, ab), x0, **tol)
    assert_close(x0_to_v(x_t, x0, ab), v, **tol)
    sigma = s.sigma(ts)
    assert_close(score_to_eps(eps_to_score(eps, sigma), sigma), eps)


def test_model_adapters_agree():
    s = linear_schedule(1000)
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)

    def eps_fn(x, t):  # exact eps for data N(mu, I): x_t ~ N(sqrt(ab) mu, I)
        ab = s.alpha_bar(t)[:, None]
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu)

    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    x0_fn = x0_model(eps_fn, s)
    assert_close(eps_model(x0_fn, s, "x0")(x, t), eps_fn(x, t))
    v_fn = lambda x, t: eps_to_v(x, eps_fn(x, t), s.alpha_bar(t))  # noqa: E731
    assert_close(eps_model(v_fn, s, "v")(x, t), eps_fn(x, t))
    assert_close(eps_model(score_model(eps_fn, s), s, "score")(x, t), eps_fn(x, t))
    assert eps_model(eps_fn, s, "eps") is eps_fn
    with pytest.raises(ValueError, match="prediction"):
        eps_model(eps_fn, s, "velocity")
