"""Every sampler, guidance method and inpainting method against the exact Gaussian mixture."""

import pytest
import torch
from torch.testing import assert_close

from diffnotes.analytic import GaussianMixture
from diffnotes.guidance import classifier_free, classifier_guidance
from diffnotes.inpaint import repaint, replace_inpaint
from diffnotes.likelihood import log_likelihood
from diffnotes.metrics.samples import noise_floor, sliced_wasserstein
from diffnotes.samplers import annealed_langevin, ddim, ddpm, euler
from diffnotes.schedules import linear_schedule, sigma_ladder, spaced_steps
from diffnotes.sde import (
    VPSDE,
    SubVPSDE,
    predictor_corrector,
    probability_flow,
    reverse_sde,
    time_steps,
)

F64 = torch.float64
MIX = GaussianMixture(
    [0.5, 0.3, 0.2], [[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]], [[0.25, 0.2], [0.16, 0.3], [0.09, 0.1]]
)
SCHEDULE = linear_schedule(1000)
VP = VPSDE()
# The metric of one n-sample set fluctuates by ~25 % around the floor: average R independent sets
# (and the floor over many repeats) so that "within 1.2x" tests the sampler, not the seed.
N, R = 500, 8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def floor() -> float:
    value = noise_floor(MIX, N, repeats=32, seed=1)
    print(f"floor {value:.4f}")
    return value


def _metric(x: torch.Tensor, target: GaussianMixture = MIX) -> float:
    ref = target.sample(R * N, _gen(123), dtype=x.dtype).reshape(R, N, -1)
    x = x.reshape(R, N, -1)
    out = sum(sliced_wasserstein(x[i], ref[i]) for i in range(R)) / R
    print(f"metric {out:.4f}")  # shown with pytest -s, next to the floor
    return out


def _x_T() -> torch.Tensor:
    return torch.randn(R * N, 2, generator=_gen(7), dtype=F64)


DISCRETE = {
    "ddpm_small": lambda m, x: ddpm(m, SCHEDULE, spaced_steps(1000, 500), x, generator=_gen(8)),
    "ddpm_large": lambda m, x: ddpm(
        m, SCHEDULE, spaced_steps(1000, 500), x, variance="large", generator=_gen(8)
    ),
    "ddim_eta0": lambda m, x: ddim(m, SCHEDULE, spaced_steps(1000, 100), x),
    "ddim_eta1": lambda m, x: ddim(
        m, SCHEDULE, spaced_steps(1000, 500), x, eta=1.0, generator=_gen(8)
    ),
    "euler": lambda m, x: euler(m, SCHEDULE, spaced_steps(1000, 100, "trailing"), x),
}
CONTINUOUS = {
    "reverse_sde": lambda m, x: reverse_sde(m, VP, time_steps(300), x, generator=_gen(8)),
    "pc": lambda m, x: predictor_corrector(m, VP, time_steps(150), x, generator=_gen(8)),
    "pf_heun": lambda m, x: probability_flow(m, VP, time_steps(50), x, method="heun"),
}


@pytest.mark.parametrize("name", list(DISCRETE))
def test_discrete_samplers_reach_the_noise_floor(name, floor):
    x = DISCRETE[name](MIX.eps_model(SCHEDULE), _x_T())
    assert _metric(x) <= 1.2 * floor


@pytest.mark.parametrize("name", list(CONTINUOUS))
def test_sde_samplers_reach_the_noise_floor(name, floor):
    x = CONTINUOUS[name](MIX.eps_model(VP), _x_T())
    assert _metric(x) <= 1.2 * floor


def test_few_steps_do_not_reach_the_floor(floor):
    """The check has teeth: DDPM with 5 steps is far from the floor."""
    x = ddpm(MIX.eps_model(SCHEDULE), SCHEDULE, spaced_steps(1000, 5), _x_T(), generator=_gen(8))
    assert _metric(x) > 2 * floor


