"""Sample metrics (2-D sets against exact samples) and image metrics (digits, shapes, sprites)."""

from diffnotes.metrics import digits, images, samples
from diffnotes.metrics.digits import (
    class_accuracy,
    class_entropy,
    digits_classifier,
    fd_digits,
    fd_digits_floor,
    frechet_distance,
)
from diffnotes.metrics.images import (
    frame_consistency,
    nll_bits_per_dim,
    shapes_adherence,
    sprite_position_error,
)
from diffnotes.metrics.samples import energy_distance, mode_stats, noise_floor, sliced_wasserstein

__all__ = [
    "digits",
    "images",
    "samples",
    "class_accuracy",
    "class_entropy",
    "digits_classifier",
    "fd_digits",
    "fd_digits_floor",
    "frame_consistency",
    "frechet_distance",
    "nll_bits_per_dim",
    "shapes_adherence",
    "sprite_position_error",
    "energy_distance",
    "mode_stats",
    "noise_floor",
    "sliced_wasserstein",
]
