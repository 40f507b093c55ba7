"""The first stage of latent diffusion (Rombach et al. 2022): a linear (PCA) and a KL one.

`PCAStage` is the exact case: a linear encoder keeps a Gaussian mixture with isotropic
components a Gaussian mixture, so the latent model's eps is exact and everything a sample lacks
is the first stage's doing. `shapes_autoencoder` is the book's trained KL-regularised
autoencoder on `shapes` (the recipe pattern of `diffnotes.recipes`: trained once, cached).
`latent_scale` is LDM's ``scale_by_std``: 1 / std of the latents, so z * scale has unit variance.

The compute comparison and the text-conditioned model of chapter 10 live here too: one U-Net
trunk (`trunk`) trained with one budget (`diffusion_budget`) in pixel space
(`shapes_pixel_ddpm`) and in a latent space (`shapes_latent_ddpm`, optionally with captions through
`CaptionedLatentUNet`); FD-shapes, the metric that compares them, is `diffnotes.metrics.shapes`.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import Tensor, nn

from diffnotes.analytic import GaussianMixture
from diffnotes.cache import cached
from diffnotes.losses import eps_loss
from diffnotes.models.autoencoder import Autoencoder, AutoencoderConfig
from diffnotes.models.latent_unet import CaptionEncoder, LatentUNet, LatentUNetConfig
from diffnotes.models.unet import UNet, UNetConfig
from diffnotes.profile import Profile
from diffnotes.recipes import fit_cached
from diffnotes.schedules import DiscreteSchedule, get_schedule
from diffnotes.train import train
from diffnotes.util import check_in, check_instance, check_int

__all__ = [
    "CAPTIONS",
    "CaptionedLatentUNet",
    "PCAStage",
    "autoencoder_config",
    "diffusion_budget",
    "latent_scale",
    "shapes_autoencoder",
    "shapes_latent_ddpm",
    "shapes_pixel_ddpm",
    "train_step_cost",
    "trunk",
]

FACTORS = (2, 4, 8)


class PCAStage:
    """E(x) = U_d^T (x - m), D(z) = U_d z + m: the top-d principal axes of a mixture's covariance.

    For a mixture of isotropic Gaussians N(mu_k, s_k^2 I), E pushes it forward to the mixture
    N(U_d^T (mu_k - m), s_k^2 I_d): `latent_mixture` is that exact latent distribution.
    """

    def __init__(self, mixture: GaussianMixture, d: int) -> None:
        if not isinstance(mixture, GaussianMixture) or not mixture.isotropic:
            raise ValueError("mixture must be a GaussianMixture with isotropic covariances (K,)")
        if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= mixture.dim:
            raise ValueError(f"d must be an int in 1..{mixture.dim}, got {d!r}")
        w, mu, var = mixture.weights, mixture.means, mixture.covs
        self.mixture, self.d = mixture, d
        self.mean = (w[:, None] * mu).sum(0)  # (D,)
        centred = mu - self.mean
        cov = torch.diag((w * var).sum().expand(mixture.dim)) + (w[:, None] * centred).T @ centred
        evals, vecs = torch.linalg.eigh(cov)  # ascending
        self.U = vecs.flip(1)[:, :d]  # (D, d), the top-d axes
        self.explained = float(evals.flip(0)[:d].sum() / evals.sum())

    def encode(self, x: Tensor) -> Tensor:
        """z (B, d) of x (B, D)."""
        if not isinstance(x, Tensor) or x.ndim < 2 or x[0].numel() != self.mixture.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.mixture.dim}), got {got}")
        return (x.reshape(x.shape[0], -1).double() - self.mean) @ self.U

    def decode(self, z: Tensor) -> Tensor:
        """x (B, D) of z (B, d)."""
        if z.ndim != 2 or z.shape[1] != self.d:
            raise ValueError(f"z must have shape (B, {self.d}), got {tuple(z.shape)}")
        return z.double() @ self.U.T + self.mean

    def latent_mixture(self) -> GaussianMixture:
        """The exact distribution of E(x) for x ~ mixture."""
        m = self.mixture
        return GaussianMixture(m.weights, (m.means - self.mean) @ self.U, m.covs)


def latent_scale(z: Tensor) -> float:
    """LDM's scale_by_std: 1 / std of a batch of latents (SD 1.x: 0.18215, SDXL: 0.13025)."""
    if not isinstance(z, Tensor) or z.numel() < 2 or not bool(torch.isfinite(z).all()):
        raise ValueError("z must be a finite tensor of latents with at least 2 entries")
    std = z.detach().float().std()
    if float(std) == 0:  # 1 / 0: every latent scaled to inf
        raise ValueError("z must vary (its std is 0, so 1 / std would be inf)")
    return float(1.0 / std)


