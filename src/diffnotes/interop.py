"""Adapters to and from diffusers (imported lazily: only this module and lora/ need it)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffnotes.schedules import DiscreteSchedule, from_alphas_cumprod, to_diffusers

__all__ = ["from_diffusers_scheduler", "to_diffusers_scheduler", "unet_eps_model"]

KINDS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "repaint": "RePaintScheduler",
}


def from_diffusers_scheduler(scheduler) -> DiscreteSchedule:
    """The DiscreteSchedule of a diffusers scheduler, from its (float32) alphas_cumprod."""
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        raise ValueError("scheduler must be a discrete diffusers scheduler with alphas_cumprod")
    return from_alphas_cumprod(torch.as_tensor(ac).to(torch.float64))


def to_diffusers_scheduler(schedule: DiscreteSchedule, kind: str = "ddpm", **kwargs):
    """A diffusers scheduler ('ddpm' | 'ddim' | 'euler' | 'repaint') with this schedule's betas.

    clip_sample defaults to False here (diffusers' default True would clip x0 to [-1, 1]).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    import diffusers

    cls = getattr(diffusers, KINDS[kind])
    if kind in ("ddpm", "ddim", "repaint"):
        kwargs.setdefault("clip_sample", False)
    return cls(**to_diffusers(schedule), **kwargs)


def unet_eps_model(unet, **unet_kwargs) -> Callable[[Tensor, Tensor], Tensor]:
    """An EpsModel from a diffusers UNet (`unet(x, t, **unet_kwargs).sample`), in x's dtype."""
    param = next(unet.parameters(), None)

    def eps(x: Tensor, t: Tensor) -> Tensor:
        dtype = param.dtype if param is not None else x.dtype
        out = unet(x.to(dtype), t, **unet_kwargs)
        out = out.sample if hasattr(out, "sample") else out[0]
        return out.to(x.dtype)

    return eps
