"""The book's standard trained models, cached: chapters share them instead of training twice.

Each recipe fixes a network, a loss and a profile-scaled budget, trains through
`diffnotes.train.train` inside `diffnotes.cache.cached`, and returns the EMA model in eval mode on
the profile's device together with what is needed to sample from it. The budgets: ``ci`` trains in
about 20 s on one core (a smoke test: blurry samples), ``book`` in about 2 min on two cores,
``gpu`` at Colab scale (not yet measured on a GPU).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import nn

from diffnotes.analytic import GaussianMixture, ring_mixture
from diffnotes.cache import cached
from diffnotes.data import digits
from diffnotes.forward import q_sample
from diffnotes.losses import eps_loss
from diffnotes.models.classifier import ClassifierConfig, NoisyClassifier
from diffnotes.models.mlp import MLPConfig, TimeMLP
from diffnotes.models.unet import UNet, UNetConfig
from diffnotes.profile import Profile
from diffnotes.schedules import DiscreteSchedule, get_schedule
from diffnotes.train import Data, LossFn, TrainResult, train
from diffnotes.util import check_in

SCHEDULES = ("linear", "cosine", "scaled_linear")
WEIGHTINGS = ("simple", "vlb")
DIGIT_SIZES = (8, 16, 32)


def digits_unet_config(profile: Profile, size: int = 16) -> UNetConfig:
    """The eps U-Net of `digits_ddpm` for this profile (DDPM's layout, narrower on a CPU)."""
    return profile.pick(
        ci=UNetConfig(
            image_size=size,
            base_channels=16,
            num_res_blocks=1,
            attention_resolutions=(),
            dropout=0.0,
        ),
        book=UNetConfig(
            image_size=size,
            base_channels=16,
            num_res_blocks=1,
            attention_resolutions=(size // 2,),
            dropout=0.0,
        ),
        gpu=UNetConfig(
            image_size=size,
            base_channels=64,
            channel_mults=(1, 2, 2),
            num_res_blocks=2,
            attention_resolutions=(size // 2,),
            dropout=0.1,
        ),
    )


def _check_size(size: int) -> None:
    if size not in DIGIT_SIZES:
        raise ValueError(f"size must be one of {DIGIT_SIZES}, got {size!r}")


def _labelled_digits(
    profile: Profile, size: int
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A loader of all 1,797 digits and their labels on the profile's device (for fit_cached)."""

    def load() -> tuple[torch.Tensor, torch.Tensor]:
        x0, y = digits(size, "all")
        return x0.to(profile.device), y.to(profile.device)

    return load


def _seed(profile: Profile, seed: int | None) -> int:
    seed = profile.seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (or None for the profile's), got {seed!r}")
    return seed


def fit_cached(
    name: str,
    config: dict[str, Any],
    build: Callable[[], nn.Module],
    loss: LossFn,
    data: Data | Callable[[], Data],
    *,
    profile: Profile,
    seed: int | None = None,
    on_result: Callable[[TrainResult], None] | None = None,
    **hyper: Any,
) -> nn.Module:
    """The EMA of ``train(build(), loss, data, **hyper)``, trained once, then read from the cache.

    The cache key is ``name`` with ``config`` (every setting that shapes the model or data),
    ``hyper`` (steps, batch_size, lr, ...) and ``seed`` (default ``profile.seed``), which also sets
    the initial weights and the batches. ``data`` may be a function of no arguments returning the
    data, called only when the model is trained (no loading on a cache hit). ``on_result`` sees
    the `TrainResult` (e.g. to keep the loss curve) when the model is trained rather than loaded.
    The model comes back in eval mode on ``profile.device``.
    """
    seed = _seed(profile, seed)

    def fit(model: nn.Module) -> nn.Module:
        lazy = callable(data) and not inspect.signature(data).parameters
        result = train(
            model, loss, data() if lazy else data, seed=seed, progress=profile.progress, **hyper
        )
        if on_result is not None:
            on_result(result)
        return result.ema

    def build_on_device() -> nn.Module:
        return build().to(profile.device)

    key = {**config, **hyper, "seed": seed}
    return cached(name, key, build_on_device, fit, profile=profile.name, seed=seed)


def mixture_key(mixture: GaussianMixture) -> dict[str, list]:
    """A Gaussian mixture as JSON-able lists, for a cache key (a model trained on it)."""
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    return dict(
        weights=mixture.weights.tolist(), means=mixture.means.tolist(), covs=mixture.covs.tolist()
    )


def digits_ddpm(
    profile: Profile, *, schedule: str = "linear", size: int = 16, seed: int | None = None
) -> tuple[nn.Module, DiscreteSchedule]:
    """DDPM on the digits: eps U-Net trained with L_simple (Ho et al. 2020, Alg. 1, eq. 14), T=1000.

    Returns (EMA model in eval mode on ``profile.device``, its schedule). Unconditional; trained on
    all 1,797 digits at ``size`` pixels (8, 16 or 32). ``seed`` (default ``profile.seed``, i.e.
    ``DIFFNOTES_SEED``) sets the initial weights and the training batches and noise.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    _check_size(size)
    seed = _seed(profile, seed)
    sched = get_schedule(schedule, 1000)
    model = _digits_unet(
        profile,
        size,
        seed,
        digits_unet_config(profile, size),
        eps_loss(sched, "simple"),
        lambda: digits(size, "all")[0].to(profile.device),
        name=f"recipes/digits_ddpm_{schedule}_{size}",
        key=dict(schedule=schedule),
        steps=(150, 800, 20000),
    )
    return model, sched


def _digits_unet(
    profile: Profile,
    size: int,
    seed: int,
    cfg: UNetConfig,
    loss: Callable,
    data: Callable,
    *,
    name: str,
    key: dict,
    steps: tuple[int, int, int],
) -> nn.Module:
    """A digits U-Net through the cache: `steps` (ci, book, gpu); lr 2e-3 on CPU, 2e-4 on GPU."""
    hp = profile.pick(
        ci=dict(steps=steps[0], batch_size=32, lr=2e-3),
        book=dict(steps=steps[1], batch_size=64, lr=2e-3),
        gpu=dict(steps=steps[2], batch_size=128, lr=2e-4),
    )
    config = dict(data=f"digits{size}/all", **key, T=1000, unet=asdict(cfg))
    return fit_cached(name, config, lambda: UNet(cfg), loss, data, profile=profile, seed=seed, **hp)


def ring_ddpm(
    profile: Profile,
    *,
    weighting: str = "simple",
    mixture: GaussianMixture | None = None,
    seed: int | None = None,
) -> tuple[nn.Module, DiscreteSchedule, GaussianMixture]:
    """A TimeMLP eps-model on the 8-Gaussian ring, linear schedule, T=1000 (Ho et al. eq. 14/12).

    ``weighting``: 'simple' (L_simple) or 'vlb' (the fixed-variance true-VLB weights of
    `diffnotes.losses.eps_loss`); both arms get the same network, data stream and budget.
    ``seed`` (default ``profile.seed``) sets the initial weights, the data stream and the noise.
    Returns (EMA model in eval mode, schedule, the mixture it was trained on).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    seed = _seed(profile, seed)
    mixture = mixture or ring_mixture()
    sched = get_schedule("linear", 1000)
    cfg = profile.pick(
        ci=MLPConfig(hidden=64, depth=3),
        book=MLPConfig(hidden=128, depth=3),
        gpu=MLPConfig(hidden=256, depth=3),
    )
    # lr tuned on the L_simple arm (2e-3, 3e-3, 6e-3 tried); the VLB arm reuses it unchanged
    hp = profile.pick(
        ci=dict(steps=800, batch_size=256, lr=6e-3),
        book=dict(steps=2000, batch_size=256, lr=6e-3),
        gpu=dict(steps=20000, batch_size=512, lr=2e-3),
    )

    # a fresh exact sample every step: the loss sees the mixture, not a finite training set
    def data(n: int, g: torch.Generator) -> torch.Tensor:
        return mixture.sample(n, generator=g).float()

    model = fit_cached(
        f"recipes/ring_ddpm_{weighting}",
        dict(mixture=mixture_key(mixture), weighting=weighting, T=1000, mlp=asdict(cfg)),
        lambda: TimeMLP(cfg),
        eps_loss(sched, weighting),
        data,
        profile=profile,
        seed=seed,
        **hp,
    )
    return model, sched, mixture


# -- guidance (chapters 06 and 07) ------------------------------------------------------------
def digits_classifier_config(profile: Profile, size: int = 16) -> ClassifierConfig:
    """The `NoisyClassifier` of `digits_guidance_classifier`: the U-Net's encoder half, pooled."""
    small = dict(image_size=size, base_channels=16, attention_resolutions=(), dropout=0.0)
    return profile.pick(
        ci=ClassifierConfig(**small),
        book=ClassifierConfig(**small),
        gpu=ClassifierConfig(
            image_size=size, base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2
        ),
    )


def digits_guidance_classifier(
    profile: Profile, *, noisy: bool = True, size: int = 16, seed: int | None = None
) -> tuple[nn.Module, DiscreteSchedule]:
    """p_phi(y | x_t, t) on the digits for classifier guidance (Dhariwal & Nichol 2021, Sec. 4).

    ``noisy=True`` trains on x_t = sqrt(ab) x0 + sigma eps with t uniform over the T = 1000 steps
    of the linear schedule (the paper's classifier); ``noisy=False`` only on clean digits at t = 0
    (the ablation: call it with t = 0 whatever the sampler's step). Cross-entropy, AdamW, EMA;
    trained on all 1,797 digits. Returns (EMA classifier in eval mode, frozen, the schedule).
    """
    if not isinstance(noisy, bool):
        raise ValueError(f"noisy must be a bool, got {noisy!r}")
    _check_size(size)
    seed = _seed(profile, seed)
    sched = get_schedule("linear", 1000)
    cfg = digits_classifier_config(profile, size)
    hp = profile.pick(
        ci=dict(steps=300, batch_size=64, lr=2e-3),
        book=dict(steps=800, batch_size=64, lr=2e-3),
        gpu=dict(steps=10000, batch_size=128, lr=3e-4),
    )

    def loss_fn(model: nn.Module, batch: tuple, g: torch.Generator) -> torch.Tensor:
        x0, y = batch
        if noisy:
            t = torch.randint(sched.T, (x0.shape[0],), generator=g, device=g.device)
            eps = torch.randn(x0.shape, generator=g, device=g.device)
            x_in = q_sample(sched, x0, t.to(x0.device), eps.to(x0.device))
        else:
            t, x_in = torch.zeros(x0.shape[0], dtype=torch.long), x0
        return nn.functional.cross_entropy(model(x_in, t.to(x0.device)), y)

    model = fit_cached(
        f"recipes/digits_guidance_classifier_{'noisy' if noisy else 'clean'}_{size}",
        dict(data=f"digits{size}/all", noisy=noisy, T=1000, classifier=asdict(cfg)),
        lambda: NoisyClassifier(cfg),
        loss_fn,
        _labelled_digits(profile, size),
        profile=profile,
        seed=seed,
        **hp,
    )
    model.requires_grad_(False)
    return model, sched


def digits_cfg(
    profile: Profile, *, p_uncond: float = 0.2, size: int = 16, seed: int | None = None
) -> tuple[nn.Module, DiscreteSchedule]:
    """A class-conditional digits U-Net trained with label dropout (Ho & Salimans 2022, Alg. 1).

    One network is both eps(x_t, t, c) and eps(x_t, t) = eps(x_t, t, None): each label is
    replaced by the null class with probability ``p_uncond`` (the paper's 0.1 or 0.2), L_simple,
    linear schedule, T = 1000, the layout of `digits_unet_config` plus a label embedding.
    Returns (EMA model in eval mode, its schedule); call it as ``model(x_t, t, y)``, y=None for
    the unconditional branch, or wrap it with `diffnotes.guidance.classifier_free`.
    """
    p_uncond = check_in(p_uncond, "p_uncond", 0, 1, "()")  # both branches must be learned
    _check_size(size)
    seed = _seed(profile, seed)
    sched = get_schedule("linear", 1000)
    model = _digits_unet(
        profile,
        size,
        seed,
        replace(digits_unet_config(profile, size), num_classes=10),
        eps_loss(sched, "simple", p_uncond=p_uncond),
        _labelled_digits(profile, size),
        name=f"recipes/digits_cfg_{size}",
        key=dict(p_uncond=p_uncond),
        steps=(300, 1200, 30000),
    )
    return model, sched


# -- video (chapters 12-14) --------------------------------------------------------------------
VIDEO_MASKINGS = ("none", "random", "mcvd", "prediction")


def sprites_video(
    profile: Profile, *, masking: str = "none", seed: int | None = None
) -> tuple[nn.Module, DiscreteSchedule, dict[str, Any]]:
    """A space-time U-Net (Ho et al. 2022) on bouncing squares, trained with a frame masking.

    ``masking``: 'none' (unconditional; Video Diffusion Models), 'random' (RaMViD's random clean
    frames, at most 4, unconditional rate 0.25), 'mcvd' (the first 2 and last 2 frames each
    given with p = 0.5, MCVD), 'prediction' (the first 2 frames always given: the specialist).
    Every masking gets the same network, data stream and budget; L_simple on the unknown frames
    (`diffnotes.video.masked_eps_loss`), linear schedule, T = 1000, fresh sprites every batch.
    Returns (EMA model in eval mode, schedule, dict(frames=, size=)); call it as
    ``model(x_t, t, mask, x_cond)`` (mask None: unconditional).
    """
    from functools import partial

    from diffnotes.data.video import sprites
    from diffnotes.models.video_unet import VideoUNet, VideoUNetConfig
    from diffnotes.video import masked_eps_loss, past_future_mask, random_frame_mask

    if masking not in VIDEO_MASKINGS:
        raise ValueError(f"masking must be one of {VIDEO_MASKINGS}, got {masking!r}")
    seed = _seed(profile, seed)
    sched = get_schedule("linear", 1000)
    frames, size = 8, profile.pick(ci=8, book=8, gpu=16)
    small = dict(frames=frames, image_size=size, num_res_blocks=1, attention_resolutions=())
    cfg = profile.pick(
        ci=VideoUNetConfig(**small, base_channels=8, channel_mults=(1, 2), num_groups=4),
        book=VideoUNetConfig(**small, base_channels=16, channel_mults=(1, 2), num_groups=8),
        gpu=VideoUNetConfig(
            frames=frames, image_size=size, base_channels=64, channel_mults=(1, 2, 2)
        ),
    )
    hp = profile.pick(
        ci=dict(steps=60, batch_size=8, lr=3e-3),  # a smoke test: blobs, not squares
        book=dict(steps=500, batch_size=16, lr=2e-3),
        gpu=dict(steps=20000, batch_size=64, lr=2e-4),
    )
    mask_fn = {
        "none": lambda b, f, g: torch.zeros(b, f),
        "random": partial(random_frame_mask, max_known=4, p_uncond=0.25),
        "mcvd": partial(past_future_mask, past=2, future=2, p_past=0.5, p_future=0.5),
        "prediction": partial(past_future_mask, past=2, future=0, p_past=0.0),
    }[masking]

    # a fresh draw of sprites every step: the model sees the process, not a finite set
    def data(n: int, g: torch.Generator) -> torch.Tensor:
        draw = int(torch.randint(2**31 - 1, (1,), generator=g))
        return sprites(n, frames, size, seed=draw).videos.to(profile.device)

    model = fit_cached(
        f"recipes/sprites_video_{masking}",
        dict(data=f"sprites{size}x{frames}/square", masking=masking, T=1000, cfg=asdict(cfg)),
        lambda: VideoUNet(cfg),
        masked_eps_loss(sched, mask_fn),
        data,
        profile=profile,
        seed=seed,
        **hp,
    )
    model.requires_grad_(False)
    return model, sched, dict(frames=frames, size=size)


# -- chapter 07's regime: a class-conditional digits U-Net at a chosen budget and width --------
def digits_cfg_budget(
    profile: Profile,
    *,
    steps: int,
    base_channels: int = 16,
    size: int = 16,
    p_uncond: float = 0.2,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int | None = None,
) -> tuple[nn.Module, DiscreteSchedule]:
    """`digits_cfg` with the budget and width as arguments (Ho & Salimans 2022, Alg. 1).

    Label dropout with ``p_uncond``, L_simple, linear schedule, T = 1000; a U-Net of one level
    pair (1, 2) x ``base_channels``, one ResBlock a level, no attention, ten classes plus the null
    class. Chapter 07 and `bench.sweep_cfg` train through it, so a row of the sweep is a chapter
    regime. Returns (EMA model in eval mode on ``profile.device``, its schedule).
    """
    from diffnotes.util import check_int

    p_uncond = check_in(p_uncond, "p_uncond", 0, 1, "()")
    _check_size(size)
    seed = _seed(profile, seed)
    sched = get_schedule("linear", 1000)
    cfg = UNetConfig(
        image_size=size,
        base_channels=check_int(base_channels, "base_channels", 8),
        num_res_blocks=1,
        attention_resolutions=(),
        dropout=0.0,
        num_classes=10,
    )
    hp = dict(steps=check_int(steps, "steps", 1), batch_size=batch_size, lr=lr)
    return fit_cached(
        f"recipes/digits_cfg_budget_{size}",
        dict(data=f"digits{size}/all", p_uncond=p_uncond, T=1000, unet=asdict(cfg)),
        lambda: UNet(cfg),
        eps_loss(sched, "simple", p_uncond=p_uncond),
        _labelled_digits(profile, size),
        profile=profile,
        seed=seed,
        **hp,
    ), sched
