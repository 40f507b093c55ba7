"""Offline image metrics that mean something: digits, shapes, sprites and likelihood.

- digits: a small CNN trained once and cached (held-out accuracy printed when trained) gives class
  accuracy, the entropy of the predicted-class histogram and "FD-digits", the Fréchet distance
  (Heusel et al. 2017, eq. 6) between its penultimate features, always quoted beside the floor two
  independent real sets reach (`fd_digits_floor`).
- shapes: a transparent rule-based factor reader (background from the border, colour from the
  pixels farthest from it, shape from image moments): exact on real data and needs no training;
  caption adherence is the fraction whose shape and colour match the caption.
- sprites: centre-of-mass position error against the true trajectory, and frame-to-frame
  consistency of the sprite's mass.
- NLL in bits/dim through the probability-flow ODE of `diffnotes.sde`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DIGITS_BASE = 8  # the digits carry 8x8 pixels of information; 16 / 32 px are resized from them
_CLASSIFIERS: dict[str, nn.Module] = {}


# ---------------------------------------------------------------------------------------------
# digits


class DigitsClassifier(nn.Module):
    """A small CNN on 8x8 digits; larger inputs are area-downsampled to 8x8 first."""

    def __init__(self, width: int = 16, features: int = 128) -> None:
        super().__init__()
        w = width
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
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"images must be (B, 1, s, s) digits, got {tuple(x.shape)}")
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


@torch.no_grad()
def digits_features(images: Tensor, *, classifier: nn.Module | None = None) -> Tensor:
    """Penultimate classifier features (N, 128) of digits images (N, 1, s, s) in [-1, 1]."""
    classifier = classifier or digits_classifier()
    images = _digit_images(images, "images")
    return torch.cat([classifier.features(b) for b in images.split(512)])


@torch.no_grad()
def predict_digits(images: Tensor, *, classifier: nn.Module | None = None) -> Tensor:
    """Predicted class (N,) long of digits images."""
    classifier = classifier or digits_classifier()
    images = _digit_images(images, "images")
    return torch.cat([classifier(b).argmax(1) for b in images.split(512)])


def class_accuracy(
    samples: Tensor, labels: Tensor, *, classifier: nn.Module | None = None
) -> float:
    """Fraction of class-conditional samples the classifier assigns to the class asked for."""
    labels = torch.as_tensor(labels).flatten().cpu()
    if labels.shape[0] != samples.shape[0]:
        raise ValueError(
            f"labels must have one entry per sample ({samples.shape[0]}), got {labels.shape[0]}"
        )
    return float((predict_digits(samples, classifier=classifier) == labels).double().mean())


def class_entropy(samples: Tensor, *, classifier: nn.Module | None = None) -> float:
    """Entropy in nats of the predicted-class histogram: ln 10 = 2.303 when classes are balanced."""
    counts = torch.bincount(predict_digits(samples, classifier=classifier), minlength=10)
    p = counts.double() / counts.sum()
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (Heusel eq. 6)."""
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
    classifier = classifier or digits_classifier()
    return frechet_distance(
        digits_features(samples, classifier=classifier),
        digits_features(reference, classifier=classifier),
    )


def fd_digits_floor(
    n: int, *, size: int = 8, repeats: int = 3, seed: int = 0, classifier: nn.Module | None = None
) -> float:
    """Mean FD-digits of n real digits against the other real ones: the best any model can do."""
    real = _real_digits(size)
    if not isinstance(n, int) or not 2 <= n <= len(real) - 256:
        raise ValueError(f"n must be an int in 2..{len(real) - 256}, got {n!r}")
    classifier = classifier or digits_classifier()
    feats = digits_features(real, classifier=classifier)
    g = torch.Generator().manual_seed(seed)
    fds = []
    for _ in range(repeats):
        perm = torch.randperm(len(real), generator=g)
        fds.append(frechet_distance(feats[perm[:n]], feats[perm[n:]]))
    return sum(fds) / len(fds)


# ---------------------------------------------------------------------------------------------
# shapes


def _palette() -> tuple[Tensor, tuple[str, ...], tuple[str, ...]]:
    from diffnotes.data.images import COLOURS, RGB, SHAPES

    return torch.as_tensor(RGB, dtype=torch.float32), COLOURS, SHAPES


