"""Discrete noise schedules (DDPM, LDM, iDDPM), step lists and the NCSN sigma ladder.

A schedule answers questions about the marginal
x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps; it holds float64 tables and no sampling
state. Discrete t is 0-based like diffusers: alpha_bar[0] = 1 - beta_1. The step t = -1 means
clean data (alpha_bar = 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from diffnotes.util import check_choice, check_in, check_instance, check_int, check_number

__all__ = [
    "DiscreteSchedule",
    "linear_schedule",
    "scaled_linear_schedule",
    "cosine_schedule",
    "get_schedule",
    "SCHEDULES",
    "from_betas",
    "from_alphas_cumprod",
    "to_diffusers",
    "spaced_steps",
    "space_timesteps",
    "respace",
    "sigma_ladder",
    "expand_as",
    "NoiseSchedule",
    "check_schedule",
]

TimeLike = int | Sequence[int] | Tensor
Time = TimeLike | float  # a discrete step or a continuous time in [0, 1], scalar or (B,)


class NoiseSchedule(Protocol):
    """What the Gaussian algebra asks of a schedule: x_t = sqrt(alpha_bar(t)) x0 + sigma(t) eps.

    `DiscreteSchedule` (integer steps) and the SDEs of `diffnotes.sde` (float t in [0, 1]) both
    satisfy it; the analytic mixture and classifier guidance need nothing more.
    """

    def alpha_bar(self, t: Time) -> Tensor: ...

    def sigma(self, t: Time) -> Tensor: ...


def _as_float64(values, name: str) -> Tensor:
    if isinstance(values, Tensor):
        out = values.detach().to(device="cpu", dtype=torch.float64)
    else:
        out = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if out.ndim != 1 or out.numel() < 1:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite")
    return out.clone()


def _int_steps(t: TimeLike, name: str, low: int, T: int, vector: bool = False) -> Tensor:
    """Integer steps in low..T-1 as a CPU long tensor; with vector, a non-empty 1-D list of them."""
    t = torch.as_tensor(t)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer steps in {low}..{T - 1}, got dtype {t.dtype}")
    if vector and (t.ndim != 1 or t.numel() < 1):
        raise ValueError(f"{name} must be a non-empty 1-D sequence of integer steps")
    t = t.to(device="cpu", dtype=torch.long)
    if t.numel() and (t.min() < low or t.max() > T - 1):
        got = f"{int(t.min())}..{int(t.max())}"
        raise ValueError(f"{name} must lie in {low}..{T - 1} (T={T}), got {got}")
    return t


def _betas_of(alpha_bar: Tensor) -> Tensor:
    """beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}, with alpha_bar_{-1} = 1."""
    return 1.0 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])


def expand_as(values: Tensor | float, x: Tensor) -> Tensor | float:
    """Broadcast a scalar or a per-sample (B,) table lookup against x (B, ...), in x's dtype."""
    if not isinstance(values, Tensor):
        return float(values)
    values = values.to(device=x.device, dtype=x.dtype)
    if values.ndim == 0:
        return values
    if values.ndim != 1 or values.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"per-sample values must have shape (B,) = ({x.shape[0]},), got {tuple(values.shape)}"
        )
    return values.reshape(-1, *([1] * (x.ndim - 1)))


