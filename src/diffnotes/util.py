"""Argument checks and progress bars shared by every module (one message style, one bar style).

Checks run once, at public entry points, before any heavy work: each names the argument and the
allowed values. Progress is a plain text bar (never a widget: widgets render as empty boxes in the
static book) and is off unless the caller passes ``progress=True``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def check_int(value: object, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools and floats are refused."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be an integer >= {minimum}{upper}, got {value!r}")
    return value


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


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_batch(x: object, name: str) -> Tensor:
    """A finite floating tensor of shape (B, ...) with B >= 1 and at least 2 dimensions."""
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point() or x.shape[0] < 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating tensor of shape (B, ...), got {got}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_finite_result(x: Tensor, what: str) -> Tensor:
    """Refuse a sample that came out non-finite: never a silent NaN image."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} produced NaN or inf: check the model's outputs")
    return x


def progress_bar(items: Iterable[T], desc: str, enabled: bool) -> Iterable[T]:
    """``items`` wrapped in a text progress bar when ``enabled``, else unchanged."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, ascii=True, mininterval=1.0)


def env_flag(name: str) -> bool:
    """An on/off environment variable (1, true or yes, any case), e.g. DIFFNOTES_STATIC."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
