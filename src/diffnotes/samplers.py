"""Samplers over discrete schedules: DDPM, DDIM (+ inversion), Euler, and NCSN's Langevin dynamics.

Every sampler is a pure function `sampler(model, schedule, ts, x_T, ...)` over an EpsModel
(x_t (B, ...), t (B,) long) -> eps, a decreasing list of steps `ts` (e.g. `spaced_steps(1000, 50)`)
and the initial noise x_T; it never edits its inputs and works for any shape (B, ...). A step from
t to the next listed step t_prev uses alpha_bar at both, which is exactly sampling with the
respaced schedule (iDDPM Sec. 4); passing `respace(schedule, ts)` with all of its steps gives the
same samples, the model then seeing `schedule.timesteps[t]`. Noise is drawn as
`randn(x.shape, generator=generator)` once per step after the model call, none on the final step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from diffnotes.forward import VARIANCES, learned_log_variance, noise_like, posterior_coefs
from diffnotes.param import EpsModel, ScoreSigmaModel, eps_to_x0, x0_to_eps
from diffnotes.schedules import DiscreteSchedule, check_schedule
from diffnotes.util import (
    check_batch,
    check_choice,
    check_int,
    check_model_output,
    check_number,
    check_sigmas,
    run_chain,
)

__all__ = [
    "ddpm",
    "ddim",
    "ddim_invert",
    "euler",
    "annealed_langevin",
    "langevin",
    "p_sample",
    "VARIANCES",
]

Steps = Sequence[int] | Tensor | None


def _call(model: Callable, x: Tensor, *args, what: str = "eps", first: bool = False) -> Tensor:
    channels = 2 if what == "eps and v" else 1
    return check_model_output(model(x, *args), x, what, channels=channels, first=first)


def _model_t(schedule: DiscreteSchedule, t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), int(schedule.timesteps[t]), dtype=torch.long, device=x.device)


def _ab(schedule: DiscreteSchedule, t: int) -> float:
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])


def _pairs(steps: list[int]) -> list[tuple[int, int]]:
    """(t, t_prev) for each step of a decreasing list; the last step goes to t = -1 (clean)."""
    return list(zip(steps, steps[1:] + [-1]))


def p_sample(
    model: EpsModel,
    schedule: DiscreteSchedule,
    x: Tensor,
    t: int,
    t_prev: int,
    *,
    variance: str = "small",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    check_output: bool = True,
) -> tuple[Tensor, Tensor]:
    """One ancestral step x_t -> x_{t_prev} ~ p(x_{t_prev} | x_t); returns (x_{t_prev}, x0_pred).

    Mean from eq. 7 of Ho et al. with x0 predicted by eq. 15; variance beta_tilde ('small'),
    beta ('large') or iDDPM's exp(v log beta + (1 - v) log beta_tilde) ('learned', eq. 15).
    ``check_output`` refuses a non-finite model output (and a learned v outside [-1, 1]); the
    samplers pass it for their first step only, since each check is a host sync on a GPU.
    """
    check_choice(variance, "variance", VARIANCES)
    ab, ab_prev = _ab(check_schedule(schedule), t), _ab(schedule, t_prev)
    what = "eps and v" if variance == "learned" else "eps"
    out = _call(model, x, _model_t(schedule, t, x), what=what, first=check_output)
    eps, v = out.chunk(2, dim=1) if variance == "learned" else (out, None)
    if check_output and v is not None and bool(v.detach().abs().max() > 1.0 + 1e-3):
        # outside [-1, 1] the interpolation extrapolates the log-variance beyond beta and
        # beta_tilde (iDDPM eq. 15 assumes v in [-1, 1]); refused rather than silently extended
        raise ValueError(
            f"learned-variance output v must lie in [-1, 1], got max |v| {float(v.abs().max()):.3g}"
        )
    x0 = eps_to_x0(x, eps, ab)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    coef_x0, coef_x, beta, beta_tilde = posterior_coefs(ab, ab_prev)  # of the step t -> t_prev
    mean = torch.add(coef_x0 * x0, x, alpha=coef_x)
    if t_prev < 0:
        return mean, x0  # the last step returns the mean, as in DDPM Alg. 2 (z = 0 at t = 1)
    if variance == "learned":
        std = torch.exp(0.5 * learned_log_variance(v, math.log(beta), math.log(beta_tilde)))
        return mean + std * noise_like(x, generator), x0
    std = math.sqrt(beta_tilde if variance == "small" else beta)
    return mean.add(noise_like(x, generator), alpha=std), x0


def ddpm(
    model: EpsModel,
    schedule: DiscreteSchedule,
    ts: Steps,
    x_T: Tensor,
    *,
    variance: str = "small",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    trajectory: bool = False,
    progress: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """DDPM ancestral sampling (Ho et al. Alg. 2) on the step list ts; iDDPM's learned variance too.

    With trajectory=True returns (x0, dict(x_t=[x_T, ..., x0], x0_pred=[one per step])).
    """
    check_choice(variance, "variance", VARIANCES)
    pairs = _pairs(check_schedule(schedule).check_steps(ts))
    kw = dict(variance=variance, clip_x0=clip_x0, generator=generator)

    def step(i: int, pair: tuple[int, int], x: Tensor) -> tuple[Tensor, Tensor]:
        return p_sample(model, schedule, x, *pair, check_output=i == 0, **kw)

    return run_chain(
        "ddpm", pairs, check_batch(x_T, "x_T"), step, trajectory=trajectory, progress=progress
    )


def ddim(
    model: EpsModel,
    schedule: DiscreteSchedule,
    ts: Steps,
    x_T: Tensor,
    *,
    eta: float = 0.0,
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    trajectory: bool = False,
    progress: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """DDIM (Song et al. 2021, eq. 12) with sigma_t(eta) of eq. 16; eta=0 is deterministic.

    eta=1 gives sigma_t^2 = beta_tilde_t, the DDPM posterior step; eta > 1 is refused, since
    sigma_t^2 would exceed 1 - alpha_bar_prev and the direction term's square root turn
    imaginary. With clip_x0 the eps used for the direction is re-derived from the clipped x0, as
    in iDDPM's ddim_sample.
    """
    eta = check_number(eta, "eta", minimum=0.0)
    if eta > 1.0:
        raise ValueError(
            f"eta must lie in [0, 1] (eta > 1 makes sigma_t^2 > 1 - alpha_bar_prev), got {eta!r}"
        )
    pairs = _pairs(check_schedule(schedule).check_steps(ts))

    def step(i: int, pair: tuple[int, int], x: Tensor) -> tuple[Tensor, Tensor]:
        t, t_prev = pair
        ab, ab_prev = _ab(schedule, t), _ab(schedule, t_prev)
        eps = _call(model, x, _model_t(schedule, t, x), first=i == 0)
        x0 = eps_to_x0(x, eps, ab)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = x0_to_eps(x, x0, ab)
        # sigma_t = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev)   (eq. 16)
        sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
        # x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z   (eq. 12)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0)) * eps
        return (x + sigma * noise_like(x, generator) if sigma > 0 else x), x0

    return run_chain(
        "ddim", pairs, check_batch(x_T, "x_T"), step, trajectory=trajectory, progress=progress
    )


def ddim_invert(
    model: EpsModel,
    schedule: DiscreteSchedule,
    ts: Steps,
    x0: Tensor,
    *,
    fixed_point_iters: int = 0,
    trajectory: bool = False,
    progress: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """Deterministic DDIM encoding x0 -> x_T: eq. 12 with eta=0 run from clean data upwards.

    ts is the sampling list (decreasing) that `ddim` will decode with. The step from level t_prev
    to t evaluates eps at (x_{t_prev}, t), the convention of diffusers' DDIMInverseScheduler and
    null-text inversion, so the first step needs no model call at the undefined t = -1. This
    explicit step makes encode -> decode exact only up to O(1/len(ts)); fixed_point_iters > 0
    refines each x_t towards the exact inverse of the decoder step, x_t = (x_{t_prev} - c eps(x_t,
    t)) / a, by fixed-point iteration (as in exact-inversion methods), one model call each.
    """
    steps = check_schedule(schedule).check_steps(ts)
    upward = _pairs(steps)[::-1]  # (t, t_prev) with t rising, from (t_min, -1)
    check_int(fixed_point_iters, "fixed_point_iters", 0)

    def step(i: int, pair: tuple[int, int], x: Tensor) -> tuple[Tensor, Tensor]:
        t, t_prev = pair
        ab, ab_prev = _ab(schedule, t), _ab(schedule, t_prev)
        t_arg = _model_t(schedule, t, x)
        eps = _call(model, x, t_arg, first=i == 0)
        x0_pred = eps_to_x0(x, eps, ab_prev)
        x_next = math.sqrt(ab) * x0_pred + math.sqrt(1.0 - ab) * eps
        # decoder step: x_prev = a x_t + c eps(x_t, t), solved for x_t
        a = math.sqrt(ab_prev / ab)
        c = math.sqrt(1.0 - ab_prev) - math.sqrt(ab_prev * (1.0 - ab) / ab)
        for _ in range(fixed_point_iters):
            x_next = (x - c * _call(model, x_next, t_arg)) / a
        return x_next, x0_pred

    x0 = check_batch(x0, "x0")
    return run_chain("ddim_invert", upward, x0, step, trajectory=trajectory, progress=progress)


def euler(
    model: EpsModel,
    schedule: DiscreteSchedule,
    ts: Steps,
    x_T: Tensor,
    *,
    trajectory: bool = False,
    progress: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """Euler on the probability-flow ODE dx/dsigma = eps in sigma space (Karras et al. 2022 Alg. 1).

    sigma_t = sqrt((1 - ab) / ab) and x = x_t / sqrt(ab) (the VE view of a VP model; k-diffusion's
    sample_euler, diffusers' EulerDiscreteScheduler). x_T is the usual N(0, I) noise at ts[0];
    trajectory x_t are mapped back to the VP scale.
    """
    steps = check_schedule(schedule).check_steps(ts)
    sig = [math.sqrt((1.0 - _ab(schedule, t)) / _ab(schedule, t)) for t in steps] + [0.0]

    def step(i: int, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        # the model sees the VP-scaled input x / sqrt(1 + sigma^2) = x_t
        eps = _call(model, x / math.sqrt(1.0 + sig[i] ** 2), _model_t(schedule, t, x), first=i == 0)
        # x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i, with d_i = (x_i - x0) / sigma_i = eps
        return x + (sig[i + 1] - sig[i]) * eps, x - sig[i] * eps

    def shown(i: int, x: Tensor) -> Tensor:
        return x / math.sqrt(1.0 + sig[i + 1] ** 2)

    x = check_batch(x_T, "x_T") * math.sqrt(1.0 + sig[0] ** 2)
    out = run_chain("euler", steps, x, step, trajectory=trajectory, progress=progress, shown=shown)
    if trajectory:
        out[1]["x_t"][0] = x_T  # the trajectory starts from the VP-scale noise given
    return out


def annealed_langevin(
    score_model: ScoreSigmaModel,
    sigmas: Sequence[float] | Tensor,
    x_init: Tensor,
    *,
    n_steps_each: int = 100,
    step_lr: float = 2e-5,
    generator: torch.Generator | None = None,
    final_denoise: bool = False,
    trajectory: bool = False,
    progress: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """NCSN annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over decreasing sigmas.

    alpha_i = step_lr sigma_i^2 / sigma_L^2 and x <- x + alpha_i/2 s(x, sigma_i) + sqrt(alpha_i) z,
    the paper's update (the official code steps by step_lr s + sqrt(2 step_lr) z, twice as far).
    final_denoise adds sigma_L^2 s(x, sigma_L) (Tweedie; Jolicoeur-Martineau et al. 2021).
    trajectory holds x at the end of every noise level.
    """
    sig = check_sigmas(sigmas, "sigmas", decreasing=True)
    n_steps_each = check_int(n_steps_each, "n_steps_each", 1)
    step_lr = check_number(step_lr, "step_lr", positive=True)
    levels = list(enumerate(sig)) + ([(len(sig), sig[-1])] if final_denoise else [])

    def step(i: int, level: tuple[int, float], x: Tensor) -> tuple[Tensor, None]:
        k, sigma = level
        s_arg = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        if k == len(sig):  # the final denoise: Tweedie's E[x0 | x] = x + sigma_L^2 s(x, sigma_L)
            return x + sigma**2 * _call(score_model, x, s_arg, what="score"), None
        alpha = step_lr * (sigma / sig[-1]) ** 2
        for j in range(n_steps_each):
            score = _call(score_model, x, s_arg, what="score", first=i == 0 and j == 0)
            x = x + (alpha / 2) * score + math.sqrt(alpha) * noise_like(x, generator)
        return x, None

    x = check_batch(x_init, "x_init")
    return run_chain("annealed_langevin", levels, x, step, trajectory=trajectory, progress=progress)


def langevin(
    score_fn: Callable[[Tensor], Tensor],
    x_init: Tensor,
    *,
    n_steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Plain Langevin dynamics at one noise level: x <- x + eps/2 s(x) + sqrt(eps) z."""
    n_steps = check_int(n_steps, "n_steps", 1)
    step_size = check_number(step_size, "step_size", positive=True)

    def step(k: int, _: int, x: Tensor) -> tuple[Tensor, None]:
        score = _call(score_fn, x, what="score", first=k == 0)
        return x + (step_size / 2) * score + math.sqrt(step_size) * noise_like(x, generator), None

    return run_chain(
        "langevin", range(n_steps), check_batch(x_init, "x_init"), step, progress=progress
    )
