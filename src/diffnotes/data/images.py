"""Offline image datasets: scikit-learn's 8x8 digits and procedurally drawn coloured shapes.

Both are built in memory in well under a second, deterministic in ``seed``, and returned as float32
tensors (N, C, H, W) in [-1, 1], the range every diffusion model in the book assumes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from diffnotes.util import check_int

DIGIT_SIZES = (8, 16, 32)
SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2

SHAPES = ("circle", "square", "triangle")
# Corners of the RGB cube: every pair is far apart, so a colour is read back without doubt.
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "black")
RGB = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]],
    dtype=np.float32,
)
# Position factor: the cell of a 3 x 3 grid, row-major from the top left.
POSITIONS = (
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) images to size x size with antialiased bilinear interpolation."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a floating tensor (N, C, H, W), got {got}")
    check_int(size, "size", 1)
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return out.clamp(-1.0, 1.0)


def digits(
    size: int = 8, split: str = "train", *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 bundled 8x8 digits as ((N, 1, size, size) in [-1, 1], labels (N,) long).

    The train/test split (80/20, stratified by class) is a fixed function of ``seed``;
    ``split='all'`` returns every image in the dataset's own order.
    """
    if size not in DIGIT_SIZES or not isinstance(size, int):
        raise ValueError(f"size must be one of {DIGIT_SIZES}, got {size!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_int(seed, "seed", 0)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16 (4x4 blocks of a 32x32 bitmap).
    images = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    if split != "all":
        index = _stratified_split(labels, seed)[0 if split == "train" else 1]
        images, labels = images[index], labels[index]
    return resize(images, size), labels


def _stratified_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle each class with a seeded permutation and hold out TEST_FRACTION of it."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(TEST_FRACTION * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    # Interleave classes so that a prefix of the split is balanced too.
    return (
        train_idx[torch.randperm(len(train_idx), generator=g)],
        test_idx[torch.randperm(len(test_idx), generator=g)],
    )


class Shapes(NamedTuple):
    """Coloured shapes: images (N, 3, s, s) in [-1, 1], captions, factor labels (N,) long each."""

    images: torch.Tensor
    captions: list[str]
    factors: dict[str, torch.Tensor]


def caption(shape: int, colour: int, background: int) -> str:
    """The caption of one image from its factor labels, e.g. 'a red circle on a blue background'."""
    check_int(shape, "shape", 0, len(SHAPES) - 1)
    check_int(colour, "colour", 0, len(COLOURS) - 1)
    check_int(background, "background", 0, len(COLOURS) - 1)
    return f"a {COLOURS[colour]} {SHAPES[shape]} on a {COLOURS[background]} background"


def shapes(n: int, size: int = 32, *, seed: int = 0, supersample: int = 2) -> Shapes:
    """Draw n images of one shape on a plain background, with captions and factor labels.

    Factors: ``shape`` (index into SHAPES), ``colour`` and ``background`` (indices into COLOURS,
    never equal) and ``position`` (cell of a 3 x 3 grid, index into POSITIONS). Shapes have
    similar areas; edges are antialiased by drawing at ``supersample`` x resolution.
    """
    n = check_int(n, "n", 1)
    check_int(size, "size", 16, 128)  # 32-64 intended
    check_int(supersample, "supersample", 1)
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    shape = rng.integers(0, len(SHAPES), size=n)
    colour = rng.integers(0, len(COLOURS), size=n)
    # Background differs from the shape's colour: draw from the other len(COLOURS) - 1.
    background = (colour + rng.integers(1, len(COLOURS), size=n)) % len(COLOURS)
    position = rng.integers(0, len(POSITIONS), size=n)
    # Centres on a 3 x 3 grid at 1/4, 1/2, 3/4 of the side, jittered; radii keep shapes inside.
    row, col = position // 3, position % 3
    cx = (0.25 + 0.25 * col + rng.uniform(-0.03, 0.03, size=n)) * size
    cy = (0.25 + 0.25 * row + rng.uniform(-0.03, 0.03, size=n)) * size
    radius = rng.uniform(0.12, 0.16, size=n) * size

    mask = _rasterise(shape, cx, cy, radius, size, supersample)  # (N, s, s) in [0, 1]
    fg, bg = RGB[colour][:, :, None, None], RGB[background][:, :, None, None]  # (N, 3, 1, 1)
    images = bg + (fg - bg) * mask[:, None]  # (N, 3, s, s)
    return Shapes(
        images=torch.from_numpy(images * 2.0 - 1.0),
        captions=[caption(*f) for f in zip(shape.tolist(), colour.tolist(), background.tolist())],
        factors={
            "shape": torch.from_numpy(shape),
            "colour": torch.from_numpy(colour),
            "background": torch.from_numpy(background),
            "position": torch.from_numpy(position),
        },
    )


def _rasterise(
    shape: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int, supersample: int
) -> np.ndarray:
    """Coverage masks (N, size, size) float32 of circles / squares / triangles, vectorised."""
    k = supersample
    # Sub-pixel sample centres in pixel units.
    grid = (np.arange(size * k, dtype=np.float32) + 0.5) / k
    dx = grid[None, None, :] - cx[:, None, None].astype(np.float32)  # (N, 1, S)
    dy = grid[None, :, None] - cy[:, None, None].astype(np.float32)  # (N, S, 1)
    r = r[:, None, None].astype(np.float32)
    circle = dx**2 + dy**2 <= r**2
    # Square of half side 0.886 r has the circle's area (sqrt(pi) / 2 = 0.886).
    square = np.maximum(np.abs(dx), np.abs(dy)) <= 0.886 * r
    # Upward equilateral triangle of circumradius R with the circle's area: R = 1.555 r.
    # Its bounding box is centred on (cx, cy), so the centroid sits R / 4 below the middle.
    big_r = 1.555 * r
    ty = dy - big_r / 4
    inradius = big_r / 2
    triangle = (
        (ty <= inradius)
        & (-0.866 * dx - 0.5 * ty <= inradius)
        & (0.866 * dx - 0.5 * ty <= inradius)
    )
    sel = shape[:, None, None]
    mask = np.where(sel == 0, circle, np.where(sel == 1, square, triangle)).astype(np.float32)
    n = len(shape)
    # Box-filter the supersampled mask down to pixels (antialiasing).
    return mask.reshape(n, size, k, size, k).mean(axis=(2, 4))
