"""Parity with diffusers' schedulers: same schedule, same analytic model, same noise."""

from functools import partial

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from diffnotes.interop import from_diffusers_scheduler, to_diffusers_scheduler, unet_eps_model
from diffnotes.param import eps_model, eps_to_v, eps_to_x0
from diffnotes.samplers import ddim, ddim_invert, ddpm, euler
from diffnotes.schedules import (
    cosine_schedule,
    get_schedule,
    linear_schedule,
    spaced_steps,
    to_diffusers,
)

diffusers = pytest.importorskip("diffusers")

TOL = dict(rtol=1e-5, atol=1e-4)  # diffusers keeps alphas_cumprod in float32
SHAPE = (4, 2, 3, 3)
BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def gaussian_eps(schedule, mu, s):
    """Exact eps for data N(mu, s^2 I): sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)."""

    def eps(x, t):
        ab = schedule.alpha_bar(t.long()).reshape(-1, *[1] * (x.ndim - 1))
        return ((1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)).to(x.dtype)

    return eps


def x_T_and_gen():
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    return x_T, torch.Generator().manual_seed(1)


def run_diffusers(scheduler, model, x_T, generator, **step_kw):
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(x, t), t.reshape(1).expand(x.shape[0]))
        if generator is not None:  # DDIMInverseScheduler.step takes no generator
            step_kw["generator"] = generator
        x = scheduler.step(eps, t, x, **step_kw).prev_sample
    return x


FULL_CHAIN = [("linear", "small", 1000), ("cosine", "large", 1000)]


@pytest.mark.parametrize(
    "name,variance,n",
    [(a, b, 50) for a in ("linear", "cosine") for b in ("small", "large")] + FULL_CHAIN,
)
def test_ddpm_matches_ddpm_scheduler(name, variance, n):
    schedule = get_schedule(name, 1000)
    model = gaussian_eps(schedule, 0.3, 0.5)
    sched = diffusers.DDPMScheduler(
        beta_schedule=BETA_SCHEDULE[name],
        variance_type=f"fixed_{variance}",
        clip_sample=False,
        timestep_spacing="leading",
    )
    sched.set_timesteps(n)
    ts = spaced_steps(1000, n, "leading")
    assert sched.timesteps.tolist() == ts.tolist()
    dtype = torch.float32
    if n == 1000:
        # diffusers' float32 coefficients drift ~1e-6 per step, > 1e-4 over 1000 cosine steps:
        # the full chain compares the algorithms in float64, with diffusers' table upcast
        sched.alphas_cumprod, dtype = sched.alphas_cumprod.double(), torch.float64
    x_T, g = x_T_and_gen()
    want = run_diffusers(sched, model, x_T.to(dtype), g)
    x_T, g = x_T_and_gen()
    got = ddpm(model, schedule, ts, x_T.to(dtype), variance=variance, generator=g)
    assert got.dtype == want.dtype == dtype
    assert_close(got, want, **TOL)


def test_ddpm_learned_range_matches():
    schedule = cosine_schedule(1000)
    eps_fn = gaussian_eps(schedule, -0.2, 0.8)

    def model(x, t):  # iDDPM output: eps then v in [-1, 1]
        return torch.cat([eps_fn(x, t), torch.tanh(x + t[:, None, None, None] / 500 - 1)], dim=1)

    sched = diffusers.DDPMScheduler(
        beta_schedule="squaredcos_cap_v2", variance_type="learned_range", clip_sample=False
    )
    sched.set_timesteps(100)
    x_T, g = x_T_and_gen()
    want = run_diffusers(sched, model, x_T, g)
    x_T, g = x_T_and_gen()
    got = ddpm(model, schedule, spaced_steps(1000, 100), x_T, variance="learned", generator=g)
    assert_close(got, want, **TOL)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_matches_ddim_scheduler(eta, name):
    schedule = get_schedule(name, 1000)
    model = gaussian_eps(schedule, 0.3, 0.5)
    sched = diffusers.DDIMScheduler(
        beta_schedule=BETA_SCHEDULE[name],
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )
    sched.set_timesteps(50)
    x_T, g = x_T_and_gen()
    want = run_diffusers(sched, model, x_T, g, eta=eta)
    x_T, g = x_T_and_gen()
    got = ddim(model, schedule, spaced_steps(1000, 50), x_T, eta=eta, generator=g)
    assert_close(got, want, **TOL)


@pytest.mark.parametrize("n", [10, 50])
def test_euler_matches_euler_discrete_scheduler(n):
    schedule = linear_schedule(1000)
    model = gaussian_eps(schedule, 0.3, 0.5)
    sched = diffusers.EulerDiscreteScheduler(beta_schedule="linear", timestep_spacing="leading")
    sched.set_timesteps(n)
    x_T, _ = x_T_and_gen()
    want = run_diffusers(sched, model, x_T, None)
    got = euler(model, schedule, spaced_steps(1000, n, "leading"), x_T)
    assert_close(got, want, **TOL)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("T,n", [(1000, 50), (1000, 30), (1000, 7), (100, 100), (10, 3)])
