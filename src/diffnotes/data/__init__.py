"""Offline, seeded datasets for every chapter: 2-D toys, digits, shapes, sprites, image folders.

One module per kind (toy, images, video, folder, remote); ``load(name, **kw)`` dispatches by name.
"""

from __future__ import annotations

from typing import Any

from diffnotes.data.folder import image_folder, save_image_folder
from diffnotes.data.images import (
    COLOURS,
    DIGIT_SIZES,
    POSITIONS,
    SHAPES,
    Shapes,
    caption,
    digits,
    resize,
    shapes,
)
from diffnotes.data.remote import REMOTE, remote
from diffnotes.data.toy import TWO_D, two_d
from diffnotes.data.video import SPRITES, Sprites, centre_of_mass, sprites

DATASETS = TWO_D + ("digits", "shapes", "sprites", "image_folder") + REMOTE


def load(name: str, **kw: Any) -> Any:
    """Load a dataset by name: the 2-D toys, digits, shapes, sprites, image_folder, or a remote one.

    Keyword arguments go to the loader (e.g. ``load('moons', n=1000)``, ``load('digits', size=16)``,
    ``load('image_folder', path=...)``); MNIST / Fashion-MNIST / CIFAR-10 download on request.
    """
    if name in TWO_D:
        return two_d(name, **kw)
    if name in REMOTE:
        return remote(name, **kw)
    loaders = {"digits": digits, "shapes": shapes, "sprites": sprites, "image_folder": image_folder}
    if name not in loaders:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    return loaders[name](**kw)


__all__ = [
    "COLOURS",
    "DATASETS",
    "DIGIT_SIZES",
    "POSITIONS",
    "REMOTE",
    "SHAPES",
    "SPRITES",
    "TWO_D",
    "Shapes",
    "Sprites",
    "caption",
    "centre_of_mass",
    "digits",
    "image_folder",
    "load",
    "remote",
    "resize",
    "save_image_folder",
    "shapes",
    "sprites",
    "two_d",
]
