"""The forward process q(x_t | x0), its posterior q(x_{t'} | x_t, x0) and the reverse variances.

The one home of this Gaussian algebra (Ho et al. 2020; Nichol & Dhariwal 2021): samplers, losses
and inpainting call these functions. `posterior_coefs` works on Python floats (what a sampler's
loop uses, cheap per step) and on float64 tensors (per-sample table lookups) alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffnotes.schedules import DiscreteSchedule, TimeLike, check_schedule, expand_as

__all__ = ["q_sample", "q_posterior", "posterior_coefs", "learned_log_variance", "noise_like"]

VARIANCES = ("small", "large", "learned")  # beta_tilde, beta, iDDPM's interpolation (eq. 15)
Coef = Tensor | float


def _sqrt(value: Coef) -> Coef:
    return math.sqrt(value) if isinstance(value, float) else value.sqrt()


def posterior_coefs(
    ab: Coef, ab_prev: Coef, beta: Coef | None = None
) -> tuple[Coef, Coef, Coef, Coef]:
    """(coef_x0, coef_xt, beta, beta_tilde) of q(x_{t'} | x_t, x0) for one (respaced) step.

    mu = coef_x0 x0 + coef_xt x_t (Ho et al. eq. 7) and beta_tilde = beta (1 - ab') / (1 - ab);
    beta defaults to the long stride's 1 - ab / ab' (iDDPM Sec. 4; pass the table's beta_t to use
    it exactly). Floats in, floats out; tensors in, tensors out.
    """
    beta = 1.0 - ab / ab_prev if beta is None else beta
    # mu = sqrt(ab_prev) beta / (1 - ab) x0 + sqrt(1 - beta) (1 - ab_prev) / (1 - ab) x_t   (eq. 7)
    coef_x0 = _sqrt(ab_prev) * beta / (1.0 - ab)
    coef_xt = _sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
    beta_tilde = beta * (1.0 - ab_prev) / (1.0 - ab)  # (eq. 7)
    return coef_x0, coef_xt, beta, beta_tilde


def learned_log_variance(v: Tensor, log_beta: Coef, log_beta_tilde: Coef) -> Tensor:
    """log Sigma = frac log beta + (1 - frac) log beta_tilde, frac = (v + 1) / 2 (iDDPM eq. 15)."""
    frac = (v + 1.0) / 2.0  # the model's v in [-1, 1]
    return frac * log_beta + (1.0 - frac) * log_beta_tilde


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """randn(x.shape) drawn on the generator's device (x's without one), returned on x's device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


def _per_sample(schedule: DiscreteSchedule, t: TimeLike, x: Tensor, name: str) -> Tensor:
    check_schedule(schedule)
    t = torch.as_tensor(t)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, x.shape[0])):
        raise ValueError(f"{name} must be an int or have shape (B,) = ({x.shape[0]},)")
    try:
        return schedule.alpha_bar(t)
    except ValueError as err:
        raise ValueError(str(err).replace("t must", f"{name} must", 1)) from None


def q_sample(schedule: DiscreteSchedule, x0: Tensor, t: TimeLike, eps: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4)."""
    if eps.shape != x0.shape:
        raise ValueError(f"eps must have x0's shape {tuple(x0.shape)}, got {tuple(eps.shape)}")
    ab = _per_sample(schedule, t, x0, "t")
    return expand_as(ab.sqrt(), x0) * x0 + expand_as((1.0 - ab).sqrt(), x0) * eps


def q_posterior(
    schedule: DiscreteSchedule,
    x0: Tensor,
    x_t: Tensor,
    t: TimeLike,
    t_prev: TimeLike | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and clipped log-variance of q(x_{t_prev} | x_t, x0) (Ho et al. eqs. 6-7).

    t_prev defaults to t - 1; any earlier step (a respaced chain) uses beta = 1 - alpha_bar_t /
    alpha_bar_{t_prev}, and t_prev = -1 means clean data (variance 0). Where the variance is 0 the
    log-variance is clipped to log beta_tilde_1, as iDDPM does. Variance tensors are (B, 1, ...)
    for per-sample t, or 0-d for a scalar t.
    """
    if x_t.shape != x0.shape:
        raise ValueError(f"x_t must have x0's shape {tuple(x0.shape)}, got {tuple(x_t.shape)}")
    t = torch.as_tensor(t)
    t_prev = t - 1 if t_prev is None else torch.as_tensor(t_prev)
    ab = _per_sample(schedule, t, x0, "t")
    ab_prev = _per_sample(schedule, t_prev, x0, "t_prev")
    if (t_prev.cpu() >= t.cpu()).any() or (t.cpu() < 0).any():
        raise ValueError("t_prev must be earlier than t (t_prev < t, t >= 0)")
    coef_x0, coef_xt, _, var = posterior_coefs(ab, ab_prev)
    mean = expand_as(coef_x0, x0) * x0 + expand_as(coef_xt, x0) * x_t
    floor = schedule.posterior_log_variance_clipped[0]
    log_var = torch.where(var > 0, torch.log(var.clamp(min=1e-300)), floor)
    return mean, expand_as(var, x0), expand_as(log_var, x0)
