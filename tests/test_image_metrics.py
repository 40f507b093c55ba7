"""Image metrics: the digits classifier, FD-digits floors, shapes adherence, sprites, NLL."""

import math

import pytest
import torch
from torch.testing import assert_close

from diffnotes.data import digits, shapes, sprites
from diffnotes.metrics import digits as md
from diffnotes.metrics import images as mi
from diffnotes.metrics import video as mv
from diffnotes.sde import VPSDE


@pytest.fixture(scope="session")
def classifier(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFNOTES_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield md.digits_classifier()  # trained once here (~20 s), printed with its accuracy
    finally:
        mp.undo()


def test_classifier_accuracy(classifier):
    for size in (8, 16, 32):
        acc = md.digits_test_accuracy(classifier, size)
        print(f"digits classifier, {size}px held-out accuracy: {100 * acc:.1f}%")
        assert acc >= 0.97
    x, y = digits(16, "test")
    assert md.class_accuracy(x, y, classifier=classifier) >= 0.97
    assert md.class_entropy(x, classifier=classifier) > 0.98 * math.log(10)
    assert md.class_entropy(x[y == 3], classifier=classifier) < 0.2


def test_fd_digits_floor_and_noise(classifier):
    floor = md.fd_digits_floor(300, classifier=classifier)
    noise = md.fd_digits(torch.rand(300, 1, 8, 8) * 2 - 1, classifier=classifier)
    blurred = md.fd_digits(digits(8, "test")[0] * 0.3, classifier=classifier)
    print(
        f"FD-digits n=300: real floor {floor:.1f}, x0.3 contrast {blurred:.1f}, noise {noise:.1f}"
    )
    assert floor < 0.05 * noise and 5 * floor < blurred


def test_frechet_distance_identities():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 5, generator=g, dtype=torch.float64)
    assert md.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert md.frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)
    # N(0, I) vs N(0, 4I) in 5-D: 5 * (1 + 4 - 2 * 2) = 5 (up to sampling error)
    assert md.frechet_distance(a, 2 * torch.randn(4000, 5, generator=g)) == pytest.approx(
        5.0, rel=0.15
    )


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_adherence_of_real_data_is_one(size):
    data = shapes(300, size, seed=3)
    assert mi.shapes_adherence(data.images, data.captions) == 1.0
    got = mi.shapes_factors(data.images)
    for name in ("shape", "colour", "background"):
        assert torch.equal(got[name], data.factors[name]), name
    wrong = data.captions[1:] + data.captions[:1]
    assert mi.shapes_adherence(data.images, wrong) < 0.4


def test_sprite_metrics():
    data = sprites(20, frames=8, size=16, seed=0)
    assert mv.sprite_position_error(data.videos, data.positions) < 1e-4
    shifted = torch.roll(data.videos, 1, dims=-1)
    assert mv.sprite_position_error(shifted, data.positions) == pytest.approx(1.0, abs=0.25)
    assert mv.frame_consistency(data.videos) < 1e-6
    flicker = data.videos.clone()
    flicker[:, :, ::2] = -1.0  # every other frame blank
    assert mv.frame_consistency(flicker) > 0.5


def test_nll_bits_per_dim_of_exact_gaussian_model():
    sde, s2 = VPSDE(), 0.25

    def eps(x, t):
        ab, sig = sde.alpha_bar(t).to(x.dtype)[:, None], sde.sigma(t).to(x.dtype)[:, None]
        return sig * x / (ab * s2 + sig**2)  # E[eps | x_t] for x0 ~ N(0, s2 I)

    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    got = mi.nll_bits_per_dim(eps, sde, x0, data_bins=None, exact_divergence=True)
    logp = (-0.5 * x0**2 / s2 - 0.5 * math.log(2 * math.pi * s2)).sum(1)
    assert_close(got, -logp / (2 * math.log(2)), rtol=1e-2, atol=1e-2)


def test_bad_input():
    with pytest.raises(ValueError, match="samples"):
        md.fd_digits(torch.zeros(10, 3, 8, 8))
    with pytest.raises(ValueError, match="n must"):
        md.fd_digits_floor(5000)
    with pytest.raises(ValueError, match="images"):
        mi.shapes_factors(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="captions"):
        mi.shapes_adherence(torch.zeros(2, 3, 32, 32), ["a red circle on a blue background"])
    with pytest.raises(ValueError, match="captions must read"):
        mi.parse_caption("a purple hexagon on a blue background")
    with pytest.raises(ValueError, match="positions"):
        mv.sprite_position_error(torch.zeros(2, 1, 4, 16, 16), torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="videos"):
        mv.frame_consistency(torch.zeros(2, 4, 16, 16))
