"""Continuous-time SDEs and their samplers (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", arXiv 2011.13456; code yang-song/score_sde).

Convention: x_t = sqrt(alpha_bar(t)) x0 + sigma(t) eps with continuous t in [0, 1]. Samplers take an
EpsModel over continuous t, called as model(x, torch.full((B,), t)); the score is -eps / sigma(t).
Step lists `ts` are decreasing float times from 1 to t_min (see `time_steps`); a sampler takes
len(ts) - 1 steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from diffnotes.forward import noise_like
from diffnotes.param import EpsModel
from diffnotes.schedules import expand_as
from diffnotes.util import (
    check_batch,
    check_choice,
    check_finite_result,
    check_instance,
    check_int,
    check_model_output,
    check_number,
    run_chain,
)

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "check_sde",
    "time_steps",
    "reverse_sde",
    "predictor_corrector",
    "probability_flow",
]


def _as_t(t: float | Tensor | Sequence[float]) -> Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    if torch.isnan(t).any() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"t must lie in [0, 1] (continuous time), got {t}")
    return t


class SDE:
    """Linear SDE dx = a(t) x dt + g(t) dw with its Gaussian marginal (Song et al. eq. 5)."""

    T: float = 1.0
    eps: float = 1e-3  # t_min: the smallest time sampled and integrated to
    prior_std: float = 1.0

    def alpha_bar(self, t: float | Tensor) -> Tensor:
        """Squared mean coefficient of the marginal: E[x_t | x0] = sqrt(alpha_bar(t)) x0."""
        raise NotImplementedError

    def sigma(self, t: float | Tensor) -> Tensor:
        """Standard deviation of the marginal p_0t(x_t | x0)."""
        raise NotImplementedError

    def _drift_coef(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def diffusion(self, t: float | Tensor) -> Tensor:
        """g(t) of dx = f dt + g dw (float64)."""
        raise NotImplementedError

    def snr(self, t: float | Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar / sigma^2 (float64)."""
        return self.alpha_bar(t) / self.sigma(t) ** 2

    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        """f(x, t) = a(t) x; t scalar or (B,)."""
        return expand_as(self._drift_coef(_as_t(t)), x) * x

    def marginal(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of p_0t(x_t | x0); std is shaped to broadcast against x0."""
        return expand_as(self.alpha_bar(t).sqrt(), x0) * x0, expand_as(self.sigma(t), x0)

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """x_T ~ N(0, prior_std^2 I)."""
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std^2 I) summed over all but the batch dim -> (B,)."""
        z = z.reshape(z.shape[0], -1).to(torch.float64)
        d = z.shape[1]
        var = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * var) - 0.5 * (z**2).sum(1) / var

    def discretize(self, x: Tensor, t: float, t_next: float) -> tuple[Tensor, float]:
        """(f_i, G_i) of x_{i+1} = x_i + f_i + G_i z; Euler-Maruyama unless overridden."""
        dt = t - t_next
        return self.drift(x, t) * dt, float(self.diffusion(t)) * math.sqrt(dt)

    def langevin_alpha(self, t: float, t_next: float) -> float:
        """alpha_i scaling the corrector step (score_sde LangevinCorrector: 1 - beta_i for VP)."""
        return 1.0


