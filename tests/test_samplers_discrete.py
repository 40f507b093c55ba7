"""Discrete samplers: identities between them, respacing, shapes, Langevin steps and bad input."""

import warnings

import pytest
import torch
from torch.testing import assert_close

from diffnotes.samplers import (
    annealed_langevin,
    ddim,
    ddim_invert,
    ddpm,
    euler,
    langevin,
    p_sample,
)
from diffnotes.schedules import (
    cosine_schedule,
    linear_schedule,
    respace,
    sigma_ladder,
    spaced_steps,
)


def gaussian_eps(schedule, mu, s):
    """Exact eps for data N(mu, s^2 I): sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)."""

    def eps(x, t):
        ab = schedule.alpha_bar(t).to(x.device).reshape(-1, *[1] * (x.ndim - 1))
        return ((1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)).to(x.dtype)

    return eps


def noise(shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


S = linear_schedule(1000)
MODEL = gaussian_eps(S, 0.5, 0.3)


@pytest.mark.parametrize("ts", [list(range(99, -1, -1)), spaced_steps(100, 20), [99, 60, 7, 3]])
def test_ddim_eta1_is_the_ddpm_posterior_step(ts):
    s = cosine_schedule(100)
    model = gaussian_eps(s, -0.2, 0.7)
    x_T = noise((8, 3))
    a = ddim(model, s, ts, x_T, eta=1.0, generator=gen())
    b = ddpm(model, s, ts, x_T, variance="small", generator=gen())
    assert_close(a, b)


def test_ddim_eta0_is_deterministic_and_encode_decode_round_trips():
    x0 = 0.5 + 0.3 * noise((64, 2), seed=3)
    ts = spaced_steps(1000, 500)
    x_T = ddim_invert(MODEL, S, ts, x0)
    assert x_T.std() > 0.8  # really noise, not x0
    back = ddim(MODEL, S, ts, x_T)
    assert_close(ddim(MODEL, S, ts, x_T, generator=gen(5)), back, rtol=0, atol=0)
    # the explicit encoder is first order: DDIM Table 2 reports MSE 1e-4 at S = 500
    assert ((back - x0) ** 2).mean() < 1e-4
    assert_close(back, x0, rtol=0, atol=2e-2)
    # fixed-point refinement inverts each decoder step: exact to 1e-3 with few steps
    ts = spaced_steps(1000, 50)
    exact = ddim(MODEL, S, ts, ddim_invert(MODEL, S, ts, x0, fixed_point_iters=20))
    assert_close(exact, x0, rtol=0, atol=1e-3)


def test_euler_in_sigma_space_is_ddim_eta0():
    x_T = noise((16, 2))
    for ts in (spaced_steps(1000, 10), spaced_steps(1000, 37, "trailing")):
        assert_close(euler(MODEL, S, ts, x_T), ddim(MODEL, S, ts, x_T))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_respaced_schedule_equals_step_list(sampler):
    ts = spaced_steps(1000, 25, "trailing")
    x_T = noise((5, 2))
    fn = dict(ddpm=ddpm, ddim=lambda *a, **k: ddim(*a, eta=0.5, **k))[sampler]
    direct = fn(MODEL, S, ts, x_T, generator=gen())
    via_respace = fn(MODEL, respace(S, ts), None, x_T, generator=gen())
    assert_close(direct, via_respace)


def test_learned_variance_interpolates_between_small_and_large():
    x_T = noise((6, 2, 3, 3))
    ts = spaced_steps(1000, 10)

    def learned(v):
        return lambda x, t: torch.cat([MODEL(x, t), torch.full_like(x, v)], dim=1)

    for v, fixed in ((1.0, "large"), (-1.0, "small")):
        a = ddpm(learned(v), S, ts, x_T, variance="learned", generator=gen())
        assert_close(a, ddpm(MODEL, S, ts, x_T, variance=fixed, generator=gen()))
    mid = ddpm(learned(0.0), S, ts, x_T, variance="learned", generator=gen())
    assert mid.shape == x_T.shape


@pytest.mark.parametrize("shape", [(4, 2), (2, 3, 5, 5), (2, 1, 3, 4, 4)])
def test_shape_agnostic_pure_and_trajectories(shape):
    x_T = noise(shape, dtype=torch.float32)
    keep = x_T.clone()
    ts = spaced_steps(1000, 8)
    for fn in (ddpm, ddim, euler):
        kw = {} if fn is euler else dict(generator=gen())
        x, traj = fn(MODEL, S, ts, x_T, trajectory=True, progress=fn is ddim, **kw)
        assert x.shape == shape and x.dtype == torch.float32
        assert len(traj["x_t"]) == 9 and len(traj["x0_pred"]) == 8
        assert traj["x_t"][0] is x_T
        assert_close(traj["x_t"][-1], x)
    assert_close(x_T, keep, rtol=0, atol=0)
    assert ddim_invert(MODEL, S, ts, x_T).shape == shape


def test_ddpm_reaches_the_gaussian_data_distribution():
    x = ddpm(MODEL, S, None, noise((4000, 2), seed=7), generator=gen())
    assert_close(x.mean().item(), 0.5, rtol=0, atol=0.03)
    assert_close(x.std().item(), 0.3, rtol=0, atol=0.03)


def test_annealed_langevin_step_sizes_follow_ncsn():
    sigmas = torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64)
    score = lambda x, sigma: -(x - 1.0) / (1 + sigma[:, None] ** 2)  # noqa: E731
    x_init = noise((5, 2))
    got = annealed_langevin(score, sigmas, x_init, n_steps_each=2, step_lr=1e-3, generator=gen())
    g, x = gen(), x_init
    for sigma in sigmas:
        alpha = 1e-3 * (sigma / sigmas[-1]) ** 2  # alpha_i = eps sigma_i^2 / sigma_L^2
        for _ in range(2):
            s_ = -(x - 1.0) / (1 + sigma**2)
            x = x + alpha / 2 * s_ + alpha.sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    assert_close(got, x)
    denoised = annealed_langevin(
        score, sigmas, x_init, n_steps_each=2, step_lr=1e-3, generator=gen(), final_denoise=True
    )
    assert_close(denoised, x + 0.01 * (-(x - 1.0) / 1.01))


