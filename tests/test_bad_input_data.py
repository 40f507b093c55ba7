"""Bad input to the data loaders and the model cache: refused in one line that names the argument
or the file (and the metadata line), before anything is decoded, trained or written."""

import ast
import hashlib
import importlib
import io
import json
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.testing import assert_close

from diffnotes import cache, data

remote_module = importlib.import_module("diffnotes.data.remote")  # `data.remote` is the function

SRC = Path(__file__).resolve().parents[1] / "src"


def snapshot(root: Path) -> dict:
    """Every path under root with its bytes (links by target): equal before and after a refusal."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def png_header_only(width: int, height: int) -> bytes:
    """A greyscale PNG that declares width x height pixels but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------
# image_folder: each case spoils the second row of a good two-image folder


def set_line(d: Path, text: str) -> None:
    lines = (d / "metadata.jsonl").read_text().splitlines()
    (d / "metadata.jsonl").write_text("\n".join([lines[0], text, *lines[2:]]) + "\n")


def set_row(d: Path, **row) -> None:
    set_line(d, json.dumps({"text": "a caption", **row}))


def spoil_idat(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    start = raw.index(b"IDAT") + 4
    raw[start : start + 8] = b"\xff" * 8  # an invalid zlib header
    file.write_bytes(bytes(raw))


def link_out(d: Path, outside: Path) -> None:
    (d / "link.png").symlink_to(outside)
    set_row(d, file_name="link.png")


def listing_link_out(d: Path, outside: Path) -> dict:
    (d / "metadata.jsonl").unlink()
    (d / "link.png").symlink_to(outside)
    return {"caption_column": None}


def huge_png(d: Path, outside: Path) -> dict:
    (d / "00001.png").write_bytes(png_header_only(9000, 9000))
    return {"size": 16}  # a small size does not help a PNG: it has no reduced decode


def truncate(d: Path, outside: Path) -> None:
    (d / "00001.png").write_bytes((d / "00001.png").read_bytes()[:60])


def write_neg_tiff(d: Path) -> None:
    Image.fromarray(np.array([[-5, 70000], [3, 4]], np.int32)).save(d / "neg.tif")
    set_row(d, file_name="neg.tif")


def row(**fields):
    return lambda d, o: set_row(d, **fields)


def line(text: str):
    return lambda d, o: set_line(d, text)


def second_image(blob: bytes):
    return lambda d, o: (d / "00001.png").write_bytes(blob)


def arguments(**kwargs):
    return lambda d, o: kwargs


# id: (spoil(folder, outside file) -> image_folder kwargs or None, texts the message holds, by |)
FOLDER_CASES = {
    "dotdot": (row(file_name="../outside.png"), "line 2|file_name='../outside.png'|'..'"),
    "dotdot-in-a-subfolder": (row(file_name="a/../../outside.png"), "line 2|'a/../../outside.png'"),
    "absolute": (lambda d, o: set_row(d, file_name=str(o)), "line 2|file_name='/|absolute"),
    "symlink-out": (link_out, "line 2|file_name='link.png'|outside the folder"),
    "symlink-out-no-metadata": (listing_link_out, "file_name='link.png'|outside the folder"),
    "not-json": (line("{not json"), "metadata.jsonl' line 2|not valid JSON"),
    "not-an-object": (line('["00001.png"]'), "metadata.jsonl' line 2|JSON object"),
    "name-not-a-string": (row(file_name=42), "line 2|file_name|42"),
    "missing": (row(file_name="nope.png"), "line 2|file_name='nope.png'"),
    "truncated": (truncate, "line 2|00001.png|cannot decode"),
    "corrupt": (lambda d, o: spoil_idat(d / "00001.png"), "line 2|00001.png|cannot decode"),
    "text-named-png": (second_image(b"a caption\n"), "line 2|00001.png|cannot decode"),
    # above twice Image.MAX_IMAGE_PIXELS PIL raises; between once and twice it only warns
    "bomb": (second_image(png_header_only(20000, 20000)), "00001.png|decompression bomb"),
    "bomb-warning": (second_image(png_header_only(10000, 9500)), "00001.png|decompression bomb"),
    "too-many-pixels": (huge_png, "line 2|00001.png|81,000,000 pixels|max_pixels="),
    "int-image-beyond-16-bit": (lambda d, o: write_neg_tiff(d), "line 2|neg.tif|16-bit"),
    "image-column": (arguments(image_column="path"), "image_column='path'"),
    "size": (arguments(size=0), "size"),
    "max-pixels": (arguments(max_pixels=0), "max_pixels"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_image_folder_refuses_bad_input(tmp_path, case):
    spoil, expected = FOLDER_CASES[case]
    s = data.shapes(2, 16, seed=0)
    folder = data.save_image_folder(s.images, s.captions, tmp_path / "d")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (16, 16), "red").save(outside)
    kwargs = spoil(folder, outside)
    kwargs = kwargs if isinstance(kwargs, dict) else {}  # a spoiler may return a byte count
    before = snapshot(tmp_path)
    with pytest.raises(FileNotFoundError if case == "missing" else ValueError) as info:
        data.image_folder(folder, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for text in expected.split("|"):
        assert text in message, f"{text!r} not in {message!r}"
    assert snapshot(tmp_path) == before  # reading never writes


# ---------------------------------------------------------------------------------------------
# remote: CIFAR-10 is checked, and unpickled by an allow-list; MNIST files are checked


def cifar_archive(path: Path, members: dict[str, bytes]) -> str:
    """Write a tar.gz with cifar-10-batches-py/<member> files; return its MD5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_batch(data_array, labels, module: str = "numpy._core.multiarray") -> bytes:
    # protocol 3 writes bytes natively and globals as text, as the Python 2 originals do
    blob = pickle.dumps({b"data": data_array, b"labels": labels}, protocol=3)
    return blob.replace(b"cnumpy._core.multiarray\n", f"c{module}\n".encode())


def payload(marker: Path) -> bytes:
    """A pickle calling builtins.open(marker, "w"): a stand-in for any code a planted file runs."""
    return f"cbuiltins\nopen\n(V{marker}\nVw\ntR.".encode()


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNOTES_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_cifar10_reads_a_verified_archive(data_home, monkeypatch, module):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    labels = [int(y) for y in rng.integers(0, 10, 6)]
    archive = data_home / "cifar10" / "cifar-10-python.tar.gz"
    md5 = cifar_archive(archive, {"test_batch": cifar_batch(pixels, labels, module)})
    monkeypatch.setattr(remote_module, "_CIFAR_MD5", md5)
    images, got = data.remote("cifar10", "test", download=False)
    assert_close(images, torch.from_numpy(pixels.reshape(6, 3, 32, 32) / 127.5 - 1).float())
    assert got.tolist() == labels


def test_cifar10_planted_archive_runs_no_code(data_home, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    archive = data_home / "cifar10" / "cifar-10-python.tar.gz"
    md5 = cifar_archive(archive, {"test_batch": payload(marker)})
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"cifar-10-python\.tar\.gz.*MD5"):  # not the published
        data.remote("cifar10", "test", download=False)
    monkeypatch.setattr(remote_module, "_CIFAR_MD5", md5)  # even if the MD5 matched
    with pytest.raises(ValueError, match=r"tar\.gz' member .*test_batch.*not allowed") as info:
        data.remote("cifar10", "test", download=False)
    assert "\n" not in str(info.value)
    assert not marker.exists() and snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "members",
    [
        {"test_batch": cifar_batch(np.zeros((2, 3072)), [0, 1])},  # float64, not uint8
        {"test_batch": cifar_batch(np.zeros((2, 3072), np.uint8), [0, 10])},  # label 10
        {"test_batch": pickle.dumps([1, 2, 3])},
        {"data_batch_1": cifar_batch(np.zeros((2, 3072), np.uint8), [0, 1])},  # no test_batch
    ],
    ids=["float-pixels", "label-out-of-range", "not-a-dict", "member-missing"],
)
def test_cifar10_refuses_wrong_contents(data_home, monkeypatch, members):
    archive = data_home / "cifar10" / "cifar-10-python.tar.gz"
    monkeypatch.setattr(remote_module, "_CIFAR_MD5", cifar_archive(archive, members))
    with pytest.raises(ValueError, match=r"refusing '.*cifar-10-python\.tar\.gz' member"):
        data.remote("cifar10", "test", download=False)


def test_bad_download_is_discarded(data_home, monkeypatch):
    page = io.BytesIO(b"an error page, not the archive")  # a response: read() in a with block
    monkeypatch.setattr(remote_module.urllib.request, "urlopen", lambda url, timeout: page)
    with pytest.raises(ValueError, match=r"MD5 .*download from https://.*discarded"):
        data.remote("cifar10", "test")
    assert list(data_home.rglob("*.tar.gz*")) == []  # neither the archive nor its .part


def test_mnist_damaged_file_names_the_file(data_home):
    folder = data_home / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz"):
        data.remote("mnist", "test", download=False)


def test_no_unverified_unpickling_in_src():
    """No pickle.load(s) (only an Unpickler with find_class), no torch.load without weights_only."""
    found = []
    for file in sorted(SRC.rglob("*.py")):
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            where = f"{file.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "_pickle", "dill"):
                found += [f"{where} from pickle import {a.name}" for a in node.names]
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                if any(b.endswith("Unpickler") for b in bases) and "find_class" not in methods:
                    found.append(f"{where} {node.name} unpickles any global")
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            call, keywords = ast.unparse(node.func), {k.arg: k.value for k in node.keywords}
            owner = call.rsplit(".", 1)[0]
            if owner in ("pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib") and (
                node.func.attr in ("load", "loads", "Unpickler")
            ):
                found.append(f"{where} {call}")
            if node.func.attr == "read_pickle":
                found.append(f"{where} {call}")
            weights_only = keywords.get("weights_only")
            if call == "torch.load" and not (
                isinstance(weights_only, ast.Constant) and weights_only.value is True
            ):
                found.append(f"{where} torch.load without weights_only=True")
            allow = keywords.get("allow_pickle")  # numpy's default is False
            if call in ("np.load", "numpy.load") and allow is not None:
                if not (isinstance(allow, ast.Constant) and allow.value is False):
                    found.append(f"{where} {call}(allow_pickle=...)")
    assert found == []


# ---------------------------------------------------------------------------------------------
# the model cache: names and profiles stay inside it; an unwritable cache fails before training


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNOTES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFNOTES_PROFILE", "ci")
    return tmp_path / "cache"


def build():
    return nn.Linear(3, 2)


def counting_fit(calls):
    def fit(model):
        calls.append(1)
        return model

    return fit


# id: (cached keyword arguments, argument the message names)
CACHE_CASES = {
    "name-empty": ({"name": " "}, "name"),
    "name-only-dots": ({"name": ".."}, "name"),
    "name-no-letters": ({"name": "日本/語"}, "name"),
    "profile-empty": ({"profile": ""}, "profile"),
    "profile-only-dots": ({"profile": "../.."}, "profile"),
    "seed-negative": ({"seed": -1}, "seed"),
    "seed-bool": ({"seed": True}, "seed"),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_cached_refuses_bad_keys_before_training(cache_home, tmp_path, case):
    kwargs, arg = CACHE_CASES[case]
    kwargs = {"name": "c/m", **kwargs}
    calls = []
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=arg) as info:
        cache.cached(kwargs.pop("name"), {}, build, counting_fit(calls), **kwargs)
    assert "\n" not in str(info.value)
    assert calls == [] and snapshot(tmp_path) == before


@pytest.mark.parametrize("seed", ["../../x", "1/../..", 1.5, -3])
def test_entry_path_refuses_a_seed_that_is_not_an_int(cache_home, seed):
    with pytest.raises(ValueError, match="seed"):
        cache.entry_path("c/m", {}, profile="ci", seed=seed)


@pytest.mark.parametrize(
    ("name", "profile"),
    [("../../escape", "../x"), ("a/../../b", "ci"), ("/abs/x", "/etc"), ("~/x", "..\\y")],
)
def test_dotted_names_and_profiles_write_inside_the_cache(cache_home, tmp_path, name, profile):
    cache.cached(name, {}, build, lambda m: m, profile=profile, seed=0, verbose=False)
    path = cache.entry_path(name, {}, profile=profile, seed=0)
    assert path.is_file() and cache_home.resolve() in path.resolve().parents
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(cache_home in p.parents for p in written)


def test_a_link_out_of_the_cache_is_refused(cache_home, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cache_home.mkdir()
    (cache_home / "escape").symlink_to(outside)
    with pytest.raises(ValueError, match=r"name='escape'.*link out of the cache.*DIFFNOTES_CACHE"):
        cache.cached("escape", {}, build, lambda m: m, seed=0)
    assert list(outside.iterdir()) == []


def make_file(path: Path) -> Path:
    path.write_text("not a folder\n")
    return path


def make_read_only(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o555)
    return path


UNWRITABLE = {
    "a-file": lambda tmp: make_file(tmp / "cache-file"),
    "under-a-file": lambda tmp: make_file(tmp / "cache-file") / "sub",
    "read-only": lambda tmp: make_read_only(tmp / "ro"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_unwritable_cache_fails_before_training(tmp_path, monkeypatch, case):
    if case == "read-only" and os.geteuid() == 0:  # root writes anywhere: refuse as a mount would

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied (simulated read-only)")

        monkeypatch.setattr(cache.tempfile, "mkstemp", refuse)
    target = UNWRITABLE[case](tmp_path)
    monkeypatch.setenv("DIFFNOTES_CACHE", str(target))
    monkeypatch.setenv("DIFFNOTES_PROFILE", "ci")
    calls = []
    before = snapshot(tmp_path)
    try:
        with pytest.raises(OSError, match=r"DIFFNOTES_CACHE='.*' is not writable") as info:
            cache.cached("c/m", {}, build, counting_fit(calls))
    finally:
        if case == "read-only":
            target.chmod(0o755)
    assert "\n" not in str(info.value)
    assert calls == [] and snapshot(tmp_path) == before  # no training, nothing half-written
