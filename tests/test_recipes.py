"""recipes.fit_cached: trained once, then read from the cache; mixture_key for cache keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffnotes.analytic import ring_mixture
from diffnotes.losses import eps_loss
from diffnotes.profile import profile
from diffnotes.recipes import fit_cached, mixture_key
from diffnotes.schedules import linear_schedule


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_fit_cached_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNOTES_CACHE", str(tmp_path))
    monkeypatch.setenv("DIFFNOTES_PROFILE", "ci")
    P = profile()
    seen, loads = [], []

    def data():  # a loader of no arguments: called only when the model is trained
        loads.append(1)
        return torch.randn(64, 2, generator=torch.Generator().manual_seed(0))

    def fit() -> nn.Module:
        return fit_cached(
            "test/tiny",
            dict(width=8),
            Tiny,
            eps_loss(linear_schedule(10)),
            data,
            profile=P,
            seed=3,
            on_result=seen.append,
            steps=5,
            batch_size=16,
            lr=1e-3,
        )

    first, second = fit(), fit()
    assert len(seen) == 1 and len(seen[0].losses) == 5 and loads == [1]
    assert not second.training
    for a, b in zip(first.parameters(), second.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fit_cached_refuses_a_bad_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNOTES_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="seed"):
        fit_cached(
            "test/x", {}, nn.Identity, eps_loss(linear_schedule(10)), torch.zeros(4, 2),
            profile=profile("ci"), seed=-1, steps=1, batch_size=2,
        )  # fmt: skip


def test_mixture_key_is_json_lists_and_refuses_other_objects():
    key = mixture_key(ring_mixture(n_modes=3))
    assert len(key["weights"]) == 3 and len(key["means"][0]) == 2
    with pytest.raises(ValueError, match="mixture"):
        mixture_key({"weights": [1.0]})
