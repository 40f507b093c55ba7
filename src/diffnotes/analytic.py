"""An analytic Gaussian mixture: the exact noisy density, score and eps for any schedule.

Under x_t = sqrt(alpha_bar) x0 + sigma eps a mixture of Gaussians stays a mixture:
component k becomes N(sqrt(alpha_bar) mu_k, alpha_bar Sigma_k + sigma^2 I), so every sampler,
likelihood and guidance method can be tested against a "perfect model" with no training.
Only schedule.alpha_bar(t) and schedule.sigma(t) are used: discrete schedules and SDEs both work.
Tables are float64; outputs come back in the dtype and shape of x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from diffnotes.param import CondEpsModel, EpsModel, GradLogP, ScoreSigmaModel
from diffnotes.schedules import NoiseSchedule, Time
from diffnotes.util import check_int

__all__ = ["GaussianMixture", "ring_mixture", "ncsn_toy"]

_F64 = torch.float64
Values = Tensor | Sequence[float] | Sequence[Sequence[float]]  # what torch.as_tensor accepts
Label = int | Tensor  # a component index, or one per sample (B,)


class GaussianMixture:
    """sum_k w_k N(mu_k, Sigma_k) with isotropic (K,) or diagonal (K, D) covariances."""

    def __init__(self, weights: Values, means: Values, covs: Values) -> None:
        w = torch.as_tensor(weights, dtype=_F64).detach().cpu()
        mu = torch.as_tensor(means, dtype=_F64).detach().cpu()
        c = torch.as_tensor(covs, dtype=_F64).detach().cpu()
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"means must have shape (K, D), got {tuple(mu.shape)}")
        K, D = mu.shape
        if w.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},), got {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
            raise ValueError(f"weights must be >= 0 and sum to 1, got sum {float(w.sum())}")
        if not torch.isfinite(mu).all():
            raise ValueError("means must be finite")
        if c.shape not in ((K,), (K, D)):
            raise ValueError(
                f"covs must have shape (K,) isotropic or (K, D) diagonal = ({K},) or ({K}, {D}), "
                f"got {tuple(c.shape)}"
            )
        if not torch.isfinite(c).all() or (c <= 0).any():
            raise ValueError("covs must be finite variances > 0")
        self.weights, self.means, self.covs = w, mu, c
        self.isotropic = c.ndim == 1
        self.variances = c[:, None].expand(K, D) if self.isotropic else c  # (K, D)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        kind = "isotropic" if self.isotropic else "diagonal"
        return f"GaussianMixture(K={self.n_components}, D={self.dim}, {kind})"

    # -- internals ---------------------------------------------------------------------------
    def _flat(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 1:
            raise ValueError("x must be a Tensor of shape (B, ...)")
        if x[0].numel() != self.dim:
            raise ValueError(f"x must have {self.dim} features per sample, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1).to(_F64)

    def _terms(self, xf: Tensor, ab: Tensor, sig: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log w_k N(x; m_k, v_k) (B, K) and m_k / v_k, 1 / v_k (B|1, K, D) of the noisy components.

        With m_k = sqrt(alpha_bar) mu_k and v_k = alpha_bar Sigma_k + sigma^2. A batch at one t
        (every sampler call) shares v_k, and the quadratic form becomes three matmuls.
        """
        if ab.shape[0] > 1 and bool((ab == ab[:1]).all()) and bool((sig == sig[:1]).all()):
            ab, sig = ab[:1], sig[:1]
        mu, var = self.means.to(xf.device), self.variances.to(xf.device)
        m = ab.sqrt()[:, :, None] * mu[None]  # (B|1, K, D)
        v = ab[:, :, None] * var[None] + sig[:, :, None] ** 2  # (B|1, K, D)
        inv = 1.0 / v
        mv = m * inv
        logdet = torch.log(2 * math.pi * v).sum(-1)  # (B|1, K)
        if v.shape[0] == 1:
            # sum_d (x - m)^2 / v = x^2 . (1 / v) - 2 x . (m / v) + m . (m / v)
            quad = (xf**2) @ inv[0].T - 2 * xf @ mv[0].T + (m[0] * mv[0]).sum(-1)
        else:
            quad = ((xf[:, None, :] - m) ** 2 * inv).sum(-1)
        logj = torch.log(self.weights.to(xf.device)) - 0.5 * (quad + logdet)
        return logj, mv, inv

    @staticmethod
    def _avg(r: Tensor, a: Tensor) -> Tensor:
        """sum_k r_k a_k: posterior average of a per-component (B|1, K, D) table -> (B, D)."""
        return r @ a[0] if a.shape[0] == 1 else (r[:, :, None] * a).sum(1)

    def _at(self, x: Tensor, t: Time, schedule: NoiseSchedule) -> tuple[Tensor, ...]:
        """(x as float64 (B, D), alpha_bar, sigma (B|1, 1), then `_terms`) of the mixture at x_t."""
        xf = self._flat(x)
        ab = torch.as_tensor(schedule.alpha_bar(t), dtype=_F64).reshape(-1, 1).to(x.device)
        sig = torch.as_tensor(schedule.sigma(t), dtype=_F64).reshape(-1, 1).to(x.device)
        if ab.shape[0] not in (1, x.shape[0]) or sig.shape != ab.shape:
            raise ValueError(f"t must be a scalar or have shape (B,) = ({x.shape[0]},)")
        return xf, ab, sig, *self._terms(xf, ab, sig)

    def _mixture_score(self, xf: Tensor, logj: Tensor, mv: Tensor, inv: Tensor) -> Tensor:
        r = torch.softmax(logj, -1)
        # grad log p_t = sum_k p(k | x_t) (m_k - x) / v_k
        return self._avg(r, mv) - xf * self._avg(r, inv)

    def _select(self, y: Label, B: int, device: torch.device) -> Tensor:
        y = torch.as_tensor(y, device=device)
        if y.is_floating_point() or y.ndim > 1 or y.numel() not in (1, B):
            raise ValueError(f"y must be an int or a LongTensor of shape (B,) = ({B},)")
        if (y < 0).any() or (y >= self.n_components).any():
            raise ValueError(f"y must be a component index in [0, {self.n_components})")
        return y.reshape(-1).long().expand(B)

    # -- clean distribution ------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        return_labels: bool = False,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Exact samples (n, D): a component by its weight, then its Gaussian."""
        check_int(n, "n", 1)
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=_F64)
        x = (self.means[labels] + self.variances[labels].sqrt() * z).to(dtype)
        return (x, labels) if return_labels else x

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x0) (B,)."""
        xf = self._flat(x)
        one, zero = torch.ones(1, 1, dtype=_F64), torch.zeros(1, 1, dtype=_F64)
        return torch.logsumexp(self._terms(xf, one, zero)[0], -1).to(x.dtype)

    # -- noisy distribution under a schedule -------------------------------------------------
    def noisy(self, schedule: NoiseSchedule, t: Time) -> GaussianMixture:
        """x_t's mixture at one t: means sqrt(alpha_bar) mu_k, covs alpha_bar Sigma_k + sigma^2."""
        ab = torch.as_tensor(schedule.alpha_bar(t), dtype=_F64)
        sig = torch.as_tensor(schedule.sigma(t), dtype=_F64)
        if ab.numel() != 1:
            raise ValueError("t must be a single time for noisy()")
        ab, sig = float(ab), float(sig)
        return GaussianMixture(self.weights, math.sqrt(ab) * self.means, ab * self.covs + sig**2)

    def log_prob_t(self, x: Tensor, t: Time, schedule: NoiseSchedule) -> Tensor:
        """log p_t(x_t) (B,)."""
        return torch.logsumexp(self._at(x, t, schedule)[3], -1).to(x.dtype)

    def class_posterior(self, x: Tensor, t: Time, schedule: NoiseSchedule) -> Tensor:
        """p(y = k | x_t) (B, K): Bayes' rule over the noisy components."""
        return torch.softmax(self._at(x, t, schedule)[3], -1).to(x.dtype)

    def score(self, x: Tensor, t: Time, schedule: NoiseSchedule) -> Tensor:
        """grad_x log p_t(x) = sum_k p(k | x_t) (m_k - x) / v_k."""
        xf, _, _, *terms = self._at(x, t, schedule)
        return self._mixture_score(xf, *terms).reshape(x.shape).to(x.dtype)

    def eps(self, x: Tensor, t: Time, schedule: NoiseSchedule) -> Tensor:
        """The optimal eps-predictor E[eps | x_t] = -sigma(t) score (Tweedie; Ho et al. eq. 11)."""
        xf, _, sig, *terms = self._at(x, t, schedule)
        return (-sig * self._mixture_score(xf, *terms)).reshape(x.shape).to(x.dtype)

    def x0_mean(self, x: Tensor, t: Time, schedule: NoiseSchedule) -> Tensor:
        """E[x0 | x_t] = sum_k p(k | x_t) (mu_k + sqrt(alpha_bar) Sigma_k / v_k (x - m_k))."""
        xf, ab, _, logj, mv, inv = self._at(x, t, schedule)
        r = torch.softmax(logj, -1)
        gain = ab.sqrt()[: inv.shape[0], :, None] * self.variances.to(xf.device)[None] * inv
        x0 = self._avg(r, self.means.to(xf.device)[None] - gain * mv / inv) + xf * self._avg(
            r, gain
        )
        return x0.reshape(x.shape).to(x.dtype)

    def _component_score(self, x: Tensor, t: Time, schedule: NoiseSchedule, y: Label):
        """The score of component y, (m_y - x) / v_y, and `_at`'s terms."""
        terms = xf, _, _, _, mv, inv = self._at(x, t, schedule)
        B = x.shape[0]
        idx, k = torch.arange(B, device=x.device), self._select(y, B, x.device)
        return mv.expand(B, -1, -1)[idx, k] - xf * inv.expand(B, -1, -1)[idx, k], terms

    # -- models of the shared protocols ------------------------------------------------------
    def eps_model(self, schedule: NoiseSchedule) -> EpsModel:
        """EpsModel (x_t, t) -> exact eps under schedule."""
        return lambda x, t: self.eps(x, t, schedule)

    def cond_eps_model(self, schedule: NoiseSchedule) -> CondEpsModel:
        """CondEpsModel (x_t, t, y) -> eps of component y (one class per component); y=None: all."""

        def model(x: Tensor, t: Tensor, y: Label | None = None) -> Tensor:
            if y is None:
                return self.eps(x, t, schedule)
            s_y, (_, _, sig, *_) = self._component_score(x, t, schedule, y)
            return (-sig * s_y).reshape(x.shape).to(x.dtype)

        return model

    def grad_log_class(self, schedule: NoiseSchedule) -> GradLogP:
        """The perfect classifier's gradient grad_x log p(y | x_t) = score_y(x) - score(x)."""

        def grad(x: Tensor, t: Tensor, y: Label) -> Tensor:
            s_y, (xf, _, _, *terms) = self._component_score(x, t, schedule, y)
            return (s_y - self._mixture_score(xf, *terms)).reshape(x.shape).to(x.dtype)

        return grad

    def score_sigma_model(self) -> ScoreSigmaModel:
        """ScoreSigmaModel (x, sigma (B,)) -> score of the mixture plus N(0, sigma^2 I) noise."""
        return lambda x, sigma: self.score(x, sigma, _VENoise())

    def conditional(self, mask: Tensor, x_obs: Values) -> GaussianMixture:
        """p(x_missing | x_observed): the exact inpainting answer on the coords where mask is False.

        Diagonal covariances keep coordinates independent within a component, so only the
        weights change: w_k' proportional to w_k N(x_obs; mu_k,obs, Sigma_k,obs).
        """
        mask = torch.as_tensor(mask)
        if mask.shape != (self.dim,) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool Tensor of shape (D,) = ({self.dim},)")
        if mask.all():
            raise ValueError("mask must leave at least one coordinate missing (False)")
        x_obs = torch.as_tensor(x_obs, dtype=_F64).reshape(-1)
        if x_obs.shape != (self.dim,):
            raise ValueError(f"x_obs must have shape (D,) = ({self.dim},)")
        mu_o, var_o = self.means[:, mask], self.variances[:, mask]
        logn = -0.5 * ((x_obs[mask] - mu_o) ** 2 / var_o + torch.log(2 * math.pi * var_o)).sum(-1)
        w = torch.softmax(torch.log(self.weights) + logn, 0)
        covs = self.covs if self.isotropic else self.covs[:, ~mask]
        return GaussianMixture(w, self.means[:, ~mask], covs)


