"""The analytic Gaussian mixture: exact noisy density, score, eps, posteriors and conditionals."""

import math

import pytest
import torch
from torch.testing import assert_close

from diffnotes.analytic import GaussianMixture, ncsn_toy, ring_mixture
from diffnotes.schedules import linear_schedule
from diffnotes.sde import VESDE, VPSDE, SubVPSDE

F64 = torch.float64
DIAG = GaussianMixture(
    [0.5, 0.3, 0.2], [[-1.0, 0.0, 0.5], [1.0, 0.0, -0.5], [0.0, 1.5, 0.0]],
    [[0.25, 0.2, 0.1], [0.16, 0.3, 0.2], [0.09, 0.1, 0.3]],
)  # fmt: skip
ISO = GaussianMixture([0.7, 0.3], [[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]], [0.2, 0.05])
SCHEDULES = {
    "discrete": (linear_schedule(1000), torch.tensor([0, 10, 250, 600, 999])),
    "vp": (VPSDE(), torch.tensor([1e-3, 0.1, 0.3, 0.6, 1.0], dtype=F64)),
    "subvp": (SubVPSDE(), torch.tensor([1e-3, 0.1, 0.3, 0.6, 1.0], dtype=F64)),
    "ve": (VESDE(), torch.tensor([1e-3, 0.1, 0.3, 0.6, 1.0], dtype=F64)),
}
CASES = [(m, s) for m in ("diag", "iso") for s in SCHEDULES]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _setup(mix_name: str, sched_name: str):
    mix = DIAG if mix_name == "diag" else ISO
    schedule, t = SCHEDULES[sched_name]
    x0 = mix.sample(len(t), _gen(0), dtype=F64)
    ab = torch.as_tensor(schedule.alpha_bar(t), dtype=F64)[:, None]
    sig = torch.as_tensor(schedule.sigma(t), dtype=F64)[:, None]
    x_t = ab.sqrt() * x0 + sig * torch.randn(x0.shape, generator=_gen(1), dtype=F64)
    return mix, schedule, t, x_t, ab, sig


def _brute_log_prob_t(mix, x, ab, sig):
    """log sum_k w_k N(x; sqrt(ab) mu_k, diag(ab var_k + sig^2)) via torch.distributions."""
    comps = []
    for k in range(mix.n_components):
        d = torch.distributions.Normal(
            ab.sqrt() * mix.means[k], (ab * mix.variances[k] + sig**2).sqrt()
        )
        comps.append(d.log_prob(x).sum(-1) + math.log(mix.weights[k]))
    return torch.logsumexp(torch.stack(comps, -1), -1)


@pytest.mark.parametrize("mix_name,sched_name", CASES)
def test_density_score_eps_x0(mix_name, sched_name):
    mix, schedule, t, x_t, ab, sig = _setup(mix_name, sched_name)
    logp = mix.log_prob_t(x_t, t, schedule)
    assert_close(logp, _brute_log_prob_t(mix, x_t, ab, sig))
    # score = grad log p_t (autograd), eps = -sigma score, E[x0 | x_t] by Tweedie's formula
    x = x_t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob_t(x, t, schedule).sum(), x)
    score = mix.score(x_t, t, schedule)
    assert_close(score, grad)
    assert_close(mix.eps(x_t, t, schedule), -sig * score)
    assert_close(mix.eps_model(schedule)(x_t, t), -sig * score)
    assert_close(mix.x0_mean(x_t, t, schedule), (x_t + sig**2 * score) / ab.sqrt())
    # noisy() at one t is the same mixture
    for i in range(len(t)):
        assert_close(mix.noisy(schedule, t[i]).log_prob(x_t[i : i + 1]), logp[i : i + 1])


@pytest.mark.parametrize("sched_name", list(SCHEDULES))
def test_class_posterior_and_perfect_classifier(sched_name):
    mix, schedule, t, x_t, ab, sig = _setup("diag", sched_name)
    post = mix.class_posterior(x_t, t, schedule)
    assert post.shape == (len(t), 3)
    assert_close(post.sum(1), torch.ones(len(t), dtype=F64))
    # each component's own eps is the conditional model; the mixture's is their posterior average
    cond = mix.cond_eps_model(schedule)
    eps_k = torch.stack([cond(x_t, t, torch.full((len(t),), k)) for k in range(3)], 1)
    assert_close((post[:, :, None] * eps_k).sum(1), mix.eps(x_t, t, schedule))
    assert_close(cond(x_t, t, None), mix.eps(x_t, t, schedule))
    # grad_x log p(y | x_t) by autograd of the log posterior
    y = torch.tensor([0, 1, 2, 0, 1])
    x = x_t.clone().requires_grad_(True)
    logpost = torch.log(mix.class_posterior(x, t, schedule))[torch.arange(len(t)), y]
    (grad,) = torch.autograd.grad(logpost.sum(), x)
    assert_close(mix.grad_log_class(schedule)(x_t, t, y), grad)