class DiscreteSchedule:
    """A discrete schedule beta_1..beta_T and its float64 tables (Ho et al. 2020, eq. 4)."""

    def __init__(self, betas: Tensor | Sequence[float], timesteps: Tensor | None = None):
        betas = _as_float64(betas, "betas")
        if (betas <= 0).any() or (betas >= 1).any():
            # beta = 1 makes alpha_bar 0, and every sampler divides by sqrt(alpha_bar)
            raise ValueError("betas must lie in (0, 1) (beta = 1 would make alpha_bar reach 0)")
        self.betas = betas
        self.T = int(betas.shape[0])
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t   (Ho et al. eq. 7)
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # beta_tilde_0 = 0, so iDDPM clips the log at t = 0 to beta_tilde_1
        first = self.posterior_variance[1:2] if self.T > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([first, self.posterior_variance[1:]])
        )
        if timesteps is None:
            timesteps = torch.arange(self.T, dtype=torch.long)
        timesteps = torch.as_tensor(timesteps, dtype=torch.long).cpu()
        if timesteps.shape != (self.T,):
            raise ValueError(f"timesteps must have shape ({self.T},), got {tuple(timesteps.shape)}")
        self.timesteps = timesteps

    def __len__(self) -> int:
        return self.T

    def __repr__(self) -> str:
        return (
            f"DiscreteSchedule(T={self.T}, beta=[{self.betas[0]:.3g}..{self.betas[-1]:.3g}], "
            f"alpha_bar_T={self.alphas_cumprod[-1]:.3g})"
        )

    def _index(self, t: TimeLike) -> Tensor:
        return _int_steps(t, "t", -1, self.T)

    def alpha_bar(self, t: TimeLike) -> Tensor:
        """alpha_bar_t = prod_{s<=t} (1 - beta_s) as float64; t = -1 gives 1 (clean data)."""
        t = self._index(t)
        table = torch.cat([self.alphas_cumprod, self.alphas_cumprod.new_ones(1)])
        return table[t]  # index -1 hits the appended 1

    def sigma(self, t: TimeLike) -> Tensor:
        """Noise std of the marginal, sqrt(1 - alpha_bar_t)."""
        return torch.sqrt(1.0 - self.alpha_bar(t))

    def snr(self, t: TimeLike) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021)."""
        ab = self.alpha_bar(t)
        return ab / (1.0 - ab)

    def check_steps(self, ts: TimeLike | None) -> list[int]:
        """Validate a sampling step list: strictly decreasing integers in 0..T-1 (None: all T)."""
        if ts is None:
            return list(range(self.T - 1, -1, -1))
        steps = _int_steps(ts, "ts", 0, self.T, vector=True).tolist()
        if any(b >= a for a, b in zip(steps[:-1], steps[1:])):
            raise ValueError(
                "ts must be strictly decreasing (sampling order), e.g. [999, 979, ...]"
            )
        return steps


def _check_betas(beta_start: float, beta_end: float) -> None:
    check_in(beta_start, "beta_start", 0, 1, "()")
    check_in(beta_end, "beta_end", 0, 1, "()")


def check_schedule(schedule: object) -> DiscreteSchedule:
    """``schedule`` if it is a DiscreteSchedule: samplers, losses and the VLB read its tables."""
    return check_instance(schedule, "schedule", DiscreteSchedule, "a DiscreteSchedule")


def linear_schedule(
    T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> DiscreteSchedule:
    """DDPM's linear betas from beta_start to beta_end (Ho et al. 2020, Sec. 4)."""
    T = check_int(T, "T", 1)
    _check_betas(beta_start, beta_end)
    return DiscreteSchedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def scaled_linear_schedule(
    T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> DiscreteSchedule:
    """Latent diffusion's betas, linear in sqrt(beta) (Rombach et al. 2022; 'scaled_linear')."""
    T = check_int(T, "T", 1)
    _check_betas(beta_start, beta_end)
    root = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=torch.float64)
    return DiscreteSchedule(root**2)


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteSchedule:
    """iDDPM cosine schedule alpha_bar(t) = f(t)/f(0), f = cos^2(((t/T + s)/(1 + s)) pi/2) (eq. 17).

    beta_t = 1 - alpha_bar(t)/alpha_bar(t-1) is clipped at max_beta (the singularity at t = T).
    """
    T = check_int(T, "T", 1)
    check_number(s, "s", positive=True)
    if not (isinstance(max_beta, (int, float)) and 0 < max_beta < 1):
        raise ValueError(f"max_beta must lie in (0, 1) (1 makes alpha_bar_T = 0), got {max_beta!r}")
    i = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.clamp(1.0 - f[1:] / f[:-1], max=max_beta)
    return DiscreteSchedule(betas)


SCHEDULES = {
    "linear": linear_schedule,
    "scaled_linear": scaled_linear_schedule,
    "cosine": cosine_schedule,
}


def get_schedule(name: str, T: int = 1000) -> DiscreteSchedule:
    """The named schedule with its paper's defaults: 'linear', 'scaled_linear' or 'cosine'."""
    check_choice(name, "name", sorted(SCHEDULES))
    return SCHEDULES[name](check_int(T, "T", 1))


def from_betas(betas: Tensor | Sequence[float]) -> DiscreteSchedule:
    """A schedule from a beta table (e.g. diffusers' `scheduler.betas`)."""
    return DiscreteSchedule(betas)


