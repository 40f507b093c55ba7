"""Optional larger datasets for the gpu profile: MNIST, Fashion-MNIST and CIFAR-10, no torchvision.

A download is tried only when one of these is asked for, into ``$DIFFNOTES_DATA`` (default
``~/.cache/diffnotes/data``). Without a network the loader prints one line and returns the offline
stand-in (digits for the MNISTs, shapes for CIFAR-10), so a chapter runs everywhere. Tests never
download: they pass ``download=False``.

CIFAR-10's batches are pickles. The archive is checked against its published MD5 (integrity: a
truncated or substituted file is refused) and then read by an unpickler that builds nothing but
dicts, lists, bytes, ints and numpy arrays, so a planted archive cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from diffnotes.util import check_int

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
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on www.cs.toronto.edu/~kriz/cifar.html
_IDX_MAGIC = {"images": (2051, 16, (1, 28, 28)), "labels": (2049, 8, ())}  # magic, header, shape


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
    if size is not None:
        check_int(size, "size", 1)
    from diffnotes.data.images import resize

    try:
        images, labels = (
            _cifar10(split, download) if name == "cifar10" else _idx(name, split, download)
        )
    except OSError as err:  # no network, no file, a proxy refusing: all land here
        images, labels = _fallback(name, split)
        print(f"diffnotes.data: {name} unavailable ({type(err).__name__}); using offline stand-in")
    return (images if size is None else resize(images, int(size))), labels


def _fetch(url: str, file: Path, download: bool, md5: str | None = None) -> Path:
    if file.is_file():
        _check_md5(file, md5, "delete it to download it again")
        return file
    if not download:
        raise FileNotFoundError(f"{file} absent and download=False")
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(file.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=10) as response, open(tmp, "wb") as out:
            out.write(response.read())
        _check_md5(tmp, md5, f"the download from {url} was discarded")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(file)  # atomic: a half-written download is never mistaken for the data
    return file


def _check_md5(file: Path, md5: str | None, advice: str) -> None:
    """Refuse a file whose MD5 is not the published one (a ValueError: no offline fallback)."""
    if md5 is None:
        return
    h = hashlib.md5(usedforsecurity=False)
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != md5:
        raise ValueError(
            f"refusing {str(file)!r}: MD5 {h.hexdigest()} is not the published {md5}; {advice}"
        )


def _idx(name: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    folder = data_dir() / name
    image_file, label_file = (
        _fetch(_IDX_URLS[name] + f, folder / f, download) for f in _IDX_FILES[split]
    )
    images, labels = _idx_array(image_file, "images"), _idx_array(label_file, "labels")
    if len(images) != len(labels):
        raise ValueError(f"{str(image_file)!r} and {str(label_file)!r} differ in length")
    return torch.from_numpy(images / 127.5 - 1.0).float(), torch.from_numpy(labels.astype(np.int64))


def _idx_array(file: Path, kind: str) -> np.ndarray:
    """An IDX file: big-endian header (magic, count[, rows, cols]), then uint8 values."""
    magic, header, shape = _IDX_MAGIC[kind]
    try:
        with gzip.open(file) as f:
            data = f.read()
    except (OSError, EOFError) as e:  # not gzip, or cut short
        raise ValueError(f"cannot read {str(file)!r} as gzip: {e}; delete it to start over") from e
    count = int.from_bytes(data[4:8], "big") if len(data) >= 8 else -1
    if int.from_bytes(data[:4], "big") != magic or len(data) != header + count * math.prod(shape):
        raise ValueError(f"{str(file)!r} is not an IDX file of MNIST {kind}; delete it")
    return np.frombuffer(data, np.uint8, offset=header).reshape(-1, *shape)


def _cifar10(split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    archive = _fetch(
        _CIFAR_URL, data_dir() / "cifar10" / "cifar-10-python.tar.gz", download, _CIFAR_MD5
    )
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    with tarfile.open(archive) as tar:
        for member in names:
            data, batch_labels = _cifar_batch(tar, archive, member)
            images.append(data.reshape(-1, 3, 32, 32))
            labels.extend(batch_labels)
    array = np.concatenate(images)
    return torch.from_numpy(array / 127.5 - 1.0).float(), torch.tensor(labels, dtype=torch.long)


def _cifar_batch(tar: tarfile.TarFile, archive: Path, member: str) -> tuple[np.ndarray, list]:
    """One batch (data (N, 3072) uint8, labels) read by `_CifarUnpickler`, its contents checked."""
    where = f"{str(archive)!r} member cifar-10-batches-py/{member}"
    try:
        f = tar.extractfile(f"cifar-10-batches-py/{member}")
        batch = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # KeyError (no member), UnpicklingError (a forbidden global), ...
        raise ValueError(f"refusing {where}: {type(e).__name__}: {e}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
    ok = ok and data.shape[1] == 3 * 32 * 32 and isinstance(labels, list)
    ok = ok and len(labels) == len(data) and all(type(y) is int and 0 <= y < 10 for y in labels)
    if not ok:
        raise ValueError(f"refusing {where}: not a CIFAR-10 batch of uint8 images and labels")
    return data, labels


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# Every global a CIFAR-10 batch names (its numpy array); the same list datumaro's reader allows.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global beyond `_CIFAR_GLOBALS`: no code can run."""

    def find_class(self, module: str, name: str) -> object:
        found = _CIFAR_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return found


def _fallback(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from diffnotes.data.images import digits, resize, shapes

    if name == "cifar10":
        data = shapes(5000 if split == "train" else 1000, 32, seed=0 if split == "train" else 1)
        return data.images, data.factors["shape"]
    images, labels = digits(32, split)
    return resize(images, 28), labels