class _VENoise:
    """x + sigma z: alpha_bar = 1, sigma = the given noise level (for score_sigma_model)."""

    def alpha_bar(self, sigma: Values | float) -> Tensor:
        return torch.ones_like(torch.as_tensor(sigma, dtype=_F64))

    def sigma(self, sigma: Values | float) -> Tensor:
        return torch.as_tensor(sigma, dtype=_F64)


def ring_mixture(
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.05,
    weights: Sequence[float] | Tensor | None = None,
) -> GaussianMixture:
    """n_modes isotropic Gaussians evenly spaced on a circle (the classic 2-D toy)."""
    check_int(n_modes, "n_modes", 1)
    if not (radius >= 0 and std > 0):
        raise ValueError(f"need radius >= 0 and std > 0, got radius={radius}, std={std}")
    angle = 2 * math.pi * torch.arange(n_modes, dtype=_F64) / n_modes
    means = radius * torch.stack([angle.cos(), angle.sin()], 1)
    w = torch.full((n_modes,), 1 / n_modes, dtype=_F64) if weights is None else weights
    return GaussianMixture(w, means, torch.full((n_modes,), std**2, dtype=_F64))


def ncsn_toy() -> GaussianMixture:
    """Song & Ermon (2019) Fig. 3: 0.2 N((-5, -5), I) + 0.8 N((5, 5), I)."""
    return GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0])
