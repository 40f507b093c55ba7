"""Pixel against latent diffusion with an exact first stage: chapter 10's controlled case.

Rombach et al. 2022 (Fig. 6) train the same diffusion model in pixel space (f = 1) and in the
latent spaces of first stages of several sizes, and compare sample quality over training. The
learned autoencoders of a CPU budget blur, which confounds that comparison with the first stage's
own loss. Here the first stage is exact and known: PCA onto the top d principal axes of the
digit mixture (`PCAStage`), so what a latent model gains or loses is the diffusion model's alone.
Both models are the same class-conditional `TimeMLP` (label dropout, so classifier-free guidance
works as in LDM's text-to-image model), trained with L_simple on fresh samples of the mixture;
the latents are rescaled to unit variance (LDM's scale_by_std), the pixels stay in [-1, 1].
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffnotes.analytic import GaussianMixture
from diffnotes.data import digits
from diffnotes.guidance import classifier_free
from diffnotes.latent import PCAStage, latent_scale, train_step_cost
from diffnotes.losses import eps_loss
from diffnotes.models.mlp import TimeMLP
from diffnotes.samplers import ddim
from diffnotes.schedules import DiscreteSchedule, spaced_steps
from diffnotes.train import train
from diffnotes.util import check_in, check_instance, check_int, check_number

Data = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def digit_mixture() -> GaussianMixture:
    """One isotropic Gaussian per digit class of the 8x8 digits: the class's mean image and its
    mean per-pixel variance, weighted by the class frequencies (float64, pixels in [-1, 1])."""
    x8, y8 = digits(8, "all")
    flat = x8.flatten(1).double()
    return GaussianMixture(
        torch.bincount(y8, minlength=10).double() / len(y8),
        torch.stack([flat[y8 == k].mean(0) for k in range(10)]),
        torch.stack([flat[y8 == k].var(0).mean() for k in range(10)]),
    )


@dataclass
class Space:
    """Where a diffusion model lives: the pixels (``stage`` None) or a scaled PCA latent."""

    mixture: GaussianMixture
    stage: PCAStage | None = None
    scale: float = 1.0  # z0 = scale * E(x): unit-variance latents (LDM's scale_by_std)

    @property
    def dim(self) -> int:
        return self.mixture.dim if self.stage is None else self.stage.d

    @property
    def name(self) -> str:
        return "pixel" if self.stage is None else f"latent d = {self.stage.d}"

    def data(self) -> Data:
        """(x0, label) batches of fresh mixture samples, encoded when latent (float32)."""

        def sample(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
            x, y = self.mixture.sample(n, generator=g, return_labels=True, dtype=torch.float64)
            return self.encode(x).float(), y

        return sample

    def encode(self, x: Tensor) -> Tensor:
        """x (B, 64) -> the model's space: x itself, or scale * E(x)."""
        return x if self.stage is None else self.scale * self.stage.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        """The model's space -> x (B, 64) in float64: x itself, or D(z / scale)."""
        return z.double() if self.stage is None else self.stage.decode(z.double() / self.scale)


def pixel_and_latent(mixture: GaussianMixture, d: int, *, seed: int = 0) -> tuple[Space, Space]:
    """The pixel space and the PCA latent of size ``d``, its scale measured on 4,096 samples."""
    check_instance(mixture, "mixture", GaussianMixture, "a GaussianMixture")
    stage = PCAStage(mixture, d)  # checks d
    check_int(seed, "seed", 0)
    x = mixture.sample(4096, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Space(mixture), Space(mixture, stage, latent_scale(stage.encode(x)))


def model_for(space: Space, *, hidden: int, depth: int) -> TimeMLP:
    """The class-conditional eps-MLP of a space (ten classes and a null class for CFG)."""
    check_instance(space, "space", Space, "a Space")
    return TimeMLP(dim=space.dim, hidden=hidden, depth=depth, num_classes=10)


def train_snapshots(
    space: Space,
    schedule: DiscreteSchedule,
    checkpoints: Sequence[int],
    *,
    hidden: int = 256,
    depth: int = 3,
    batch_size: int = 256,
    lr: float = 1e-3,
    p_uncond: float = 0.1,
    seed: int = 0,
) -> dict[int, nn.Module]:
    """The EMA model after each number of steps in ``checkpoints`` of one training run.

    One run with L_simple and label dropout ``p_uncond`` (LDM and Stable Diffusion: 0.1); the run
    is continued from its own checkpoint to each next step count, so the snapshots cost one run.
    The initial weights depend on ``seed`` only, so the pixel and latent models of one seed start
    from the same draw wherever their shapes agree.
    """
    check_instance(space, "space", Space, "a Space")
    steps = list(checkpoints)
    if not steps or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in steps):
        raise ValueError(f"checkpoints must be step counts >= 1, got {checkpoints!r}")
    if steps != sorted(set(steps)):
        raise ValueError(f"checkpoints must be strictly increasing, got {checkpoints!r}")
    check_int(hidden, "hidden", 1)
    check_int(depth, "depth", 1)
    check_in(p_uncond, "p_uncond", 0, 1, "()")  # both CFG branches must be learned
    check_number(lr, "lr", positive=True)
    check_int(seed, "seed", 0)
    torch.manual_seed(seed)
    model = model_for(space, hidden=hidden, depth=depth)
    loss = eps_loss(schedule, "simple", p_uncond=p_uncond)
    out: dict[int, nn.Module] = {}
    with tempfile.TemporaryDirectory(prefix="diffnotes-latent-pca-") as folder:
        for s in steps:  # each call resumes the run from the checkpoint of the last one
            result = train(
                model,
                loss,
                space.data(),
                steps=s,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                checkpoint_dir=folder,
            )
            snapshot = TimeMLP(result.ema.cfg)
            snapshot.load_state_dict(result.ema.state_dict())
            out[s] = snapshot.eval().requires_grad_(False)
    return out


def step_flops(space: Space, *, hidden: int = 256, depth: int = 3, batch_size: int = 256) -> float:
    """FLOPs of one training step (forward and backward) of the space's model on one batch."""
    from diffnotes.schedules import linear_schedule

    model = model_for(space, hidden=hidden, depth=depth)
    batch = space.data()(batch_size, torch.Generator().manual_seed(0))
    loss = eps_loss(linear_schedule(1000), "simple", p_uncond=0.1)
    return train_step_cost(model, loss, batch, repeats=1)[0]


@torch.no_grad()
def sample(
    model: Callable[..., Tensor],
    space: Space,
    schedule: DiscreteSchedule,
    labels: Tensor,
    w: float,
    *,
    steps: int = 50,
    seed: int = 0,
) -> Tensor:
    """Class-conditional samples x (B, 64) in float64: DDIM (eta = 0) with CFG weight ``w`` in the
    model's space, decoded once at the end (w = 0 is the conditional model, Ho & Salimans).

    Pixel samples clip each predicted x0 to [-1, 1], as DDPM and ADM do (``clip_denoised``);
    latents have no fixed range, and LDM does not clip them.
    """
    check_instance(space, "space", Space, "a Space")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype != torch.long:
        raise ValueError("labels must be a 1-D tensor of class indices (torch.long)")
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) > 9:
        raise ValueError("labels must be class indices in 0..9 (and at least one)")
    check_number(w, "w", minimum=0.0)
    check_int(steps, "steps", 1)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(len(labels), space.dim, generator=g)
    ts = spaced_steps(schedule.T, steps)
    clip = space.stage is None
    z0 = ddim(classifier_free(model, labels, w), schedule, ts, x_T, clip_x0=clip)
    return space.decode(z0)
