"""VP / sub-VP / VE SDEs and their samplers against closed forms and an exact Gaussian model."""

import math

import pytest
import torch
from torch.testing import assert_close

from diffnotes.analytic import GaussianMixture
from diffnotes.likelihood import bits_per_dim, log_likelihood
from diffnotes.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    predictor_corrector,
    probability_flow,
    reverse_sde,
    time_steps,
)

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_max=20.0)}
T_GRID = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_closed_forms():
    t = T_GRID
    vp, sub, ve = VPSDE(), SubVPSDE(), VESDE()
    # alpha_bar = exp(-int_0^t beta) with beta linear from 0.1 to 20 (Song et al. eq. 33)
    integral = 0.1 * t + 0.5 * t**2 * (20.0 - 0.1)
    assert_close(vp.alpha_bar(t), torch.exp(-integral))
    assert_close(vp.sigma(t) ** 2 + vp.alpha_bar(t), torch.ones_like(t))
    assert_close(sub.sigma(t), 1 - sub.alpha_bar(t))
    assert_close(ve.alpha_bar(t), torch.ones_like(t))
    assert_close(
        ve.sigma(torch.tensor([0.0, 1.0])), torch.tensor([0.01, 50.0], dtype=torch.float64)
    )
    assert_close(vp.snr(t), vp.alpha_bar(t) / (1 - vp.alpha_bar(t)))
    assert_close(ve.snr(t), ve.sigma(t) ** -2)
    assert vp.alpha_bar(0.3).dtype == torch.float64


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_solves_the_sde(name):
    """Mean and variance ODEs of a linear SDE: m' = a m, (sigma^2)' = 2 a sigma^2 + g^2."""
    sde, t, h = SDES[name], T_GRID, 1e-6
    a = sde.drift(torch.ones(len(t), 1, dtype=torch.float64), t)[:, 0]
    mean = sde.alpha_bar(t).sqrt()
    d_mean = (sde.alpha_bar(t + h).sqrt() - sde.alpha_bar(t - h).sqrt()) / (2 * h)
    assert_close(d_mean, a * mean, rtol=1e-5, atol=1e-8)
    d_var = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    assert_close(d_var, 2 * a * sde.sigma(t) ** 2 + sde.diffusion(t) ** 2, rtol=1e-5, atol=1e-8)


def test_marginal_and_prior():
    sde = VPSDE()
    x0 = torch.randn(4, 3, 2, generator=_gen(0))
    mean, std = sde.marginal(x0, torch.full((4,), 0.5))
    assert mean.shape == x0.shape and std.shape == (4, 1, 1)
    assert_close(mean, x0 * math.sqrt(float(sde.alpha_bar(0.5))))
    z = VESDE().prior_sample((5, 3), _gen(1), dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 50.0).log_prob(z).sum(1)
    assert_close(VESDE().prior_logp(z), ref)
    ts = time_steps(10)
    assert ts.dtype == torch.float64 and len(ts) == 11 and ts[0] == 1 and ts[-1] == 1e-3


GAUSS = GaussianMixture([1.0], [[1.0, -0.5]], [[0.3**2, 0.5**2]])
SAMPLERS = {
    "reverse_sde": lambda m, s, x: reverse_sde(m, s, time_steps(200), x, generator=_gen(5)),
    "pc_reverse_diffusion": lambda m, s, x: predictor_corrector(
        m, s, time_steps(100), x, generator=_gen(5)
    ),
    "pc_euler": lambda m, s, x: predictor_corrector(
        m, s, time_steps(100), x, predictor="euler", generator=_gen(5)
    ),
    # VE's sigma is geometric in t: first-order Euler on a uniform t grid needs many steps
    "pf_euler": lambda m, s, x: probability_flow(
        m, s, time_steps(1000 if isinstance(s, VESDE) else 200), x
    ),
    "pf_heun": lambda m, s, x: probability_flow(m, s, time_steps(40), x, method="heun"),
    "pf_rk45": lambda m, s, x: probability_flow(m, s, time_steps(1), x, method="rk45"),
}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("name", list(SDES))
def test_samplers_recover_a_gaussian(name, sampler):
    sde = SDES[name]
    x_T = sde.prior_sample((2000, 2), _gen(3), dtype=torch.float64)
    x = SAMPLERS[sampler](GAUSS.eps_model(sde), sde, x_T)
    assert x.shape == x_T.shape and x.dtype == x_T.dtype
    # sampling error of 2000 draws: 0.011 on the mean, 1.6 % on the std
    assert_close(x.mean(0), GAUSS.means[0], rtol=0, atol=0.04)
    assert_close(x.std(0), GAUSS.variances[0].sqrt(), rtol=0.06, atol=0)


