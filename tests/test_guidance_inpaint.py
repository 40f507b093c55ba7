"""Guidance wrappers (CFG conventions, classifier guidance) and inpainting (RePaint, replace)."""

import pytest
import torch
from torch.testing import assert_close

from diffnotes.guidance import classifier_free, classifier_grad, classifier_guidance
from diffnotes.inpaint import jump_schedule, repaint, replace_inpaint
from diffnotes.samplers import ddim
from diffnotes.schedules import linear_schedule, spaced_steps

S = linear_schedule(1000)
MEANS = torch.tensor([[-1.0, 0.5], [2.0, -0.5]], dtype=torch.float64)


def cond_model(x, t, y):
    """Exact eps of N(mu_y, 0.3^2 I) per class; y=None: the data N(0, I)."""
    ab = S.alpha_bar(t)[:, None]
    if y is None:
        return (1 - ab).sqrt() * x
    mu = MEANS[y]
    return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * 0.09 + 1 - ab)


def test_cfg_w0_is_the_conditional_model_and_conventions_agree():
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([0, 10, 100, 500, 900, 999])
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    assert_close(classifier_free(cond_model, y, w=0.0)(x, t), cond_model(x, t, y), rtol=0, atol=0)
    assert_close(classifier_free(cond_model, y, guidance_scale=1.0)(x, t), cond_model(x, t, y))
    eps_c, eps_u = cond_model(x, t, y), cond_model(x, t, None)
    for w in (0.5, 3.0, -0.5):
        ho = classifier_free(cond_model, y, w=w)(x, t)
        assert_close(ho, (1 + w) * eps_c - w * eps_u)  # Ho & Salimans eq. 6
        diff = classifier_free(cond_model, y, guidance_scale=1 + w)(x, t)
        assert_close(diff, eps_u + (1 + w) * (eps_c - eps_u))  # diffusers' form
        assert_close(ho, diff)
    # as a model inside a sampler: w = 0 samples the conditional model
    x_T, ts = torch.randn(6, 2, dtype=torch.float64), spaced_steps(1000, 10)
    cond_only = ddim(lambda x, t: cond_model(x, t, y), S, ts, x_T)
    assert_close(ddim(classifier_free(cond_model, y, w=0.0), S, ts, x_T), cond_only)


def test_cfg_bad_input():
    with pytest.raises(ValueError, match="w"):
        classifier_free(cond_model, 0, w=float("nan"))
    with pytest.raises(ValueError, match="guidance_scale"):
        classifier_free(cond_model, 0, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="exactly one"):
        classifier_free(cond_model, 0, w=1.0, guidance_scale=2.0)
    with pytest.raises(ValueError, match="exactly one"):
        classifier_free(cond_model, 0)


def test_classifier_guidance_is_alg2_with_autograd_gradient():
    W = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]], dtype=torch.float64)
    classifier = lambda x, t: x @ W.T  # noqa: E731 linear logits, 3 classes
    grad_fn = classifier_grad(classifier)
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([5, 50, 500, 999])
    y = torch.tensor([0, 2, 1, 0])
    # grad_x log softmax_y = W_y - sum_k p_k W_k
    p = torch.softmax(x @ W.T, dim=-1)
    want_grad = W[y] - p @ W
    assert_close(grad_fn(x, t, y), want_grad)
    uncond = lambda x, t: cond_model(x, t, None)  # noqa: E731
    guided = classifier_guidance(uncond, grad_fn, S, 2.5, y)
    sigma = S.sigma(t)[:, None]
    assert_close(guided(x, t), uncond(x, t) - 2.5 * sigma * want_grad)
    assert_close(classifier_guidance(uncond, grad_fn, S, 0.0, y)(x, t), uncond(x, t))
    with pytest.raises(ValueError, match="s must"):
        classifier_guidance(uncond, grad_fn, S, float("nan"), y)


