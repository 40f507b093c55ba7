"""Inpainting with an unconditional model: RePaint (Lugmayr et al. 2022) and naive replacement."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from diffnotes.forward import VARIANCES, noise_like
from diffnotes.param import EpsModel
from diffnotes.samplers import p_sample
from diffnotes.schedules import DiscreteSchedule, check_schedule
from diffnotes.util import check_batch, check_choice, check_int, run_chain

__all__ = ["jump_schedule", "repaint", "replace_inpaint"]


def jump_schedule(T: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """RePaint's time sequence T-1, ..., -1 with resampling jumps (get_schedule_jump, Sec. 4.2).

    Going down, at every t = 0, j, 2j, ... < T - j (j = jump_length) the chain jumps back up j
    steps, jump_n_sample - 1 times per such t. Consecutive entries differ by exactly 1.
    """
    for value, name in ((T, "T"), (jump_length, "jump_length"), (jump_n_sample, "jump_n_sample")):
        check_int(value, name, 1)
    jumps = {j: jump_n_sample - 1 for j in range(0, T - jump_length, jump_length)}
    t, times = T, []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    return times + [-1]


def _check_inpaint(x_known: Tensor, mask: Tensor, x_T: Tensor) -> Tensor:
    check_batch(x_known, "x_known")
    if not isinstance(x_T, Tensor) or x_T.shape != x_known.shape:
        raise ValueError(f"x_T must have x_known's shape {tuple(x_known.shape)}")
    if not isinstance(mask, Tensor):
        raise ValueError("mask must be a tensor (1 = known, 0 = to fill)")
    try:
        shape = torch.broadcast_shapes(mask.shape, x_known.shape)
    except RuntimeError:
        shape = None
    if shape != x_known.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} must broadcast to x_known's {tuple(x_known.shape)}"
        )
    mask = mask.to(dtype=x_known.dtype, device=x_known.device)
    if not torch.isfinite(mask).all() or not bool(((mask == 0) | (mask == 1)).all()):
        # a fractional mask would blend a noisy known region into the sample at every step
        raise ValueError("mask values must be 0 or 1 (1 = known, 0 = to fill)")
    return mask


def repaint(
    model: EpsModel,
    schedule: DiscreteSchedule,
    x_known: Tensor,
    mask: Tensor,
    x_T: Tensor,
    *,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    ts: Sequence[int] | Tensor | None = None,
    variance: str = "small",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1): DDPM steps, the known region re-noised from x_known.

    Each step down t -> t_prev samples the unknown part from p(x_{t_prev} | x_t), the known
    part from q(x_{t_prev} | x_known) and joins them by the mask (1 = known); each jump back up
    re-noises with q(x_t | x_{t_prev}) = N(sqrt(1 - beta) x_{t_prev}, beta I). The last join uses
    x_known itself, so the known region is returned exactly. ts (default: all T steps) gives the
    levels that jump_schedule walks over, so jumps are counted in listed steps.
    """
    check_choice(variance, "variance", VARIANCES)
    mask = _check_inpaint(x_known, mask, x_T)
    levels = check_schedule(schedule).check_steps(ts)[
        ::-1
    ]  # level k -> step levels[k]; level -1 is clean data
    times = jump_schedule(len(levels), jump_length, jump_n_sample)

    def ab(k: int) -> float:
        return 1.0 if k < 0 else float(schedule.alphas_cumprod[levels[k]])

    def step(i: int, pair: tuple[int, int], x: Tensor) -> tuple[Tensor, None]:
        k, k_next = pair
        if k_next > k:
            beta = 1.0 - ab(k_next) / ab(k)
            # x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t I)   (Alg. 1, line 10)
            return math.sqrt(1.0 - beta) * x + math.sqrt(beta) * noise_like(x_T, generator), None
        t_prev = levels[k_next] if k_next >= 0 else -1
        kw = dict(variance=variance, generator=generator, check_output=i == 0)
        unknown, _ = p_sample(model, schedule, x, levels[k], t_prev, **kw)
        # x_known_{t-1} ~ N(sqrt(ab_{t-1}) x0, (1 - ab_{t-1}) I)   (Alg. 1, line 5)
        known = x_known
        if k_next >= 0:
            noise = noise_like(x_T, generator)
            known = math.sqrt(ab(k_next)) * x_known + math.sqrt(1 - ab(k_next)) * noise
        return mask * known + (1 - mask) * unknown, None

    return run_chain("repaint", list(zip(times[:-1], times[1:])), x_T, step, progress=progress)


def replace_inpaint(
    model: EpsModel,
    schedule: DiscreteSchedule,
    x_known: Tensor,
    mask: Tensor,
    x_T: Tensor,
    *,
    ts: Sequence[int] | Tensor | None = None,
    variance: str = "small",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """The naive baseline: DDPM with the known region replaced by q(x_t | x_known) after every step.

    RePaint without resampling (jump_n_sample = 1); cf. Song et al. 2021, Appendix I.2.
    """
    kw = dict(ts=ts, variance=variance, generator=generator, progress=progress)
    return repaint(model, schedule, x_known, mask, x_T, jump_length=1, jump_n_sample=1, **kw)