def autoencoder_config(profile: Profile, factor: int = 4, latent_channels: int = 4):
    """The shapes autoencoder at downsampling ``factor`` (2, 4, 8) for this profile."""
    _profile(profile)
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}")
    check_int(latent_channels, "latent_channels", 1)
    levels = {2: 2, 4: 3, 8: 4}[factor]
    base = profile.pick(ci=8, book=8, gpu=64)
    mults = (1, 2, 2, 2)[:levels]
    return AutoencoderConfig(
        image_size=32,
        base_channels=base,
        channel_mults=mults,
        num_groups=1,  # one group: with one channel per group GroupNorm erases a flat colour
        latent_channels=latent_channels,
        kl_weight=1e-6,  # LDM's KL weight (App. G)
    )


def shapes_autoencoder(
    profile: Profile, *, factor: int = 4, latent_channels: int = 4, seed: int | None = None
) -> nn.Module:
    """KL-regularised autoencoder on 32x32 `shapes` (Rombach et al. Sec. 3.1): x -> z -> x_hat.

    Reconstruction MSE + 1e-6 KL, no perceptual or adversarial loss; trained on 2,048 shapes
    (seed 0 data; ``seed``, default ``profile.seed``, sets the weights and batches). Returns the
    EMA model in eval mode on ``profile.device``.
    """
    seed = _profile(profile).seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (or None for the profile's), got {seed!r}")
    cfg = autoencoder_config(profile, factor, latent_channels)
    hp = profile.pick(
        ci=dict(steps=300, batch_size=16, lr=1e-3),
        book=dict(steps=600, batch_size=16, lr=1e-3),
        gpu=dict(steps=20000, batch_size=64, lr=4.5e-6 * 64),
    )
    config = dict(data="shapes32/2048", ae=asdict(cfg), seed=seed, **hp)

    def build() -> nn.Module:
        return Autoencoder(cfg).to(profile.device)

    def fit(model: nn.Module) -> nn.Module:
        from diffnotes.data import shapes

        x = shapes(2048, 32, seed=0).images.to(profile.device)

        def loss(m: nn.Module, batch: Tensor, g: torch.Generator) -> Tensor:
            return m.loss(batch, g)

        return train(model, loss, x, seed=seed, progress=profile.progress, **hp).ema

    model = cached(
        f"latent/shapes_autoencoder_f{factor}_c{latent_channels}",
        config,
        build,
        fit,
        profile=profile.name,
        seed=seed,
    )
    model.requires_grad_(False)
    return model


def _profile(profile: Profile) -> Profile:
    return check_instance(profile, "profile", Profile, "a Profile (diffnotes.profile())")


# -- pixel against latent diffusion at one budget ---------------------------------------------
def trunk(profile: Profile) -> dict:
    """The U-Net trunk shared by the pixel and the latent models (attention at the lowest level)."""
    _profile(profile)
    return dict(
        base_channels=profile.pick(ci=8, book=16, gpu=64),
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        num_groups=8,
    )


SCHEDULE = "scaled_linear"  # LDM's betas: 0.00085 to 0.012, linear in sqrt(beta)
# a pixel step costs about 5 latent steps on a CPU (chapter 10 prints both); 4 keeps the latent
# model's training time at or below the pixel model's
LATENT_STEPS_PER_PIXEL_STEP = 4


def diffusion_budget(profile: Profile, *, latent: bool = False) -> dict:
    """The training budget (AdamW steps, batch, lr) of the pixel model, or of a latent one.

    A latent model gets `LATENT_STEPS_PER_PIXEL_STEP` times the pixel model's steps, a fixed
    number (deterministic) that keeps its training time at or below the pixel model's on a CPU.
    """
    budget = _profile(profile).pick(
        ci=dict(steps=60, batch_size=32, lr=2e-3),
        book=dict(steps=300, batch_size=32, lr=2e-3),
        gpu=dict(steps=20000, batch_size=64, lr=2e-4),
    )
    if latent:
        budget["steps"] *= LATENT_STEPS_PER_PIXEL_STEP
    return budget


def _train_shapes(n: int = 2048) -> Tensor:
    from diffnotes.data import shapes

    return shapes(n, 32, seed=0).images  # the autoencoder's training set


def shapes_pixel_ddpm(
    profile: Profile, *, seed: int | None = None
) -> tuple[nn.Module, DiscreteSchedule]:
    """DDPM in pixel space on 32x32 `shapes` (f = 1): the `trunk` U-Net, L_simple, T = 1000.

    LDM's schedule (`SCHEDULE`) for both spaces; trained with `diffusion_budget` on the
    autoencoder's 2,048 training images. Returns (EMA model in eval mode, its schedule).
    """
    sched = get_schedule(SCHEDULE, 1000)
    cfg = UNetConfig(image_size=32, in_channels=3, attention_resolutions=(8,), **trunk(profile))
    model = fit_cached(
        "latent/shapes_pixel_ddpm",
        dict(data="shapes32/2048", T=1000, unet=asdict(cfg)),
        lambda: UNet(cfg),
        eps_loss(sched, "simple"),
        lambda: _train_shapes().to(profile.device),
        profile=profile,
        seed=seed,
        **diffusion_budget(profile),
    )
    return model.requires_grad_(False), sched


# every caption of `shapes`: shape x colour x a different background colour (3 x 8 x 7 = 168)
def _all_captions() -> tuple[str, ...]:
    from diffnotes.data.images import COLOURS, SHAPES, caption

    n = len(COLOURS)
    return tuple(
        caption(s, c, b) for s in range(len(SHAPES)) for c in range(n) for b in range(n) if b != c
    )


CAPTIONS = _all_captions()


class CaptionedLatentUNet(nn.Module):
    """eps_theta(z_t, t, tau(y)) with y an index into ``captions``; y < 0 or None: no caption.

    tau is the tiny word-level `CaptionEncoder` (trained with the U-Net, as LDM trains its
    tau_theta from scratch on LAION captions; Stable Diffusion freezes CLIP instead). A negative
    index is `diffnotes.losses.eps_loss`'s null label, so label dropout trains the unconditional
    branch that `diffnotes.guidance.classifier_free` calls with y = None.
    """

    def __init__(self, cfg: LatentUNetConfig, captions: tuple[str, ...] = CAPTIONS) -> None:
        super().__init__()
        check_instance(cfg, "cfg", LatentUNetConfig, "a LatentUNetConfig")
        if (
            isinstance(captions, str)
            or not captions
            or not all(isinstance(c, str) for c in captions)
        ):
            raise ValueError(f"captions must be a non-empty list of strings, got {captions!r:.40}")
        self.captions = tuple(captions)
        self.text = CaptionEncoder.from_captions(self.captions, dim=cfg.context_dim)
        self.unet = LatentUNet(cfg)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            return self.unet(z, t)  # only the null token: the unconditional branch
        y = torch.as_tensor(y, device=z.device)
        if y.is_floating_point():  # a float index would be truncated silently
            raise ValueError(f"y must be integer caption indices, got dtype {y.dtype}")
        y = y.long().reshape(-1)
        if len(y) != z.shape[0] or int(y.max()) >= len(self.captions):
            raise ValueError(f"y must hold {z.shape[0]} indices < {len(self.captions)} (or < 0)")
        context, mask = self.text([self.captions[i] for i in y.clamp(min=0).tolist()])
        return self.unet(z, t, context, mask, drop=y < 0)


def _digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, v in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def shapes_latent_ddpm(
    profile: Profile,
    autoencoder: nn.Module,
    *,
    captions: bool = False,
    p_uncond: float = 0.1,
    budget: dict | None = None,
    seed: int | None = None,
) -> tuple[nn.Module, DiscreteSchedule, float]:
    """Latent diffusion on `shapes` (Rombach et al. eq. 2): DDPM on z0 = s E(x), E the first stage.

    The `trunk` U-Net on the latents (posterior means of the 2,048 training images, scaled by
    s = `latent_scale`), L_simple, `SCHEDULE` with T = 1000, `diffusion_budget(latent=True)`.
    With ``captions`` the U-Net attends to tau(y) (`CaptionedLatentUNet`, call it as
    ``model(z_t, t, y)``) and each caption is dropped with ``p_uncond`` (LDM and Stable
    Diffusion: 0.1) for classifier-free guidance. ``budget`` (steps, batch_size, lr) replaces
    `diffusion_budget`. Returns (EMA model in eval mode, its schedule, s); decode samples with
    D(z0 / s).
    """
    check_in(p_uncond, "p_uncond", 0, 1, "()")
    _profile(profile)
    if not isinstance(autoencoder, nn.Module) or not hasattr(autoencoder, "encode"):
        raise ValueError(
            f"autoencoder must be an nn.Module with encode(), got {type(autoencoder).__name__}"
        )
    if budget is not None and (
        not isinstance(budget, dict) or {"steps", "batch_size", "lr"} - set(budget)
    ):
        raise ValueError(f"budget must be a dict with steps, batch_size and lr, got {budget!r}")
    sched = get_schedule(SCHEDULE, 1000)
    x = _train_shapes()
    with torch.no_grad():
        device = next(autoencoder.parameters()).device
        z = torch.cat([autoencoder.encode(b.to(device)).cpu() for b in x.split(512)])
    scale = latent_scale(z)
    c, h = z.shape[1], z.shape[2]
    # the pixel trunk's attention level; with captions also one level up, for cross-attention
    levels = (h // 2, h // 4) if captions else (h // 4,)
    cfg = LatentUNetConfig(
        latent_channels=c, latent_size=h, attention_resolutions=levels, **trunk(profile)
    )
    key = dict(data="shapes32/2048", first_stage=_digest(autoencoder), T=1000, unet=asdict(cfg))
    if captions:
        from diffnotes.data import shapes

        index = {cap: i for i, cap in enumerate(CAPTIONS)}
        y = torch.tensor([index[cap] for cap in shapes(2048, 32, seed=0).captions])
        data: object = (z * scale, y)
        key.update(p_uncond=p_uncond, captions=len(CAPTIONS))
        build: Callable[[], nn.Module] = lambda: CaptionedLatentUNet(cfg)  # noqa: E731
    else:
        data = z * scale
        build = lambda: LatentUNet(cfg)  # noqa: E731
    f = autoencoder.factor
    model = fit_cached(
        f"latent/shapes_ldm_f{f}{'_text' if captions else ''}",
        key,
        build,
        eps_loss(sched, "simple", p_uncond=p_uncond if captions else 0.0),
        data,
        profile=profile,
        seed=seed,
        **(budget or diffusion_budget(profile, latent=True)),
    )
    return model.requires_grad_(False), sched, scale


def train_step_cost(
    model: nn.Module, loss_fn: Callable, batch: Tensor | tuple, *, repeats: int = 5
) -> tuple[float, float]:
    """(FLOPs, seconds) of one training step of a copy of ``model`` on ``batch``.

    FLOPs of the forward and backward pass by `torch.utils.flop_counter` (deterministic: the
    budget); seconds the median wall-clock of ``repeats`` AdamW steps after one warm-up (this
    machine, this thread count: what the budget costs here).
    """
    from torch.utils.flop_counter import FlopCounterMode

    check_instance(model, "model", nn.Module, "an nn.Module")
    check_int(repeats, "repeats", 1)
    live = copy.deepcopy(model).train().requires_grad_(True)
    opt = torch.optim.AdamW(live.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        loss_fn(live, batch, g).backward()
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(live, batch, g).backward()
        opt.step()
        seconds.append(time.perf_counter() - start)
    return float(counter.get_total_flops()), sorted(seconds[1:])[repeats // 2]
