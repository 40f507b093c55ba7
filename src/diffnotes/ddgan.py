"""Denoising diffusion GANs (Xiao, Kreis, Vahdat 2022): a few big denoising steps, each a GAN.

A Gaussian reverse step is only right for small steps: with T = 4 the true denoising distribution
q(x_{t-1} | x_t) of multimodal data is itself multimodal. DDGAN draws x_{t-1} from the analytic
posterior q(x_{t-1} | x_t, x0) around a generator's guess x0 = G(x_t, z, t), so the step is the
implicit mixture over z of those Gaussians (eq. 8), trained adversarially against a
discriminator D(x_{t-1}, x_t, t) with the non-saturating loss and R1 (eqs. 5-6).

For an analytic `GaussianMixture` the true q(x_{t-1} | x_t) is a mixture of Gaussians too:
`denoising_posterior` gives it exactly and `gaussian_gap` its KL from the best Gaussian.
Step indices follow the book: t = T-1..0, and t - 1 = -1 is clean data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from diffnotes.analytic import GaussianMixture
from diffnotes.forward import q_posterior, q_sample
from diffnotes.gan import check_run, d_loss, g_loss, r1_penalty
from diffnotes.losses import eps_loss
from diffnotes.schedules import DiscreteSchedule, check_schedule
from diffnotes.train import train
from diffnotes.util import check_batch, check_in, check_instance, check_int, check_number

__all__ = [
    "ddgan_schedule",
    "q_sample_pairs",
    "posterior_sample",
    "ddgan_sample",
    "ddgan_step",
    "DDGANRun",
    "cosine_lr",
    "train_ddgan",
    "train_gaussian_steps",
    "denoising_posterior",
    "gaussian_gap",
    "exact_step_sample",
]

_F64 = torch.float64


def ddgan_schedule(
    T: int = 4, beta_min: float = 0.1, beta_max: float = 20.0, eps_small: float = 1e-3
) -> DiscreteSchedule:
    """The official code's VP schedule on T steps (``get_sigma_schedule``).

    alpha_bar(s) = exp(-s^2 (b_max - b_min) / 2 - s b_min) at s = eps + (1 - eps) i / T for
    i = 0..T, and beta_i = 1 - alpha_bar(s_i) / alpha_bar(s_{i-1}) for i = 1..T.
    """
    check_int(T, "T", 1)
    check_number(beta_min, "beta_min", positive=True)
    check_number(beta_max, "beta_max", minimum=beta_min)
    check_in(eps_small, "eps_small", 0, 1, "[)")
    s = torch.arange(T + 1, dtype=_F64) / T * (1 - eps_small) + eps_small
    log_ab = -0.5 * s**2 * (beta_max - beta_min) - s * beta_min
    return DiscreteSchedule(1 - torch.exp(log_ab[1:] - log_ab[:-1]))


def _check_x0(schedule: DiscreteSchedule, x: Tensor) -> None:
    check_schedule(schedule)
    if not isinstance(x, Tensor) or x.ndim < 2:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x0 must be a batch (B, ...), got {got}")


def _steps(schedule: DiscreteSchedule, t: Tensor, x: Tensor) -> Tensor:
    _check_x0(schedule, x)
    if not isinstance(t, Tensor) or t.shape != (x.shape[0],):
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {got}")
    return t


def q_sample_pairs(
    schedule: DiscreteSchedule, x0: Tensor, t: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A real pair (x_{t-1}, x_t): x_{t-1} ~ q(x_{t-1} | x0), x_t ~ q(x_t | x_{t-1}) (eq. 1)."""
    t = _steps(schedule, t, x0)
    eps1 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    eps2 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    x_prev = q_sample(schedule, x0, t - 1, eps1)
    beta = (1 - schedule.alpha_bar(t) / schedule.alpha_bar(t - 1)).to(x0.dtype)[:, None]
    return x_prev, (1 - beta).sqrt() * x_prev + beta.sqrt() * eps2


def posterior_sample(
    schedule: DiscreteSchedule, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor
) -> Tensor:
    """x_{t-1} = mean + std noise from q(x_{t-1} | x_t, x0) (Ho et al. eqs. 6-7; t = 0: mean)."""
    if not isinstance(noise, Tensor) or not isinstance(x_t, Tensor) or noise.shape != x_t.shape:
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor shaped as x_t, got {got}")
    mean, var, _ = q_posterior(schedule, x0, x_t, t)
    return mean + var.sqrt().to(x0.dtype) * noise


Latent = bool | Sequence[bool]