@torch.no_grad()
def shapes_factors(images: Tensor) -> dict[str, Tensor]:
    """Read (shape, colour, background) indices (N,) each from shapes images (N, 3, s, s).

    Background: the border's median colour; colour: the mean of the pixels farthest from it; both
    snapped to the palette. Shape from the coverage mask's central moments: a triangle is skewed
    in y (skewness -0.57), and mu22 / sqrt(mu40 mu04) is 1/3 for a disc and 5/9 for a square.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be shapes images (N, 3, s, s) in [-1, 1], got {shape}")
    rgb, _, _ = _palette()
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)  # (N, 3, H, W)
    N, _, H, W = x.shape
    border = torch.cat(
        [x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1
    )  # (N, 3, P)
    bg_idx = torch.cdist(border.median(-1).values, rgb).argmin(1)
    bg = rgb[bg_idx][:, :, None, None]  # (N, 3, 1, 1)
    dist = (x - bg).norm(dim=1)  # (N, H, W)
    far = dist >= 0.5 * dist.flatten(1).max(1).values[:, None, None]
    fg_mean = (x * far[:, None]).sum((2, 3)) / far.sum((1, 2)).clamp(min=1)[:, None]
    d = torch.cdist(fg_mean, rgb)
    d[torch.arange(N), bg_idx] = float("inf")  # the shape never has the background's colour
    colour_idx = d.argmin(1)
    fg = rgb[colour_idx][:, :, None, None]
    # coverage: projection of each pixel on the background -> colour segment
    m = (((x - bg) * (fg - bg)).sum(1) / (fg - bg).square().sum(1)).clamp(0, 1)
    m = torch.where(m > 0.2, m, torch.zeros_like(m))  # noise in samples must not move the moments
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    m = m.double()
    mass = m.sum((1, 2)).clamp(min=1e-9)
    cx = (m * xs).sum((1, 2)) / mass
    cy = (m * ys).sum((1, 2)) / mass
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]

    def mu(p: int, q: int) -> Tensor:
        return (m * dx**p * dy**q).sum((1, 2)) / mass

    skew = mu(0, 3) / mu(0, 2).clamp(min=1e-9) ** 1.5
    kurt = mu(2, 2) / (mu(4, 0) * mu(0, 4)).clamp(min=1e-12).sqrt()
    # SHAPES = (circle, square, triangle)
    shape_idx = torch.where(skew.abs() > 0.28, 2, torch.where(kurt > 0.44, 1, 0))
    return dict(shape=shape_idx, colour=colour_idx, background=bg_idx)


_CAPTION = re.compile(r"^an? (\w+) (\w+) on an? (\w+) background$")


def parse_caption(caption: str) -> tuple[int, int, int]:
    """(shape, colour, background) indices of 'a red circle on a blue background'."""
    _, colours, shapes = _palette()
    match = _CAPTION.match(caption.strip().lower())
    if not match or match[1] not in colours or match[2] not in shapes or match[3] not in colours:
        raise ValueError(
            f"captions must read 'a <colour> <shape> on a <colour> background' with colour in "
            f"{colours} and shape in {shapes}, got {caption!r}"
        )
    return shapes.index(match[2]), colours.index(match[1]), colours.index(match[3])


def shapes_adherence(images: Tensor, captions: list[str]) -> float:
    """Caption adherence: fraction of images whose shape and colour match the caption (real: 1)."""
    if isinstance(captions, str) or len(captions) != len(images):
        raise ValueError(f"captions must be a list with one caption per image ({len(images)})")
    want = torch.tensor([parse_caption(c)[:2] for c in captions], dtype=torch.long)  # (N, 2)
    got = shapes_factors(images)
    ok = (got["shape"] == want[:, 0]) & (got["colour"] == want[:, 1])
    return float(ok.double().mean())


# ---------------------------------------------------------------------------------------------
# sprites


def _videos(videos: Tensor) -> Tensor:
    if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[1] != 1:
        shape = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
        raise ValueError(f"videos must be (N, 1, F, s, s) in [-1, 1], got {shape}")
    return videos.detach().double().cpu()


def sprite_positions(videos: Tensor, *, background: float = 0.0) -> Tensor:
    """Centre of mass (N, F, 2) as (x, y) pixels of each frame, as `data.sprites` defines them.

    ``background`` (in [0, 1) of the [0, 1] intensity) is subtracted first, so a faint haze over
    a generated frame does not pull the centre towards the middle; 0 is exact on real data.
    """
    if not 0.0 <= background < 1.0:
        raise ValueError(f"background must be in [0, 1), got {background!r}")
    v = _videos(videos)[:, 0]  # (N, F, H, W)
    w = (((v + 1) / 2).clamp(0, 1) - background).clamp(min=0)
    H, W = w.shape[-2:]
    mass = w.sum((-2, -1)).clamp(min=1e-9)
    x = (w.sum(-2) * torch.arange(W, dtype=w.dtype)).sum(-1) / mass
    y = (w.sum(-1) * torch.arange(H, dtype=w.dtype)).sum(-1) / mass
    return torch.stack([x, y], -1).float()


def sprite_position_error(videos: Tensor, positions: Tensor, *, background: float = 0.0) -> float:
    """Mean distance in pixels between each frame's sprite centre and the true trajectory."""
    est = sprite_positions(videos, background=background)
    positions = torch.as_tensor(positions, dtype=torch.float32).cpu()
    if positions.shape != est.shape:
        raise ValueError(
            f"positions must have shape {tuple(est.shape)}, got {tuple(positions.shape)}"
        )
    return float((est - positions).norm(dim=-1).mean())