def test_score_sigma_model_and_shapes():
    mix = ncsn_toy()
    x = torch.randn(6, 2, generator=_gen(0))
    sigma = torch.linspace(0.1, 5.0, 6)
    s = mix.score_sigma_model()(x, sigma)
    wide = [GaussianMixture(mix.weights, mix.means, mix.covs + float(v) ** 2) for v in sigma]
    for i in range(6):
        xi = x[i : i + 1].double().requires_grad_(True)
        (g,) = torch.autograd.grad(wide[i].log_prob(xi).sum(), xi)
        assert_close(s[i : i + 1], g.float())
    # image-shaped inputs are flattened to D features; dtype follows x
    img = GaussianMixture([1.0], torch.zeros(1, 4), [1.0])
    x = torch.randn(3, 1, 2, 2, generator=_gen(1))
    e = img.eps(x, torch.tensor([0.5, 0.5, 0.5]), VPSDE())
    assert e.shape == x.shape and e.dtype == torch.float32
    # N(0, I) data under VP: x_t ~ N(0, I), so eps = sigma x
    assert_close(e, float(VPSDE().sigma(0.5)) * x)


def test_samples_and_log_prob():
    mix = ring_mixture(n_modes=4, weights=[0.4, 0.3, 0.2, 0.1])
    x, y = mix.sample(20000, _gen(0), return_labels=True)
    assert x.shape == (20000, 2) and x.dtype == torch.float32 and y.shape == (20000,)
    counts = torch.bincount(y, minlength=4).to(F64) / 20000
    assert_close(counts, mix.weights, rtol=0, atol=0.015)
    assert_close(x[y == 1].mean(0).double(), mix.means[1], rtol=0, atol=0.01)
    assert_close(x[y == 1].std(0).double(), torch.full((2,), 0.05, dtype=F64), rtol=0.05, atol=0)
    assert_close(mix.means.norm(dim=1), torch.full((4,), 2.0, dtype=F64))
    # a fine grid integrates the density to one
    g = torch.linspace(-4, 4, 801, dtype=F64)
    grid = torch.cartesian_prod(g, g)
    wide = GaussianMixture(mix.weights, mix.means, torch.full((4,), 0.09))
    assert_close(
        wide.log_prob(grid).exp().sum() * 0.01**2, torch.tensor(1.0, dtype=F64), atol=1e-4, rtol=0
    )
    toy = ncsn_toy()
    assert_close(toy.weights, torch.tensor([0.2, 0.8], dtype=F64))
    assert toy.dim == 2 and toy.n_components == 2


@pytest.mark.parametrize("mix_name", ["diag", "iso"])
def test_conditional(mix_name):
    mix = DIAG if mix_name == "diag" else ISO
    mask = torch.tensor([True, False, True])
    x_obs = torch.tensor([0.3, 99.0, -0.2], dtype=F64)  # the unobserved value is ignored
    cond = mix.conditional(mask, x_obs)
    assert cond.dim == 1 and cond.isotropic == mix.isotropic
    # p(x_m | x_o) is proportional to p(x_o, x_m): the log ratio is a constant over x_m
    xm = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
    full = x_obs.repeat(9, 1)
    full[:, 1] = xm[:, 0]
    ratio = cond.log_prob(xm) - mix.log_prob(full)
    assert_close(ratio, ratio[:1].expand(9))
    # and the constant is -log p(x_o), from the marginal over the observed coords
    obs = GaussianMixture(mix.weights, mix.means[:, mask], mix.variances[:, mask])
    assert_close(ratio[0], -obs.log_prob(x_obs[mask][None])[0])


def test_bad_input():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([1.0], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [1.0, 0.0])
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match="means"):
        GaussianMixture([1.0], [0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="x must"):
        DIAG.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="t must"):
        DIAG.eps(torch.zeros(4, 3), torch.tensor([0.5, 1.5, 0.1, 0.1]), VPSDE())
    with pytest.raises(ValueError, match="t must"):
        DIAG.eps(torch.zeros(4, 3), torch.tensor([0.5, 0.5]), VPSDE())
    with pytest.raises(ValueError, match="y must"):
        DIAG.cond_eps_model(VPSDE())(torch.zeros(2, 3), torch.full((2,), 0.5), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="mask"):
        DIAG.conditional(torch.tensor([True, False]), torch.zeros(3))
    with pytest.raises(ValueError, match="mask"):
        DIAG.conditional(torch.ones(3, dtype=torch.bool), torch.zeros(3))
    with pytest.raises(ValueError, match="n_modes"):
        ring_mixture(n_modes=0)
