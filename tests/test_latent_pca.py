"""Chapter 10's controlled case: the exact PCA first stage, a scaled latent, and training."""

from __future__ import annotations

import pytest
import torch

from diffnotes.analytic import GaussianMixture
from diffnotes.data import digits
from diffnotes.latent_pca import (
    Space,
    digit_mixture,
    pixel_and_latent,
    sample,
    step_flops,
    train_snapshots,
)
from diffnotes.schedules import linear_schedule

SCHEDULE = linear_schedule(1000)


@pytest.fixture(scope="module")
def spaces() -> tuple[Space, Space]:
    return pixel_and_latent(digit_mixture(), 16)


def test_digit_mixture_is_the_class_means_and_mean_variances() -> None:
    mixture = digit_mixture()
    x, y = digits(8, "all")
    threes = x[y == 3].flatten(1).double()
    torch.testing.assert_close(mixture.means[3], threes.mean(0))
    torch.testing.assert_close(mixture.covs[3], threes.var(0).mean())
    torch.testing.assert_close(mixture.weights[3], torch.tensor(len(threes) / len(y)).double())


def test_latent_is_scaled_to_unit_std_and_decodes_back(spaces) -> None:
    pixel, latent = spaces
    x = digit_mixture().sample(20_000, generator=torch.Generator().manual_seed(1))
    z = latent.encode(x)
    assert z.shape == (20_000, 16) and pixel.encode(x) is x
    torch.testing.assert_close(z.std().item(), 1.0, atol=0.02, rtol=0)
    # D(E(x)) is the projection onto the top 16 axes: decoding z / scale, not z
    stage = latent.stage
    torch.testing.assert_close(latent.decode(z), stage.decode(stage.encode(x)))
    assert latent.scale > 1.2  # the raw latents have std 1 / 1.23: the rescale is real


def test_sample_with_the_exact_latent_model_hits_the_class_mean(spaces) -> None:
    _, latent = spaces
    exact = latent.stage.latent_mixture()
    s = latent.scale  # the model lives on the scaled latents: means x s, variances x s^2
    scaled = GaussianMixture(exact.weights, exact.means * s, exact.covs * s**2)
    labels = torch.full((2000,), 3)
    x = sample(scaled.cond_eps_model(SCHEDULE), latent, SCHEDULE, labels, 0.0, steps=100)
    stage = latent.stage
    expected = stage.decode(stage.encode(digit_mixture().means[3:4]))[0]
    # per-pixel std at most sqrt(var_3) ~ 0.5 over 2,000 samples: 3 standard errors ~ 0.035
    torch.testing.assert_close(x.mean(0), expected, atol=0.04, rtol=0)
    far = stage.decode(stage.encode(digit_mixture().means[8:9]))[0]
    assert (x.mean(0) - far).abs().max() > 0.3  # a wrong class would be far off


def test_snapshots_continue_one_run(spaces) -> None:
    _, latent = spaces
    kw = dict(hidden=16, depth=1, batch_size=8, seed=3)
    two = train_snapshots(latent, SCHEDULE, [2, 5], **kw)
    one = train_snapshots(latent, SCHEDULE, [5], **kw)
    assert list(two) == [2, 5]
    for a, b in zip(two[5].parameters(), one[5].parameters()):
        torch.testing.assert_close(a, b)
    assert any((a - b).abs().max() > 0 for a, b in zip(two[2].parameters(), two[5].parameters()))


def test_latent_steps_cost_fewer_flops(spaces) -> None:
    pixel, latent = spaces
    # one Linear in (64 or 16 -> h) and one out (h -> 64 or 16) differ; the trunk is shared
    assert step_flops(latent, hidden=64, depth=1) < step_flops(pixel, hidden=64, depth=1)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(checkpoints=[]), "checkpoints must be step counts"),
        (dict(checkpoints=[0, 3]), "checkpoints must be step counts"),
        (dict(checkpoints=[3, 2]), "strictly increasing"),
        (dict(checkpoints=[2], p_uncond=0.0), "p_uncond"),
        (dict(checkpoints=[2], lr=float("nan")), "lr"),
    ],
)
def test_train_snapshots_refuses_bad_arguments(spaces, kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        train_snapshots(spaces[1], SCHEDULE, **kw)


@pytest.mark.parametrize(
    "labels, w, match",
    [
        (torch.tensor([3, 10]), 0.0, "labels must be class indices"),
        (torch.tensor([3.0]), 0.0, "labels must be a 1-D tensor"),
        (torch.tensor([3]), -1.0, "w must be"),
        (torch.tensor([3]), float("nan"), "w must be"),
    ],
)
def test_sample_refuses_bad_arguments(spaces, labels, w, match) -> None:
    with pytest.raises(ValueError, match=match):
        sample(lambda x, t, y: x, spaces[1], SCHEDULE, labels, w)


def test_pixel_and_latent_refuses_a_bad_d() -> None:
    with pytest.raises(ValueError, match="d must be an int in 1..64"):
        pixel_and_latent(digit_mixture(), 65)


def test_pixel_samples_clip_x0_and_latent_samples_do_not(spaces) -> None:
    pixel, latent = spaces
    labels = torch.tensor([1, 2, 3])

    def wild(x, t, y):  # an untrained model: eps far from any image's
        return -5.0 * torch.ones_like(x)

    x = sample(wild, pixel, SCHEDULE, labels, 0.0, steps=5)
    assert x.abs().max() <= 1.0 + 1e-6
    assert sample(wild, latent, SCHEDULE, labels, 0.0, steps=5).abs().max() > 1.5
