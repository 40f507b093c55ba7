"""Captioned images for SDXL fine-tuning, with the SDXL size/crop bookkeeping and no torchvision.

Every random choice (which caption, crop offset, flip) comes from a seed carried with the
index, so a sample is the same whichever process, worker or resumed run loads it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image


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
    ) -> None:
        self.rows, self.captions = rows, captions
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip
        self.resample = getattr(Image.Resampling, interpolation.upper())
        self.tokenizers = tokenizers

    def __len__(self) -> int:
        return len(self.rows)

    def _image(self, i: int) -> Image.Image:
        row = self.rows[i]
        image = Image.open(row) if isinstance(row, (str, Path)) else row
        return image.convert("RGB")

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


def load_rows(args: argparse.Namespace) -> tuple[list, list]:
    """(images or paths, captions) from a local image folder or a Hub dataset."""
    local = args.train_data_dir if args.dataset_name is None else args.dataset_name
    if args.dataset_name is None or Path(args.dataset_name).exists():
        folder = Path(local)
        rows, captions = [], []
        key = "file_name" if args.image_column == "image" else args.image_column
        with (folder / "metadata.jsonl").open() as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    rows.append(folder / rec[key])
                    captions.append(rec[args.caption_column])
    else:
        ds = load_hub_dataset(args)
        rows, captions = list(ds[args.image_column]), list(ds[args.caption_column])
    if args.max_train_samples is not None:
        # diffusers shuffles with the seed and then truncates; same here.
        order = list(range(len(rows)))
        random.Random(args.seed).shuffle(order)
        order = order[: args.max_train_samples]
        rows, captions = [rows[i] for i in order], [captions[i] for i in order]
    if not rows:
        raise ValueError("the dataset has no rows")
    return rows, captions


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
