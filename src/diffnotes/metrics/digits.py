"""Digits metrics: a small CNN trained once and cached (held-out accuracy printed when trained).

It gives class accuracy, the entropy of the predicted-class histogram, the within-class spread of
its features (diversity) and "FD-digits", the Fréchet distance (Heusel et al. 2017, eq. 6)
between its penultimate features, always quoted beside the floor two independent real sets reach
(`fd_digits_floor`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffnotes.util import check_batch, check_instance, check_int

DIGITS_BASE = 8  # the digits carry 8x8 pixels of information; 16 / 32 px are resized from them
_CLASSIFIERS: dict[str, nn.Module] = {}


# ---------------------------------------------------------------------------------------------
# digits


class DigitsClassifier(nn.Module):
    """A small CNN on 8x8 digits; larger inputs are area-downsampled to 8x8 first."""

    def __init__(self, width: int = 16, features: int = 128) -> None:
        super().__init__()
        w = check_int(width, "width", 1)
        check_int(features, "features", 1)
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.SiLU(),
            nn.MaxPool2d(2),  # (B, 2w, 4, 4)
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.SiLU(),
            nn.MaxPool2d(2),  # (B, 4w, 2, 2)
            nn.Flatten(),
            nn.Linear(16 * w, features),
            nn.SiLU(),
        )
        self.head = nn.Linear(features, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, features): what FD-digits compares."""
        if (
            not isinstance(x, Tensor)
            or x.ndim != 4
            or x.shape[1] != 1
            or x.shape[-1] != x.shape[-2]
        ):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"images must be (B, 1, s, s) digits, got {got}")
        if x.shape[-1] % DIGITS_BASE:
            raise ValueError(f"image size must be a multiple of 8 (8, 16, 32), got {x.shape[-1]}")
        if x.shape[-1] != DIGITS_BASE:
            x = F.adaptive_avg_pool2d(x, DIGITS_BASE)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Random shifts of up to 1 px and a little Gaussian noise: samples are never pixel-perfect."""
    B = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2, B), generator=g, device=g.device).to(x.device)
    crops = padded.unfold(2, 8, 1).unfold(3, 8, 1)  # (B, 1, 3, 3, 8, 8): every 1-px shift
    out = crops[torch.arange(B, device=x.device), :, dy, dx]  # (B, 1, 8, 8)
    noise = torch.randn(out.shape, generator=g, device=g.device).to(x.device)
    scale = 0.1 * torch.rand(B, 1, 1, 1, generator=g, device=g.device).to(x.device)
    return out + scale * noise


def _digits_train_set() -> tuple[Tensor, Tensor]:
    from diffnotes.data import digits

    xs, ys = [], []
    for size in (8, 16, 32):  # the resize round trip of the bigger sizes, seen at 8x8
        x, y = digits(size, "train")
        xs.append(F.adaptive_avg_pool2d(x, DIGITS_BASE))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def digits_test_accuracy(classifier: nn.Module, size: int = 8) -> float:
    """Accuracy on the held-out digits split (seed 0) at ``size`` pixels."""
    from diffnotes.data import digits

    x, y = digits(size, "test")
    return float((classifier(x).argmax(1) == y).double().mean())


def digits_classifier(*, steps: int = 500, seed: int = 0, verbose: bool = True) -> nn.Module:
    """The cached digits classifier: trained once (~20 s on one core), ~99% held-out accuracy."""
    check_int(steps, "steps", 1)  # 0 steps would be an untrained, silently random classifier
    check_int(seed, "seed", 0)
    from diffnotes.cache import cache_dir, cached
    from diffnotes.train import train

    key = f"{cache_dir()}|{steps}|{seed}"
    if key in _CLASSIFIERS:
        return _CLASSIFIERS[key]
    config = dict(arch="DigitsClassifier(16, 128)", steps=steps, seed=seed, batch_size=64, lr=2e-3)

    def ce(model: nn.Module, batch: tuple[Tensor, Tensor], g: torch.Generator) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(_augment(x, g)), y)

    def fit(model: nn.Module) -> nn.Module:
        data = _digits_train_set()
        result = train(
            model, ce, data, steps=steps, batch_size=64, lr=2e-3, seed=seed, progress=False
        )
        model = result.ema
        if verbose:
            accs = ", ".join(
                f"{s}px {100 * digits_test_accuracy(model, s):.1f}%" for s in (8, 16, 32)
            )
            print(f"digits classifier: held-out accuracy {accs} (360 test images)")
        return model

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # a deterministic init, without touching the caller's RNG
            return DigitsClassifier()

    model = cached(
        "metrics/digits_classifier",
        config,
        build,
        fit,
        device="cpu",
        verbose=verbose,
        profile="any",  # the same classifier serves every profile
        seed=seed,  # a fixed instrument: DIFFNOTES_SEED does not change it
    )
    model.requires_grad_(False)
    _CLASSIFIERS[key] = model
    return model


def _digit_images(images: Tensor, name: str = "samples") -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be digits images (N, 1, s, s) in [-1, 1], got {shape}")
    if images.shape[0] < 1 or not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be non-empty and finite")
    return images.detach().float().cpu()


def _classifier(classifier: nn.Module | None) -> nn.Module:
    if classifier is None:
        return digits_classifier()
    return check_instance(classifier, "classifier", nn.Module, "an nn.Module or None")


def _labels(labels: object, n: int) -> Tensor:
    """Class labels (N,) as long; NaN, fractions and a count other than the samples' refused."""
    try:
        labels = torch.as_tensor(labels).flatten().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"labels must be a tensor of class indices, got {labels!r:.40}") from None
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise ValueError("labels must be whole class indices (no NaN or fractions)")
    if labels.shape[0] != n:
        raise ValueError(f"labels must have one entry per sample ({n}), got {labels.shape[0]}")
    return labels


