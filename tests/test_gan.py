"""Diffusion-GAN and DDGAN: losses, instance noise, adaptive T, mode coverage, the point-mass JS,
DDGAN's schedule, posterior step and sampler, and the exact denoising distribution of a mixture."""

from __future__ import annotations

import math

import pytest
import torch

import diffnotes as dn
from diffnotes import ddgan, gan
from diffnotes.forward import posterior_coefs
from diffnotes.models import (
    DDGANDiscriminator,
    DDGANGenerator,
    Discriminator,
    GANConfig,
    Generator,
)

F64 = torch.float64


def small_parts(seed: int = 0):
    torch.manual_seed(seed)
    cfg = GANConfig(kind="mlp", hidden=16, depth=1, z_dim=4)
    return cfg, Generator(cfg), Discriminator(cfg)


# -- losses ------------------------------------------------------------------------------------
def test_losses_at_even_odds() -> None:
    zero = torch.zeros(5)
    torch.testing.assert_close(gan.d_loss(zero, zero), torch.tensor(2 * math.log(2)))
    torch.testing.assert_close(gan.g_loss(zero), torch.tensor(math.log(2)))


def test_r1_of_a_linear_discriminator_is_its_squared_weight() -> None:
    w = torch.tensor([0.5, -2.0])
    x = torch.randn(7, 2).requires_grad_()
    torch.testing.assert_close(gan.r1_penalty(x @ w, x), w.pow(2).sum())
    with pytest.raises(ValueError, match="real must require grad"):
        gan.r1_penalty(torch.zeros(3), torch.zeros(3, 2))


