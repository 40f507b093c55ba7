"""Likelihoods in bits/dim: DDPM's variational bound and the probability-flow ODE's exact one.

- The discrete bound -log p(x0) <= L_T + sum_t L_t (Ho et al. 2020, eq. 5), each L_t a Gaussian KL
  and L_0 a discretized decoder (eq. 13), with iDDPM's learned variance (Nichol & Dhariwal 2021).
- The change of variables of a continuous flow, log p_0(x_0) = log p_1(x_1) + int_0^1 div f~ dt,
  integrated with scipy's RK45 along the ODE of `diffnotes.sde.probability_flow` (Song et al.
  2021, Sec. 4.3 and App. D.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from diffnotes.forward import VARIANCES, learned_log_variance, posterior_coefs, q_sample
from diffnotes.param import EpsModel
from diffnotes.schedules import DiscreteSchedule, check_schedule, expand_as
from diffnotes.sde import SDE, _ode_drift, check_sde
from diffnotes.util import (
    call_model,
    check_batch,
    check_choice,
    check_int,
    check_model_output,
    check_number,
    mean_flat,
    progress_bar,
    split_batch,
)

__all__ = ["vlb_bits_per_dim", "normal_kl", "log_likelihood", "bits_per_dim"]


# ---------------------------------------------------------------------------------------------
# Gaussian terms of the VLB, in nats per element


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return (
        0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp())
        + 0.5 * ((mean1 - mean2) ** 2) * (-logvar2).exp()
    )


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_scale: Tensor, *, data_bins: int = 256
) -> Tensor:
    """log P(x) of data on data_bins levels in [-1, 1] under N(mean, e^{2 log_scale}) (Ho eq. 13).

    Each level owns a bin of width 2 / (data_bins - 1); the end bins extend to -inf and +inf.
    """
    half = 1.0 / (data_bins - 1)
    inv_std = (-log_scale).exp()
    upper, lower = inv_std * (x - mean + half), inv_std * (x - mean - half)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log(1 - Phi(lower))
    log_delta = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12).log()
    return torch.where(
        x < -1.0 + half, log_cdf_upper, torch.where(x > 1.0 - half, log_sf_lower, log_delta)
    )


def p_mean_logvar(
    schedule: DiscreteSchedule,
    x_t: Tensor,
    t: Tensor,
    eps: Tensor,
    v: Tensor | None,
    variance: str,
    clip_x0: bool,
) -> tuple[Tensor, Tensor]:
    """Mean and log variance of p(x_{t-1} | x_t) from eps (Ho eq. 11) and iDDPM's v (eq. 15)."""
    tc = t.cpu()
    ab = schedule.alphas_cumprod[tc]
    beta = schedule.betas[tc]
    # x0_hat = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
    x0 = (x_t - expand_as((1 - ab).sqrt(), x_t) * eps) / expand_as(ab.sqrt(), x_t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    mean = _posterior_mean(schedule, x0, x_t, tc)
    log_small = schedule.posterior_log_variance_clipped[tc]
    # 'large' is sigma^2 = beta_t, with beta_tilde_1 at t = 0 as in iDDPM (a finite decoder)
    log_large = torch.where(tc == 0, schedule.posterior_log_variance_clipped[0], beta.log())
    if variance == "small":
        logvar = expand_as(log_small, x_t).expand_as(x_t)
    elif variance == "large":
        logvar = expand_as(log_large, x_t).expand_as(x_t)
    else:
        logvar = learned_log_variance(v, expand_as(log_large, x_t), expand_as(log_small, x_t))
    return mean, logvar


def _posterior_mean(schedule: DiscreteSchedule, x0: Tensor, x_t: Tensor, tc: Tensor) -> Tensor:
    """mu_tilde(x_t, x0) of q(x_{t-1} | x_t, x0) with the table's beta_t (Ho et al. eq. 7)."""
    ab, ab_prev = schedule.alphas_cumprod[tc], schedule.alphas_cumprod_prev[tc]
    coef_x0, coef_xt, _, _ = posterior_coefs(ab, ab_prev, schedule.betas[tc])
    return expand_as(coef_x0, x_t) * x0 + expand_as(coef_xt, x_t) * x_t


def vb_term(
    schedule: DiscreteSchedule,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    mean: Tensor,
    logvar: Tensor,
    data_bins: int,
) -> Tensor:
    """L_t in bits/dim per sample: KL(q(x_{t-1}|x_t,x0) || p) for t > 0, decoder NLL at t = 0."""
    tc = t.cpu()
    true_mean = _posterior_mean(schedule, x0, x_t, tc)
    true_logvar = expand_as(schedule.posterior_log_variance_clipped[tc], x_t)
    kl = mean_flat(normal_kl(true_mean, true_logvar, mean, logvar)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar, data_bins=data_bins)
    nll = mean_flat(nll) / math.log(2.0)
    return torch.where(t.to(kl.device) == 0, nll, kl)


# ---------------------------------------------------------------------------------------------
# the bound itself


@torch.no_grad()
def vlb_bits_per_dim(
    model: Callable,
    schedule: DiscreteSchedule,
    x0: Tensor,
    *,
    y: Tensor | None = None,
    variance: str | None = None,
    clip_x0: bool = True,
    data_bins: int = 256,
    generator: torch.Generator | None = None,
    return_terms: bool = False,
    progress: bool = False,
) -> Tensor | dict[str, Tensor]:
    """The variational bound -log p(x0) <= L_T + sum_t L_t in bits/dim per sample (Ho et al. eq. 5).

    Every term, as in iDDPM's calc_bpd_loop: L_T = KL(q(x_T|x0) || N(0, I)), L_t the Gaussian KL
    for t > 0 and the discretized decoder NLL at t = 0, each at a fresh x_t ~ q(x_t | x0).
    ``variance``: 'small' (beta_tilde), 'large' (beta) or 'learned' (a (B, 2C, ...) model);
    None picks 'learned' when the model returns 2C channels, else 'small'. A respaced schedule
    gives the bound of the shorter chain, with the model called at `schedule.timesteps`.
    With return_terms, returns dict(total (B,), prior (B,), terms (B, T)).
    """
    check_schedule(schedule)
    x0, y = split_batch(x0 if y is None else (x0, y))
    if variance is not None:
        check_choice(variance, "variance", VARIANCES)
    check_int(data_bins, "data_bins", 2)
    B, T = x0.shape[0], schedule.T
    terms = torch.zeros(B, T, dtype=torch.float64)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    for i in progress_bar(range(T - 1, -1, -1), "vlb", progress):
        t = torch.full((B,), i, dtype=torch.long)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=gen_device)
        eps = eps.to(x0.device)
        x_t = q_sample(schedule, x0, t, eps)
        out = call_model(model, x_t, schedule.timesteps[t].to(x0.device), y)
        kind = variance or ("learned" if out.shape[1] == 2 * x0.shape[1] else "small")
        check_model_output(out, x0, f"variance={kind!r}", channels=2 if kind == "learned" else 1)
        eps_hat, v = out.chunk(2, dim=1) if kind == "learned" else (out, None)
        mean, logvar = p_mean_logvar(schedule, x_t, t, eps_hat, v, kind, clip_x0)
        terms[:, i] = vb_term(schedule, x0, x_t, t, mean, logvar, data_bins).double().cpu()
    # L_T = KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)): nearly 0 for a good schedule
    ab_T = schedule.alphas_cumprod[-1]
    x = x0.double().cpu()
    prior_mean = ab_T.sqrt() * x
    prior_logvar = torch.log1p(-ab_T).expand_as(x)
    prior = mean_flat(normal_kl(prior_mean, prior_logvar, torch.zeros_like(x), torch.zeros_like(x)))
    prior = prior / math.log(2.0)
    total = terms.sum(1) + prior
    if return_terms:
        return dict(total=total, prior=prior, terms=terms)
    return total