@torch.no_grad()
def digits_features(images: Tensor, *, classifier: nn.Module | None = None) -> Tensor:
    """Penultimate classifier features (N, 128) of digits images (N, 1, s, s) in [-1, 1]."""
    classifier = _classifier(classifier)
    images = _digit_images(images, "images")
    return torch.cat([classifier.features(b) for b in images.split(512)])


@torch.no_grad()
def predict_digits(images: Tensor, *, classifier: nn.Module | None = None) -> Tensor:
    """Predicted class (N,) long of digits images."""
    classifier = _classifier(classifier)
    images = _digit_images(images, "images")
    return torch.cat([classifier(b).argmax(1) for b in images.split(512)])


def class_accuracy(
    samples: Tensor, labels: Tensor, *, classifier: nn.Module | None = None
) -> float:
    """Fraction of class-conditional samples the classifier assigns to the class asked for."""
    labels = _labels(labels, _digit_images(samples).shape[0])
    return float((predict_digits(samples, classifier=classifier) == labels).double().mean())


def class_entropy(samples: Tensor, *, classifier: nn.Module | None = None) -> float:
    """Entropy in nats of the predicted-class histogram: ln 10 = 2.303 when classes are balanced."""
    counts = torch.bincount(predict_digits(samples, classifier=classifier), minlength=10)
    p = counts.double() / counts.sum()
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (Heusel eq. 6)."""
    check_batch(a, "a")  # finite floating tensors
    check_batch(b, "b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"a and b must be (N >= 2, D) features, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # Tr (S_a S_b)^(1/2) = sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2))): symmetric, so eigh is stable
    w, V = torch.linalg.eigh(cov_a)
    root_a = (V * w.clamp(min=0).sqrt()) @ V.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return float(fd.clamp(min=0))


def _real_digits(size: int) -> Tensor:
    from diffnotes.data import digits

    return digits(size, "all")[0]


def fd_digits(
    samples: Tensor, reference: Tensor | None = None, *, classifier: nn.Module | None = None
) -> float:
    """FD-digits: Fréchet distance in the digits classifier's features (reference: all 1,797).

    Quote it beside `fd_digits_floor(len(samples))`, what real digits themselves score.
    """
    samples = _digit_images(samples)
    if reference is None:
        reference = _real_digits(samples.shape[-1])
    reference = _digit_images(reference, "reference")
    classifier = _classifier(classifier)
    return frechet_distance(
        digits_features(samples, classifier=classifier),
        digits_features(reference, classifier=classifier),
    )


def fd_digits_floor(
    n: int, *, size: int = 8, repeats: int = 3, seed: int = 0, classifier: nn.Module | None = None
) -> float:
    """Mean FD-digits of n real digits against the other real ones: the best any model can do."""
    check_int(repeats, "repeats", 1)
    check_int(seed, "seed", 0)
    real = _real_digits(size)
    if not isinstance(n, int) or not 2 <= n <= len(real) - 256:
        raise ValueError(f"n must be an int in 2..{len(real) - 256}, got {n!r}")
    classifier = _classifier(classifier)
    feats = digits_features(real, classifier=classifier)
    g = torch.Generator().manual_seed(seed)
    fds = []
    for _ in range(repeats):
        perm = torch.randperm(len(real), generator=g)
        fds.append(frechet_distance(feats[perm[:n]], feats[perm[n:]]))
    return sum(fds) / len(fds)


# ---------------------------------------------------------------------------------------------
# diversity (the guidance chapters)


def class_feature_spread(
    samples: Tensor, labels: Tensor, *, classifier: nn.Module | None = None
) -> float:
    """Within-class diversity: mean over classes of the trace of the feature covariance.

    Features are the digits classifier's penultimate ones (as FD-digits); only classes with at
    least two samples count. Guidance that trades diversity for fidelity makes it fall; quote it
    beside the same number for real digits.
    """
    labels = _labels(labels, _digit_images(samples).shape[0]).long()
    feats = digits_features(samples, classifier=classifier).double()
    traces = [
        torch.cov(feats[labels == k].T).trace()
        for k in labels.unique().tolist()
        if int((labels == k).sum()) >= 2
    ]
    if not traces:
        raise ValueError("class_feature_spread needs a class with at least two samples")
    return float(torch.stack(traces).mean())