def test_annealed_langevin_samples_gaussian():
    score = lambda x, sigma: -(x - 2.0) / (0.25 + sigma[:, None] ** 2)  # noqa: E731 N(2, 0.5^2)
    x_init = 4 * torch.rand(2000, 2, generator=gen(3), dtype=torch.float64) - 2
    x, traj = annealed_langevin(
        score,
        sigma_ladder(1.0, 0.01, 10),
        x_init,
        n_steps_each=50,
        step_lr=2e-4,
        generator=gen(),
        trajectory=True,
    )
    assert len(traj["x_t"]) == 11
    assert_close(x.mean().item(), 2.0, rtol=0, atol=0.05)
    assert_close(x.std().item(), 0.5, rtol=0, atol=0.05)


def test_langevin_update():
    score = lambda x: -x  # noqa: E731
    x_init = noise((3, 2))
    got = langevin(score, x_init, n_steps=3, step_size=0.1, generator=gen())
    g, x = gen(), x_init
    for _ in range(3):
        x = x + 0.05 * (-x) + 0.1**0.5 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    assert_close(got, x)


def test_bad_input_names_the_argument():
    x_T = noise((2, 2))
    with pytest.raises(ValueError, match="ts"):
        ddim(MODEL, S, [10, 20], x_T)
    with pytest.raises(ValueError, match="ts"):
        ddpm(MODEL, S, [1000, 10], x_T)
    with pytest.raises(ValueError, match="ts"):
        euler(MODEL, S, [5, 5, 1], x_T)
    with pytest.raises(ValueError, match="eta"):
        ddim(MODEL, S, [10, 0], x_T, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        ddim(MODEL, S, [10, 0], x_T, eta=float("nan"))
    with pytest.raises(ValueError, match="variance"):
        ddpm(MODEL, S, [10, 0], x_T, variance="huge")
    with pytest.raises(ValueError, match="model"):
        ddpm(lambda x, t: x[:, :1], S, [10, 0], x_T)
    with pytest.raises(ValueError, match="model"):
        ddim(lambda x, t: x * float("nan"), S, [10, 0], x_T)
    with pytest.raises(ValueError, match="model"):
        ddpm(MODEL, S, [10, 0], x_T, variance="learned")  # needs (B, 2C, ...)
    with pytest.raises(ValueError, match="fixed_point_iters"):
        ddim_invert(MODEL, S, [10, 0], x_T, fixed_point_iters=-1)
    with pytest.raises(ValueError, match="x_T"):
        ddim(MODEL, S, [10, 0], x_T * float("nan"))
    with pytest.raises(ValueError, match="sigmas"):
        annealed_langevin(lambda x, s: -x, [0.1, 1.0], x_T)
    with pytest.raises(ValueError, match="step_lr"):
        annealed_langevin(lambda x, s: -x, [1.0, 0.1], x_T, step_lr=0)
    with pytest.raises(ValueError, match="score"):
        langevin(lambda x: x[:1], x_T, n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="n_steps"):
        langevin(lambda x: -x, x_T, n_steps=0, step_size=0.1)


def test_a_model_with_gradients_samples_without_warnings():
    # the finite-output check must not reduce a tensor that still requires grad (torch warns)
    schedule = linear_schedule(50)
    net = torch.nn.Linear(2, 2)

    def model(x, t):
        return net(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, x0 = p_sample(model, schedule, torch.randn(4, 2), 30, 29)  # one step, outside no_grad
    assert x.shape == x0.shape == (4, 2)