# ---------------------------------------------------------------------------------------------
# the probability-flow ODE


def log_likelihood(
    model: EpsModel,
    sde: SDE,
    x0: Tensor,
    *,
    exact_divergence: bool | None = None,
    n_hutchinson: int = 1,
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
) -> Tensor:
    """log p(x0) in nats per sample (B,) through the PF ODE (Song et al. eq. 39, App. D.2).

    log p_{t_min}(x0) = log p_T(x_T) + int_{t_min}^T div f~(x_t, t) dt, integrated with scipy's
    RK45 in float64 (score_sde: rtol = atol = 1e-5). The divergence is exact (D backward passes)
    when exact_divergence, else the Hutchinson-Skilling estimate with n_hutchinson fixed Rademacher
    probes; None picks exact for D <= 10. The model must be differentiable in x.
    """
    from scipy.integrate import solve_ivp

    check_sde(sde)
    check_batch(x0, "x0")
    check_int(n_hutchinson, "n_hutchinson", 1)
    check_number(rtol, "rtol", positive=True)
    check_number(atol, "atol", positive=True)
    t_min = sde.eps if t_min is None else float(t_min)
    if not 0 <= t_min < sde.T:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    shape, device, dtype = x0.shape, x0.device, x0.dtype
    B, D = shape[0], x0[0].numel()
    exact = D <= 10 if exact_divergence is None else bool(exact_divergence)
    probes = None
    if not exact:
        r = torch.randint(0, 2, (n_hutchinson, *shape), generator=generator, dtype=torch.int64)
        probes = (2.0 * r - 1.0).to(device=device, dtype=torch.float64)

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y[: B * D]).reshape(shape).to(device)
        with torch.enable_grad():
            x = x.requires_grad_(True)
            v = _ode_drift(model, sde, x, float(t), dtype)
            if exact:
                vf = v.reshape(B, D)
                div = torch.zeros(B, dtype=torch.float64, device=device)
                for j in range(D):
                    (gj,) = torch.autograd.grad(vf[:, j].sum(), x, retain_graph=j < D - 1)
                    div = div + gj.reshape(B, D)[:, j]
            else:
                div = torch.zeros(B, dtype=torch.float64, device=device)
                for k in range(n_hutchinson):
                    # E[z^T (dv/dx) z] = tr(dv/dx) for Rademacher z (Hutchinson; Skilling)
                    (gz,) = torch.autograd.grad(
                        (v * probes[k]).sum(), x, retain_graph=k < n_hutchinson - 1
                    )
                    div = div + (gz * probes[k]).reshape(B, D).sum(1) / n_hutchinson
        return torch.cat([v.detach().reshape(-1), div.detach()]).cpu().numpy()

    y0 = np.concatenate([x0.detach().to(torch.float64).cpu().numpy().ravel(), np.zeros(B)])
    sol = solve_ivp(fun, (t_min, sde.T), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1].copy())
    x_T, delta = y[: B * D].reshape(shape), y[B * D :]
    return (sde.prior_logp(x_T) + delta).to(device)


def bits_per_dim(nats: Tensor, dims: int, *, data_bins: int | None = None) -> Tensor:
    """-log p / (D log 2); with data_bins, data in [-1, 1] quantised to that many levels.

    The offset log2(data_bins / 2) turns a density on [-1, 1] into a likelihood of the bins
    (7 bits for 256 levels, as score_sde adds for its data).
    """
    check_int(dims, "dims", 1)
    bpd = -torch.as_tensor(nats) / (dims * math.log(2))
    if data_bins is not None:
        if data_bins < 2:
            raise ValueError(f"data_bins must be >= 2, got {data_bins}")
        bpd = bpd + math.log2(data_bins / 2)
    return bpd
