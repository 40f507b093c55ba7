"""Sample metrics (2-D sets against exact samples) and image metrics (digits, shapes, video)."""

from diffnotes.metrics import digits, images, samples, video
from diffnotes.metrics.digits import (
    class_accuracy,
    class_entropy,
    digits_classifier,
    fd_digits,
    fd_digits_floor,
    frechet_distance,
)
from diffnotes.metrics.images import nll_bits_per_dim, shapes_adherence
from diffnotes.metrics.samples import energy_distance, mode_stats, noise_floor, sliced_wasserstein
from diffnotes.metrics.video import frame_consistency, sprite_position_error

__all__ = [
    "digits",
    "images",
    "samples",
    "video",
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
