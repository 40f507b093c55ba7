"""The shared pieces of the guidance chapters (06, 07): recipes and the diversity metric."""

from __future__ import annotations

import pytest
import torch

from diffnotes.metrics.digits import DigitsClassifier, class_feature_spread
from diffnotes.profile import profile
from diffnotes.recipes import digits_cfg, digits_guidance_classifier


@pytest.fixture
def tiny_classifier() -> DigitsClassifier:
    torch.manual_seed(0)
    return DigitsClassifier(width=4, features=8).eval()


def test_class_feature_spread_falls_when_classes_collapse(tiny_classifier) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(8)
    spread_out = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1
    collapsed = spread_out[labels * 8]  # every sample of a class is the same image
    wide = class_feature_spread(spread_out, labels, classifier=tiny_classifier)
    assert wide > 0
    assert class_feature_spread(collapsed, labels, classifier=tiny_classifier) == pytest.approx(
        0.0, abs=1e-9
    )


def test_class_feature_spread_rejects_bad_input(tiny_classifier) -> None:
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="one entry per sample"):
        class_feature_spread(x, torch.arange(3), classifier=tiny_classifier)
    with pytest.raises(ValueError, match="at least two samples"):
        class_feature_spread(x, torch.arange(4), classifier=tiny_classifier)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noisy=1), "noisy must be a bool"),
        (dict(size=12), "size must be one of"),
        (dict(seed=-1), "seed must be an int"),
    ],
)
def test_guidance_classifier_recipe_checks_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        digits_guidance_classifier(profile("ci"), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(p_uncond=0.0), "p_uncond must be in"),
        (dict(p_uncond=1.0), "p_uncond must be in"),
        (dict(p_uncond=float("nan")), "p_uncond must be a finite number"),
        (dict(size=12), "size must be one of"),
    ],
)
def test_cfg_recipe_checks_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        digits_cfg(profile("ci"), **kwargs)


def test_recipes_train_cache_and_answer(tmp_path, monkeypatch) -> None:
    """Tiny budgets: the classifier returns logits per class, the CFG model both branches."""
    monkeypatch.setenv("DIFFNOTES_CACHE", str(tmp_path))
    prof = profile("ci")
    clf, sched = digits_guidance_classifier(prof, size=8)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])
    assert clf(x, t).shape == (3, 10) and sched.T == 1000
    assert not any(p.requires_grad for p in clf.parameters())
    model, _ = digits_cfg(prof, size=8)
    with torch.no_grad():
        cond, uncond = model(x, t, torch.tensor([1, 2, 3])), model(x, t, None)
    assert cond.shape == uncond.shape == x.shape
    assert not torch.allclose(cond, uncond)