@pytest.mark.parametrize(
    "T,jl,jn", [(250, 10, 10), (100, 5, 3), (30, 10, 2), (20, 3, 1), (7, 10, 5)]
)
def test_jump_schedule_structure(T, jl, jn):
    times = jump_schedule(T, jl, jn)
    assert times[0] == T - 1 and times[-1] == -1
    assert all(abs(a - b) == 1 for a, b in zip(times[:-1], times[1:]))
    assert min(times) == -1 and max(times) == T - 1
    n_up = sum(b > a for a, b in zip(times[:-1], times[1:]))
    assert n_up == (jn - 1) * jl * len(range(0, T - jl, jl))
    assert len(times) == T + 2 * n_up + 1


@pytest.mark.parametrize("T,jl,jn", [(250, 10, 10), (100, 5, 3), (40, 10, 2)])
def test_jump_schedule_matches_diffusers_repaint(T, jl, jn):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.RePaintScheduler(num_train_timesteps=T)
    sched.set_timesteps(T, jump_length=jl, jump_n_sample=jn)
    assert jump_schedule(T, jl, jn)[:-1] == sched.timesteps.tolist()


RHO = 0.95  # data N(0, [[1, rho], [rho, 1]]): x2 | x1 ~ N(rho x1, 1 - rho^2)


def correlated_model(x, t):
    """Exact eps: sqrt(1 - ab) Sigma_t^{-1} x_t, Sigma_t = [[1, b], [b, 1]], b = ab rho."""
    b = (S.alpha_bar(t) * RHO)[:, None]
    inv = (x - b * x.flip(-1)) / (1 - b**2)
    return (1 - S.alpha_bar(t))[:, None].sqrt() * inv


def test_repaint_keeps_known_region_and_beats_replacement():
    n = 2000
    x_known = torch.zeros(n, 2, dtype=torch.float64)
    x_known[:, 0] = 1.0
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keep = x_T.clone()
    ts = spaced_steps(1000, 50)
    g = torch.Generator().manual_seed(1)
    got = repaint(
        correlated_model, S, x_known, mask, x_T, ts=ts, jump_length=5, jump_n_sample=5, generator=g
    )
    naive = replace_inpaint(correlated_model, S, x_known, mask, x_T, ts=ts, generator=g)
    assert_close(x_T, keep, rtol=0, atol=0)
    assert_close(got[:, 0], x_known[:, 0], rtol=0, atol=0)
    assert_close(naive[:, 0], x_known[:, 0], rtol=0, atol=0)
    # the exact conditional of the missing coordinate is N(0.95, 0.0975)
    err = lambda x: abs(x[:, 1].mean() - RHO) + abs(x[:, 1].std() - (1 - RHO**2) ** 0.5)  # noqa: E731
    assert err(got) < 0.1 and err(got) < 0.5 * err(naive)


def test_repaint_on_images_with_broadcast_mask():
    def model(x, t):
        return (1 - S.alpha_bar(t)).sqrt().reshape(-1, 1, 1, 1) * x

    x_known = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    mask[..., :2] = 1.0
    x_T = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    out = repaint(
        model,
        S,
        x_known,
        mask,
        x_T,
        ts=spaced_steps(1000, 10),
        jump_length=2,
        jump_n_sample=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == x_known.shape
    assert_close(out[..., :2], x_known[..., :2], rtol=0, atol=0)


def test_inpaint_bad_input():
    x = torch.zeros(2, 3, 4, 4)
    model = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="mask"):
        repaint(model, S, x, torch.ones(2, 3, 5, 5), x)
    with pytest.raises(ValueError, match="mask"):
        replace_inpaint(model, S, x, torch.ones(3, 1, 4, 4), x)
    with pytest.raises(ValueError, match="mask"):
        repaint(model, S, x, torch.full((4, 4), 2.0), x)
    with pytest.raises(ValueError, match="x_T"):
        repaint(model, S, x, torch.ones(4, 4), x[:1])
    with pytest.raises(ValueError, match="ts"):
        repaint(model, S, x, torch.ones(4, 4), x, ts=[1, 5])
    with pytest.raises(ValueError, match="model"):
        repaint(lambda x, t: x[:, :1], S, x, torch.ones(4, 4), x, ts=[5, 1])
    with pytest.raises(ValueError, match="jump_length"):
        jump_schedule(10, 0, 2)
    with pytest.raises(ValueError, match="T"):
        jump_schedule(0)
