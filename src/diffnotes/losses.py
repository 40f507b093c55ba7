"""Training losses as small factories: each returns ``loss_fn(model, batch, generator) -> scalar``.

A batch is a tensor x0, or a tuple (x0, y) for a class-conditional model, which is then called
``model(x_t, t, y)``. With ``p_uncond > 0`` each label is replaced by ``null_label`` (default -1)
with that probability, so one network learns both eps(x, y) and eps(x) for classifier-free guidance
(Ho & Salimans 2022). ``y = None`` cannot drop single samples, hence the per-sample null value:
the model must read ``y == null_label`` as "no class" (the U-Net maps negative labels and None to
its null class). Noise is drawn on the generator's device and moved to x0's.

The VLB itself (`vlb_bits_per_dim`, `normal_kl`) lives with the other likelihoods in
`diffnotes.likelihood`; both names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from diffnotes.forward import noise_like, q_sample
from diffnotes.likelihood import (
    normal_kl,
    p_mean_logvar,
    vb_term,
    vlb_bits_per_dim,
)
from diffnotes.schedules import DiscreteSchedule, check_schedule, expand_as
from diffnotes.sde import SDE, check_sde
from diffnotes.util import (
    call_model,
    check_choice,
    check_in,
    check_model_output,
    check_number,
    mean_flat,
    split_batch,
)

__all__ = ["eps_loss", "hybrid_loss", "dsm_loss", "sde_loss", "vlb_bits_per_dim", "normal_kl"]

LossFn = Callable[[nn.Module, Tensor | tuple, torch.Generator], Tensor]
WEIGHTINGS = ("simple", "vlb")


# ---------------------------------------------------------------------------------------------
# helpers


def _drop_labels(y: Tensor | None, p: float, null: int, g: torch.Generator) -> Tensor | None:
    if y is None or p == 0.0:
        return y
    drop = torch.rand(y.shape, generator=g, device=g.device).to(y.device) < p
    return torch.where(drop, torch.full_like(y, null), y)


def _noise_and_predict(
    schedule: DiscreteSchedule,
    model: Callable,
    batch: Tensor | tuple,
    generator: torch.Generator,
    p_uncond: float,
    null_label: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Algorithm 1's first lines: t ~ U{0..T-1}, eps ~ N(0, I), x_t by eq. 4, the model's output.

    Returns (x0, t, eps, x_t, model output); labels are dropped with p_uncond for CFG training.
    """
    x0, y = split_batch(batch)
    t = torch.randint(schedule.T, (x0.shape[0],), generator=generator, device=generator.device)
    t = t.cpu()
    eps = noise_like(x0, generator)
    y = _drop_labels(y, p_uncond, null_label, generator)
    x_t = q_sample(schedule, x0, t, eps)
    return x0, t, eps, x_t, call_model(model, x_t, schedule.timesteps[t].to(x0.device), y)


# ---------------------------------------------------------------------------------------------
# losses


def eps_loss(
    schedule: DiscreteSchedule,
    weighting: str = "simple",
    *,
    p_uncond: float = 0.0,
    null_label: int = -1,
) -> LossFn:
    """DDPM's eps-prediction loss: L_simple (Ho et al. eq. 14) or the true-VLB weighting (eq. 12).

    'vlb' weights ||eps - eps_theta||^2 by beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) with
    sigma_t^2 = beta_t, i.e. beta_t / (2 alpha_t (1 - alpha_bar_t)); at t = 0 this is the paper's
    Gaussian-density approximation of the decoder. The weights are divided by their mean over t so
    both weightings have the same scale (sum over t = T * that mean); losses are means over dims.
    """
    check_schedule(schedule)
    check_choice(weighting, "weighting", WEIGHTINGS)
    check_in(p_uncond, "p_uncond", 0, 1, "[)")
    weights = schedule.betas / (2 * (1 - schedule.betas) * (1 - schedule.alphas_cumprod))
    weights = weights / weights.mean()

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, t, eps, x_t, out = _noise_and_predict(
            schedule, model, batch, generator, p_uncond, null_label
        )
        check_model_output(out, x0, "eps; use hybrid_loss for learned variance", channels=1)
        mse = mean_flat((eps - out) ** 2)
        if weighting == "vlb":
            mse = mse * weights[t].to(device=mse.device, dtype=mse.dtype)
        return mse.mean()

    return loss_fn


