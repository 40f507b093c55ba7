"""Captioned images for SDXL fine-tuning, with the SDXL size/crop bookkeeping and no torchvision.

Every random choice (which caption, crop offset, flip) comes from a seed carried with the
index, so a sample is the same whichever process, worker or resumed run loads it.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from diffnotes.data.folder import read_jsonl


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def load_hub_dataset(args: argparse.Namespace):
    """The train split of a Hub dataset through 🤗 datasets (only called with network)."""
    from datasets import load_dataset

    ds = load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir)
    return ds["train"]


class CaptionedImages(torch.utils.data.Dataset):
    """(image, caption) rows -> SDXL training samples; indexed by (row, sample_seed)."""

    def __init__(
        self,
        rows: list,
        captions: list,
        *,
        resolution: int,
        center_crop: bool,
        random_flip: bool,
        interpolation: str,
        tokenizers: tuple,
        origins: list[str] | None = None,
    ) -> None:
        self.rows, self.captions = rows, captions
        self.origins = origins or [f"row {i}" for i in range(len(rows))]
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip
        self.resample = getattr(Image.Resampling, interpolation.upper())
        self.tokenizers = tokenizers

    def __len__(self) -> int:
        return len(self.rows)

    def _image(self, i: int) -> Image.Image:
        row = self.rows[i]
        if not isinstance(row, (str, Path)):
            return row.convert("RGB")
        try:
            with Image.open(row) as image:
                return image.convert("RGB")
        except Exception as e:  # PIL raises many types on a damaged file
            raise ValueError(
                f"{self.origins[i]}: image {str(row)!r} cannot be decoded: {e}"
            ) from None

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, seed = key
        rng = random.Random(seed)
        image = self._image(i)
        original_size = (image.height, image.width)  # SDXL micro-conditioning c_size
        # Resize the short side to the resolution, then crop (SDXL Sec. 2.2, c_crop).
        r = self.resolution
        scale = r / min(image.width, image.height)
        w, h = max(r, round(image.width * scale)), max(r, round(image.height * scale))
        image = image.resize((w, h), resample=self.resample)
        if self.random_flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.center_crop:
            top, left = max(0, round((h - r) / 2.0)), max(0, round((w - r) / 2.0))
        else:
            top, left = rng.randint(0, h - r), rng.randint(0, w - r)
        image = image.crop((left, top, left + r, top + r))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
        caption = self.captions[i]
        if not isinstance(caption, str):  # a list of captions: one at random, as diffusers
            caption = rng.choice(list(caption))
        ids = [
            tok(
                caption,
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids[0]
            for tok in self.tokenizers
        ]
        return {
            "pixel_values": x / 127.5 - 1.0,  # (3, r, r) in [-1, 1]
            "input_ids_one": ids[0],
            "input_ids_two": ids[1],
            "time_ids": torch.tensor([*original_size, top, left, r, r], dtype=torch.float32),
            "sample_seed": torch.tensor(seed, dtype=torch.int64),
        }


class Rows(NamedTuple):
    """A dataset's images (paths or PIL images), captions, and where each row came from."""

    images: list
    captions: list  # a string, or a list of strings to draw one from
    origins: list[str]  # "<folder>/metadata.jsonl line <n>" or "<dataset> row <i>": for errors


def check_caption(value: object, where: str, column: str) -> str | list[str]:
    """A caption (a string) or captions (a non-empty list of strings) of one row."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(c, str) for c in value):
        return list(value)
    raise ValueError(f"{where}: no caption: {column!r} must be text, got {value!r}")


def check_image_path(root: Path, name: object, where: str, column: str) -> Path:
    """The image file ``name`` of one metadata row: inside ``root``, present, and an image."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: no image: {column!r} must be a file name, got {name!r}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith("~"):
        raise ValueError(
            f"{where}: {column} {name!r} must be a relative path inside {root} (no '..')"
        )
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"{where}: {column} {name!r} leads outside {root} (to {path})")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {column} {name!r}: no such file")
    try:
        with Image.open(path) as image:
            image.verify()  # headers and checksums only; a full decode waits for training
    except Exception as e:  # PIL raises many types on a damaged file
        raise ValueError(f"{where}: {column} {name!r} is not a readable image: {e}") from None
    return path


def folder_rows(folder: Path, image_column: str, caption_column: str) -> Rows:
    """The rows of an image folder's metadata.jsonl, each checked (see `check_image_path`)."""
    meta = folder / "metadata.jsonl"
    root = folder.resolve()
    key = "file_name" if image_column == "image" else image_column  # datasets' imagefolder
    rows = Rows([], [], [])
    for where, rec in read_jsonl(meta, str(meta)):
        rows.images.append(check_image_path(root, rec.get(key), where, key))
        named = f"{where} ({key} {rec[key]!r})"
        rows.captions.append(check_caption(rec.get(caption_column), named, caption_column))
        rows.origins.append(where)
    return rows


def load_rows(args: argparse.Namespace) -> Rows:
    """Every row of a local image folder or a Hub dataset, checked; nothing decoded yet."""
    local = args.train_data_dir if args.dataset_name is None else args.dataset_name
    if args.dataset_name is None or Path(args.dataset_name).exists():
        rows = folder_rows(Path(local), args.image_column, args.caption_column)
    else:
        ds = load_hub_dataset(args)
        origins = [f"--dataset_name {args.dataset_name} row {i}" for i in range(len(ds))]
        captions = [
            check_caption(c, where, args.caption_column)
            for c, where in zip(ds[args.caption_column], origins)
        ]
        rows = Rows(list(ds[args.image_column]), captions, origins)
    if not rows.images:
        raise ValueError(f"the dataset {local} has no rows")
    return rows


def subset(rows: Rows, max_samples: int | None, seed: int) -> Rows:
    """``max_samples`` rows: shuffled with ``seed``, then truncated, as diffusers does."""
    if max_samples is None:
        return rows
    order = list(range(len(rows.images)))
    random.Random(seed).shuffle(order)
    return Rows(*([column[i] for i in order[:max_samples]] for column in rows))


class GlobalBatches(torch.utils.data.Sampler):
    """This process's share of each global batch of one epoch, skipping ``skip`` batches.

    A global batch is ``batch_size * num_processes`` consecutive entries of the epoch's
    permutation (seeded by (seed, epoch)); the last one wraps around to the start, like
    accelerate's even_batches. Each entry carries a per-sample seed that fixes its crop, flip,
    caption, VAE sample, noise and timestep, so 1 process with batch 2B and 2 processes with
    batch B draw the same samples and the same noise.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        process_index: int = 0,
        num_processes: int = 1,
        skip: int = 0,
    ) -> None:
        self.n, self.bs, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.skip = process_index, num_processes, skip

    def num_batches(self) -> int:
        return math.ceil(self.n / (self.bs * self.world))

    def __len__(self) -> int:
        return self.num_batches() - self.skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, "epoch", self.epoch))
        perm = torch.randperm(self.n, generator=g).tolist()
        gbs = self.bs * self.world
        total = self.num_batches() * gbs
        perm = (perm * math.ceil(total / self.n))[:total]
        for b in range(self.skip, self.num_batches()):
            start = b * gbs + self.rank * self.bs
            yield [
                (perm[pos], mix_seed(self.seed, "sample", self.epoch, pos))
                for pos in range(start, start + self.bs)
            ]
