"""Chapter 07 (classifier-free guidance): its identities, its recipe and its sweep's IS."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import diffnotes as dn
from bench.sweep_cfg import inception_score
from diffnotes.profile import profile
from diffnotes.recipes import digits_cfg_budget


def three_classes(leak: float = 0.0) -> tuple[dn.GaussianMixture, dict[int, dn.GaussianMixture]]:
    """The chapter's mixture (means on the unit circle, std 0.5) and its leaky conditionals."""
    angle = torch.tensor([90.0, 210.0, 330.0]) * math.pi / 180
    means = torch.stack([angle.cos(), angle.sin()], 1)
    mixture = dn.GaussianMixture([1 / 3] * 3, means, [0.5**2] * 3)
    leaky = {
        c: dn.GaussianMixture(
            [(1 - leak) * (k == c) + leak / 3 for k in range(3)], means, [0.25] * 3
        )
        for c in range(3)
    }
    return mixture, leaky


@pytest.mark.parametrize("w", [0.3, 4.0])
def test_cfg_is_classifier_guidance_with_scale_one_plus_w(w) -> None:
    """Ho & Salimans eq. 6 with exact models: eps(x) - (1 + w) sigma grad log p(c | x_t)."""
    mixture, _ = three_classes()
    S = dn.linear_schedule(1000)
    cfg = dn.classifier_free(mixture.cond_eps_model(S), 1, w)
    cg = dn.classifier_guidance(mixture.eps_model(S), mixture.grad_log_class(S), S, 1 + w, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1000, (64,), generator=g)
    assert_close(cfg(x, t), cg(x, t), rtol=1e-10, atol=1e-12)
    # and whole DDPM runs from the same noise agree to rounding (the chapter's former claim)
    ts = dn.spaced_steps(1000, 50)
    run = [dn.ddpm(m, S, ts, x, generator=torch.Generator().manual_seed(1)) for m in (cfg, cg)]
    assert_close(run[0], run[1], rtol=1e-9, atol=1e-9)
    assert (run[0] - x).abs().max() > 0.1  # it sampled something


def test_leaky_model_cfg_rescales_the_class_direction() -> None:
    """p_leak(x|c) = (1 - l) p(x|c) + l p(x): CFG = eps_u + (1 + w) r (eps_c - eps_u), exactly.

    r = K (1 - l) pi / (K (1 - l) pi + l) with pi = p_t(c | x_t) of the true mixture (K = 3
    equal classes): the leaky conditional has the right direction at a fraction r <= 1 of its
    length, which is what a guidance weight w > 0 gives back.
    """
    leak, w, c = 0.3, 0.5, 2
    mixture, leaky = three_classes(leak)
    S = dn.linear_schedule(1000)

    def model(x, t, y):
        return mixture.eps(x, t, S) if y is None else leaky[int(y)].eps(x, t, S)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 2, generator=g, dtype=torch.float64)
    t = torch.full((50,), 400)
    pi = mixture.class_posterior(x, t, S)[:, c : c + 1]
    r = 3 * (1 - leak) * pi / (3 * (1 - leak) * pi + leak)
    eps_u, eps_c = mixture.eps(x, t, S), mixture.cond_eps_model(S)(x, t, c)
    assert_close(dn.classifier_free(model, c, w)(x, t), eps_u + (1 + w) * r * (eps_c - eps_u))
    assert 0 < float(r.min()) < 0.5 < float(r.max()) < 1  # far from class c and near it


class FixedJudge(nn.Module):
    """A 'classifier' returning the logits stored for each image index (image = its index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.flatten(1)[:, 0].long()]


def test_inception_score_values() -> None:
    images = torch.arange(2.0).reshape(2, 1, 1, 1)
    two = FixedJudge(torch.tensor([[0.9, 0.1], [0.1, 0.9]]).log())
    # p(y) = (1/2, 1/2): KL = 0.9 ln 1.8 + 0.1 ln 0.2 for both images
    assert inception_score(images, two) == pytest.approx(
        math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    )
    same = FixedJudge(torch.tensor([[2.0, -1.0, 0.5]] * 2))
    assert inception_score(images, same) == pytest.approx(1.0)
    ten = torch.full((10, 10), -50.0).fill_diagonal_(50.0)
    assert inception_score(
        torch.arange(10.0).reshape(10, 1, 1, 1), FixedJudge(ten)
    ) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=10, base_channels=4), "base_channels must be an integer >= 8"),
        (dict(steps=10, base_channels=12), "num_groups"),
        (dict(steps=10, p_uncond=0.0), "p_uncond must be in"),
        (dict(steps=10, size=12), "size must be one of"),
    ],
)
def test_budget_recipe_checks_arguments(kwargs, match, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIFFNOTES_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=match):
        digits_cfg_budget(profile("ci"), **kwargs)


def test_budget_recipe_trains_both_branches_and_caches(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIFFNOTES_CACHE", str(tmp_path))
    prof = profile("ci")
    model, sched = digits_cfg_budget(prof, steps=3, base_channels=8, size=8)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])
    with torch.no_grad():
        cond, uncond = model(x, t, torch.tensor([1, 2, 3])), model(x, t, None)
    assert cond.shape == uncond.shape == x.shape and sched.T == 1000
    assert not torch.allclose(cond, uncond)
    again, _ = digits_cfg_budget(prof, steps=3, base_channels=8, size=8)  # from the cache
    with torch.no_grad():
        assert_close(again(x, t, torch.tensor([1, 2, 3])), cond, rtol=0, atol=0)
    other, _ = digits_cfg_budget(prof, steps=3, base_channels=8, size=8, seed=1)
    with torch.no_grad():
        assert not torch.allclose(other(x, t, None), uncond)  # the seed is part of the key
