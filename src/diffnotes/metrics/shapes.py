"""FD-shapes: a small CNN that reads the four factors of a `shapes` image, and its features.

The learned counterpart of the rule-based reader in `diffnotes.metrics.images`: FD-shapes is the
Frechet distance between its penultimate features of generated and of real shapes (chapter 10
compares pixel and latent diffusion with it). One fixed network per profile: the same data and
initial weights for every ``DIFFNOTES_SEED``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffnotes.profile import Profile
from diffnotes.util import check_batch, check_instance, check_int

__all__ = ["HEADS", "ShapesClassifier", "shapes_classifier", "shapes_features"]

HEADS = {"shape": 3, "colour": 8, "background": 8, "position": 9}  # the factors of `shapes`


class ShapesClassifier(nn.Module):
    """A small CNN reading the four factors of a 32x32 `shapes` image; its features: FD-shapes'."""

    def __init__(self, width: int = 16, features: int = 32) -> None:
        super().__init__()
        w = check_int(width, "width", 1)
        check_int(features, "features", 1)
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.BatchNorm2d(w),  # with BatchNorm shape is learnt in a few hundred steps
            nn.SiLU(),
            nn.MaxPool2d(2),  # (B, w, 16, 16)
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.SiLU(),
            nn.MaxPool2d(2),  # (B, 2w, 8, 8)
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.SiLU(),
            nn.MaxPool2d(2),  # (B, 2w, 4, 4)
            nn.Flatten(),
            nn.Linear(32 * w, features),
            nn.SiLU(),
        )
        self.head = nn.Linear(features, sum(HEADS.values()))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, features): what FD-shapes compares."""
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"images must be 32x32 shapes images (B, 3, 32, 32), got {shape}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, 28): shape, colour, background and position, one block each (HEADS)."""
        return self.head(self.features(x))


def _factor_loss(model: nn.Module, batch: tuple[Tensor, ...], g: torch.Generator) -> Tensor:
    x, *labels = batch
    # a little noise: samples are never as clean as the drawn shapes
    scale = 0.1 * torch.rand(x.shape[0], 1, 1, 1, generator=g, device=g.device).to(x.device)
    noise = torch.randn(x.shape, generator=g, device=g.device).to(x.device)
    logits = model(x + scale * noise).split(list(HEADS.values()), dim=1)
    return sum(nn.functional.cross_entropy(lo, y) for lo, y in zip(logits, labels))


def shapes_classifier(profile: Profile, *, steps: int | None = None) -> nn.Module:
    """The FD-shapes feature extractor: `ShapesClassifier` trained on 4,096 fresh shapes (seed 1).

    Cross-entropy summed over the four factors; the same network and data for every
    ``DIFFNOTES_SEED`` (weights seed 0), so FD-shapes is one fixed metric per profile. ``steps``
    (default: 150 on ``ci``, where shape is read ~90% right, else 300: ~100%). Frozen, eval mode.
    """
    check_instance(profile, "profile", Profile, "a Profile (diffnotes.profile())")
    steps = profile.pick(ci=150, book=300, gpu=300) if steps is None else steps
    check_int(steps, "steps", 1)  # 0 steps would be an untrained, silently random classifier

    def data() -> tuple[Tensor, ...]:
        from diffnotes.data import shapes

        s = shapes(4096, 32, seed=1)
        return (s.images, *(s.factors[k] for k in HEADS))

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a fixed init, without touching the caller's RNG
            return ShapesClassifier()

    from diffnotes.cache import cached
    from diffnotes.train import train

    hyper = dict(steps=steps, batch_size=64, lr=3e-3)

    def fit(model: nn.Module) -> nn.Module:
        return train(model, _factor_loss, data(), seed=0, progress=profile.progress, **hyper).ema

    def build_on_device() -> nn.Module:
        return build().to(profile.device)

    config = dict(data="shapes32/4096/seed1", arch="ShapesClassifier(16, 32)", heads=HEADS)
    key = {**config, **hyper, "seed": 0}
    model = cached(
        "metrics/shapes_classifier", key, build_on_device, fit, profile=profile.name, seed=0
    )
    return model.requires_grad_(False)


@torch.no_grad()
def shapes_features(images: Tensor, classifier: nn.Module, batch_size: int = 512) -> Tensor:
    """FD-shapes features (N, 32) of images (N, 3, 32, 32) in [-1, 1], in float64 on the CPU."""
    check_instance(classifier, "classifier", nn.Module, "an nn.Module (shapes_classifier)")
    check_batch(images, "images")
    check_int(batch_size, "batch_size", 1)
    device = next(classifier.parameters()).device
    parts = [
        classifier.features(images[i : i + batch_size].float().to(device)).double().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts)