def hybrid_loss(
    schedule: DiscreteSchedule,
    lambda_vlb: float = 1e-3,
    *,
    p_uncond: float = 0.0,
    null_label: int = -1,
    data_bins: int = 256,
) -> LossFn:
    """iDDPM's L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021, eq. 16).

    The model returns (B, 2C, ...): eps, then v in [-1, 1] interpolating the log variance (eq. 15).
    L_vlb = sum_t L_t is estimated as T * L_t at the sampled t, in bits/dim, with a stop-gradient
    on the mean so it trains only the variance (Sec. 3.1); iDDPM's T/1000 factor is lambda * T.
    """
    check_schedule(schedule)
    check_in(p_uncond, "p_uncond", 0, 1, "[)")
    check_number(lambda_vlb, "lambda_vlb", minimum=0.0)
    T = schedule.T

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, t, eps, x_t, out = _noise_and_predict(
            schedule, model, batch, generator, p_uncond, null_label
        )
        check_model_output(out, x0, "eps and v: a learned-variance model", channels=2)
        eps_hat, v = out.chunk(2, dim=1)
        mse = mean_flat((eps - eps_hat) ** 2)
        mean, logvar = p_mean_logvar(schedule, x_t, t, eps_hat.detach(), v, "learned", False)
        vb = vb_term(schedule, x0, x_t, t, mean, logvar, data_bins)
        return (mse + lambda_vlb * T * vb).mean()

    return loss_fn


def dsm_loss(sigmas: Tensor, *, p_uncond: float = 0.0, null_label: int = -1) -> LossFn:
    """NCSN's denoising score matching over noise levels (Song & Ermon 2019, eqs. 5-6).

    sigma ~ U{sigmas}, x~ = x + sigma z; loss = 1/2 lambda(sigma) ||s(x~, sigma) + z / sigma||^2
    with lambda(sigma) = sigma^2, i.e. 1/2 ||sigma s + z||^2, summed over dimensions as in the
    paper and averaged over the batch. The model is a ScoreSigmaModel (x, sigma (B,)) -> score.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sigmas.numel() < 1 or not bool((sigmas > 0).all()) or not bool(sigmas.isfinite().all()):
        raise ValueError("sigmas must be a non-empty sequence of positive finite noise levels")
    check_in(p_uncond, "p_uncond", 0, 1, "[)")

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, y = split_batch(batch)
        i = torch.randint(len(sigmas), (x0.shape[0],), generator=generator, device=generator.device)
        sigma = expand_as(sigmas[i.cpu()], x0)
        z = noise_like(x0, generator)
        y = _drop_labels(y, p_uncond, null_label, generator)
        score = call_model(model, x0 + sigma * z, sigma.flatten(), y)
        check_model_output(score, x0, "score", channels=1)
        return 0.5 * ((sigma * score + z) ** 2).reshape(x0.shape[0], -1).sum(1).mean()

    return loss_fn


def sde_loss(
    sde: SDE, *, t_min: float | None = None, p_uncond: float = 0.0, null_label: int = -1
) -> LossFn:
    """Continuous-time eps matching for an SDE (Song et al. 2021, eq. 7 with lambda = sigma(t)^2).

    t ~ U[t_min, 1] (t_min = sde.eps), x_t = sqrt(alpha_bar(t)) x0 + sigma(t) z, loss = mean
    ||eps_theta(x_t, t) - z||^2: the score -eps/sigma matched with the likelihood-free weighting.
    """
    check_sde(sde)
    t_min = check_in(sde.eps if t_min is None else t_min, "t_min", 0, 1, "[)")
    check_in(p_uncond, "p_uncond", 0, 1, "[)")

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, y = split_batch(batch)
        u = torch.rand(x0.shape[0], generator=generator, device=generator.device)
        t = (t_min + (1.0 - t_min) * u.cpu().double()).clamp(max=1.0)
        z = noise_like(x0, generator)
        y = _drop_labels(y, p_uncond, null_label, generator)
        mean, std = sde.marginal(x0, t)  # p_0t(x_t | x0)
        x_t = mean + std * z
        out = call_model(model, x_t, t.to(device=x0.device, dtype=x0.dtype), y)
        check_model_output(out, x0, "eps", channels=1)
        return mean_flat((out - z) ** 2).mean()

    return loss_fn