def from_alphas_cumprod(alphas_cumprod: Tensor | Sequence[float]) -> DiscreteSchedule:
    """A schedule from alpha_bar, with beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}."""
    ac = _as_float64(alphas_cumprod, "alphas_cumprod")
    if (ac <= 0).any() or (ac >= 1).any() or (ac[1:] >= ac[:-1]).any():
        raise ValueError("alphas_cumprod must be strictly decreasing in (0, 1)")
    return DiscreteSchedule(_betas_of(ac))


def to_diffusers(schedule: DiscreteSchedule) -> dict:
    """Keyword arguments giving a diffusers scheduler the same betas (stored there in float32)."""
    return dict(num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist())


SPACINGS = ("leading", "trailing", "linspace")


def spaced_steps(T: int, n: int, spacing: str = "leading") -> Tensor:
    """n of T steps in sampling order, spaced as in Lin et al. 2024, Table 2 (as diffusers)."""
    T = check_int(T, "T", 1)
    check_int(n, "n", 1, T)
    check_choice(spacing, "spacing", SPACINGS)
    # numpy arithmetic on purpose: the same rounding as diffusers' set_timesteps
    if spacing == "leading":
        steps = np.arange(0, n) * (T // n)
    elif spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    else:  # linspace
        steps = np.linspace(0, T - 1, n).round().astype(np.int64)
    return torch.as_tensor(np.sort(steps)[::-1].copy(), dtype=torch.long)


def space_timesteps(T: int, section_counts: str | Sequence[int]) -> list[int]:
    """iDDPM's respacing: T steps cut into equal sections, each strided to its count (respace.py).

    "10,10,5" takes 10, 10 and 5 evenly spaced steps from three thirds; "ddim25" takes the integer
    stride that yields exactly 25 steps, as in the DDIM paper.
    """
    T = check_int(T, "T", 1)
    if isinstance(section_counts, str):
        ddim = section_counts.startswith("ddim")
        text = section_counts[4:] if ddim else section_counts
        if not re.fullmatch(r"\d+" if ddim else r"\d+(,\d+)*", text):
            raise ValueError(
                f"section_counts must look like '10,10,5' or 'ddim25', got {section_counts!r}"
            )
        section_counts = [int(c) for c in text.split(",")]
        if ddim:
            strides = [k for k in range(1, T + 1) if len(range(0, T, k)) == section_counts[0]]
            if not strides:
                raise ValueError(
                    f"section_counts {text!r}: no integer stride gives that many steps"
                )
            return list(range(0, T, strides[0]))
    counts = list(section_counts)
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"section_counts must be positive integers, got {counts}")
    if len(counts) > T:
        raise ValueError(f"section_counts has {len(counts)} sections but T={T}")
    size_per, extra = divmod(T, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"section_counts: cannot take {count} steps from a section of {size}")
        stride = 1.0 if count == 1 else (size - 1) / (count - 1)
        steps += [start + round(k * stride) for k in range(count)]
        start += size
    return sorted(set(steps))


def respace(schedule: DiscreteSchedule, steps: TimeLike) -> DiscreteSchedule:
    """The schedule of the kept steps only: beta'_i = 1 - alpha_bar_{k_i} / alpha_bar_{k_{i-1}}.

    Exactly iDDPM's SpacedDiffusion: alpha_bar is unchanged at kept steps; `.timesteps` maps the new
    indices 0..len-1 to the original steps, which is what a model trained on `schedule` expects.
    """
    t = _int_steps(steps, "steps", 0, schedule.T, vector=True)
    kept = torch.unique(t)  # sorted ascending
    if kept.numel() != t.numel():
        raise ValueError("steps must not repeat")
    return DiscreteSchedule(_betas_of(schedule.alphas_cumprod[kept]), schedule.timesteps[kept])


def sigma_ladder(sigma_max: float = 1.0, sigma_min: float = 0.01, L: int = 10) -> Tensor:
    """NCSN noise levels: geometric and decreasing, sigma_1 = sigma_max .. sigma_L = sigma_min."""
    if not (math.isfinite(sigma_max) and math.isfinite(sigma_min)) or not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}")
    check_int(L, "L", 2)
    return torch.exp(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), L, dtype=torch.float64)
    )
