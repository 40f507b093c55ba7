"""The mask families of the RePaint chapter and the first stages of the latent diffusion chapter."""

from __future__ import annotations

import pytest
import torch

from diffnotes.analytic import GaussianMixture
from diffnotes.guidance import classifier_free
from diffnotes.latent import (
    CAPTIONS,
    LATENT_STEPS_PER_PIXEL_STEP,
    CaptionedLatentUNet,
    PCAStage,
    autoencoder_config,
    diffusion_budget,
    latent_scale,
    shapes_latent_ddpm,
    train_step_cost,
)
from diffnotes.losses import eps_loss
from diffnotes.masks import FAMILIES, expand, half, make_mask, strokes, super_resolve
from diffnotes.metrics.images import parse_caption
from diffnotes.metrics.shapes import ShapesClassifier
from diffnotes.models.latent_unet import LatentUNetConfig
from diffnotes.profile import profile
from diffnotes.schedules import get_schedule


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


def test_captions_cover_every_factor_combination() -> None:
    assert len(CAPTIONS) == len(set(CAPTIONS)) == 3 * 8 * 7
    for c in CAPTIONS:
        shape, colour, background = parse_caption(c)
        assert colour != background


def _captioned() -> CaptionedLatentUNet:
    cfg = LatentUNetConfig(
        latent_channels=4,
        latent_size=8,
        base_channels=8,
        channel_mults=(1, 2),
        num_groups=4,
        attention_resolutions=(4,),
        context_dim=16,
        num_heads=2,
    )
    torch.manual_seed(0)
    model = CaptionedLatentUNet(cfg).eval()
    with torch.no_grad():  # a non-zero output layer, so the test sees the conditioning
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return model


def test_captioned_unet_drop_is_the_unconditional_branch() -> None:
    model = _captioned()
    z, t = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 990])
    y = torch.tensor([0, 5, 167])
    with torch.no_grad():
        uncond = model(z, t)
        torch.testing.assert_close(model(z, t, torch.full((3,), -1)), uncond)
        cond = model(z, t, y)
        assert not torch.allclose(cond, uncond)
        # CFG at w = 0 is the conditional model; a dropped row mixes in nothing of its caption
        torch.testing.assert_close(classifier_free(model, y, 0.0)(z, t), cond)
        mixed = model(z, t, torch.tensor([0, -1, 167]))
        torch.testing.assert_close(mixed[1], uncond[1])
        torch.testing.assert_close(mixed[0], cond[0])
    with pytest.raises(ValueError, match="y must"):
        model(z, t, torch.tensor([0, 1, len(CAPTIONS)]))


def test_shapes_classifier_heads_and_input_check() -> None:
    model = ShapesClassifier().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert model(x).shape == (2, 3 + 8 + 8 + 9)
    assert model.features(x).shape == (2, 32)
    with pytest.raises(ValueError, match="32x32"):
        model.features(torch.zeros(2, 3, 16, 16))


def test_latent_budget_is_a_fixed_multiple_of_the_pixel_budget() -> None:
    for name in ("ci", "book", "gpu"):
        pixel = diffusion_budget(profile(name))
        latent = diffusion_budget(profile(name), latent=True)
        assert latent["steps"] == LATENT_STEPS_PER_PIXEL_STEP * pixel["steps"]
        assert {k: v for k, v in latent.items() if k != "steps"} == {
            k: v for k, v in pixel.items() if k != "steps"
        }


def test_train_step_cost_counts_flops_and_leaves_the_model_alone() -> None:
    model = _captioned()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = (torch.randn(4, 4, 8, 8), torch.tensor([0, 1, -1, 3]))
    flops, seconds = train_step_cost(model, eps_loss(get_schedule("linear", 1000)), batch)
    assert flops > 0 and seconds > 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_shapes_latent_ddpm_refuses_bad_p_uncond() -> None:
    with pytest.raises(ValueError, match="p_uncond"):
        shapes_latent_ddpm(profile("ci"), None, captions=True, p_uncond=1.0)
