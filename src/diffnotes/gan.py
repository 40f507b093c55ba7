"""GANs trained with diffusion: Diffusion-GAN's instance noise (Wang et al. 2023) and what both
GAN chapters share (the non-saturating losses, R1, a training loop with snapshots, mode coverage).

Diffusion-GAN hands the discriminator y = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) sigma eps
for real *and* generated x, with t drawn up to a maximum T that grows while the discriminator
overfits (its sign statistic r_d is above a target) and shrinks otherwise (Sec. 3, eq. 4).
DDGAN's denoising GAN lives in `diffnotes.ddgan`; the parts are in `diffnotes.models.gan`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from diffnotes.analytic import GaussianMixture
from diffnotes.forward import q_sample
from diffnotes.metrics.samples import mode_stats
from diffnotes.schedules import DiscreteSchedule, linear_schedule
from diffnotes.util import check_callable, check_in, check_instance, check_int, check_number

__all__ = [
    "d_loss",
    "g_loss",
    "r1_penalty",
    "AdaptiveDiffusion",
    "gan_step",
    "GANRun",
    "train_gan",
    "train_gans",
    "finite_data",
    "grid_mixture",
    "mode_coverage",
    "point_mass_js",
]

Sampler = Callable[[int, torch.Generator], Tensor]


# -- the two losses ----------------------------------------------------------------------------
def d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss -log D(real) - log(1 - D(fake)) on logits (Goodfellow et al. 2014)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss -log D(fake) (Goodfellow et al. 2014, Sec. 3)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """R1 = E ||grad_x D(x)||^2 on real data (Mescheder et al. 2018); ``real`` needs grad."""
    if not real.requires_grad:
        raise ValueError("real must require grad (set real.requires_grad_() before D(real))")
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


# -- Diffusion-GAN's instance noise ------------------------------------------------------------
@dataclass
class AdaptiveDiffusion:
    """Diffusion-GAN's forward diffusion over t < T with the adaptive maximum T (Sec. 3).

    y = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) sigma eps on DDPM's linear betas laid over the
    current T steps (the official code recomputes them whenever T changes). t is drawn with the
    'priority' weights p(t) proportional to t + 1, and a share ``p_clean`` of every batch is
    left clean (t = -1; the official code's half-zero ``t_epl``). Every ``interval`` steps,
    T <- T + sign(r_d - d_target) C (eq. 4), clipped to [T_min, T_max].
    """

    sigma: float = 0.05  # noise scale; the official code's noise_std for images in [-1, 1]
    T: int = 10  # the starting maximum step
    T_min: int = 10
    T_max: int = 500
    d_target: float = 0.6
    C: int = 1
    interval: int = 4  # steps between updates of T (the official ada_interval)
    p_clean: float = 0.5
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    _signs: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        check_number(self.sigma, "sigma", positive=True)
        check_int(self.T_min, "T_min", 1)
        check_int(self.T_max, "T_max", self.T_min)
        check_int(self.T, "T", self.T_min, self.T_max)
        check_in(self.d_target, "d_target", -1, 1)  # r_d = E[sign D] lies in [-1, 1]
        check_int(self.C, "C", 0)
        check_int(self.interval, "interval", 1)
        check_in(self.p_clean, "p_clean", 0, 1, "[)")
        self._schedule = linear_schedule(self.T, self.beta_start, self.beta_end)

    @property
    def schedule(self) -> DiscreteSchedule:
        """DDPM's linear betas over the current T steps."""
        if self._schedule.T != self.T:
            self._schedule = linear_schedule(self.T, self.beta_start, self.beta_end)
        return self._schedule

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n steps (n,) in -1..T-1: priority weights t + 1, and -1 (clean) with p_clean."""
        check_int(n, "n", 1)
        weights = torch.arange(1, self.T + 1, dtype=torch.float64)
        t = torch.multinomial(weights, n, replacement=True, generator=generator)
        clean = torch.rand(n, generator=generator, dtype=torch.float64) < self.p_clean
        return torch.where(clean, -1, t)

    def diffuse(self, x: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) sigma eps (eq. 1 with scale sigma)."""
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return q_sample(self.schedule, x, t, self.sigma * eps)

    def observe(self, real_logits: Tensor) -> None:
        """Record r_d = E[sign D(y_real)] and update T every ``interval`` calls (eq. 4)."""
        self._signs.append(float(torch.sign(real_logits.detach()).mean()))
        if len(self._signs) < self.interval:
            return
        r_d = sum(self._signs) / len(self._signs)
        self._signs.clear()
        step = self.C if r_d > self.d_target else -self.C if r_d < self.d_target else 0
        self.T = min(max(self.T + step, self.T_min), self.T_max)


# -- one training step and the loop ------------------------------------------------------------
def gan_step(
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real: Tensor,
    z: Tensor,
    *,
    diffusion: AdaptiveDiffusion | None = None,
    generator: torch.Generator | None = None,
    r1_gamma: float = 0.0,
) -> dict[str, float]:
    """One discriminator and one generator step; D(y, t) sees diffused samples with ``diffusion``.

    Without ``diffusion`` this is the vanilla GAN with the same D called at t = -1 (clean). With
    ``r1_gamma`` > 0 the discriminator loss gains (gamma / 2) E ||grad_x D(y(x), t)||^2 on the real
    batch, the gradient taken through the diffusion as in the official loss.py (Mescheder et al.
    2018). Returns the two losses and r_d = E[sign D(y_real)] of this step.
    """
    if not isinstance(real, Tensor) or not isinstance(z, Tensor) or len(real) != len(z):
        raise ValueError("real and z must be tensors with one row per sample (the same batch)")
    if diffusion is not None:
        check_instance(diffusion, "diffusion", AdaptiveDiffusion, "an AdaptiveDiffusion or None")
    check_number(r1_gamma, "r1_gamma", minimum=0.0)
    fake = G(z)
    real = real.detach().requires_grad_(r1_gamma > 0)
    if diffusion is None:
        t = torch.full((real.shape[0],), -1, dtype=torch.long)
        y_real, y_fake = real, fake
    else:
        t = diffusion.sample_t(real.shape[0], generator)
        y_real = diffusion.diffuse(real, t, generator)
        y_fake = diffusion.diffuse(fake, t, generator)
    real_logits = D(y_real, t)
    loss_d = d_loss(real_logits, D(y_fake.detach(), t))
    if r1_gamma > 0:
        loss_d = loss_d + 0.5 * r1_gamma * r1_penalty(real_logits, real)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = g_loss(D(y_fake, t))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    if diffusion is not None:
        diffusion.observe(real_logits)
    r_d = float(torch.sign(real_logits.detach()).mean())
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "r_d": r_d}


