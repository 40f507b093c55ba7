"""A folder of images with a metadata.jsonl of captions: the readers' own data, and LoRA's input.

The layout is Hugging Face's ``imagefolder`` one (PNG/JPEG files beside a ``metadata.jsonl`` whose
lines hold ``file_name`` and ``text``), so a folder written here also loads with ``datasets``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

METADATA = "metadata.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def save_image_folder(
    images: torch.Tensor, captions: Sequence[str] | None, path: str | Path
) -> Path:
    """Write images (N, C, H, W) in [-1, 1] as PNGs plus metadata.jsonl (file_name, text)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(
            f"captions must have one entry per image ({len(images)}), got {len(captions)}"
        )
    from PIL import Image

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    width = max(5, len(str(len(images) - 1)))
    lines = []
    for i, array in enumerate(pixels):
        name = f"{i:0{width}d}.png"
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path / name)
        lines.append(
            json.dumps({"file_name": name, "text": "" if captions is None else captions[i]})
        )
    (path / METADATA).write_text("\n".join(lines) + "\n")
    return path


def image_folder(
    path: str | Path,
    *,
    image_column: str = "file_name",
    caption_column: str | None = "text",
    size: int | None = None,
) -> tuple[torch.Tensor, list[str] | None]:
    """Load a folder of images as ((N, C, size, size) float32 in [-1, 1], captions).

    Images are listed by metadata.jsonl; with ``caption_column=None`` it is optional, every image
    file in the folder is loaded (sorted by name) and captions are None. ``size`` centre-crops to a
    square and resizes; without it all images must share one size. C is 1 when every image is
    greyscale, else 3.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"path {str(path)!r} is not an existing image folder")
    if size is not None and int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    meta = path / METADATA
    if not meta.is_file() and not any(_is_image(p) for p in path.iterdir()):
        raise ValueError(f"path {str(path)!r} holds no images and no {METADATA}")
    if meta.is_file():
        rows = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
    elif caption_column is None:
        rows = [{image_column: p.name} for p in sorted(path.iterdir()) if _is_image(p)]
    else:
        raise FileNotFoundError(
            f"path {str(path)!r} has no {METADATA} with captions; pass caption_column=None "
            "to load the images alone"
        )
    if not rows:
        raise ValueError(f"path {str(path)!r} holds no images")
    columns = sorted(set().union(*(row.keys() for row in rows)))
    for arg, column in (("image_column", image_column), ("caption_column", caption_column)):
        if column is not None and any(column not in row for row in rows):
            raise ValueError(f"{arg}={column!r} is not a column of {METADATA}; columns: {columns}")

    pictures = []
    for row in rows:
        file = path / row[image_column]
        if not file.is_file():
            raise FileNotFoundError(f"{METADATA} lists {row[image_column]!r}, missing in {path}")
        with Image.open(file) as im:
            pictures.append(im.copy())
    grey = all(im.mode in ("L", "1", "I;16", "I") for im in pictures)
    pictures = [im.convert("L" if grey else "RGB") for im in pictures]
    if size is not None:
        pictures = [_square(im, int(size)) for im in pictures]
    sizes = {im.size for im in pictures}
    if len(sizes) > 1:
        raise ValueError(f"images in {path} differ in size {sorted(sizes)}; pass size= to resize")
    array = np.stack([np.asarray(im, dtype=np.float32) for im in pictures])  # (N, H, W[, C])
    array = array[:, None] if grey else array.transpose(0, 3, 1, 2)
    images = torch.from_numpy(array / 127.5 - 1.0)
    captions = None if caption_column is None else [str(row[caption_column]) for row in rows]
    return images, captions


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _square(image, size: int):
    """Centre-crop a PIL image to a square and resize it to size x size (bicubic)."""
    from PIL import Image

    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BICUBIC)