def test_spaced_steps_match_set_timesteps(spacing, T, n):
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    sched.set_timesteps(n)
    assert spaced_steps(T, n, spacing).tolist() == sched.timesteps.tolist()


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_schedule_conversions(name):
    ours = get_schedule(name, 1000)
    kw = dict(beta_start=0.00085, beta_end=0.012) if name == "scaled_linear" else {}
    theirs = diffusers.DDPMScheduler(beta_schedule=BETA_SCHEDULE.get(name, name), **kw)
    assert_close(ours.betas.float(), theirs.betas, rtol=1e-6, atol=1e-9)
    back = from_diffusers_scheduler(theirs)
    assert_close(back.alphas_cumprod, ours.alphas_cumprod, rtol=1e-5, atol=1e-7)
    made = diffusers.DDPMScheduler(**to_diffusers(ours))
    assert_close(made.alphas_cumprod, theirs.alphas_cumprod, rtol=1e-6, atol=1e-9)
    euler_sched = to_diffusers_scheduler(ours, "euler")
    assert isinstance(euler_sched, diffusers.EulerDiscreteScheduler)
    assert to_diffusers_scheduler(ours, "ddim").config.clip_sample is False
    with pytest.raises(ValueError, match="kind"):
        to_diffusers_scheduler(ours, "pndm")


def test_unet_eps_model():
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    model = unet_eps_model(unet)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        out = model(x, t)
        want = unet(x.float(), t).sample
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert_close(out.float(), want)
    x_T = torch.randn(2, 1, 8, 8)
    sample = ddim(model, linear_schedule(1000), spaced_steps(1000, 3), x_T)
    assert np.isfinite(sample.numpy()).all()


def test_ddim_invert_matches_ddim_inverse_scheduler():
    """DDIM inversion: diffusers' DDIMInverseScheduler steps from t - T/n up to t with eps(x, t)."""
    schedule = linear_schedule(1000)
    model = gaussian_eps(schedule, 0.3, 0.5)
    sched = diffusers.DDIMInverseScheduler(
        beta_schedule="linear", clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading"
    )
    sched.set_timesteps(50)
    x0 = 0.3 + 0.5 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    want = run_diffusers(sched, model, x0, None)
    got = ddim_invert(model, schedule, spaced_steps(1000, 50, "leading"), x0)
    assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_clipped_x0_matches_clip_sample(kind):
    """clip_x0 is diffusers' clip_sample (DDIM: with use_clipped_model_output, as iDDPM does)."""
    schedule = linear_schedule(1000)
    model = gaussian_eps(schedule, 0.8, 0.5)  # data near 1: x0 predictions leave [-1, 1] early
    common = dict(beta_schedule="linear", clip_sample=True, timestep_spacing="leading")
    if kind == "ddpm":
        sched, step_kw = diffusers.DDPMScheduler(variance_type="fixed_small", **common), {}
        ours = ddpm
    else:
        sched = diffusers.DDIMScheduler(set_alpha_to_one=True, **common)
        step_kw, ours = dict(eta=0.5, use_clipped_model_output=True), partial(ddim, eta=0.5)
    sched.set_timesteps(50)
    ts = spaced_steps(1000, 50, "leading")
    x_T, g = x_T_and_gen()
    want = run_diffusers(sched, model, x_T, g, **step_kw)
    x_T, g = x_T_and_gen()
    got = ours(model, schedule, ts, x_T, clip_x0=True, generator=g)
    assert_close(got, want, **TOL)
    x_T, g = x_T_and_gen()  # the clip is active here: without it the samples differ
    unclipped = ours(model, schedule, ts, x_T, generator=g)
    assert (unclipped - got).abs().max() > 1e-2


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_v_and_x0_models_match_prediction_type(prediction):
    """param's conversions: a v- or x0-predicting model through eps_model, as diffusers reads it."""
    schedule = cosine_schedule(1000)
    eps_fn = gaussian_eps(schedule, 0.3, 0.5)
    convert = eps_to_v if prediction == "v" else eps_to_x0

    def model(x, t):  # the same exact model, predicting v or x0
        return convert(x, eps_fn(x, t), schedule.alpha_bar(t))

    kind = {"v": "v_prediction", "x0": "sample"}[prediction]
    sched = diffusers.DDIMScheduler(
        beta_schedule="squaredcos_cap_v2",
        prediction_type=kind,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )
    sched.set_timesteps(25)
    x_T, _ = x_T_and_gen()
    want = run_diffusers(sched, model, x_T, None)
    got = ddim(eps_model(model, schedule, prediction), schedule, spaced_steps(1000, 25), x_T)
    assert_close(got, want, **TOL)