def finite_data(points: Tensor) -> Sampler:
    """A fixed training set as a sampler: ``(n, generator)`` draws n rows with replacement.

    The regime of the paper's data-efficiency results (Sec. 4.3): the discriminator can memorise
    a finite set, which is what the adaptive T of eq. 4 reacts to.
    """
    if not isinstance(points, Tensor) or points.ndim < 2 or len(points) < 1:
        got = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a tensor (N, ...) with N >= 1, got {got}")
    if not torch.isfinite(points).all():
        raise ValueError("points contains NaN or inf")

    def draw(n: int, generator: torch.Generator | None = None) -> Tensor:
        index = torch.randint(len(points), (check_int(n, "n", 1),), generator=generator)
        return points[index]

    return draw


@dataclass
class GANRun:
    """A finished run: the networks and one snapshot dict (step, T, samples, ...) per snapshot.

    With ``ema`` in `train_gan`, ``G_ema`` is the averaged generator the snapshots sample from.
    """

    G: nn.Module
    D: nn.Module
    snapshots: list[dict[str, Any]]
    G_ema: nn.Module | None = None


def train_gan(
    G: nn.Module,
    D: nn.Module,
    data: Sampler,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.5, 0.9),
    diffusion: AdaptiveDiffusion | None = None,
    seed: int = 0,
    snapshot_every: int | None = None,
    n_snapshot: int = 2500,
    r1_gamma: float = 0.0,
    ema: float = 0.0,
    lr_d: float | None = None,
) -> GANRun:
    """Train G(z) against D(y, t) with `gan_step` (vanilla, or Diffusion-GAN with ``diffusion``).

    ``lr_d`` gives D its own learning rate (the two time-scale rule, Heusel et al. 2017; default
    ``lr``). ``data(n, generator)`` draws real samples (`finite_data` for a fixed set); ``seed``
    sets the batches, z and the noise (not the initial weights: build G and D under
    ``torch.manual_seed``). Every ``snapshot_every`` steps (and at the end) the generator is run
    on one fixed z of ``n_snapshot`` samples: G itself, or with ``ema`` > 0 its exponential moving
    average G_ema <- d G_ema + (1 - d) G, d = min(ema, (1 + step) / (10 + step)) (StyleGAN2's
    G_ema, which the official code samples).
    Each snapshot also records T and the mean r_d since the previous snapshot.
    """
    check_int(steps, "steps", 1)
    check_int(batch_size, "batch_size", 1)
    check_number(lr, "lr", positive=True)
    lr_d = lr if lr_d is None else check_number(lr_d, "lr_d", positive=True)
    check_number(r1_gamma, "r1_gamma", minimum=0.0)
    check_in(ema, "ema", 0, 1, "[)")
    every = steps if snapshot_every is None else check_int(snapshot_every, "snapshot_every", 1)
    check_run(G, data, betas, seed, n_snapshot)
    z_dim = G.cfg.z_dim
    g = torch.Generator().manual_seed(seed)
    z_fixed = torch.randn(n_snapshot, z_dim, generator=torch.Generator().manual_seed(seed + 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)
    G_ema = copy.deepcopy(G).requires_grad_(False) if ema > 0 else None
    snapshots: list[dict[str, Any]] = []
    r_ds: list[float] = []
    for step in range(1, steps + 1):
        real = data(batch_size, g)
        z = torch.randn(batch_size, z_dim, generator=g)
        stats = gan_step(
            G, D, opt_g, opt_d, real, z, diffusion=diffusion, generator=g, r1_gamma=r1_gamma
        )
        r_ds.append(stats["r_d"])
        if G_ema is not None:  # warmed up as in `train.train`: short runs are not dragged back
            decay = min(ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - decay)
        if step % every == 0 or step == steps:
            with torch.no_grad():
                samples = (G if G_ema is None else G_ema)(z_fixed)
            T = diffusion.T if diffusion is not None else 0
            r_d_mean = sum(r_ds) / len(r_ds)
            snapshots.append({"step": step, "T": T, "samples": samples, "r_d_mean": r_d_mean})
            snapshots[-1].update(stats)
            r_ds.clear()
    return GANRun(G, D, snapshots, G_ema)


def train_gans(
    pairs: list[tuple[nn.Module, nn.Module]],
    data: Sampler | list[Sampler],
    *,
    steps: int,
    diffusions: list[AdaptiveDiffusion | None],
    seeds: list[int],
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_d: float | None = None,
    betas: tuple[float, float] = (0.5, 0.9),
    snapshot_every: int | None = None,
    n_snapshot: int = 2500,
) -> list[GANRun]:
    """Several independent `train_gan` runs in lock-step: one (G, D) pair, data, diffusion and
    seed each, their networks stacked and batched with ``torch.func.vmap``.

    Member m draws its batches, z and noise from its own ``seeds[m]`` in `train_gan`'s order, and
    Adam acts on every element alone, so each member is the run `train_gan` would make, up to
    the rounding of batched matrix products (tiny 2-D networks cost mostly per-call overhead:
    M runs at once cost about as much as a few). The trained weights are copied back into the
    given modules. ``data`` is one sampler for all members or one per member.
    """
    M = len(pairs)
    if M < 1 or len(diffusions) != M or len(seeds) != M:
        raise ValueError(
            f"pairs, diffusions and seeds must have one entry per run, got {M}, "
            f"{len(diffusions)} and {len(seeds)}"
        )
    samplers = data if isinstance(data, (list, tuple)) else [data] * M
    if len(samplers) != M:
        raise ValueError(f"data must be one sampler or one per run ({M}), got {len(samplers)}")
    check_int(steps, "steps", 1)
    check_int(batch_size, "batch_size", 1)
    check_number(lr, "lr", positive=True)
    lr_d = lr if lr_d is None else check_number(lr_d, "lr_d", positive=True)
    every = steps if snapshot_every is None else check_int(snapshot_every, "snapshot_every", 1)
    for (G, _), sampler, seed, diffusion in zip(pairs, samplers, seeds, diffusions):
        check_run(G, sampler, betas, seed, n_snapshot)
        if diffusion is not None:
            check_instance(
                diffusion, "diffusion", AdaptiveDiffusion, "an AdaptiveDiffusion or None"
            )
    if len({id(d) for d in diffusions if d is not None}) < sum(d is not None for d in diffusions):
        raise ValueError("each run needs its own AdaptiveDiffusion (T adapts per run)")
    Gs, Ds = [G for G, _ in pairs], [D for _, D in pairs]
    g_params, g_buffers = stack_module_state(Gs)
    d_params, d_buffers = stack_module_state(Ds)
    g_base, d_base = copy.deepcopy(Gs[0]).to("meta"), copy.deepcopy(Ds[0]).to("meta")

    def g_one(params: dict, buffers: dict, z: Tensor) -> Tensor:
        return functional_call(g_base, (params, buffers), (z,))

    def d_one(params: dict, buffers: dict, y: Tensor, t: Tensor) -> Tensor:
        return functional_call(d_base, (params, buffers), (y, t), {"distinct": False})

    G_all, D_all = vmap(g_one), vmap(d_one)
    z_dim = Gs[0].cfg.z_dim
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    z_fixed = torch.stack(
        [
            torch.randn(n_snapshot, z_dim, generator=torch.Generator().manual_seed(s + 1))
            for s in seeds
        ]
    )
    opt_g = torch.optim.Adam(g_params.values(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(d_params.values(), lr=lr_d, betas=betas)
    snapshots: list[list[dict[str, Any]]] = [[] for _ in range(M)]
    r_ds: list[list[float]] = [[] for _ in range(M)]
    clean = torch.full((batch_size,), -1, dtype=torch.long)
    for step in range(1, steps + 1):
        real, z = [], []
        for sampler, g in zip(samplers, gens):  # train_gan's order: the batch, then z
            real.append(sampler(batch_size, g))
            z.append(torch.randn(batch_size, z_dim, generator=g))
        fake = G_all(g_params, g_buffers, torch.stack(z))  # (M, B, D)
        t, y_real, y_fake = [], [], []
        for m, (diffusion, g) in enumerate(zip(diffusions, gens)):
            if diffusion is None:
                t.append(clean), y_real.append(real[m]), y_fake.append(fake[m])
                continue
            t.append(diffusion.sample_t(batch_size, g))
            y_real.append(diffusion.diffuse(real[m], t[m], g))
            y_fake.append(diffusion.diffuse(fake[m], t[m], g))
        t_all, y_real_all, y_fake_all = torch.stack(t), torch.stack(y_real), torch.stack(y_fake)
        real_logits = D_all(d_params, d_buffers, y_real_all, t_all)  # (M, B)
        fake_logits = D_all(d_params, d_buffers, y_fake_all.detach(), t_all)
        loss_d = vmap(d_loss)(real_logits, fake_logits)  # eq. 3, one loss per member (M,)
        opt_d.zero_grad(set_to_none=True)
        loss_d.sum().backward()
        opt_d.step()
        loss_g = vmap(g_loss)(D_all(d_params, d_buffers, y_fake_all, t_all))
        opt_g.zero_grad(set_to_none=True)
        loss_g.sum().backward()
        opt_g.step()
        signs = torch.sign(real_logits.detach()).mean(1)
        for m, diffusion in enumerate(diffusions):
            if diffusion is not None:
                diffusion.observe(real_logits[m])
            r_ds[m].append(float(signs[m]))
        if step % every == 0 or step == steps:
            with torch.no_grad():
                samples = G_all(g_params, g_buffers, z_fixed)
            for m, diffusion in enumerate(diffusions):
                snapshots[m].append(
                    {
                        "step": step,
                        "T": diffusion.T if diffusion is not None else 0,
                        "samples": samples[m],
                        "r_d_mean": sum(r_ds[m]) / len(r_ds[m]),
                        "loss_d": float(loss_d[m].detach()),
                        "loss_g": float(loss_g[m].detach()),
                        "r_d": r_ds[m][-1],
                    }
                )
                r_ds[m].clear()
    with torch.no_grad():
        for m, (G, D) in enumerate(pairs):
            for name, p in G.named_parameters():
                p.copy_(g_params[name][m])
            for name, p in D.named_parameters():
                p.copy_(d_params[name][m])
    return [GANRun(G, D, snaps) for (G, D), snaps in zip(pairs, snapshots)]


def check_run(G: nn.Module, data: Callable, betas: tuple, seed: int, n_snapshot: int) -> None:
    """The arguments `train_gan` and `train_ddgan` share, checked before any step."""
    if not isinstance(G, nn.Module) or not hasattr(getattr(G, "cfg", None), "z_dim"):
        raise ValueError(
            f"G must be a generator with cfg.z_dim (models.gan), got {type(G).__name__}"
        )
    check_callable(data, "data", "(n, generator) -> samples")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
    check_in(betas[0], "betas[0]", 0, 1, "[)")
    check_in(betas[1], "betas[1]", 0, 1, "[)")
    check_int(seed, "seed", 0)
    check_int(n_snapshot, "n_snapshot", 1)


# -- the 25-Gaussian grid and mode coverage ----------------------------------------------------
def grid_mixture(n: int = 5, spacing: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """n x n equal Gaussians on a grid centred at 0: n = 5 is the 25-Gaussian benchmark."""
    check_int(n, "n", 1)
    check_number(spacing, "spacing", positive=True)
    check_number(std, "std", positive=True)
    axis = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * spacing
    means = torch.cartesian_prod(axis, axis)
    return GaussianMixture(torch.full((n * n,), 1 / n**2), means, torch.full((n * n,), std**2))


def mode_coverage(
    samples: Tensor, mixture: GaussianMixture, *, k: float = 3.0, share: float = 0.2
) -> tuple[int, float]:
    """(modes covered, fraction of samples within k std of a mode) for an isotropic mixture.

    A mode counts as covered when at least ``share`` of its fair share N / K of the samples lie
    within k std of it: with 2,500 samples and 25 modes, 20 samples (PacGAN's rule, Lin et al.).
    """
    check_instance(mixture, "mixture", GaussianMixture, "an isotropic GaussianMixture")
    if not mixture.isotropic:
        raise ValueError("mixture must be isotropic (one std per mode)")
    if not isinstance(samples, Tensor):
        raise ValueError(f"samples must be a tensor (N, D), got {type(samples).__name__}")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share!r}")
    K = mixture.n_components
    min_count = max(1, math.ceil(share * samples.shape[0] / K))
    stats = mode_stats(samples, mixture.means, mixture.covs.sqrt(), k, min_count=min_count)
    return round(stats["coverage"] * K), stats["frac_within"]


# -- why noise helps: the point-mass example ---------------------------------------------------
def point_mass_js(theta: Tensor, noise_std: float, *, n_grid: int = 4001) -> Tensor:
    """JS(p_real, p_fake) for real = delta_0 and fake = delta_theta after Gaussian noise.

    Both diffused with std ``noise_std`` (the scale sqrt(1 - alpha_bar) sigma of y; the signal
    scale sqrt(alpha_bar) is folded into theta): the JS between N(0, s^2) and N(theta, s^2), by
    quadrature on ``n_grid`` points, differentiable in theta. With ``noise_std = 0`` it is
    log 2 wherever theta != 0: flat, so its gradient is zero (Wang et al., Sec. 3.2).
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    if not torch.isfinite(theta).all():
        raise ValueError("theta contains NaN or inf")
    check_number(noise_std, "noise_std", minimum=0.0)
    check_int(n_grid, "n_grid", 3)
    if noise_std == 0:
        # full_like keeps float64: a float32 log 2 would be off by 3e-8
        return torch.full_like(theta, math.log(2.0)).masked_fill(theta == 0, 0.0) + 0 * theta
    lo = torch.minimum(theta.min().detach(), torch.tensor(0.0)) - 10 * noise_std
    hi = torch.maximum(theta.max().detach(), torch.tensor(0.0)) + 10 * noise_std
    y = torch.linspace(float(lo), float(hi), n_grid, dtype=torch.float64)
    dy = y[1] - y[0]
    flat = theta.reshape(-1, 1)
    log_p = -0.5 * (y / noise_std) ** 2 - math.log(noise_std * math.sqrt(2 * math.pi))
    log_q = -0.5 * ((y - flat) / noise_std) ** 2 - math.log(noise_std * math.sqrt(2 * math.pi))
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1) * dy
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1) * dy
    return (0.5 * (kl_pm + kl_qm)).reshape(theta.shape)
