"""Run profiles: one switch that scales every chapter from a CI smoke run to Colab.

`DIFFNOTES_PROFILE` picks the profile:

- ``ci``: each notebook in <= 60 s on 2 CPU cores (what `make test` runs);
- ``book``: the default on a CPU, what the rendered book shows (<= 4 min a notebook);
- ``gpu``: Colab scale, chosen automatically when CUDA is present and the variable is unset.

`DIFFNOTES_SEED` (default 0) is the seed every chapter derives its random choices from (data,
initialisation, training batches, sampling noise); `bench.claims` reruns chapters over several.

A chapter reads its settings once, in the cell tagged ``parameters``::

    P = dn.profile()
    train_steps = P.pick(ci=300, book=3000, gpu=30000)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch

from diffnotes.util import check_choice, env_flag

PROFILES = ("ci", "book", "gpu")
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """The active profile: its name, the device to compute on, and how to show progress."""

    name: str
    device: torch.device
    static: bool  # building the static book: no widgets, no progress bars
    progress: bool
    seed: int = 0  # DIFFNOTES_SEED: every random choice of a chapter derives from it

    def __post_init__(self) -> None:
        check_choice(self.name, "name", PROFILES)  # else pick() fails with a KeyError

    def pick(self, *, ci: T, book: T, gpu: T) -> T:
        """The value for this profile (all three are required so no chapter forgets one)."""
        return {"ci": ci, "book": book, "gpu": gpu}[self.name]


def seed_from_env() -> int:
    """``DIFFNOTES_SEED`` as an int >= 0 (default 0): the one seed knob of the whole book."""
    text = os.environ.get("DIFFNOTES_SEED", "").strip()
    if not text:
        return 0
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0 or seed >= 2**31:
        raise ValueError(
            f"DIFFNOTES_SEED={text!r} is not a seed; allowed values: integers 0..2**31-1"
        )
    return seed


def profile(name: str | None = None) -> Profile:
    """The profile ``name``, else ``DIFFNOTES_PROFILE``, else ``gpu`` with CUDA or ``book``.

    Its ``seed`` is ``DIFFNOTES_SEED`` (default 0).
    """
    source = "name"
    if name is None:
        name, source = os.environ.get("DIFFNOTES_PROFILE", "").strip(), "DIFFNOTES_PROFILE"
    if not name:
        name = "gpu" if torch.cuda.is_available() else "book"
    if name not in PROFILES:
        allowed = ", ".join(PROFILES)
        raise ValueError(f"{source}={name!r} is not a profile; allowed values: {allowed}")
    on_gpu = name == "gpu" and torch.cuda.is_available()
    static = env_flag("DIFFNOTES_STATIC")
    return Profile(
        name=name,
        device=torch.device("cuda" if on_gpu else "cpu"),
        static=static,
        progress=not static and name != "ci",
        seed=seed_from_env(),
    )
