"""What the video chapters share: frame masks, the masked loss, conditioning by replacement or
reconstruction guidance, block-autoregressive rollout, a video mixture with an exact conditional.

Conventions. A video is (B, C, F, H, W) (frames on axis 2) or a trajectory (B, F, D) (frames on
axis 1); a frame mask is (B, F) of 0 and 1 with 1 = known (given) frame, the convention of
`diffnotes.models.video_unet.VideoUNet`. Every conditional model here is an `EpsModel` over the
whole video: on the known frames it returns the exact eps of the known frames,
eps_a = (z_a - sqrt(alpha_bar) x_a) / sigma, so the sampler's x0 prediction there is x_a and each
DDPM/DDIM step draws z_a from the forward posterior q(z_t' | z_t, x_a): the known frames of the
sampler's state are always a draw of q(z_t | x_a), which is the replacement of Ho et al. (2022,
Sec. 3.1), and they come out exactly x_a at the end. Only the unknown frames are generated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffnotes.analytic import GaussianMixture
from diffnotes.forward import noise_like, q_sample
from diffnotes.param import EpsModel
from diffnotes.schedules import DiscreteSchedule, check_schedule
from diffnotes.util import (
    check_batch,
    check_callable,
    check_choice,
    check_in,
    check_instance,
    check_int,
    check_number,
    mean_flat,
)

__all__ = [
    "MASK_KINDS",
    "frame_mask",
    "random_frame_mask",
    "past_future_mask",
    "expand_mask",
    "masked_eps_loss",
    "pin_known",
    "replacement",
    "reconstruction_guidance",
    "conditioned",
    "exact_conditional",
    "rollout",
    "video_mixture",
    "video_frames",
]

MASK_KINDS = ("none", "prediction", "interpolation", "infill")
MaskFn = Callable[[int, int, torch.Generator], Tensor]


# ---------------------------------------------------------------------------------------------
# frame masks (B, F), 1 = known


def frame_mask(batch: int, frames: int, kind: str = "prediction", known: int = 2) -> Tensor:
    """A fixed frame mask (batch, frames): which frames are given.

    ``kind``: 'none' (unconditional), 'prediction' (the first ``known`` frames), 'interpolation'
    (the first and last ``known // 2`` frames each, at least one), 'infill' (every frame but
    ``known`` frames in the middle are given).
    """
    check_int(batch, "batch", 1)
    check_int(frames, "frames", 2)
    check_choice(kind, "kind", MASK_KINDS)
    check_int(known, "known", 1, frames - 1)
    m = torch.zeros(batch, frames)
    if kind == "prediction":
        m[:, :known] = 1
    elif kind == "interpolation":
        k = max(1, known // 2)
        m[:, :k], m[:, frames - k :] = 1, 1
    elif kind == "infill":
        m[:] = 1
        lo = (frames - known) // 2
        m[:, lo : lo + known] = 0
    return m


def random_frame_mask(
    batch: int,
    frames: int,
    generator: torch.Generator,
    *,
    max_known: int = 4,
    p_uncond: float = 0.25,
) -> Tensor:
    """RaMViD's training mask (Hoeppe et al. 2022, Sec. 3): a random set of clean frames.

    Each video gets k ~ U{1..max_known} known frames at random positions (at least one frame
    stays unknown), or none with probability ``p_uncond`` (the unconditional rate). The paper's
    code: ``--max_num_mask_frames 4 --uncondition_rate 0.25``.
    """
    check_int(batch, "batch", 1)
    check_int(frames, "frames", 2)
    check_int(max_known, "max_known", 1, frames - 1)
    p_uncond = check_in(p_uncond, "p_uncond", 0, 1)
    check_instance(generator, "generator", torch.Generator, "a torch.Generator")
    dev = generator.device
    k = torch.randint(1, max_known + 1, (batch, 1), generator=generator, device=dev)  # (B, 1)
    order = torch.rand(batch, frames, generator=generator, device=dev)
    rank = order.argsort(1).argsort(1)  # a random permutation of the frames per video
    m = (rank < k).float()
    drop = torch.rand(batch, 1, generator=generator, device=dev) < p_uncond
    return torch.where(drop, torch.zeros_like(m), m)


def past_future_mask(
    batch: int,
    frames: int,
    generator: torch.Generator,
    *,
    past: int = 2,
    future: int = 1,
    p_past: float = 0.5,
    p_future: float = 0.5,
) -> Tensor:
    """MCVD's training mask (Voleti et al. 2022, Sec. 3): past and future blocks dropped at random.

    The clip is [past | current | future]: the first ``past`` frames are given unless dropped
    (probability ``p_past``), the last ``future`` frames likewise (``p_future``). Kept past only:
    prediction; both kept: interpolation; both dropped: unconditional generation. ``future=0``
    is the prediction-only model when ``p_past=0``.
    """
    check_int(batch, "batch", 1)
    check_int(frames, "frames", 2)
    check_instance(generator, "generator", torch.Generator, "a torch.Generator")
    check_int(past, "past", 0, frames - 1)
    check_int(future, "future", 0, frames - 1 - past)
    check_in(p_past, "p_past", 0, 1)
    check_in(p_future, "p_future", 0, 1)
    dev = generator.device
    m = torch.zeros(batch, frames, device=dev)
    keep_past = torch.rand(batch, 1, generator=generator, device=dev) >= p_past
    keep_future = torch.rand(batch, 1, generator=generator, device=dev) >= p_future
    m[:, :past] = keep_past.float()
    if future:
        m[:, frames - future :] = keep_future.float()
    return m


def expand_mask(mask: Tensor, x: Tensor) -> Tensor:
    """The frame mask (B, F) broadcast to x: (B, 1, F, 1, 1) for videos, (B, F, 1) for paths."""
    if not isinstance(mask, Tensor) or mask.ndim != 2:
        raise ValueError(
            f"mask must be a (B, F) tensor of 0 and 1, got {getattr(mask, 'shape', mask)}"
        )
    axis = {5: 2, 3: 1}.get(x.ndim)
    if axis is None:
        raise ValueError(
            f"x must be a video (B, C, F, H, W) or a trajectory (B, F, D), got {tuple(x.shape)}"
        )
    if mask.shape[1] != x.shape[axis] or mask.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"mask must have shape (B, F) = ({x.shape[0]}, {x.shape[axis]}), "
            f"got {tuple(mask.shape)}"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask values must be 0 or 1 (1 = known frame)")
    shape = [mask.shape[0]] + [1] * (x.ndim - 1)
    shape[axis] = mask.shape[1]
    return mask.to(dtype=x.dtype, device=x.device).reshape(shape)


# ---------------------------------------------------------------------------------------------
# training


def masked_eps_loss(schedule: DiscreteSchedule, mask_fn: MaskFn) -> Callable:
    """L_simple on the unknown frames only, the known ones given clean (RaMViD, MCVD).

    ``mask_fn(batch, frames, generator) -> (B, F)`` draws each batch's frame mask (e.g. a partial
    of `random_frame_mask`). The model is called ``model(x_t, t, mask, x_cond)`` with every frame
    noised (at sampling time the known frames of the state are noisy too) and ``x_cond`` = x0;
    the squared error is averaged over the unknown frames, so known frames cost nothing.
    """
    _check_model(mask_fn, check_schedule(schedule), "mask_fn")

    def loss_fn(model: Callable, batch: Tensor, generator: torch.Generator) -> Tensor:
        x0 = check_batch(batch, "batch")
        if x0.ndim != 5:
            raise ValueError(f"batch must be videos (B, C, F, H, W), got {tuple(x0.shape)}")
        mask = mask_fn(x0.shape[0], x0.shape[2], generator).to(x0.device)
        t = torch.randint(schedule.T, (x0.shape[0],), generator=generator, device=generator.device)
        eps = noise_like(x0, generator)
        x_t = q_sample(schedule, x0, t.cpu(), eps)
        out = model(x_t, schedule.timesteps[t.cpu()].to(x0.device), mask, x0)
        unknown = 1.0 - expand_mask(mask, x0)
        per_frame = x0[0, :1].numel() / x0.shape[2]  # C H W
        err = mean_flat((eps - out) ** 2 * unknown) * x0[0].numel()  # summed per video
        count = unknown.reshape(x0.shape[0], -1).sum(1) * per_frame
        return (err.sum() / count.sum().clamp(min=1.0)).to(x0.dtype)

    return loss_fn


# ---------------------------------------------------------------------------------------------
# conditional sampling with eps models


def _coefs(schedule: DiscreteSchedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """alpha_bar and sigma of model time t, shaped to broadcast against x."""
    ab = torch.as_tensor(schedule.alpha_bar(t.cpu()), dtype=torch.float64).reshape(-1)
    shape = (-1,) + (1,) * (x.ndim - 1)
    ab = ab.to(device=x.device, dtype=x.dtype).reshape(shape)
    return ab, (1.0 - ab).sqrt()


def _check_model(model: Callable, schedule: DiscreteSchedule, name: str = "model") -> None:
    check_schedule(schedule)
    check_callable(model, name)


def _check_known(x_known: Tensor, mask: Tensor) -> Tensor:
    check_batch(x_known, "x_known")
    return expand_mask(mask, x_known)


def pin_known(eps: Tensor, x_t: Tensor, x_known: Tensor, m: Tensor, ab: Tensor) -> Tensor:
    """eps with the exact eps of the known frames, (z_a - sqrt(ab) x_a) / sigma, where m = 1."""
    exact = (x_t - ab.sqrt() * x_known) / (1.0 - ab).sqrt()
    return torch.where(m.bool(), exact, eps)


def replacement(
    model: EpsModel, schedule: DiscreteSchedule, x_known: Tensor, mask: Tensor
) -> EpsModel:
    """The replacement method (Ho et al. 2022, Sec. 3.1): an unconditional model, z_a ~ q(z_a|x_a).

    The unknown frames get the model's eps at the joint state [z_a, z_b]; the known frames are
    pinned (see the module docstring). ``schedule`` is the model's schedule (not respaced).
    """
    _check_model(model, schedule)
    m = _check_known(x_known, mask)

    def eps_model(x: Tensor, t: Tensor) -> Tensor:
        ab, _ = _coefs(schedule, t, x)
        return pin_known(model(x, t), x, x_known, m, ab)

    return eps_model


def reconstruction_guidance(
    model: EpsModel,
    schedule: DiscreteSchedule,
    x_known: Tensor,
    mask: Tensor,
    w_r: float = 2.0,
) -> EpsModel:
    """Reconstruction guidance (Ho et al. 2022, eq. 7) on top of replacement.

    x~_b = x^_b - (w_r alpha_t / 2) grad_{z_b} ||x_a - x^_a(z_t)||^2, x^ = (z - sigma eps) / alpha,
    alpha = sqrt(alpha_bar); as eps: eps~_b = eps_b + w_r alpha^2 / (2 sigma) grad_{z_b}(...).
    The gradient runs through the model (one backward pass per step); w_r = 0 is `replacement`.
    """
    _check_model(model, schedule)
    m = _check_known(x_known, mask)
    w_r = check_number(w_r, "w_r", minimum=0.0)

    def eps_model(x: Tensor, t: Tensor) -> Tensor:
        ab, sigma = _coefs(schedule, t, x)
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            eps = model(z, t)
            x0 = (z - sigma * eps) / ab.sqrt()
            err = ((x_known - x0) ** 2 * m).sum()
            (grad,) = torch.autograd.grad(err, z)
        eps = eps.detach() + (1.0 - m) * (w_r * ab / (2.0 * sigma)) * grad
        return pin_known(eps, x, x_known, m, ab)

    return eps_model


def conditioned(
    model: Callable, schedule: DiscreteSchedule, x_known: Tensor, mask: Tensor
) -> EpsModel:
    """A mask-conditioned model ``model(x_t, t, mask, x_cond)`` (RaMViD, MCVD) as an EpsModel."""
    _check_model(model, schedule)
    m = _check_known(x_known, mask)
    mask = mask.to(x_known.device).expand(x_known.shape[0], -1)

    def eps_model(x: Tensor, t: Tensor) -> Tensor:
        ab, _ = _coefs(schedule, t, x)
        return pin_known(model(x, t, mask, x_known), x, x_known, m, ab)

    return eps_model


def exact_conditional(
    mixture: GaussianMixture, schedule: DiscreteSchedule, x_known: Tensor, mask: Tensor
) -> EpsModel:
    """The exact eps of p(x_b | x_a) for a mixture over trajectories (B, F, D) with one x_a.

    The unknown frames follow `GaussianMixture.conditional` (only the weights change for
    diagonal covariances); ``x_known`` may hold one video or a batch of copies of one video.
    """
    check_instance(mixture, "mixture", GaussianMixture, "a GaussianMixture (video_mixture)")
    check_schedule(schedule)
    m = _check_known(x_known, mask)
    if x_known.ndim != 3 or x_known[0].numel() != mixture.dim:
        raise ValueError(f"x_known must be trajectories (B, F, D) with F D = {mixture.dim}")
    if not (bool((x_known == x_known[:1]).all()) and bool((mask == mask[:1]).all())):
        raise ValueError("exact_conditional takes one known video (copies of it) and one mask")
    known = m[:1].expand_as(x_known[:1]).reshape(-1).bool().cpu()
    cond = mixture.conditional(known, x_known[0].reshape(-1).cpu())

    def eps_model(x: Tensor, t: Tensor) -> Tensor:
        ab, _ = _coefs(schedule, t, x)
        flat = x.reshape(x.shape[0], -1)
        eps = torch.zeros_like(flat)
        eps[:, ~known] = cond.eps(flat[:, ~known], t, schedule).to(flat.dtype)
        return pin_known(eps.reshape(x.shape), x, x_known, m, ab)

    return eps_model


# ---------------------------------------------------------------------------------------------
# long videos


def rollout(
    sample_clip: Callable[[Tensor, Tensor], Tensor],
    first: Tensor,
    length: int,
    frames: int,
) -> Tensor:
    """Block-autoregressive generation (MCVD Sec. 3.3): each clip is conditioned on the last frames.

    ``first`` (B, C, k, H, W) are the given frames; each step calls ``sample_clip(x_known, mask)``
    with a clip of ``frames`` frames whose first k are the last k frames so far (mask 1 there) and
    keeps its ``frames - k`` new frames, until ``length`` frames. Returns (B, C, length, H, W).
    """
    check_batch(first, "first")
    check_callable(sample_clip, "sample_clip")
    if first.ndim != 5:
        raise ValueError(f"first must be videos (B, C, k, H, W), got {tuple(first.shape)}")
    k = first.shape[2]
    check_int(frames, "frames", k + 1)
    check_int(length, "length", k)
    video = first
    mask = torch.zeros(first.shape[0], frames, device=first.device)
    mask[:, :k] = 1
    while video.shape[2] < length:
        x_known = torch.zeros(*first.shape[:2], frames, *first.shape[3:], dtype=first.dtype)
        x_known = x_known.to(first.device)
        x_known[:, :, :k] = video[:, :, -k:]
        clip = sample_clip(x_known, mask)
        if not isinstance(clip, Tensor) or clip.shape != x_known.shape:  # else: no progress
            raise ValueError(f"sample_clip must return a tensor of shape {tuple(x_known.shape)}")
        video = torch.cat([video, clip[:, :, k:]], dim=2)
    return video[:, :, :length]


# ---------------------------------------------------------------------------------------------
# the video mixture


def video_mixture(
    centres: Tensor | list,
    velocities: Tensor | list,
    weights: Tensor | list | None = None,
    *,
    frames: int = 8,
    std: float = 0.05,
) -> GaussianMixture:
    """Trajectories x_k = c + v k (k = 0 .. frames - 1) for a few modes (c, v), plus N(0, std^2).

    ``centres`` and ``velocities`` are (K, D); the mixture lives on flattened (F, D) trajectories
    with isotropic components, so `GaussianMixture.conditional` gives the exact p(x_b | x_a).
    """
    c = torch.as_tensor(centres, dtype=torch.float64)
    v = torch.as_tensor(velocities, dtype=torch.float64)
    if c.ndim != 2 or v.shape != c.shape or c.numel() == 0:
        raise ValueError(
            f"centres and velocities must both be (K, D), got {tuple(c.shape)}, {tuple(v.shape)}"
        )
    check_int(frames, "frames", 2)
    std = check_number(std, "std", positive=True)
    K = c.shape[0]
    w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else weights
    k = torch.arange(frames, dtype=torch.float64)[None, :, None]  # (1, F, 1)
    means = (c[:, None, :] + v[:, None, :] * k).reshape(K, -1)  # (K, F D)
    return GaussianMixture(w, means, torch.full((K,), std**2, dtype=torch.float64))


def video_frames(videos: Tensor) -> list[Tensor]:
    """Videos (B, C, F, H, W) as F batches (B, C, H, W): the frames of `diffnotes.plot.animate`."""
    if not isinstance(videos, Tensor) or videos.ndim != 5:
        got = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
        raise ValueError(f"videos must be (B, C, F, H, W), got {got}")
    return [videos[:, :, f].detach().cpu() for f in range(videos.shape[2])]
