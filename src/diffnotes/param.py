"""Conversions among eps-, x0-, v-prediction and the score (Ho et al. 2020; Salimans & Ho 2022).

With x_t = sqrt(ab) x0 + sqrt(1 - ab) eps and v = sqrt(ab) eps - sqrt(1 - ab) x0. `alpha_bar` is a
float, a 0-d tensor or a per-sample (B,) tensor; it is broadcast against x_t.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from diffnotes.schedules import DiscreteSchedule, expand_as

__all__ = [
    "eps_to_x0",
    "x0_to_eps",
    "v_to_eps",
    "eps_to_v",
    "v_to_x0",
    "x0_to_v",
    "eps_to_score",
    "score_to_eps",
    "x0_model",
    "score_model",
    "eps_model",
    "PREDICTIONS",
]

# the model protocols every sampler, loss and guidance wrapper is written against
EpsModel = Callable[[Tensor, Tensor], Tensor]  # (x_t, t (B,)) -> eps_hat
CondEpsModel = Callable[[Tensor, Tensor, object], Tensor]  # (x_t, t, y) -> eps_hat; y None: uncond.
ScoreSigmaModel = Callable[[Tensor, Tensor], Tensor]  # NCSN: (x, sigma (B,)) -> grad log p_sigma
GradLogP = Callable[[Tensor, Tensor, object], Tensor]  # (x_t, t, y) -> grad_x log p(y | x_t)
PREDICTIONS = ("eps", "x0", "v", "score")


def _coefs(
    alpha_bar: Tensor | float, x: Tensor, clean: bool = True
) -> tuple[Tensor | float, Tensor | float]:
    """(sqrt(ab), sqrt(1 - ab)) with ab in (0, 1]; without ``clean`` ab = 1 (no noise) is refused
    too, where the conversion divides by sqrt(1 - ab)."""
    if isinstance(alpha_bar, (int, float)):  # samplers pass floats: keep the per-step cost low
        if not (0.0 < alpha_bar < 1.0 or (clean and alpha_bar == 1.0)):
            _refuse(alpha_bar, clean)
        return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    if not bool(((ab > 0) & ((ab <= 1) if clean else (ab < 1))).all()):
        _refuse(ab, clean)
    return expand_as(ab.sqrt(), x), expand_as((1.0 - ab).sqrt(), x)


def _refuse(alpha_bar: Tensor | float, clean: bool) -> None:
    # outside (0, 1] a square root turns NaN; at 1 the noise, and so eps and v, are undefined
    interval = "(0, 1]" if clean else "(0, 1) (no noise at alpha_bar = 1: eps and v are undefined)"
    raise ValueError(f"alpha_bar must lie in {interval}, got {alpha_bar}")


def eps_to_x0(x_t: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) (Ho et al. eq. 15)."""
    a, s = _coefs(alpha_bar, x_t)
    if isinstance(s, float):
        return torch.add(x_t, eps, alpha=-s).div_(a)  # fused: the sampler's per-step cost
    return (x_t - s * eps) / a


def x0_to_eps(x_t: Tensor, x0: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    a, s = _coefs(alpha_bar, x_t, clean=False)
    return (x_t - a * x0) / s


def v_to_eps(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """eps = sqrt(ab) v + sqrt(1 - ab) x_t (Salimans & Ho 2022, Appendix D)."""
    a, s = _coefs(alpha_bar, x_t)
    return a * v + s * x_t


def eps_to_v(x_t: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """v = sqrt(ab) eps - sqrt(1 - ab) x0 = (eps - sqrt(1 - ab) x_t) / sqrt(ab)."""
    a, s = _coefs(alpha_bar, x_t)
    return (eps - s * x_t) / a


def v_to_x0(x_t: Tensor, v: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """x0 = sqrt(ab) x_t - sqrt(1 - ab) v."""
    a, s = _coefs(alpha_bar, x_t)
    return a * x_t - s * v


def x0_to_v(x_t: Tensor, x0: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """v = (sqrt(ab) x_t - x0) / sqrt(1 - ab)."""
    a, s = _coefs(alpha_bar, x_t, clean=False)
    return (a * x_t - x0) / s


def eps_to_score(eps: Tensor, sigma: Tensor | float) -> Tensor:
    """grad log p(x_t) = -eps / sigma (Vincent 2011; Song et al. 2021 eq. 3)."""
    return -eps / expand_as(torch.as_tensor(sigma, dtype=torch.float64), eps)


def score_to_eps(score: Tensor, sigma: Tensor | float) -> Tensor:
    """eps = -sigma * score."""
    return -expand_as(torch.as_tensor(sigma, dtype=torch.float64), score) * score


def x0_model(model: EpsModel, schedule: DiscreteSchedule) -> Callable[[Tensor, Tensor], Tensor]:
    """(x_t, t) -> x0_hat from an eps model; schedule is the one the model was trained with."""

    def predict_x0(x_t: Tensor, t: Tensor) -> Tensor:
        return eps_to_x0(x_t, model(x_t, t), schedule.alpha_bar(t))

    return predict_x0


def score_model(model: EpsModel, schedule: DiscreteSchedule) -> Callable[[Tensor, Tensor], Tensor]:
    """(x_t, t) -> grad log p(x_t) from an eps model."""

    def score(x_t: Tensor, t: Tensor) -> Tensor:
        return eps_to_score(model(x_t, t), schedule.sigma(t))

    return score


def eps_model(
    model: Callable[[Tensor, Tensor], Tensor], schedule: DiscreteSchedule, prediction: str
) -> EpsModel:
    """An EpsModel from a model predicting `prediction` in 'eps' | 'x0' | 'v' | 'score'."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if prediction == "eps":
        return model

    def predict_eps(x_t: Tensor, t: Tensor) -> Tensor:
        out = model(x_t, t)
        if prediction == "x0":
            return x0_to_eps(x_t, out, schedule.alpha_bar(t))
        if prediction == "v":
            return v_to_eps(x_t, out, schedule.alpha_bar(t))
        return score_to_eps(out, schedule.sigma(t))

    return predict_eps
