"""Guidance as wrappers that return an EpsModel: classifier-free and classifier guidance."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffnotes.param import CondEpsModel, EpsModel, GradLogP
from diffnotes.schedules import NoiseSchedule, expand_as
from diffnotes.util import check_number

__all__ = ["classifier_free", "classifier_guidance", "classifier_grad"]


def classifier_free(
    model: CondEpsModel, y: object, w: float | None = None, *, guidance_scale: float | None = None
) -> EpsModel:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): (1 + w) eps(x, c) - w eps(x).

    Two conventions, give exactly one: Ho & Salimans' w (w = 0 is the conditional model) or
    diffusers' guidance_scale = 1 + w (eps_u + g (eps_c - eps_u); g = 1 is the conditional model).
    """
    if (w is None) == (guidance_scale is None):
        raise ValueError("give exactly one of w (Ho & Salimans) or guidance_scale (= 1 + w)")
    w = (
        check_number(w, "w")
        if w is not None
        else check_number(guidance_scale, "guidance_scale") - 1.0
    )

    def guided(x: Tensor, t: Tensor) -> Tensor:
        eps_c = model(x, t, y)
        if w == 0.0:
            return eps_c  # (1 + 0) eps_c - 0 eps_u, without the second network call
        return (1.0 + w) * eps_c - w * model(x, t, None)

    return guided


def classifier_guidance(
    model: EpsModel, grad_log_p: GradLogP, schedule: NoiseSchedule, s: float, y: object
) -> EpsModel:
    """Classifier guidance (Dhariwal & Nichol 2021, Alg. 2): eps - s sqrt(1 - ab) grad log p(y|x_t).

    grad_log_p(x_t, t, y) -> grad_x log p(y | x_t) (e.g. `classifier_grad(classifier)`); schedule is
    the one the model was trained with (t are its original steps).
    """
    s = check_number(s, "s")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        eps = model(x, t)
        if s == 0.0:
            return eps
        with torch.enable_grad():
            grad = grad_log_p(x, t, y)
        if not isinstance(grad, Tensor) or grad.shape != x.shape:
            raise ValueError(f"grad_log_p must return x's shape {tuple(x.shape)}")
        return eps - s * expand_as(schedule.sigma(t), x) * grad.detach()

    return guided


def classifier_grad(classifier: Callable[[Tensor, Tensor], Tensor]) -> GradLogP:
    """grad_x log softmax(classifier(x_t, t))[y] by autograd, for `classifier_guidance`."""

    def grad_log_p(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = torch.log_softmax(classifier(x_in, t), dim=-1)
            picked = log_probs[torch.arange(x.shape[0], device=x.device), y]
            return torch.autograd.grad(picked.sum(), x_in)[0]

    return grad_log_p
