"""Argument checks and progress bars shared by every module (one message style, one bar style).

Checks run once, at public entry points, before any heavy work: each names the argument and the
allowed values. Progress is a plain text bar (never a widget: widgets render as empty boxes in the
static book) and is off unless the caller passes ``progress=True``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

T = TypeVar("T")


def check_int(value: object, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools and floats are refused."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be an integer >= {minimum}{upper}, got {value!r}")
    return int(value)


def check_number(
    value: object, name: str, *, minimum: float | None = None, positive: bool = False
) -> float:
    """``value`` as a finite float, > 0 with ``positive``, >= ``minimum`` when given."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and positive:
        ok = value > 0
    if ok and minimum is not None:
        ok = value >= minimum
    if not ok:
        bound = " > 0" if positive else f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_sigmas(values: object, name: str, *, decreasing: bool = False) -> list[float]:
    """A non-empty sequence of positive finite noise levels as floats (strictly decreasing)."""
    sig = torch.as_tensor(values, dtype=torch.float64).flatten().tolist()
    if not sig or any(not math.isfinite(s) or s <= 0 for s in sig):
        raise ValueError(f"{name} must be a non-empty sequence of positive finite noise levels")
    if decreasing and any(b >= a for a, b in zip(sig[:-1], sig[1:])):
        raise ValueError(f"{name} must be strictly decreasing (sigma_1 > ... > sigma_L)")
    return sig


def check_in(value: object, name: str, low: float, high: float, bounds: str = "[]") -> float:
    """``value`` as a finite float in the interval low..high, closed or open as ``bounds`` says."""
    value = check_number(value, name)
    above = value >= low if bounds[0] == "[" else value > low
    below = value <= high if bounds[1] == "]" else value < high
    if not (above and below):
        raise ValueError(
            f"{name} must be in {bounds[0]}{low:g}, {high:g}{bounds[1]}, got {value!r}"
        )
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_instance(value: T, name: str, kind: type | tuple[type, ...], allowed: str) -> T:
    """``value`` if it is an instance of ``kind``; ``allowed`` says what is accepted, in words."""
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be {allowed}, got {type(value).__name__}")
    return value


def check_callable(value: T, name: str, signature: str = "") -> T:
    """``value`` if it can be called; ``signature`` shows how, e.g. '(model, batch, generator)'."""
    if not callable(value):
        how = f" {signature}" if signature else ""
        raise ValueError(f"{name} must be callable{how}, got {type(value).__name__}")
    return value


def check_batch(x: object, name: str) -> Tensor:
    """A finite floating tensor of shape (B, ...) with B >= 1 and at least 2 dimensions."""
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point() or x.shape[0] < 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating tensor of shape (B, ...), got {got}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_model_output(
    out: object, x: Tensor, what: str = "", *, channels: int = 1, first: bool = False
) -> Tensor:
    """A model's output for input x (B, C, ...): a tensor of shape (B, channels * C, ...).

    ``what`` says what the output should be (e.g. 'eps'). With ``first`` (a sampler's first call
    only) the output must also be finite: a check every step would force a host sync per step on
    a GPU, so samplers check their final sample instead.
    """
    want = (x.shape[0], channels * x.shape[1], *x.shape[2:])
    what = f" ({what})" if what else ""
    if not isinstance(out, Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model output{what} must have shape {want}, got {got}")
    if first and not torch.isfinite(out).all():
        raise ValueError(f"model output{what} contains NaN or inf")
    return out


def split_batch(batch: Tensor | tuple | list) -> tuple[Tensor, Tensor | None]:
    """A training batch: a tensor x0 (B, ...), or (x0, y) with labels y (B,)."""
    if isinstance(batch, Tensor):
        x0, y = batch, None
    elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        x0, y = batch[0], (batch[1] if len(batch) == 2 else None)
    else:
        raise ValueError("batch must be a Tensor x0 or a tuple (x0, y)")
    if not isinstance(x0, Tensor) or x0.ndim < 2 or x0.shape[0] == 0 or not x0.is_floating_point():
        raise ValueError(f"batch x0 must be a float Tensor (B, ...) with B >= 1, got {x0!r:.60}")
    if y is not None and (not isinstance(y, Tensor) or y.shape != (x0.shape[0],)):
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"batch labels y must be a Tensor of shape ({x0.shape[0]},), got {shape}")
    return x0, y


def call_model(model: Callable, x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    """model(x_t, t), or model(x_t, t, y) for a class-conditional batch."""
    return model(x_t, t) if y is None else model(x_t, t, y)


def mean_flat(x: Tensor) -> Tensor:
    """The mean over every dimension but the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(1)


def check_finite_result(x: Tensor, what: str) -> Tensor:
    """Refuse a sample that came out non-finite: never a silent NaN image."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} produced NaN or inf: check the model's outputs")
    return x


def run_chain(
    name: str,
    items: Iterable[T],
    x: Tensor,
    step: Callable[[int, T, Tensor], tuple[Tensor, Tensor | None]],
    *,
    trajectory: bool = False,
    progress: bool = False,
    shown: Callable[[int, Tensor], Tensor] | None = None,
) -> Tensor | tuple[Tensor, dict]:
    """The one sampler loop: ``x, x0_pred = step(i, item, x)`` over items, without gradients.

    Returns x, or with ``trajectory`` (x, dict(x_t=[x_init, x after each step], x0_pred=[each
    x0_pred that is not None])), x_t mapped through ``shown(i, x)`` when given. A non-finite
    result raises, so no sampler returns a silent NaN sample.
    """
    traj = dict(x_t=[x], x0_pred=[]) if trajectory else None
    with torch.no_grad():
        for i, item in enumerate(progress_bar(items, name, progress)):
            x, x0_pred = step(i, item, x)
            if traj is not None:
                traj["x_t"].append(x if shown is None else shown(i, x))
                if x0_pred is not None:
                    traj["x0_pred"].append(x0_pred)
    check_finite_result(x, name)
    return x if traj is None else (x, traj)


def progress_bar(items: Iterable[T], desc: str, enabled: bool) -> Iterable[T]:
    """``items`` wrapped in a text progress bar when ``enabled``, else unchanged."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, ascii=True, mininterval=1.0)


# GNU OpenMP (torch's Linux wheels) lets idle threads spin 300,000 times before they sleep: alone on
# the cores the fastest choice, beside another job a spinning thread holds the core its partner
# needs, and every small operation waits for a time slice (`python -m bench.threads`)
OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "1000"}


def child_env(**values: str) -> dict[str, str]:
    """os.environ plus ``values`` for a child process (a notebook kernel), with OPENMP_DEFAULTS
    where the variable is not set already."""
    return {**OPENMP_DEFAULTS, **os.environ, **values}


def env_flag(name: str) -> bool:
    """An on/off environment variable (1, true or yes, any case), e.g. DIFFNOTES_STATIC."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