def test_pf_ode_is_deterministic_and_methods_agree():
    sde = VPSDE()
    model = GAUSS.eps_model(sde)
    x_T = sde.prior_sample((64, 2), _gen(0), dtype=torch.float64)
    ref, nfe = probability_flow(model, sde, time_steps(1), x_T, method="rk45", return_nfe=True)
    assert nfe > 10
    heun = probability_flow(model, sde, time_steps(100), x_T, method="heun")
    assert_close(heun, probability_flow(model, sde, time_steps(100), x_T, method="heun"))
    assert_close(heun, ref, rtol=0, atol=3e-3)
    euler, traj = probability_flow(model, sde, time_steps(20), x_T, trajectory=True)
    assert len(traj["x_t"]) == 21 and traj["x_t"][-1] is euler


def test_trajectories_and_inputs_untouched():
    sde = VPSDE()
    x_T = sde.prior_sample((8, 2), _gen(0))
    keep = x_T.clone()
    x, traj = reverse_sde(GAUSS.eps_model(sde), sde, time_steps(5), x_T, trajectory=True)
    assert len(traj["x_t"]) == 6 and len(traj["x0_pred"]) == 5
    _, traj = predictor_corrector(GAUSS.eps_model(sde), sde, time_steps(5), x_T, trajectory=True)
    assert len(traj["x_t"]) == 6 and len(traj["x0_pred"]) == 5
    assert torch.equal(x_T, keep)
    # the same generator seed gives the same sample
    a = reverse_sde(GAUSS.eps_model(sde), sde, time_steps(5), x_T, generator=_gen(1))
    b = reverse_sde(GAUSS.eps_model(sde), sde, time_steps(5), x_T, generator=_gen(1))
    assert torch.equal(a, b)


MIX = GaussianMixture(
    [0.5, 0.3, 0.2], [[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]], [[0.25, 0.2], [0.16, 0.3], [0.09, 0.1]]
)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_log_likelihood_exact_divergence(name):
    # VE's prior N(0, sigma_max^2) misses p_1 by O(|mu| / sigma_max) nats: take sigma_max large
    sde = SDES[name] if name == "vp" else VESDE(sigma_max=200.0)
    x0 = MIX.sample(12, _gen(0), dtype=torch.float64)
    nll = log_likelihood(MIX.eps_model(sde), sde, x0)
    assert nll.shape == (12,) and nll.dtype == torch.float64
    # within 0.02 nats per dim of the exact density
    assert_close(nll, MIX.log_prob(x0), rtol=0, atol=0.02 * 2)


def test_log_likelihood_hutchinson_is_unbiased():
    sde = VPSDE()
    x0 = MIX.sample(1, _gen(1), dtype=torch.float64).expand(64, 2)
    est = log_likelihood(
        MIX.eps_model(sde), sde, x0, exact_divergence=False, n_hutchinson=2, generator=_gen(2)
    )
    assert est.std() > 1e-3  # a stochastic estimate
    assert_close(est.mean(), MIX.log_prob(x0[:1])[0], rtol=0, atol=0.1)


def test_bits_per_dim():
    nats = torch.tensor([-2 * math.log(2), 0.0], dtype=torch.float64)
    assert_close(bits_per_dim(nats, 2), torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert_close(
        bits_per_dim(nats, 2, data_bins=256), torch.tensor([8.0, 7.0], dtype=torch.float64)
    )


def test_bad_input():
    sde = VPSDE()
    model = GAUSS.eps_model(sde)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="t must"):
        sde.alpha_bar(1.5)
    with pytest.raises(ValueError, match="t must"):
        sde.drift(x, torch.full((4,), -0.1))
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match="ts"):
        reverse_sde(model, sde, [0.1, 0.5], x)
    with pytest.raises(ValueError, match="ts"):
        probability_flow(model, sde, [1.2, 0.5], x)
    with pytest.raises(ValueError, match="predictor"):
        predictor_corrector(model, sde, time_steps(2), x, predictor="ancestral")
    with pytest.raises(ValueError, match="snr"):
        predictor_corrector(model, sde, time_steps(2), x, snr=float("nan"))
    with pytest.raises(ValueError, match="method"):
        probability_flow(model, sde, time_steps(2), x, method="rk4")
    with pytest.raises(ValueError, match="model"):
        reverse_sde(lambda x, t: x[:, :1], sde, time_steps(2), x)
    with pytest.raises(ValueError, match="model"):
        probability_flow(lambda x, t: x * float("nan"), sde, time_steps(2), x)
    with pytest.raises(ValueError, match="n must"):
        time_steps(0)
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(torch.zeros(2), 0)
