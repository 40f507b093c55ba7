"""The mask families of the RePaint chapter and the first stages of the latent diffusion chapter."""

from __future__ import annotations

import pytest
import torch

from diffnotes.analytic import GaussianMixture
from diffnotes.latent import PCAStage, autoencoder_config, latent_scale
from diffnotes.masks import FAMILIES, expand, half, make_mask, strokes, super_resolve
from diffnotes.profile import profile


@pytest.mark.parametrize("family", FAMILIES)
def test_masks_are_binary_and_leave_something_to_fill(family: str) -> None:
    m = make_mask(family, 5, 16, generator=torch.Generator().manual_seed(0))
    assert m.shape == (5, 1, 16, 16)
    assert bool(((m == 0) | (m == 1)).all())
    assert 0 < float(m.mean()) < 1


def test_fixed_masks_have_the_documented_layout() -> None:
    torch.testing.assert_close(half(1, 4, "right")[0, 0, 0], torch.tensor([1.0, 1, 0, 0]))
    torch.testing.assert_close(half(1, 4, "bottom")[0, 0, :, 0], torch.tensor([1.0, 1, 0, 0]))
    assert float(expand(1, 16).mean()) == pytest.approx(0.25)
    assert float(super_resolve(1, 16, 2).mean()) == pytest.approx(0.25)


def test_strokes_follow_the_generator() -> None:
    a = strokes(3, 16, width=2, generator=torch.Generator().manual_seed(1))
    b = strokes(3, 16, width=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_mask("circle", 2, 16), "family"),
        (lambda: make_mask("half", 0, 16), "n must"),
        (lambda: make_mask("half", 2, 15), "size must"),
        (lambda: half(2, 16, "middle"), "side must"),
        (lambda: expand(2, 16, keep=1.5), "keep must"),
        (lambda: super_resolve(2, 16, 3), "factor must"),
        (lambda: strokes(2, 16, width=0), "width must"),
    ],
)
def test_masks_refuse_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def _mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 6, generator=g, dtype=torch.float64)
    return GaussianMixture([0.2, 0.3, 0.5], means, [0.1, 0.2, 0.3])


def test_pca_stage_pushes_the_mixture_forward_exactly() -> None:
    mix = _mixture()
    stage = PCAStage(mix, 3)
    x, labels = mix.sample(20000, generator=torch.Generator().manual_seed(1), return_labels=True)
    z = stage.encode(x)
    lat = stage.latent_mixture()
    for k in range(3):  # each component's latent mean is the encoded mean
        torch.testing.assert_close(z[labels == k].mean(0), lat.means[k], atol=0.03, rtol=0)
    # at full size the stage is lossless
    full = PCAStage(mix, 6)
    torch.testing.assert_close(full.decode(full.encode(x)), x.double())
    assert full.explained == pytest.approx(1.0)


def test_pca_stage_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="d must"):
        PCAStage(_mixture(), 7)
    diagonal = GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="isotropic"):
        PCAStage(diagonal, 1)
    with pytest.raises(ValueError, match="z must"):
        PCAStage(_mixture(), 2).decode(torch.zeros(4, 3))


def test_latent_scale_and_autoencoder_config() -> None:
    z = 4.0 * torch.randn(10000, generator=torch.Generator().manual_seed(0))
    assert latent_scale(z) == pytest.approx(0.25, rel=0.05)
    with pytest.raises(ValueError, match="finite"):
        latent_scale(torch.tensor([float("nan"), 1.0]))
    cfg = autoencoder_config(profile("ci"), factor=8)
    assert 2 ** (len(cfg.channel_mults) - 1) == 8
    with pytest.raises(ValueError, match="factor must"):
        autoencoder_config(profile("ci"), factor=3)
