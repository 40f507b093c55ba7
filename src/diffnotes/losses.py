"""Training losses as small factories: each returns ``loss_fn(model, batch, generator) -> scalar``.

A batch is a tensor x0, or a tuple (x0, y) for a class-conditional model, which is then called
``model(x_t, t, y)``. With ``p_uncond > 0`` each label is replaced by ``null_label`` (default -1)
with that probability, so one network learns both eps(x, y) and eps(x) for classifier-free guidance
(Ho & Salimans 2022). ``y = None`` cannot drop single samples, hence the per-sample null value:
the model must read ``y == null_label`` as "no class" (the U-Net maps negative labels and None to
its null class). Noise is drawn on the generator's device and moved to x0's.

Also `vlb_bits_per_dim`, the full DDPM/iDDPM variational bound in bits/dim (Ho et al. eq. 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from diffnotes.forward import VARIANCES, learned_log_variance, noise_like, posterior_coefs, q_sample
from diffnotes.schedules import DiscreteSchedule, expand_as
from diffnotes.sde import SDE
from diffnotes.util import check_choice, check_int, check_number, progress_bar

LossFn = Callable[[nn.Module, Tensor | tuple, torch.Generator], Tensor]
WEIGHTINGS = ("simple", "vlb")


# ---------------------------------------------------------------------------------------------
# helpers


def _split_batch(batch: Tensor | tuple | list) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        x0, y = batch, None
    elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        x0, y = batch[0], (batch[1] if len(batch) == 2 else None)
    else:
        raise ValueError("batch must be a Tensor x0 or a tuple (x0, y)")
    if not isinstance(x0, Tensor) or x0.ndim < 2 or x0.shape[0] == 0 or not x0.is_floating_point():
        raise ValueError(f"batch x0 must be a float Tensor (B, ...) with B >= 1, got {x0!r:.60}")
    if y is not None and (not isinstance(y, Tensor) or y.shape != (x0.shape[0],)):
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"batch labels y must be a Tensor of shape ({x0.shape[0]},), got {shape}")
    return x0, y


def _drop_labels(y: Tensor | None, p: float, null: int, g: torch.Generator) -> Tensor | None:
    if y is None or p == 0.0:
        return y
    drop = torch.rand(y.shape, generator=g, device=g.device).to(y.device) < p
    return torch.where(drop, torch.full_like(y, null), y)


def _call(model: Callable, x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    return model(x_t, t) if y is None else model(x_t, t, y)


def _mean_flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).mean(1)


def _check_p(p_uncond: float) -> None:
    if not check_number(p_uncond, "p_uncond", minimum=0.0) < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond!r}")


def _check_schedule(schedule: DiscreteSchedule) -> None:
    if not isinstance(schedule, DiscreteSchedule):
        raise ValueError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")


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
    x0, y = _split_batch(batch)
    t = torch.randint(schedule.T, (x0.shape[0],), generator=generator, device=generator.device)
    t = t.cpu()
    eps = noise_like(x0, generator)
    y = _drop_labels(y, p_uncond, null_label, generator)
    x_t = q_sample(schedule, x0, t, eps)
    return x0, t, eps, x_t, _call(model, x_t, schedule.timesteps[t].to(x0.device), y)


def _check_out(out: Tensor, x0: Tensor, channels: int, what: str) -> None:
    want = (x0.shape[0], channels * x0.shape[1], *x0.shape[2:])
    if out.shape != want:
        raise ValueError(f"model output must have shape {want} ({what}), got {tuple(out.shape)}")


# ---------------------------------------------------------------------------------------------
# Gaussian terms of the VLB, in nats per element


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return (
        0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp())
        + 0.5 * ((mean1 - mean2) ** 2) * (-logvar2).exp()
    )


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_scale: Tensor, *, data_bins: int = 256
) -> Tensor:
    """log P(x) of data on data_bins levels in [-1, 1] under N(mean, e^{2 log_scale}) (Ho eq. 13).

    Each level owns a bin of width 2 / (data_bins - 1); the end bins extend to -inf and +inf.
    """
    half = 1.0 / (data_bins - 1)
    inv_std = (-log_scale).exp()
    upper, lower = inv_std * (x - mean + half), inv_std * (x - mean - half)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log(1 - Phi(lower))
    log_delta = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12).log()
    return torch.where(
        x < -1.0 + half, log_cdf_upper, torch.where(x > 1.0 - half, log_sf_lower, log_delta)
    )


def _p_mean_logvar(
    schedule: DiscreteSchedule,
    x_t: Tensor,
    t: Tensor,
    eps: Tensor,
    v: Tensor | None,
    variance: str,
    clip_x0: bool,
) -> tuple[Tensor, Tensor]:
    """Mean and log variance of p(x_{t-1} | x_t) from eps (Ho eq. 11) and iDDPM's v (eq. 15)."""
    tc = t.cpu()
    ab = schedule.alphas_cumprod[tc]
    beta = schedule.betas[tc]
    # x0_hat = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
    x0 = (x_t - expand_as((1 - ab).sqrt(), x_t) * eps) / expand_as(ab.sqrt(), x_t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    mean = _posterior_mean(schedule, x0, x_t, tc)
    log_small = schedule.posterior_log_variance_clipped[tc]
    # 'large' is sigma^2 = beta_t, with beta_tilde_1 at t = 0 as in iDDPM (a finite decoder)
    log_large = torch.where(tc == 0, schedule.posterior_log_variance_clipped[0], beta.log())
    if variance == "small":
        logvar = expand_as(log_small, x_t).expand_as(x_t)
    elif variance == "large":
        logvar = expand_as(log_large, x_t).expand_as(x_t)
    else:
        logvar = learned_log_variance(v, expand_as(log_large, x_t), expand_as(log_small, x_t))
    return mean, logvar


def _posterior_mean(schedule: DiscreteSchedule, x0: Tensor, x_t: Tensor, tc: Tensor) -> Tensor:
    """mu_tilde(x_t, x0) of q(x_{t-1} | x_t, x0) with the table's beta_t (Ho et al. eq. 7)."""
    ab, ab_prev = schedule.alphas_cumprod[tc], schedule.alphas_cumprod_prev[tc]
    coef_x0, coef_xt, _, _ = posterior_coefs(ab, ab_prev, schedule.betas[tc])
    return expand_as(coef_x0, x_t) * x0 + expand_as(coef_xt, x_t) * x_t


def _vb_term(
    schedule: DiscreteSchedule,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    mean: Tensor,
    logvar: Tensor,
    data_bins: int,
) -> Tensor:
    """L_t in bits/dim per sample: KL(q(x_{t-1}|x_t,x0) || p) for t > 0, decoder NLL at t = 0."""
    tc = t.cpu()
    true_mean = _posterior_mean(schedule, x0, x_t, tc)
    true_logvar = expand_as(schedule.posterior_log_variance_clipped[tc], x_t)
    kl = _mean_flat(normal_kl(true_mean, true_logvar, mean, logvar)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar, data_bins=data_bins)
    nll = _mean_flat(nll) / math.log(2.0)
    return torch.where(t.to(kl.device) == 0, nll, kl)


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
    _check_schedule(schedule)
    check_choice(weighting, "weighting", WEIGHTINGS)
    _check_p(p_uncond)
    weights = schedule.betas / (2 * (1 - schedule.betas) * (1 - schedule.alphas_cumprod))
    weights = weights / weights.mean()

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, t, eps, x_t, out = _noise_and_predict(
            schedule, model, batch, generator, p_uncond, null_label
        )
        _check_out(out, x0, 1, "eps; use hybrid_loss for learned variance")
        mse = _mean_flat((eps - out) ** 2)
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
    _check_schedule(schedule)
    _check_p(p_uncond)
    check_number(lambda_vlb, "lambda_vlb", minimum=0.0)
    T = schedule.T

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, t, eps, x_t, out = _noise_and_predict(
            schedule, model, batch, generator, p_uncond, null_label
        )
        _check_out(out, x0, 2, "eps and v: a learned-variance model")
        eps_hat, v = out.chunk(2, dim=1)
        mse = _mean_flat((eps - eps_hat) ** 2)
        mean, logvar = _p_mean_logvar(schedule, x_t, t, eps_hat.detach(), v, "learned", False)
        vb = _vb_term(schedule, x0, x_t, t, mean, logvar, data_bins)
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
    _check_p(p_uncond)

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, y = _split_batch(batch)
        i = torch.randint(len(sigmas), (x0.shape[0],), generator=generator, device=generator.device)
        sigma = expand_as(sigmas[i.cpu()], x0)
        z = noise_like(x0, generator)
        y = _drop_labels(y, p_uncond, null_label, generator)
        score = _call(model, x0 + sigma * z, sigma.flatten(), y)
        _check_out(score, x0, 1, "score")
        return 0.5 * ((sigma * score + z) ** 2).reshape(x0.shape[0], -1).sum(1).mean()

    return loss_fn


def sde_loss(
    sde: SDE, *, t_min: float | None = None, p_uncond: float = 0.0, null_label: int = -1
) -> LossFn:
    """Continuous-time eps matching for an SDE (Song et al. 2021, eq. 7 with lambda = sigma(t)^2).

    t ~ U[t_min, 1] (t_min = sde.eps), x_t = sqrt(alpha_bar(t)) x0 + sigma(t) z, loss = mean
    ||eps_theta(x_t, t) - z||^2: the score -eps/sigma matched with the likelihood-free weighting.
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a VPSDE, SubVPSDE or VESDE, got {type(sde).__name__}")
    t_min = float(getattr(sde, "eps", 1e-3) if t_min is None else t_min)
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must be in [0, 1), got {t_min!r}")
    _check_p(p_uncond)

    def loss_fn(model: Callable, batch: Tensor | tuple, generator: torch.Generator) -> Tensor:
        x0, y = _split_batch(batch)
        u = torch.rand(x0.shape[0], generator=generator, device=generator.device)
        t = (t_min + (1.0 - t_min) * u.cpu().double()).clamp(max=1.0)
        z = noise_like(x0, generator)
        y = _drop_labels(y, p_uncond, null_label, generator)
        x_t = expand_as(sde.alpha_bar(t).sqrt(), x0) * x0 + expand_as(sde.sigma(t), x0) * z
        out = _call(model, x_t, t.to(device=x0.device, dtype=x0.dtype), y)
        _check_out(out, x0, 1, "eps")
        return _mean_flat((out - z) ** 2).mean()

    return loss_fn


# ---------------------------------------------------------------------------------------------
# the bound itself


@torch.no_grad()
def vlb_bits_per_dim(
    model: Callable,
    schedule: DiscreteSchedule,
    x0: Tensor,
    *,
    y: Tensor | None = None,
    variance: str | None = None,
    clip_x0: bool = True,
    data_bins: int = 256,
    generator: torch.Generator | None = None,
    return_terms: bool = False,
    progress: bool = False,
) -> Tensor | dict[str, Tensor]:
    """The variational bound -log p(x0) <= L_T + sum_t L_t in bits/dim per sample (Ho et al. eq. 5).

    Every term, as in iDDPM's calc_bpd_loop: L_T = KL(q(x_T|x0) || N(0, I)), L_t the Gaussian KL
    for t > 0 and the discretized decoder NLL at t = 0, each at a fresh x_t ~ q(x_t | x0).
    ``variance``: 'small' (beta_tilde), 'large' (beta) or 'learned' (a (B, 2C, ...) model);
    None picks 'learned' when the model returns 2C channels, else 'small'. A respaced schedule
    gives the bound of the shorter chain, with the model called at `schedule.timesteps`.
    With return_terms, returns dict(total (B,), prior (B,), terms (B, T)).
    """
    _check_schedule(schedule)
    x0, y = _split_batch(x0 if y is None else (x0, y))
    if variance is not None:
        check_choice(variance, "variance", VARIANCES)
    check_int(data_bins, "data_bins", 2)
    B, T = x0.shape[0], schedule.T
    terms = torch.zeros(B, T, dtype=torch.float64)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    for i in progress_bar(range(T - 1, -1, -1), "vlb", progress):
        t = torch.full((B,), i, dtype=torch.long)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=gen_device)
        eps = eps.to(x0.device)
        x_t = q_sample(schedule, x0, t, eps)
        out = _call(model, x_t, schedule.timesteps[t].to(x0.device), y)
        kind = variance or ("learned" if out.shape[1] == 2 * x0.shape[1] else "small")
        _check_out(out, x0, 2 if kind == "learned" else 1, f"variance={kind!r}")
        eps_hat, v = out.chunk(2, dim=1) if kind == "learned" else (out, None)
        mean, logvar = _p_mean_logvar(schedule, x_t, t, eps_hat, v, kind, clip_x0)
        terms[:, i] = _vb_term(schedule, x0, x_t, t, mean, logvar, data_bins).double().cpu()
    # L_T = KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)): nearly 0 for a good schedule
    ab_T = schedule.alphas_cumprod[-1]
    x = x0.double().cpu()
    prior_mean = ab_T.sqrt() * x
    prior_logvar = torch.log1p(-ab_T).expand_as(x)
    prior = _mean_flat(
        normal_kl(prior_mean, prior_logvar, torch.zeros_like(x), torch.zeros_like(x))
    )
    prior = prior / math.log(2.0)
    total = terms.sum(1) + prior
    if return_terms:
        return dict(total=total, prior=prior, terms=terms)
    return total
