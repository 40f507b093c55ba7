"""Losses: identities against the VLB terms, exact-model optima, label dropout, bad input."""

import math

import pytest
import torch
from torch.testing import assert_close

from diffnotes import likelihood, losses
from diffnotes.data import digits
from diffnotes.forward import q_sample
from diffnotes.models.unet import UNet, UNetConfig
from diffnotes.schedules import linear_schedule, respace
from diffnotes.sde import VPSDE
from diffnotes.train import train

S2 = 0.25  # data variance of the Gaussian toy: x0 ~ N(0, S2 I), so eps and score are exact
SCHED = linear_schedule(1000)


def gaussian_eps(schedule):
    def model(x, t, y=None):
        ab = schedule.alphas_cumprod[t.cpu()].to(x.dtype).view(-1, *[1] * (x.ndim - 1))
        return (1 - ab).sqrt() * x / (ab * S2 + 1 - ab)  # E[eps | x_t] for Gaussian data

    return model


def gaussian_x0(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64) * math.sqrt(S2)).clamp(-1, 1)


def test_vlb_weighting_matches_the_kl_terms():
    """Ho et al. eq. 12: with sigma_t^2 = beta_t, KL differences are the weighted eps errors."""
    x0 = gaussian_x0()
    B = x0.shape[0]
    t = torch.randint(1, 1000, (B,), generator=torch.Generator().manual_seed(1))
    eps = torch.randn(x0.shape, dtype=x0.dtype, generator=torch.Generator().manual_seed(2))
    x_t = q_sample(SCHED, x0, t, eps)
    e_a, e_b = eps + 0.1 * torch.randn_like(eps), eps - 0.3 * torch.randn_like(eps)
    kl = []
    for e in (e_a, e_b):
        mean, logvar = likelihood.p_mean_logvar(SCHED, x_t, t, e, None, "large", False)
        kl.append(likelihood.vb_term(SCHED, x0, x_t, t, mean, logvar, 256) * math.log(2.0))
    beta, ab = SCHED.betas[t], SCHED.alphas_cumprod[t]
    w = beta / (2 * (1 - beta) * (1 - ab))
    mse = [((eps - e) ** 2).flatten(1).mean(1) for e in (e_a, e_b)]
    assert_close(kl[0] - kl[1], w * (mse[0] - mse[1]), rtol=1e-6, atol=1e-9)