# -- Diffusion-GAN's instance noise ------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(sigma=0.0), "sigma"),
        (dict(T=5), "T"),
        (dict(T_min=20, T_max=10, T=15), "T_max"),
        (dict(interval=0), "interval"),
        (dict(p_clean=1.0), "p_clean"),
    ],
)
def test_adaptive_diffusion_names_bad_arguments(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        gan.AdaptiveDiffusion(**kw)


def test_sample_t_range_priority_and_clean_share() -> None:
    diff = gan.AdaptiveDiffusion(T=20, T_min=10, p_clean=0.5)
    t = diff.sample_t(20000, torch.Generator().manual_seed(0))
    assert t.min() == -1 and t.max() == 19
    assert abs(float((t == -1).double().mean()) - 0.5) < 0.02
    noisy = t[t >= 0].double()
    # priority weights t + 1 over 0..T-1: mean sum (t (t+1)) / sum (t+1) = 2 (T - 1) / 3
    assert abs(float(noisy.mean()) - 2 * 19 / 3) < 0.3


def test_diffuse_leaves_t_minus_one_clean_and_scales_noise_by_sigma() -> None:
    diff = gan.AdaptiveDiffusion(sigma=0.3, T=50, T_min=10)
    x = torch.randn(4000, 2, dtype=F64)
    clean = diff.diffuse(x, torch.full((4000,), -1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(clean, x)
    t = torch.full((4000,), 49)
    y = diff.diffuse(torch.zeros_like(x), t, torch.Generator().manual_seed(0))
    want = math.sqrt(1 - float(diff.schedule.alpha_bar(49))) * 0.3
    torch.testing.assert_close(y.std().item(), want, rtol=0.05, atol=0)


def test_observe_moves_T_by_C_towards_the_target_and_clips() -> None:
    diff = gan.AdaptiveDiffusion(T=12, T_min=10, T_max=14, C=2, interval=2, d_target=0.6)
    diff.observe(torch.ones(8))  # r_d = 1 > 0.6, but only one of two observations
    assert diff.T == 12
    diff.observe(torch.ones(8))
    assert diff.T == 14
    diff.observe(torch.ones(8)), diff.observe(torch.ones(8))
    assert diff.T == 14  # clipped at T_max
    for _ in range(6):
        diff.observe(-torch.ones(8))
    assert diff.T == 10 and diff.schedule.T == 10


@pytest.mark.parametrize("with_noise", [False, True])
def test_gan_step_and_train_gan(with_noise: bool) -> None:
    cfg, G, D = small_parts()
    diff = gan.AdaptiveDiffusion(sigma=0.5) if with_noise else None
    mix = gan.grid_mixture()
    run = gan.train_gan(
        G, D, lambda n, g: mix.sample(n, g), steps=6, batch_size=8, diffusion=diff,
        snapshot_every=3, n_snapshot=50,
    )  # fmt: skip
    assert [s["step"] for s in run.snapshots] == [3, 6]
    assert run.snapshots[-1]["samples"].shape == (50, 2)
    assert all(math.isfinite(s["loss_d"]) and -1 <= s["r_d"] <= 1 for s in run.snapshots)
    with pytest.raises(ValueError, match="steps"):
        gan.train_gan(G, D, lambda n, g: mix.sample(n, g), steps=0)


def test_gan_step_without_noise_updates_both_networks() -> None:
    cfg, G, D = small_parts()
    before = [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]
    opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (G, D))
    stats = gan.gan_step(G, D, opt_g, opt_d, torch.randn(8, 2), torch.randn(8, cfg.z_dim))
    after = [*G.parameters(), *D.parameters()]
    assert set(stats) == {"loss_d", "loss_g", "r_d"}
    assert any(not torch.equal(a, b) for a, b in zip(before[: len(list(G.parameters()))], after))
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


# -- mode coverage -----------------------------------------------------------------------------
def test_grid_mixture_is_the_twentyfive_gaussians_of_dn_data() -> None:
    mix = gan.grid_mixture()
    centres = dn.two_d("twentyfive_gaussians", 500, seed=0).round().double()
    assert mix.means.shape == (25, 2)
    assert set(map(tuple, centres.tolist())) <= set(map(tuple, mix.means.tolist()))
    torch.testing.assert_close(mix.covs, torch.full((25,), 0.05**2, dtype=F64))
    with pytest.raises(ValueError, match="spacing"):
        gan.grid_mixture(spacing=0.0)


def test_mode_coverage_of_exact_and_collapsed_samples() -> None:
    mix = gan.grid_mixture()
    covered, within = gan.mode_coverage(mix.sample(2500, torch.Generator().manual_seed(0)), mix)
    assert covered == 25 and within > 0.98
    collapsed = mix.means[:1].expand(2500, 2) + 0.01 * torch.randn(2500, 2, dtype=F64)
    assert gan.mode_coverage(collapsed, mix) == (1, 1.0)
    with pytest.raises(ValueError, match="share"):
        gan.mode_coverage(collapsed, mix, share=0.0)


# -- the point-mass example --------------------------------------------------------------------
def test_point_mass_js_limits_and_monte_carlo() -> None:
    theta = torch.tensor([0.0, 1.0, 50.0], dtype=F64)
    # exactly log 2 in float64 (not a float32 log 2 cast up)
    assert torch.equal(
        gan.point_mass_js(theta, 0.0), torch.tensor([0.0, math.log(2), math.log(2)], dtype=F64)
    )
    js = gan.point_mass_js(theta, 0.5)
    assert abs(float(js[0])) < 1e-9 and abs(float(js[2]) - math.log(2)) < 1e-9
    # Monte Carlo: JS = 1/2 E_p log(p / m) + 1/2 E_q log(q / m), p = N(0, s^2), q = N(1, s^2)
    s, g = 0.5, torch.Generator().manual_seed(0)
    p, q = torch.distributions.Normal(0.0, s), torch.distributions.Normal(1.0, s)

    def half(dist, x):
        m = torch.logaddexp(p.log_prob(x), q.log_prob(x)) - math.log(2)
        return (dist.log_prob(x) - m).mean()

    xp = s * torch.randn(400_000, generator=g, dtype=F64)
    mc = 0.5 * (half(p, xp) + half(q, xp + 1.0))
    torch.testing.assert_close(js[1], mc, rtol=0.01, atol=0)
    with pytest.raises(ValueError, match="noise_std"):
        gan.point_mass_js(theta, -1.0)


# -- DDGAN -------------------------------------------------------------------------------------
def test_ddgan_schedule_is_the_official_vp_schedule() -> None:
    sched = ddgan.ddgan_schedule(4)
    s = torch.tensor([0.001 + 0.999 * i / 4 for i in range(5)], dtype=F64)
    ab = torch.exp(-0.25 * s**2 * 19.9 * 2 - 0.1 * s)  # var_func_vp: 1 - exp(2 log_mean_coeff)
    torch.testing.assert_close(sched.alphas_cumprod, ab[1:] / ab[0])
    with pytest.raises(ValueError, match="T"):
        ddgan.ddgan_schedule(0)


def test_q_sample_pairs_marginals() -> None:
    sched = ddgan.ddgan_schedule(4)
    x0 = torch.zeros(20000, 2, dtype=F64)
    t = torch.full((20000,), 2)
    x_prev, x_t = ddgan.q_sample_pairs(sched, x0, t, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        x_prev.var().item(), 1 - float(sched.alpha_bar(1)), rtol=0.03, atol=0
    )
    torch.testing.assert_close(x_t.var().item(), 1 - float(sched.alpha_bar(2)), rtol=0.03, atol=0)
    with pytest.raises(ValueError, match="t must have shape"):
        ddgan.q_sample_pairs(sched, x0, t[:3])


def test_posterior_sample_returns_x0_at_the_last_step() -> None:
    sched = ddgan.ddgan_schedule(4)
    x0, x_t, noise = torch.randn(3, 5, 2).unbind(0)
    out = ddgan.posterior_sample(sched, x0, x_t, torch.zeros(5, dtype=torch.long), noise)
    torch.testing.assert_close(out, x0)


def test_ddgan_sample_trajectory_and_training_step() -> None:
    torch.manual_seed(0)
    cfg = GANConfig(kind="mlp", hidden=16, depth=1, z_dim=4)
    G, D = DDGANGenerator(cfg), DDGANDiscriminator(cfg)
    sched = ddgan.ddgan_schedule(4)
    x_T = torch.randn(10, 2)
    out, path = ddgan.ddgan_sample(G, sched, x_T, trajectory=True)
    assert out.shape == (10, 2) and len(path) == 5 and torch.equal(path[0], x_T)
    a = ddgan.ddgan_sample(G, sched, x_T, latent=False, generator=torch.Generator().manual_seed(1))
    b = ddgan.ddgan_sample(G, sched, x_T, latent=False, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    mix = dn.ring_mixture()
    run = ddgan.train_ddgan(
        G, D, lambda n, g: mix.sample(n, g), sched, steps=4, batch_size=8, n_snapshot=20
    )
    assert len(run.snapshots) == 1 and run.snapshots[0]["samples"].shape == (20, 2)
    with pytest.raises(ValueError, match="r1_gamma"):
        opt = torch.optim.SGD(G.parameters(), lr=0.1)
        ddgan.ddgan_step(G, D, opt, opt, torch.randn(4, 2), sched, r1_gamma=-1.0)


def test_denoising_posterior_mean_is_the_posterior_of_the_x0_mean() -> None:
    # E[x_{t-1} | x_t] = coef_x0 E[x0 | x_t] + coef_xt x_t: the posterior mean is linear in x0
    mix, sched = dn.ring_mixture(), ddgan.ddgan_schedule(4)
    for t in range(4):
        x_t = mix.noisy(sched, t).sample(64, torch.Generator().manual_seed(t), dtype=F64)
        w, m, v = ddgan.denoising_posterior(mix, sched, x_t, t)
        torch.testing.assert_close(w.sum(1), torch.ones(64, dtype=F64))
        ab, ab_prev = float(sched.alpha_bar(t)), float(sched.alpha_bar(t - 1))
        cx0, cxt, _, _ = posterior_coefs(ab, ab_prev)
        want = cx0 * mix.x0_mean(x_t, torch.tensor(t), sched) + cxt * x_t
        torch.testing.assert_close((w[..., None] * m).sum(1), want)
    with pytest.raises(ValueError, match="t must be"):
        ddgan.denoising_posterior(mix, sched, x_t, 4)


def test_gaussian_gap_is_zero_for_gaussian_data_and_large_for_the_ring() -> None:
    sched, g = ddgan.ddgan_schedule(4), torch.Generator().manual_seed(0)
    one = dn.GaussianMixture([1.0], [[0.5, -0.5]], [0.3])
    assert abs(ddgan.gaussian_gap(one, sched, 0, n_xt=64, n_inner=16, generator=g)) < 1e-8
    assert ddgan.gaussian_gap(dn.ring_mixture(), sched, 0, n_xt=128, generator=g) > 1.0


def test_exact_step_sample_covers_the_ring_and_the_gaussian_step_does_not() -> None:
    mix, sched = dn.ring_mixture(), ddgan.ddgan_schedule(4)
    x_T = torch.randn(800, 2, generator=torch.Generator().manual_seed(0))
    exact = ddgan.exact_step_sample(mix, sched, x_T, generator=torch.Generator().manual_seed(1))
    covered, within = gan.mode_coverage(exact, mix)
    assert exact.dtype == x_T.dtype and covered == 8 and within > 0.95
    gauss = ddgan.exact_step_sample(
        mix, sched, x_T, gaussian=True, generator=torch.Generator().manual_seed(1)
    )
    assert gan.mode_coverage(gauss, mix)[1] < 0.2


# -- train_gans: lock-step ensembles; finite data; R1, EMA and lr_d of train_gan ----------------
def test_train_gans_is_train_gan_run_by_run() -> None:
    """Each member of a vmapped ensemble is the run `train_gan` makes alone (same seed, data,
    noise), to float rounding: a GAN and a Diffusion-GAN member with different seeds."""
    mix = gan.grid_mixture()
    seeds, steps = [3, 5], 12
    noises = [None, dict(sigma=0.7, C=2, interval=2, d_target=-0.5)]  # T climbs: r_d > -0.5

    def diffusion(kw):
        return None if kw is None else gan.AdaptiveDiffusion(**kw)

    alone = [
        gan.train_gan(
            *small_parts(s)[1:], mix.sample, steps=steps, batch_size=8, lr=2e-3, lr_d=5e-3,
            diffusion=diffusion(kw), seed=s, snapshot_every=6, n_snapshot=20,
        )
        for s, kw in zip(seeds, noises)
    ]  # fmt: skip
    pairs = [tuple(small_parts(s)[1:]) for s in seeds]
    together = gan.train_gans(
        pairs, mix.sample, steps=steps, diffusions=[diffusion(kw) for kw in noises],
        seeds=seeds, batch_size=8, lr=2e-3, lr_d=5e-3, snapshot_every=6, n_snapshot=20,
    )  # fmt: skip
    for a, b in zip(alone, together):
        assert [s["step"] for s in b.snapshots] == [6, 12]
        for sa, sb in zip(a.snapshots, b.snapshots):
            assert sa["T"] == sb["T"]
            assert sa["r_d_mean"] == pytest.approx(sb["r_d_mean"], abs=1e-6)
            torch.testing.assert_close(sa["samples"], sb["samples"], atol=1e-4, rtol=1e-4)
        for pa, pb in zip(
            [*a.G.parameters(), *a.D.parameters()], [*b.G.parameters(), *b.D.parameters()]
        ):
            torch.testing.assert_close(pa, pb, atol=1e-4, rtol=1e-4)
    assert together[1].snapshots[-1]["T"] > 10  # the adaptive T moved, and identically


def test_train_gans_refuses_shared_noise_and_mismatched_lists() -> None:
    mix = gan.grid_mixture()
    shared = gan.AdaptiveDiffusion()
    pairs = [tuple(small_parts(s)[1:]) for s in (0, 1)]
    with pytest.raises(ValueError, match="own AdaptiveDiffusion"):
        gan.train_gans(pairs, mix.sample, steps=1, diffusions=[shared, shared], seeds=[0, 1])
    with pytest.raises(ValueError, match="one entry per run"):
        gan.train_gans(pairs, mix.sample, steps=1, diffusions=[None], seeds=[0, 1])
    with pytest.raises(ValueError, match="one sampler or one per run"):
        gan.train_gans(pairs, [mix.sample], steps=1, diffusions=[None, None], seeds=[0, 1])


def test_finite_data_draws_only_its_points_with_replacement() -> None:
    points = torch.tensor([[0.0, 1.0], [2.0, 3.0], [-1.0, 5.0]])
    draw = gan.finite_data(points)
    batch = draw(300, torch.Generator().manual_seed(0))
    assert batch.shape == (300, 2)
    rows = {tuple(r.tolist()) for r in batch}
    assert rows == {tuple(r.tolist()) for r in points}  # every point, nothing else
    # uniform draws in the generator's order: the same indices torch.randint would give
    index = torch.randint(3, (5,), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(draw(5, torch.Generator().manual_seed(1)), points[index])
    with pytest.raises(ValueError, match="NaN"):
        gan.finite_data(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="points"):
        gan.finite_data(torch.zeros(3))


def test_gan_step_r1_adds_half_gamma_times_the_squared_input_gradient() -> None:
    """A linear D(x) = w.x + b at t = -1: R1 = ||w||^2 for every sample, so the D loss with
    r1_gamma = 4 is the plain loss + 2 ||w||^2 (checked before the optimiser moves w)."""
    cfg, G, D = small_parts()
    real, z = torch.randn(8, 2), torch.randn(8, cfg.z_dim)
    w = torch.tensor([0.3, -0.7])

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(w.clone())

        def forward(self, x, t):
            return x @ self.w + 0.1

    losses = []
    for gamma in (0.0, 4.0):
        D = Linear()
        opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D))
        losses.append(gan.gan_step(G, D, opt_g, opt_d, real, z, r1_gamma=gamma)["loss_d"])
    assert losses[1] - losses[0] == pytest.approx(2 * float(w @ w), rel=1e-5)
    with pytest.raises(ValueError, match="r1_gamma"):
        gan.gan_step(G, D, opt_g, opt_d, real, z, r1_gamma=-1.0)


def test_train_gan_ema_and_own_discriminator_rate() -> None:
    """EMA after one step: decay min(ema, 2 / 11), so G_ema = 2/11 init + 9/11 trained, and the
    snapshot samples G_ema on the fixed z of seed + 1."""
    mix = gan.grid_mixture()
    _, G, D = small_parts(1)
    init = [p.detach().clone() for p in G.parameters()]
    run = gan.train_gan(G, D, mix.sample, steps=1, batch_size=8, ema=0.99, n_snapshot=10)
    for e, p0, p in zip(run.G_ema.parameters(), init, run.G.parameters()):
        torch.testing.assert_close(e, (2 / 11) * p0 + (9 / 11) * p)
    z_fixed = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(run.snapshots[-1]["samples"], run.G_ema(z_fixed))
    with pytest.raises(ValueError, match="lr_d"):
        gan.train_gan(G, D, mix.sample, steps=1, lr_d=0.0)
    with pytest.raises(ValueError, match="ema"):
        gan.train_gan(G, D, mix.sample, steps=1, ema=1.0)
