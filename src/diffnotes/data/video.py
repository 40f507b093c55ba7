"""Bouncing-sprite videos with known trajectories, for the video chapters.

A sprite (a bright square or a scikit-learn digit on black) moves at constant velocity and bounces
off the walls. Frames are rendered by linear interpolation of the sprite at its sub-pixel offset,
which moves the intensity centre of mass by exactly the offset: ``positions`` is the centre of mass
of each frame's pixels, so a model's predicted frames can be scored against the true trajectory.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from diffnotes.util import check_choice, check_int, check_number

SPRITES = ("square", "digit")


class Sprites(NamedTuple):
    """videos (N, 1, F, s, s) in [-1, 1]; positions and velocities (N, F, 2) as (x, y) pixels."""

    videos: torch.Tensor
    positions: torch.Tensor
    velocities: torch.Tensor


def sprites(
    n: int,
    frames: int = 8,
    size: int = 16,
    *,
    seed: int = 0,
    sprite: str = "square",
    speed: tuple[float, float] = (0.5, 1.5),
) -> Sprites:
    """Draw n videos of one sprite bouncing off the walls at constant speed.

    Conventions: position (x, y) = (column, row) of the centre of mass of (video + 1) / 2 with pixel
    centres at integers; ``positions[:, f + 1]`` is ``positions[:, f] + velocities[:, f]`` reflected
    off the walls, and the velocity component flips at each bounce. ``speed`` is the range of
    |velocity| in pixels per frame.
    """
    n = check_int(n, "n", 1)
    check_int(frames, "frames", 1, 64)  # 8-16 intended
    check_int(size, "size", 8, 64)  # 16-32 intended
    check_choice(sprite, "sprite", SPRITES)
    side = max(2, size // 4) if sprite == "square" else 8 if size < 32 else 16  # _templates'
    if sprite == "digit" and size < 10:
        raise ValueError(f"size must be an integer >= 10 for sprite='digit', got {size!r}")
    if not isinstance(speed, (tuple, list)) or len(speed) != 2:
        raise ValueError(f"speed must be a pair (low, high) of pixels per frame, got {speed!r}")
    low = check_number(speed[0], "speed[0]", minimum=0.0)
    check_number(speed[1], "speed[1]", minimum=low)
    if speed[1] > size - 1 - side:  # a faster sprite would jump past a wall in one frame
        raise ValueError(f"speed must be <= {size - 1 - side} px per frame here, got {speed!r}")
    rng = np.random.default_rng(check_int(seed, "seed", 0))
    templates = _templates(sprite, n, size, rng)  # (N, h, h) in [0, 1]
    h = templates.shape[-1]
    # Top-left offsets live in [0, size - 1 - h]: the extra pixel holds the interpolation spill.
    room = size - 1 - h
    offset = np.empty((n, frames, 2))
    velocity = np.empty((n, frames, 2))
    offset[:, 0] = rng.uniform(0, room, size=(n, 2))
    angle = rng.uniform(0, 2 * np.pi, size=n)
    norm = rng.uniform(*speed, size=n)
    velocity[:, 0] = norm[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    for f in range(1, frames):
        p, v = offset[:, f - 1] + velocity[:, f - 1], velocity[:, f - 1].copy()
        low, high = p < 0, p > room
        p = np.where(low, -p, np.where(high, 2 * room - p, p))  # reflect off the walls
        v[low | high] *= -1
        offset[:, f], velocity[:, f] = p, v

    # Separable linear interpolation: weight of template pixel j at output pixel i is the tent
    # max(0, 1 - |i - (o + j)|), so frame = Wy @ template @ Wx^T.
    i = np.arange(size)[None, None, :, None]  # (1, 1, s, 1)
    j = np.arange(h)[None, None, None, :]  # (1, 1, 1, h)
    wx = np.maximum(0.0, 1.0 - np.abs(i - (offset[..., 0, None, None] + j)))  # (N, F, s, h)
    wy = np.maximum(0.0, 1.0 - np.abs(i - (offset[..., 1, None, None] + j)))  # (N, F, s, h)
    video = wy @ templates[:, None] @ wx.swapaxes(-1, -2)  # (N, F, s, s)
    video = np.clip(video, 0.0, 1.0)

    com = _centre_of_mass(templates)  # (N, 2) as (x, y) within the template
    positions = offset + com[:, None, :]
    return Sprites(
        videos=torch.from_numpy((video * 2.0 - 1.0).astype(np.float32))[:, None],
        positions=torch.from_numpy(positions.astype(np.float32)),
        velocities=torch.from_numpy(velocity.astype(np.float32)),
    )


def _templates(sprite: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sprite images (N, h, h) in [0, 1]: an integer-sided white square or a random digit."""
    if sprite == "square":
        # Integer side: the rendered square is exactly a box-filtered square at a sub-pixel spot.
        side = max(2, size // 4)
        return np.ones((n, side, side))
    from diffnotes.data.images import digits

    h = 8 if size < 32 else 16
    images, _ = digits(h, "all")
    pick = rng.integers(0, len(images), size=n)
    return ((images[pick, 0].double().numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    """Intensity centre of mass (..., 2) as (x, y) of images (..., H, W) with values >= 0."""
    hh, ww = images.shape[-2:]
    mass = images.sum(axis=(-2, -1))
    x = (images.sum(axis=-2) * np.arange(ww)).sum(axis=-1) / mass
    y = (images.sum(axis=-1) * np.arange(hh)).sum(axis=-1) / mass
    return np.stack([x, y], axis=-1)


def centre_of_mass(videos: torch.Tensor) -> torch.Tensor:
    """Centre of mass (..., 2) as (x, y) pixels of frames (..., H, W) in [-1, 1] on black."""
    if not isinstance(videos, torch.Tensor) or videos.ndim < 2:
        got = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise ValueError(f"videos must be frames (..., H, W) in [-1, 1], got {got}")
    with np.errstate(invalid="ignore", divide="ignore"):  # refused below instead
        com = _centre_of_mass(((videos.detach().double().cpu() + 1.0) / 2.0).numpy())
    if not np.isfinite(com).all():
        raise ValueError("videos has a frame that is all black (-1) or not finite: no centre")
    return torch.from_numpy(com).float()