def test_annealed_langevin_reaches_the_noisy_floor():
    """NCSN with exact scores samples the mixture blurred by the last level, N(0, sigma_L^2 I)."""
    sigmas = sigma_ladder(sigma_max=3.0, sigma_min=0.3, L=10)
    target = GaussianMixture(MIX.weights, MIX.means, MIX.variances + 0.3**2)
    x_init = 3.0 * torch.randn(R * N, 2, generator=_gen(7), dtype=F64)
    x = annealed_langevin(
        MIX.score_sigma_model(), sigmas, x_init, n_steps_each=30, step_lr=0.02, generator=_gen(8)
    )
    assert _metric(x, target) <= 1.2 * noise_floor(target, N, repeats=32, seed=1)


def test_pf_ode_log_likelihood_is_the_exact_density():
    sde = SubVPSDE()
    x0 = MIX.sample(8, _gen(3), dtype=F64)
    nll = log_likelihood(MIX.eps_model(sde), sde, x0)
    assert_close(nll, MIX.log_prob(x0), rtol=0, atol=0.02 * 2)  # 0.02 nats per dim


def test_classifier_guidance_raises_accuracy_monotonically():
    y = torch.full((2000,), 2)  # the rarest class, weight 0.2
    x_T = torch.randn(2000, 2, generator=_gen(4), dtype=F64)
    grad = MIX.grad_log_class(SCHEDULE)
    acc = []
    for s in [0.0, 0.25, 0.5, 1.0, 2.0]:
        model = classifier_guidance(MIX.eps_model(SCHEDULE), grad, SCHEDULE, s, y)
        x = ddim(model, SCHEDULE, spaced_steps(1000, 50), x_T)
        post = MIX.class_posterior(x, 0.0, VP)  # exact p(y | x0): VP at t = 0 is clean data
        acc.append(float((post.argmax(1) == 2).to(F64).mean()))
    # strictly increasing until it saturates at 1
    assert all(a < b or a == b == 1.0 for a, b in zip(acc, acc[1:])), acc
    assert acc[0] < 0.3 and acc[-1] > 0.95, acc


def test_cfg_at_w0_is_the_conditional_model():
    cond = MIX.cond_eps_model(SCHEDULE)
    y = torch.tensor([0, 1, 2, 1])
    x = torch.randn(4, 2, generator=_gen(5), dtype=F64)
    t = torch.full((4,), 500)
    for guided in [classifier_free(cond, y, w=0.0), classifier_free(cond, y, guidance_scale=1.0)]:
        assert_close(guided(x, t), cond(x, t, y))
    x_T = torch.randn(500, 2, generator=_gen(6), dtype=F64)
    ts = spaced_steps(1000, 20)
    a = ddim(classifier_free(cond, 1, w=0.0), SCHEDULE, ts, x_T)
    assert_close(a, ddim(lambda x, t: cond(x, t, 1), SCHEDULE, ts, x_T))
    # and w = 1 is (2 eps_c - eps_u): the conditional sharpened by p(y | x)^1
    t = torch.full((4,), 300)
    assert_close(classifier_free(cond, y, w=1.0)(x, t), 2 * cond(x, t, y) - cond(x, t, None))


def test_repaint_beats_naive_replacement():
    """Observe x0[0] = 1.0: the exact answer for x0[1] is mix.conditional; RePaint gets closer."""
    mix = GaussianMixture([0.5, 0.5], [[-1.0, -1.0], [1.0, 1.0]], [0.3, 0.3])
    n = 1000
    mask = torch.tensor([[1.0, 0.0]])
    x_known = torch.tensor([[1.0, 0.0]], dtype=F64).expand(n, 2)
    exact = mix.conditional(torch.tensor([True, False]), x_known[0]).sample(n, _gen(9), dtype=F64)
    x_T = torch.randn(n, 2, generator=_gen(10), dtype=F64)
    ts = spaced_steps(1000, 50)
    model = mix.eps_model(SCHEDULE)
    rp = repaint(model, SCHEDULE, x_known, mask, x_T, ts=ts, generator=_gen(11))
    naive = replace_inpaint(model, SCHEDULE, x_known, mask, x_T, ts=ts, generator=_gen(11))
    assert torch.equal(rp[:, 0], x_known[:, 0])  # the known region is kept exactly
    d_rp = sliced_wasserstein(rp[:, 1:], exact)
    d_naive = sliced_wasserstein(naive[:, 1:], exact)
    assert d_rp < 0.8 * d_naive, (d_rp, d_naive)