def test_eps_loss_reproduces_by_hand():
    x0 = gaussian_x0().float()
    model = lambda x, t: 0.5 * x  # noqa: E731
    for weighting in ("simple", "vlb"):
        loss = losses.eps_loss(SCHED, weighting)(model, x0, torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        t = torch.randint(1000, (16,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        ab = SCHED.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        per = ((eps - 0.5 * x_t) ** 2).flatten(1).mean(1)
        if weighting == "vlb":
            w = SCHED.betas / (2 * (1 - SCHED.betas) * (1 - SCHED.alphas_cumprod))
            per = per * (w / w.mean())[t].float()
        assert_close(loss, per.mean())


def test_vlb_bits_per_dim_bounds_the_exact_nll():
    x0 = gaussian_x0(128)
    sched = linear_schedule(100, 1e-3, 0.2)  # a short chain keeps the test fast; any T is a bound
    nll = (0.5 * x0**2 / S2 + 0.5 * math.log(2 * math.pi * S2)) / math.log(2) - math.log2(2 / 255)
    nll = nll.flatten(1).mean(1)
    model = gaussian_eps(sched)
    out = {}
    for variance in ("small", "large"):
        g = torch.Generator().manual_seed(0)
        out[variance] = losses.vlb_bits_per_dim(model, sched, x0, variance=variance, generator=g)
        # one x_t per t: a Monte Carlo estimate of the bound, so allow 3 standard errors
        se = (out[variance] - nll).std() / math.sqrt(len(x0))
        assert (out[variance] - nll).mean() > -3 * se
    assert (out["large"] - nll).mean() < 0.3  # exact eps: a tight bound
    # a learned-variance model at v = -1 / +1 is the small / large fixed variance
    for v, variance in ((-1.0, "small"), (1.0, "large")):
        lv = lambda x, t, v=v: torch.cat([model(x, t), torch.full_like(x, v)], 1)  # noqa: E731
        got = losses.vlb_bits_per_dim(lv, sched, x0, generator=torch.Generator().manual_seed(0))
        assert_close(got, out[variance])
    # a respaced chain is a (looser) bound too
    short = respace(sched, list(range(0, 100, 5)))
    r = losses.vlb_bits_per_dim(model, short, x0, generator=torch.Generator(), return_terms=True)
    assert r["terms"].shape == (128, 20) and (r["total"] - nll).mean() > 0.3


def test_hybrid_loss_stops_the_vlb_gradient_at_the_mean():
    x0 = gaussian_x0().float()
    out = torch.zeros(16, 2, 4, 4, requires_grad=True)

    def model(x, t):
        return out * 1.0

    grads = {}
    for lam in (0.0, 1e-3):
        out.grad = None
        loss = losses.hybrid_loss(SCHED, lam)(model, x0, torch.Generator().manual_seed(0))
        loss.backward()
        grads[lam] = out.grad.clone()
    assert_close(grads[1e-3][:, :1], grads[0.0][:, :1])  # L_vlb does not train eps
    assert grads[1e-3][:, 1:].abs().sum() > 0 and grads[0.0][:, 1:].abs().sum() == 0


def test_dsm_and_sde_losses_are_minimised_by_the_exact_model():
    x0 = gaussian_x0(256).float()
    sigmas = torch.tensor([1.0, 0.5, 0.1])
    sde = VPSDE()
    exact = {
        "dsm": lambda x, s: -x / (S2 + s.view(-1, 1, 1, 1) ** 2),
        "sde": lambda x, t: (
            sde.sigma(t).float().view(-1, 1, 1, 1)
            * x
            / (
                sde.alpha_bar(t).float().view(-1, 1, 1, 1) * S2
                + sde.sigma(t).float().view(-1, 1, 1, 1) ** 2
            )
        ),
    }
    for name, loss_fn in (("dsm", losses.dsm_loss(sigmas)), ("sde", losses.sde_loss(sde))):
        vals = [
            loss_fn(
                lambda x, t, c=c, f=exact[name]: c * f(x, t), x0, torch.Generator().manual_seed(0)
            )
            for c in (0.8, 1.0, 1.2)
        ]
        assert vals[1] < vals[0] and vals[1] < vals[2], (name, vals)


def test_label_dropout_passes_the_null_label():
    seen = []

    def model(x, t, y):
        seen.append(y.clone())
        return torch.zeros_like(x)

    x0, y = torch.zeros(1000, 1, 2, 2), torch.arange(1000) % 10
    losses.eps_loss(SCHED, p_uncond=0.2)(model, (x0, y), torch.Generator().manual_seed(0))
    dropped = seen[-1] == -1
    assert 0.15 < dropped.float().mean() < 0.25
    assert torch.equal(seen[-1][~dropped], y[~dropped])
    losses.eps_loss(SCHED)(model, (x0, y), torch.Generator())
    assert torch.equal(seen[-1], y)
    # the U-Net reads -1 as its null class
    unet = UNet(
        UNetConfig(image_size=8, num_classes=10, attention_resolutions=(), num_res_blocks=1)
    )
    loss = losses.eps_loss(SCHED, p_uncond=0.5)(
        unet, (torch.zeros(4, 1, 8, 8), y[:4]), torch.Generator()
    )
    assert torch.isfinite(loss)


def test_eps_loss_goes_down_on_digits():
    x0, _ = digits(8, "all")
    model = UNet(
        UNetConfig(
            image_size=8, base_channels=16, num_res_blocks=1, attention_resolutions=(), dropout=0.0
        )
    )
    res = train(model, losses.eps_loss(SCHED), x0, steps=60, batch_size=32, lr=2e-3, progress=False)
    first, last = sum(res.losses[:10]) / 10, sum(res.losses[-10:]) / 10
    print(f"eps_loss on digits 8x8: {first:.3f} -> {last:.3f}")
    assert last < 0.6 * first


def test_bad_input():
    with pytest.raises(ValueError, match="weighting"):
        losses.eps_loss(SCHED, "snr")
    with pytest.raises(ValueError, match="p_uncond"):
        losses.eps_loss(SCHED, p_uncond=1.5)
    with pytest.raises(ValueError, match="schedule"):
        losses.eps_loss(VPSDE())
    with pytest.raises(ValueError, match="sigmas"):
        losses.dsm_loss(torch.tensor([1.0, -0.1]))
    with pytest.raises(ValueError, match="sde"):
        losses.sde_loss(SCHED)
    g = torch.Generator()
    x0 = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="model output"):
        losses.eps_loss(SCHED)(lambda x, t: x[:, :, :4], x0, g)
    with pytest.raises(ValueError, match="learned-variance"):
        losses.hybrid_loss(SCHED)(lambda x, t: x, x0, g)
    with pytest.raises(ValueError, match="labels y"):
        losses.eps_loss(SCHED)(lambda x, t, y: x, (x0, torch.zeros(3, dtype=torch.long)), g)
    with pytest.raises(ValueError, match="x0"):
        losses.eps_loss(SCHED)(lambda x, t: x, torch.zeros(0, 1, 8, 8), g)
    with pytest.raises(ValueError, match="variance"):
        losses.vlb_bits_per_dim(lambda x, t: x, SCHED, x0, variance="fixed")
