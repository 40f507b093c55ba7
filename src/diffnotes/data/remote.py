"""Optional larger datasets for the gpu profile: MNIST, Fashion-MNIST and CIFAR-10, no torchvision.

A download is tried only when one of these is asked for, into ``$DIFFNOTES_DATA`` (default
``~/.cache/diffnotes/data``). Without a network the loader prints one line and returns the offline
stand-in (digits for the MNISTs, shapes for CIFAR-10), so a chapter runs everywhere. Tests never
download: they pass ``download=False``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

REMOTE = ("mnist", "fashion_mnist", "cifar10")
_IDX_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def data_dir() -> Path:
    """Where downloaded datasets are kept: $DIFFNOTES_DATA or ~/.cache/diffnotes/data."""
    return Path(os.environ.get("DIFFNOTES_DATA", Path.home() / ".cache" / "diffnotes" / "data"))


def remote(
    name: str, split: str = "train", *, size: int | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST / Fashion-MNIST (1x28x28) or CIFAR-10 (3x32x32) as (images [-1, 1], labels).

    Falls back, with one printed line, to digits (MNISTs) or shapes labelled by shape (CIFAR-10)
    at the same size when the files are absent and cannot be downloaded.
    """
    if name not in REMOTE:
        raise ValueError(f"name must be one of {REMOTE}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    from diffnotes.data.images import resize

    try:
        images, labels = (
            _cifar10(split, download) if name == "cifar10" else _idx(name, split, download)
        )
    except OSError as err:  # no network, no file, a proxy refusing: all land here
        images, labels = _fallback(name, split)
        print(f"diffnotes.data: {name} unavailable ({type(err).__name__}); using offline stand-in")
    return (images if size is None else resize(images, int(size))), labels


def _fetch(url: str, file: Path, download: bool) -> Path:
    if file.is_file():
        return file
    if not download:
        raise FileNotFoundError(f"{file} absent and download=False")
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(file.suffix + ".part")
    with urllib.request.urlopen(url, timeout=10) as response, open(tmp, "wb") as out:
        out.write(response.read())
    tmp.replace(file)  # atomic: a half-written download is never mistaken for the data
    return file


def _idx(name: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    folder = data_dir() / name
    image_file, label_file = (
        _fetch(_IDX_URLS[name] + f, folder / f, download) for f in _IDX_FILES[split]
    )
    # IDX format: big-endian header (16 bytes for images, 8 for labels), then uint8 values.
    images = np.frombuffer(gzip.open(image_file).read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    labels = np.frombuffer(gzip.open(label_file).read(), np.uint8, offset=8)
    return torch.from_numpy(images / 127.5 - 1.0).float(), torch.from_numpy(labels.astype(np.int64))


def _cifar10(split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    archive = _fetch(_CIFAR_URL, data_dir() / "cifar10" / "cifar-10-python.tar.gz", download)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    with tarfile.open(archive) as tar:
        for member in names:
            batch = pickle.load(tar.extractfile(f"cifar-10-batches-py/{member}"), encoding="bytes")
            images.append(batch[b"data"].reshape(-1, 3, 32, 32))
            labels.extend(batch[b"labels"])
    array = np.concatenate(images)
    return torch.from_numpy(array / 127.5 - 1.0).float(), torch.tensor(labels, dtype=torch.long)


def _fallback(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from diffnotes.data.images import digits, resize, shapes

    if name == "cifar10":
        data = shapes(5000 if split == "train" else 1000, 32, seed=0 if split == "train" else 1)
        return data.images, data.factors["shape"]
    images, labels = digits(32, split)
    return resize(images, 28), labels
