"""A folder of images with a metadata.jsonl of captions: the readers' own data, and LoRA's input.

The layout is Hugging Face's ``imagefolder`` one (PNG/JPEG files beside a ``metadata.jsonl`` whose
lines hold ``file_name`` and ``text``), so a folder written here also loads with ``datasets``.
Every file a row names must lie inside the folder (no ``..``, no absolute path, no link out), and
every decode error names the file and its metadata line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from diffnotes.util import check_batch, check_instance, check_int

METADATA = "metadata.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# The largest image decoded whole (8192 x 8192); a larger JPEG is decoded at 1/2 to 1/8 scale when
# `size` asks for less, anything else above it is refused. PIL's own decompression-bomb limit
# (Image.MAX_IMAGE_PIXELS) stays on as well.
MAX_PIXELS = 8192 * 8192
# 16-bit greyscale: I;16* from PNG/TIFF, I from PGM (PIL scales any maxval to 0..65535).
SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
GREY_MODES = ("1", "L", *SIXTEEN_BIT)


def save_image_folder(
    images: torch.Tensor, captions: Sequence[str] | None, path: str | Path
) -> Path:
    """Write images (N, C, H, W) in [-1, 1] as PNGs plus metadata.jsonl (file_name, text)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {got}")
    check_batch(images, "images")  # NaN would be written as black pixels
    if captions is not None and (
        isinstance(captions, str) or not all(isinstance(c, str) for c in captions)
    ):
        raise ValueError(f"captions must be a list of strings or None, got {captions!r:.60}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(
            f"captions must have one entry per image ({len(images)}), got {len(captions)}"
        )
    path = Path(check_instance(path, "path", (str, os.PathLike), "a folder path (str or Path)"))
    if path.exists() and not path.is_dir():
        raise ValueError(f"path {str(path)!r} is a file, not a folder to write images into")
    from PIL import Image

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
    max_pixels: int = MAX_PIXELS,
) -> tuple[torch.Tensor, list[str] | None]:
    """Load a folder of images as ((N, C, size, size) float32 in [-1, 1], captions).

    Images are listed by metadata.jsonl; with ``caption_column=None`` it is optional, every image
    file in the folder is loaded (sorted by name) and captions are None. ``size`` centre-crops to a
    square and resizes; without it all images must share one size. C is 1 when every image is
    greyscale, else 3. 16-bit greyscale is scaled from 0..65535; an image above ``max_pixels`` is
    refused unless it is a JPEG that decodes at a reduced scale still at least ``size``.
    """
    path = Path(check_instance(path, "path", (str, os.PathLike), "a folder path (str or Path)"))
    if size is not None:
        check_int(size, "size", 1)
    if not path.is_dir():
        raise FileNotFoundError(f"path {str(path)!r} is not an existing image folder")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
    meta = path / METADATA
    if not meta.is_file() and not any(_is_image(p) for p in path.iterdir()):
        raise ValueError(f"path {str(path)!r} holds no images and no {METADATA}")
    if meta.is_file():
        _inside(path, METADATA, f"path {str(path)!r}", "metadata file")
        entries = read_jsonl(meta)
        where, rows = [at for at, _ in entries], [row for _, row in entries]
    elif caption_column is None:
        files = [p for p in sorted(path.iterdir()) if _is_image(p)]
        rows, where = [{image_column: p.name} for p in files], [f"path {str(path)!r}"] * len(files)
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

    # every path is checked before any image is decoded
    files = [_inside(path, row[image_column], at, image_column) for row, at in zip(rows, where)]
    for file, row, at in zip(files, rows, where):
        if not file.is_file():
            raise FileNotFoundError(f"{at}: {image_column}={row[image_column]!r} is missing")
    pictures, grey = [], []
    for file, at in zip(files, where):
        picture = _load(file, at, None if size is None else int(size), max_pixels)
        pictures.append(picture)
        grey.append(picture.mode == "L")
    if not all(grey):  # a colour image among them: every image gets 3 channels
        pictures = [im.convert("RGB") for im in pictures]
    sizes = {im.size for im in pictures}
    if len(sizes) > 1:
        raise ValueError(f"images in {path} differ in size {sorted(sizes)}; pass size= to resize")
    array = np.stack([np.asarray(im, dtype=np.float32) for im in pictures])  # (N, H, W[, C])
    array = array[:, None] if all(grey) else array.transpose(0, 3, 1, 2)
    images = torch.from_numpy(array / 127.5 - 1.0)
    captions = None if caption_column is None else [str(row[caption_column]) for row in rows]
    return images, captions


def read_jsonl(path: Path, name: str | None = None) -> list[tuple[str, dict]]:
    """The JSON objects of a JSON Lines file, each with where it came from ('<name> line <n>').

    ``name`` is how messages name the file (default: its quoted path). Blank lines are skipped;
    a line that is not a JSON object is refused with its line number.
    """
    name = repr(str(path)) if name is None else name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {name} as UTF-8 text: {e}") from e
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        at = f"{name} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            message = f"{at} is not JSON ({e.msg}), so the file is not valid JSON Lines"
            raise ValueError(f"{message}: {line[:60]!r}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{at} is not a JSON object, got {type(row).__name__}")
        rows.append((at, row))
    return rows


def _inside(root: Path, name: object, at: str, what: str) -> Path:
    """``root / name``, refused unless it stays inside ``root`` once links are followed."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise ValueError(f"{at}: {what} must be a file name inside the folder, got {name!r}")
    relative = Path(name)
    if relative.is_absolute() or relative.drive or ".." in relative.parts:
        raise ValueError(
            f"{at}: {what}={name!r} is not inside the folder {str(root)!r} "
            "(absolute paths and '..' are refused)"
        )
    file = root / relative
    real = file.resolve()
    if not real.is_relative_to(root.resolve()):
        raise ValueError(
            f"{at}: {what}={name!r} is a link to {str(real)!r}, outside the folder {str(root)!r}"
        )
    return file


def _load(file: Path, at: str, size: int | None, max_pixels: int):
    """Decode one image as an 8-bit PIL image, mode L or RGB, squared to ``size`` if given."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # above Image.MAX_IMAGE_PIXELS PIL only warns; up to twice it, then raises: refuse both
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                if size is not None and im.width * im.height > max_pixels:
                    im.draft(im.mode, (size, size))  # JPEG: DCT scaling, result still >= size
                pixels = im.width * im.height
                if pixels <= max_pixels:
                    im.load()
                    picture = _eight_bit(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{at}: refused {str(file)!r} as a decompression bomb: {e}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error...
        raise ValueError(f"{at}: cannot decode image {str(file)!r}: {e}") from e
    if pixels > max_pixels:
        raise ValueError(
            f"{at}: image {str(file)!r} has {pixels:,} pixels, above max_pixels={max_pixels:,}; "
            "pass a smaller size= (JPEG) or a larger max_pixels="
        )
    return picture if size is None else _square(picture, size)


def _eight_bit(im):
    """A loaded PIL image as mode L (greyscale, 16-bit scaled to 8) or RGB (anything else)."""
    from PIL import Image

    if im.mode not in SIXTEEN_BIT:
        return im.convert("L" if im.mode in GREY_MODES else "RGB")
    values = np.asarray(im)  # uint16 (I;16*) or int32 (I)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise ValueError(f"mode {im.mode} values span {low}..{high}, outside the 16-bit 0..65535")
    # round(v * 255 / 65535) in integers: no float copy of a large image, and no ties to break
    return Image.fromarray(((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))


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