class VPSDE(SDE):
    """Variance preserving SDE, beta(t) = beta_min + t (beta_max - beta_min) (DDPM in the limit)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not (0 <= beta_min < beta_max) or not math.isfinite(beta_max):
            raise ValueError(f"need 0 <= beta_min < beta_max < inf, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: float | Tensor) -> Tensor:
        return self.beta_min + _as_t(t) * (self.beta_max - self.beta_min)

    def _log_mean_coeff(self, t: Tensor) -> Tensor:
        # log of sqrt(alpha_bar) = -1/2 int_0^t beta(s) ds
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_bar(self, t: float | Tensor) -> Tensor:
        return torch.exp(2 * self._log_mean_coeff(_as_t(t)))

    def sigma(self, t: float | Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self._log_mean_coeff(_as_t(t))))

    def _drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion(self, t: float | Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def discretize(self, x: Tensor, t: float, t_next: float) -> tuple[Tensor, float]:
        # DDPM's Markov step between t and t_next: f = (sqrt(1 - beta_i) - 1) x, G = sqrt(beta_i)
        # with 1 - beta_i = alpha_bar(t) / alpha_bar(t_next), exact on the sampler's own grid;
        # score_sde reads beta_i from its N-level table at floor(t (N - 1)), the same to O(1/N)
        alpha = self.langevin_alpha(t, t_next)
        return (math.sqrt(alpha) - 1) * x, math.sqrt(1 - alpha)

    def langevin_alpha(self, t: float, t_next: float) -> float:
        return float(self.alpha_bar(t) / self.alpha_bar(t_next))


class SubVPSDE(VPSDE):
    """sub-VP SDE: VP drift, g^2 = beta(t) (1 - alpha_bar(t)^2), sigma = 1 - alpha_bar (eq. 11)."""

    def sigma(self, t: float | Tensor) -> Tensor:
        return -torch.expm1(2 * self._log_mean_coeff(_as_t(t)))

    def diffusion(self, t: float | Tensor) -> Tensor:
        t = _as_t(t)
        return torch.sqrt(self.beta(t) * -torch.expm1(4 * self._log_mean_coeff(t)))

    discretize = SDE.discretize  # Euler-Maruyama: score_sde has no Markov form for sub-VP


class VESDE(SDE):
    """Variance exploding SDE, sigma(t) = sigma_min (sigma_max / sigma_min)^t (NCSN's limit)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.prior_std = self.sigma_max

    def alpha_bar(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(_as_t(t))

    def sigma(self, t: float | Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _as_t(t)

    def _drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: float | Tensor) -> Tensor:
        # g = d sigma^2 / dt ^ 1/2 = sigma(t) sqrt(2 log(sigma_max / sigma_min))
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def discretize(self, x: Tensor, t: float, t_next: float) -> tuple[Tensor, float]:
        # NCSN's Markov chain: G_i^2 = sigma_i^2 - sigma_{i-1}^2, no drift
        return torch.zeros_like(x), math.sqrt(float(self.sigma(t) ** 2 - self.sigma(t_next) ** 2))


def check_sde(sde: object) -> SDE:
    """``sde`` if it is one of this module's SDEs (the samplers, losses and likelihood need one)."""
    return check_instance(sde, "sde", SDE, "a VPSDE, SubVPSDE or VESDE")


def time_steps(n: int, t_min: float = 1e-3) -> Tensor:
    """n + 1 decreasing float64 times from 1 to t_min: a grid for n sampler steps."""
    check_int(n, "n", 1)
    if not 0 <= t_min < 1:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    return torch.linspace(1.0, t_min, n + 1, dtype=torch.float64)


def _check_ts(sde: SDE, ts: Tensor | Sequence[float]) -> list[float]:
    check_sde(sde)
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"ts must be a 1-D list of >= 2 times, got shape {tuple(ts.shape)}")
    if (ts < 0).any() or (ts > 1).any() or not (ts[1:] < ts[:-1]).all():
        raise ValueError("ts must be strictly decreasing times in [0, 1], e.g. time_steps(n)")
    return ts.tolist()


def _eps(model: EpsModel, x: Tensor, t: float, first: bool = False) -> Tensor:
    eps = model(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
    return check_model_output(eps, x, "eps", first=first)


def _x0(sde: SDE, x: Tensor, eps: Tensor, t: float) -> Tensor:
    # Tweedie / eq. of the marginal: x0_hat = (x_t - sigma eps) / sqrt(alpha_bar)
    return (x - float(sde.sigma(t)) * eps) / math.sqrt(float(sde.alpha_bar(t)))


def reverse_sde(
    model: EpsModel,
    sde: SDE,
    ts: Tensor | Sequence[float],
    x_T: Tensor,
    *,
    generator: torch.Generator | None = None,
    trajectory: bool = False,
    progress: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """Euler-Maruyama on the reverse SDE dx = [f - g^2 grad log p_t] dt + g dw_bar (eq. 6).

    The predictor of `predictor_corrector` ('euler') with no corrector; the last step returns the
    noise-free mean, like score_sde's samplers.
    """
    kw = dict(generator=generator, trajectory=trajectory, progress=progress)
    return predictor_corrector(model, sde, ts, x_T, predictor="euler", n_corrector=0, **kw)


def _euler_maruyama(
    sde: SDE, x: Tensor, t: float, t_next: float, score: Tensor
) -> tuple[Tensor, float]:
    """Mean and noise scale of one Euler-Maruyama step of the reverse SDE (eq. 6), t -> t_next."""
    g = float(sde.diffusion(t))
    dt = t_next - t  # negative: time runs backwards
    return x + (sde.drift(x, t) - g**2 * score) * dt, g * math.sqrt(-dt)


def predictor_corrector(
    model: EpsModel,
    sde: SDE,
    ts: Tensor | Sequence[float],
    x_T: Tensor,
    *,
    predictor: str = "reverse_diffusion",
    snr: float = 0.16,
    n_corrector: int = 1,
    generator: torch.Generator | None = None,
    trajectory: bool = False,
    progress: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """PC sampling (Song et al. Alg. 2-3): Langevin corrector then predictor at each time.

    predictor 'reverse_diffusion' is score_sde's ReverseDiffusionPredictor (the SDE's own
    Markov discretization), 'euler' is Euler-Maruyama. The corrector's step is
    2 alpha_i (snr ||z|| / ||score||)^2 as in score_sde's LangevinCorrector. NFE is
    (len(ts) - 1) * (1 + n_corrector).
    """
    check_choice(predictor, "predictor", ("reverse_diffusion", "euler"))
    check_int(n_corrector, "n_corrector", 0)
    check_number(snr, "snr", positive=True)
    times = _check_ts(sde, ts)
    name = "reverse_sde" if (predictor, n_corrector) == ("euler", 0) else "predictor_corrector"

    def step(i: int, pair: tuple[float, float], x: Tensor) -> tuple[Tensor, Tensor | None]:
        t, t_next = pair
        sigma_t, B = float(sde.sigma(t)), x.shape[0]
        alpha = sde.langevin_alpha(t, t_next) if n_corrector else 0.0
        for _ in range(n_corrector):
            score = -_eps(model, x, t, first=i == 0) / sigma_t
            z = noise_like(x, generator)
            grad_norm = score.reshape(B, -1).norm(dim=-1).mean()
            noise_norm = z.reshape(B, -1).norm(dim=-1).mean()
            step_size = 2 * alpha * (snr * noise_norm / grad_norm) ** 2
            x = x + step_size * score + torch.sqrt(2 * step_size) * z
        eps = _eps(model, x, t, first=i == 0)
        score = -eps / sigma_t
        if predictor == "euler":
            x_mean, G = _euler_maruyama(sde, x, t, t_next, score)
        else:
            f, G = sde.discretize(x, t, t_next)
            x_mean = x - f + G**2 * score  # reverse of x_{i+1} = x_i + f_i + G_i z
        x0_pred = _x0(sde, x, eps, t) if trajectory else None
        if i == len(times) - 2:
            return x_mean, x0_pred
        return x_mean + G * noise_like(x, generator), x0_pred

    pairs = list(zip(times[:-1], times[1:]))
    x_T = check_batch(x_T, "x_T")
    return run_chain(name, pairs, x_T, step, trajectory=trajectory, progress=progress)


def _ode_drift(model: EpsModel, sde: SDE, x: Tensor, t: float, dtype: torch.dtype) -> Tensor:
    # probability flow (eq. 13): dx/dt = f - 1/2 g^2 grad log p_t = f + 1/2 g^2 eps / sigma
    eps = _eps(model, x.to(dtype), t).to(x.dtype)
    g2 = float(sde.diffusion(t)) ** 2
    return sde.drift(x, t) + 0.5 * g2 / float(sde.sigma(t)) * eps


def probability_flow(
    model: EpsModel,
    sde: SDE,
    ts: Tensor | Sequence[float],
    x_T: Tensor,
    *,
    method: str = "euler",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trajectory: bool = False,
    progress: bool = False,
    return_nfe: bool = False,
):
    """Integrate the probability-flow ODE dx/dt = f - 1/2 g^2 grad log p_t (eq. 13) along ts.

    method 'euler' (NFE = len(ts) - 1), 'heun' (2 per step) or 'rk45' (scipy's adaptive
    Dormand-Prince in float64 with rtol/atol; ts only sets the end points and trajectory times).
    Returns x, or (x, traj) with trajectory, then nfe appended when return_nfe.
    """
    check_choice(method, "method", ("euler", "heun", "rk45"))
    check_number(rtol, "rtol", positive=True)
    check_number(atol, "atol", positive=True)
    times = _check_ts(sde, ts)
    dtype = check_batch(x_T, "x_T").dtype
    nfe = 0

    def step(i: int, pair: tuple[float, float], x: Tensor) -> tuple[Tensor, None]:
        nonlocal nfe
        t, t_next = pair
        d = _ode_drift(model, sde, x, t, dtype)
        nfe += 1
        if method == "euler":
            return x + d * (t_next - t), None
        # Heun's 2nd-order correction: average the slopes at both ends
        d_next = _ode_drift(model, sde, x + d * (t_next - t), t_next, dtype)
        nfe += 1
        return x + 0.5 * (d + d_next) * (t_next - t), None

    if method == "rk45":
        ys, nfe = _rk45(model, sde, times, x_T, rtol, atol, trajectory)
        out = (ys[-1], dict(x_t=list(ys), x0_pred=[])) if trajectory else ys[-1]
        check_finite_result(ys[-1], "probability_flow")
    else:
        pairs = list(zip(times[:-1], times[1:]))
        out = run_chain(
            "probability_flow", pairs, x_T, step, trajectory=trajectory, progress=progress
        )
    if not return_nfe:
        return out
    return (*out, nfe) if trajectory else (out, nfe)


def _rk45(
    model: EpsModel,
    sde: SDE,
    times: list[float],
    x_T: Tensor,
    rtol: float,
    atol: float,
    dense: bool,
) -> tuple[Tensor, int]:
    """scipy's adaptive RK45 on the PF ODE in float64: the states at times (dense) or the end."""
    from scipy.integrate import solve_ivp

    shape, device, dtype = x_T.shape, x_T.device, x_T.dtype

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y).reshape(shape).to(device)
        return _ode_drift(model, sde, x, float(t), dtype).cpu().numpy().ravel()

    y0 = x_T.detach().to(torch.float64).cpu().numpy().ravel()
    span, t_eval = (times[0], times[-1]), times if dense else None
    sol = solve_ivp(fun, span, y0, method="RK45", rtol=rtol, atol=atol, t_eval=t_eval)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    ys = torch.from_numpy(sol.y.T.copy()).reshape(-1, *shape).to(device=device, dtype=dtype)
    return ys, int(sol.nfev)