def frame_consistency(videos: Tensor) -> float:
    """Mean relative change of the sprite's mass between consecutive frames (0 for real sprites)."""
    v = _videos(videos)[:, 0]
    if v.shape[1] < 2:
        raise ValueError("videos need at least 2 frames")
    mass = ((v + 1) / 2).clamp(0, 1).sum((-2, -1))  # (N, F)
    return float(
        ((mass[:, 1:] - mass[:, :-1]).abs() / mass.mean(1, keepdim=True).clamp(min=1e-9)).mean()
    )


# ---------------------------------------------------------------------------------------------
# likelihood


def nll_bits_per_dim(
    model: Callable[[Tensor, Tensor], Tensor],
    sde: object,
    x0: Tensor,
    *,
    data_bins: int | None = 256,
    dequantize: bool = False,
    generator: torch.Generator | None = None,
    **kwargs: object,
) -> Tensor:
    """NLL (B,) in bits/dim from the PF-ODE likelihood (Song et al. 2021, App. D.2).

    ``data_bins`` adds the log2(data_bins / 2) offset of data quantised on [-1, 1] (None: the
    continuous density); ``dequantize`` first adds uniform noise of one bin's width. Other keywords
    go to `diffnotes.sde.log_likelihood` (exact_divergence, n_hutchinson, rtol, atol).
    """
    from diffnotes.likelihood import bits_per_dim, log_likelihood

    if not isinstance(x0, Tensor) or x0.ndim < 2:
        raise ValueError(f"x0 must be a batch (B, ...), got {x0!r:.60}")
    if dequantize:
        if data_bins is None:
            raise ValueError("dequantize needs data_bins")
        u = torch.rand(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        x0 = x0 + (u - 0.5) * (2.0 / data_bins)
    nats = log_likelihood(model, sde, x0, generator=generator, **kwargs)
    return bits_per_dim(nats, x0[0].numel(), data_bins=data_bins)


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
    labels = torch.as_tensor(labels).flatten().cpu().long()
    if not isinstance(samples, Tensor) or labels.shape[0] != samples.shape[0]:
        n = samples.shape[0] if isinstance(samples, Tensor) else type(samples).__name__
        raise ValueError(f"labels must have one entry per sample ({n}), got {labels.shape[0]}")
    feats = digits_features(samples, classifier=classifier).double()
    traces = [
        torch.cov(feats[labels == k].T).trace()
        for k in labels.unique().tolist()
        if int((labels == k).sum()) >= 2
    ]
    if not traces:
        raise ValueError("class_feature_spread needs a class with at least two samples")
    return float(torch.stack(traces).mean())