def _latent(G: nn.Module, n: int, generator: torch.Generator | None, latent: Latent) -> Tensor:
    """z ~ N(0, I) (n, z_dim), zeroed where ``latent`` is False: for all rows, or per member of
    an ensemble (one flag per member, rows member-major)."""
    z = torch.randn(n, G.cfg.z_dim, generator=generator)
    if isinstance(latent, bool):
        return z if latent else torch.zeros_like(z)
    members = getattr(G.cfg, "members", 1)
    if len(latent) != members or not all(isinstance(f, bool) for f in latent):
        raise ValueError(f"latent must be a bool or {members} bools (one per member), got {latent}")
    keep = torch.tensor(latent, dtype=z.dtype).repeat_interleave(n // members)
    return z * keep[:, None]


def ddgan_sample(
    G: nn.Module,
    schedule: DiscreteSchedule,
    x_T: Tensor,
    *,
    latent: Latent = True,
    generator: torch.Generator | None = None,
    trajectory: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """DDGAN sampling (Xiao et al. Sec. 3.3): x0 = G(x_t, z, t), then x_{t-1} ~ q(x_{t-1}|x_t, x0).

    Each step draws z, then the posterior noise, from ``generator``; ``latent=False`` feeds z = 0
    (a deterministic generator; a list of flags sets it per member of an ensemble). With
    ``trajectory`` also returns [x_T, ..., x_0].
    """
    check_batch(x_T, "x_T")
    check_schedule(schedule)
    if not callable(G) or not hasattr(getattr(G, "cfg", None), "z_dim"):
        raise ValueError(
            f"G must be a generator with cfg.z_dim (DDGANGenerator), got {type(G).__name__}"
        )
    x, path = x_T, [x_T]
    with torch.no_grad():
        for step in reversed(range(schedule.T)):
            t = torch.full((x.shape[0],), step, dtype=torch.long)
            x0 = G(x, _latent(G, x.shape[0], generator, latent), t)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = posterior_sample(schedule, x0, x, t, noise)
            path.append(x)
    return (x, path) if trajectory else x


def ddgan_step(
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    r1_gamma: float = 0.02,
    latent: Latent = True,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One D step (non-saturating loss + gamma/2 R1 on the real x_{t-1}) and one G step (eq. 6)."""
    check_number(r1_gamma, "r1_gamma", minimum=0.0)
    _check_x0(schedule, x0)
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator)
    x_prev, x_t = q_sample_pairs(schedule, x0, t, generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    z = _latent(G, x0.shape[0], generator, latent)
    fake_prev = posterior_sample(schedule, G(x_t, z, t), x_t, t, noise)
    x_prev.requires_grad_(r1_gamma > 0)
    real_logits = D(x_prev, x_t, t)
    loss_d = d_loss(real_logits, D(fake_prev.detach(), x_t, t))
    if r1_gamma > 0:
        loss_d = loss_d + r1_gamma / 2 * r1_penalty(real_logits, x_prev)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = g_loss(D(fake_prev, x_t, t))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}


@dataclass
class DDGANRun:
    """A finished DDGAN run: the networks, the EMA of G (G itself without EMA) and one snapshot
    dict (step, samples from ``G_ema``, losses) per snapshot."""

    G: nn.Module
    D: nn.Module
    snapshots: list[dict[str, Any]]
    G_ema: nn.Module


def cosine_lr(lr: float, lr_min: float, step: int, steps: int) -> float:
    """lr_min + (lr - lr_min) (1 + cos(pi step / steps)) / 2: the official CosineAnnealingLR."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * step / steps)) / 2


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _ema_update(ema: nn.Module, live: nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) live for every parameter (the official ``EMA`` wrapper)."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), live.parameters()):
            e.lerp_(p, 1.0 - decay)


def train_ddgan(
    G: nn.Module,
    D: nn.Module,
    data: Callable[[int, torch.Generator], Tensor],
    schedule: DiscreteSchedule,
    *,
    steps: int,
    batch_size: int = 128,
    lr_g: float = 1.6e-4,
    lr_d: float = 1.25e-4,
    betas: tuple[float, float] = (0.5, 0.9),
    r1_gamma: float = 0.02,
    r1_every: int = 15,
    ema_decay: float | None = 0.9999,
    lr_min: float | None = 1e-5,
    latent: Latent = True,
    seed: int = 0,
    snapshot_every: int | None = None,
    n_snapshot: int = 2000,
) -> DDGANRun:
    """Train DDGAN with `ddgan_step`; defaults are the official code's CIFAR-10 settings.

    Adam with ``betas``; R1 with weight ``r1_gamma`` on every ``r1_every``-th D step, unscaled
    (the official ``lazy_reg``: 15 on CIFAR-10; 1 puts R1 on every step); both learning rates
    decay to ``lr_min`` on a cosine over the run (``CosineAnnealingLR``; None keeps them
    constant), and G's weights are averaged with ``ema_decay`` (None: no EMA), warmed up as
    min(ema_decay, (1 + step) / (10 + step)) so a short run is not dominated by the initial
    weights. ``data(n, generator)`` draws real x0; ``seed`` sets batches, t, z and noise (build G
    and D under ``torch.manual_seed`` for the weights). Snapshots sample `ddgan_sample` with the
    EMA generator from one fixed x_T and generator every ``snapshot_every`` steps and at the end.

    Ensembles (`models.ddgan_mlp.stack`, ``cfg.members = E``) draw ``batch_size`` rows per
    member and their snapshots hold E * n_snapshot rows, member-major, all from the same x_T.
    """
    check_int(steps, "steps", 1)
    check_int(batch_size, "batch_size", 1)
    check_number(r1_gamma, "r1_gamma", minimum=0.0)
    check_int(r1_every, "r1_every", 1)
    check_number(lr_g, "lr_g", positive=True)
    check_number(lr_d, "lr_d", positive=True)
    if lr_min is not None:
        check_in(lr_min, "lr_min", 0, min(lr_g, lr_d))
    if ema_decay is not None:
        check_in(ema_decay, "ema_decay", 0, 1, "[)")
    every = steps if snapshot_every is None else check_int(snapshot_every, "snapshot_every", 1)
    check_run(G, data, betas, seed, n_snapshot)
    check_schedule(schedule)
    if getattr(G.cfg, "kind", "mlp") != "mlp":
        raise ValueError("G must be an MLP generator (kind='mlp'): snapshots draw x_T (n, dim)")
    members = getattr(G.cfg, "members", 1)
    if getattr(getattr(D, "cfg", None), "members", 1) != members:
        raise ValueError(f"D must have as many members as G ({members})")
    g = torch.Generator().manual_seed(seed)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas, foreach=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas, foreach=True)
    G_ema = G if ema_decay is None else copy.deepcopy(G).requires_grad_(False)
    x_T = torch.randn(n_snapshot, G.cfg.dim, generator=torch.Generator().manual_seed(seed + 1))
    x_T = x_T.repeat(members, 1)
    snapshots: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        if lr_min is not None:
            _set_lr(opt_g, cosine_lr(lr_g, lr_min, step - 1, steps))
            _set_lr(opt_d, cosine_lr(lr_d, lr_min, step - 1, steps))
        stats = ddgan_step(
            G, D, opt_g, opt_d, data(batch_size * members, g), schedule,
            r1_gamma=r1_gamma if (step - 1) % r1_every == 0 else 0.0,
            latent=latent, generator=g,
        )  # fmt: skip
        if ema_decay is not None:
            _ema_update(G_ema, G, min(ema_decay, (1 + step) / (10 + step)))
        if step % every == 0 or step == steps:
            gs = torch.Generator().manual_seed(seed + 2)
            samples = ddgan_sample(G_ema, schedule, x_T, latent=latent, generator=gs)
            snapshots.append({"step": step, "samples": samples, **stats})
    return DDGANRun(G, D, snapshots, G_ema)


def train_gaussian_steps(
    model: nn.Module,
    data: Callable[[int, torch.Generator], Tensor],
    schedule: DiscreteSchedule,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """The Gaussian baseline on DDGAN's T steps: ``model`` as an eps-model trained with L_simple
    (Ho et al. eq. 14); returns its EMA in eval mode (sample with `samplers.ddpm` on T-1..0).

    An ensemble (``model.cfg.members = E``) draws ``batch_size`` rows per member; gradients are
    not clipped (a global norm would couple the members). ``seed`` sets batches and noise.
    """
    check_schedule(schedule)
    check_int(batch_size, "batch_size", 1)
    members = getattr(getattr(model, "cfg", None), "members", 1)
    result = train(
        model, eps_loss(schedule), data, steps=steps, batch_size=batch_size * members, lr=lr,
        grad_clip=None, seed=seed,
    )  # fmt: skip
    return result.ema.eval()


# -- the exact denoising distribution of a mixture ---------------------------------------------
def denoising_posterior(
    mixture: GaussianMixture, schedule: DiscreteSchedule, x_t: Tensor, t: int
) -> tuple[Tensor, Tensor, Tensor]:
    """q(x_{t-1} | x_t) = sum_k r_k N(m_k, v_k I) exactly, for an isotropic mixture.

    Returns weights r (B, K) = p(k | x_t), means m (B, K, D) and variances v (K,), float64:
    component k's prior N(sqrt(ab') mu_k, ab' s_k^2 + 1 - ab') times the Gaussian step
    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I), with ab' = alpha_bar_{t-1}.
    """
    check_instance(mixture, "mixture", GaussianMixture, "an isotropic GaussianMixture")
    check_schedule(schedule)
    if not mixture.isotropic:
        raise ValueError("mixture must be isotropic (covs of shape (K,))")
    check_batch(x_t, "x_t")
    if x_t[0].numel() != mixture.dim:
        raise ValueError(f"x_t must have {mixture.dim} coordinates per row, got {x_t[0].numel()}")
    check_int(t, "t", 0, schedule.T - 1)
    x = x_t.to(_F64).reshape(x_t.shape[0], -1)
    ab, ab_prev = float(schedule.alpha_bar(t)), float(schedule.alpha_bar(t - 1))
    alpha, beta = ab / ab_prev, 1 - ab / ab_prev
    prior_var = ab_prev * mixture.covs + 1 - ab_prev  # (K,)
    var = 1 / (1 / prior_var + alpha / beta)  # (K,)
    prior_mean = math.sqrt(ab_prev) * mixture.means  # (K, D)
    means = var[None, :, None] * (
        prior_mean[None] / prior_var[None, :, None] + math.sqrt(alpha) * x[:, None] / beta
    )
    weights = mixture.class_posterior(x, torch.tensor(t), schedule).to(_F64)
    return weights, means, var


def _mixture_log_prob(y: Tensor, weights: Tensor, means: Tensor, var: Tensor) -> Tensor:
    """log sum_k r_k N(y; m_k, v_k I) for y (B, L, D), per-row mixtures (B, K), (B, K, D)."""
    D = y.shape[-1]
    sq = (y[:, :, None] - means[:, None]).pow(2).sum(-1)  # (B, L, K)
    log_n = -0.5 * sq / var - 0.5 * D * torch.log(2 * math.pi * var)
    return torch.logsumexp(torch.log(weights.clamp_min(1e-300))[:, None] + log_n, -1)


def _sample_rows(
    weights: Tensor, means: Tensor, var: Tensor, n: int, g: torch.Generator | None
) -> Tensor:
    """n draws (B, n, D) from each row's mixture."""
    k = torch.multinomial(weights, n, replacement=True, generator=g)  # (B, n)
    centres = torch.gather(means, 1, k[..., None].expand(-1, -1, means.shape[-1]))
    noise = torch.randn(centres.shape, generator=g, dtype=_F64)
    return centres + var[k].sqrt()[..., None] * noise


def _moments(weights: Tensor, means: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (B, D) and covariance (B, D, D) of each row's mixture sum_k r_k N(m_k, v_k I)."""
    mean = (weights[..., None] * means).sum(1)
    second = (weights[..., None, None] * (means[..., :, None] * means[..., None, :])).sum(1)
    eye = torch.eye(means.shape[-1], dtype=_F64)
    spread = (weights * var).sum(1)[:, None, None] * eye
    return mean, second - mean[:, :, None] * mean[:, None, :] + spread


def gaussian_gap(
    mixture: GaussianMixture,
    schedule: DiscreteSchedule,
    t: int,
    *,
    n_xt: int = 512,
    n_inner: int = 64,
    generator: torch.Generator | None = None,
) -> float:
    """E_{x_t} KL(q(x_{t-1} | x_t) || N(moment-matched)) in nats, by Monte Carlo.

    The Gaussian with the true mean and covariance of q(x_{t-1} | x_t) is the best Gaussian
    reverse step in KL; this is how far even it is from the truth (Xiao et al. Sec. 3.1).
    """
    check_instance(mixture, "mixture", GaussianMixture, "an isotropic GaussianMixture")
    check_int(n_xt, "n_xt", 1)
    check_int(n_inner, "n_inner", 2)
    x_t = mixture.noisy(schedule, t).sample(n_xt, generator, dtype=_F64)
    w, m, v = denoising_posterior(mixture, schedule, x_t, t)
    mean, cov = _moments(w, m, v)
    y = _sample_rows(w, m, v, n_inner, generator)  # (B, L, D)
    gauss = torch.distributions.MultivariateNormal(mean[:, None], cov[:, None])
    return float((_mixture_log_prob(y, w, m, v) - gauss.log_prob(y)).mean())


def exact_step_sample(
    mixture: GaussianMixture,
    schedule: DiscreteSchedule,
    x_T: Tensor,
    *,
    gaussian: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample by drawing every step from the true q(x_{t-1} | x_t), or (``gaussian``) from its
    moment-matched Gaussian: the best any denoiser of each kind can do in T steps."""
    x = check_batch(x_T, "x_T").to(_F64)
    check_schedule(schedule)
    for t in reversed(range(schedule.T)):
        w, m, v = denoising_posterior(mixture, schedule, x, t)
        if not gaussian:
            x = _sample_rows(w, m, v, 1, generator)[:, 0]
            continue
        mean, cov = _moments(w, m, v)
        chol = torch.linalg.cholesky(cov)
        noise = torch.randn(mean.shape, generator=generator, dtype=_F64)
        x = mean + (chol @ noise[..., None])[..., 0]
    return x.to(x_T.dtype)
