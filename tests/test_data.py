"""Offline datasets: shapes, ranges, determinism, captions vs factors, sprites vs pixels."""

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from diffnotes import data


@pytest.mark.parametrize("name", data.TWO_D)
def test_two_d_shape_determinism_and_range(name):
    a = data.two_d(name, 500, seed=3)
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert_close(a, data.two_d(name, 500, seed=3))
    assert not torch.equal(a, data.two_d(name, 500, seed=4))
    assert a.abs().max() < 4.0


def test_eight_gaussians_modes_on_ring():
    x = data.two_d("eight_gaussians", 2000)
    assert_close(x.norm(dim=1), torch.full((2000,), 2.0), atol=0.3, rtol=0)


@pytest.mark.parametrize("size", data.DIGIT_SIZES)
def test_digits_shapes_range_split(size):
    x_train, y_train = data.digits(size, "train")
    x_test, y_test = data.digits(size, "test")
    x_all, y_all = data.digits(size, "all")
    assert x_all.shape == (1797, 1, size, size) and x_all.dtype == torch.float32
    assert len(x_train) + len(x_test) == 1797 and y_train.dtype == torch.long
    assert x_all.min() >= -1 and x_all.max() <= 1 and x_all.min() == -1
    assert set(y_test.tolist()) == set(range(10))
    # Stratified: each class is ~20% held out.
    frac = y_test.bincount(minlength=10) / y_all.bincount(minlength=10)
    assert_close(frac, torch.full((10,), 0.2), atol=0.01, rtol=0)


def test_digits_split_deterministic_and_disjoint():
    x1, y1 = data.digits(8, "train", seed=0)
    x2, y2 = data.digits(8, "train", seed=0)
    assert_close(x1, x2) and assert_close(y1, y2)
    x_test, _ = data.digits(8, "test", seed=0)
    train_rows = {tuple(r.tolist()) for r in x1.flatten(1)}
    overlap = sum(tuple(r.tolist()) in train_rows for r in x_test.flatten(1))
    assert overlap < 5  # only exact duplicate images in the dataset itself could collide
    x3, _ = data.digits(8, "train", seed=1)
    assert not torch.equal(x1, x3)


def test_shapes_captions_match_factors_and_fast():
    start = time.perf_counter()
    s = data.shapes(2000, 32, seed=0)
    assert time.perf_counter() - start < 3.0
    assert s.images.shape == (2000, 3, 32, 32) and s.images.dtype == torch.float32
    assert s.images.min() >= -1 and s.images.max() <= 1
    assert set(s.factors) == {"shape", "colour", "background", "position"}
    for i in range(0, 2000, 97):
        shape, colour, bg = (s.factors[k][i].item() for k in ("shape", "colour", "background"))
        assert s.captions[i] == (
            f"a {data.COLOURS[colour]} {data.SHAPES[shape]} on a {data.COLOURS[bg]} background"
        )
    assert (s.factors["colour"] != s.factors["background"]).all()
    assert s.captions[0].startswith("a ") and s.captions[0].endswith(" background")


def test_shapes_pixels_match_factors():
    s = data.shapes(300, 48, seed=1)
    rgb = torch.tensor(data.images.RGB) * 2 - 1  # (K, 3) in [-1, 1]
    corner = s.images[:, :, 0, 0]  # the background colour is in every corner
    assert_close(corner, rgb[s.factors["background"]])
    # The pixel at the centre of the shape's grid cell is the shape's colour.
    pos = s.factors["position"]
    row, col = (0.25 + 0.25 * (pos // 3)) * 48, (0.25 + 0.25 * (pos % 3)) * 48
    centre = s.images[torch.arange(300), :, row.long(), col.long()]
    assert_close(centre, rgb[s.factors["colour"]])
    # Each factor value occurs.
    for key, names in (("shape", data.SHAPES), ("position", data.POSITIONS)):
        assert set(s.factors[key].tolist()) == set(range(len(names)))


def test_shapes_deterministic():
    a, b = data.shapes(50, 32, seed=5), data.shapes(50, 32, seed=5)
    assert_close(a.images, b.images)
    assert a.captions == b.captions
    assert not torch.equal(a.images, data.shapes(50, 32, seed=6).images)


@pytest.mark.parametrize(("sprite", "size", "frames"), [("square", 16, 8), ("digit", 32, 16)])
def test_sprites_positions_match_pixels(sprite, size, frames):
    s = data.sprites(40, frames, size, seed=2, sprite=sprite)
    assert s.videos.shape == (40, 1, frames, size, size) and s.videos.dtype == torch.float32
    assert s.positions.shape == s.velocities.shape == (40, frames, 2)
    assert s.videos.min() >= -1 and s.videos.max() <= 1
    assert_close(data.centre_of_mass(s.videos[:, 0]), s.positions, atol=1e-4, rtol=0)
    # Constant speed, reflection at the walls: velocity components only flip sign.
    assert_close(s.velocities.abs(), s.velocities[:, :1].abs().expand_as(s.velocities))
    moved = s.positions[:, 1:] - s.positions[:, :-1]
    no_bounce = (s.velocities[:, 1:] == s.velocities[:, :-1]).all(-1)
    assert_close(moved[no_bounce], s.velocities[:, :-1][no_bounce], atol=1e-4, rtol=0)
    assert (~no_bounce).any()  # some bounce happened
    assert_close(s.videos, data.sprites(40, frames, size, seed=2, sprite=sprite).videos)


def test_image_folder_round_trip(tmp_path):
    s = data.shapes(6, 32, seed=0)
    data.save_image_folder(s.images, s.captions, tmp_path / "shapes")
    meta = [json.loads(line) for line in (tmp_path / "shapes" / "metadata.jsonl").open()]
    assert set(meta[0]) == {"file_name", "text"} and meta[2]["text"] == s.captions[2]
    images, captions = data.image_folder(tmp_path / "shapes")
    assert captions == s.captions
    assert_close(images, s.images, atol=1 / 127.5, rtol=0)
    small, _ = data.image_folder(tmp_path / "shapes", size=16)
    assert small.shape == (6, 3, 16, 16)
    grey, _ = data.digits(8, "test")
    data.save_image_folder(grey[:3], None, tmp_path / "grey")
    images, captions = data.image_folder(tmp_path / "grey", caption_column=None)
    assert images.shape == (3, 1, 8, 8) and captions is None


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        data.image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="path"):
        data.image_folder(tmp_path / "empty")
    s = data.shapes(2, 32)
    data.save_image_folder(s.images, s.captions, tmp_path / "f")
    with pytest.raises(ValueError, match="caption_column"):
        data.image_folder(tmp_path / "f", caption_column="prompt")
    with pytest.raises(ValueError, match="captions"):
        data.save_image_folder(s.images, ["one"], tmp_path / "g")
    with pytest.raises(ValueError, match="images"):
        data.save_image_folder(s.images[0], s.captions, tmp_path / "g")


def test_image_folder_good_paths_still_load(tmp_path):
    # a subfolder, and a link that stays inside the folder, are fine
    (tmp_path / "d" / "sub").mkdir(parents=True)
    Image.new("L", (4, 4), 10).save(tmp_path / "d" / "sub" / "a.png")
    (tmp_path / "d" / "b.png").symlink_to(tmp_path / "d" / "sub" / "a.png")
    rows = [{"file_name": "sub/a.png", "text": "a"}, {"file_name": "b.png", "text": "b"}]
    (tmp_path / "d" / "metadata.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    images, captions = data.image_folder(tmp_path / "d")
    assert images.shape == (2, 1, 4, 4) and captions == ["a", "b"]


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    levels = np.array([0, 257, 128 * 257, 65535], np.uint16)  # 8-bit 0, 1, 128, 255
    grid = np.tile(levels, (4, 1))
    (tmp_path / "d").mkdir()
    Image.fromarray(grid).save(tmp_path / "d" / "a.png")  # mode I;16
    header = b"P5\n4 4\n65535\n"  # PIL reads a 16-bit PGM as mode I
    (tmp_path / "d" / "b.pgm").write_bytes(header + grid.astype(">u2").tobytes())
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "d" / "c.png")
    rows = [{"file_name": f, "text": f} for f in ("a.png", "b.pgm")]
    (tmp_path / "d" / "metadata.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    images, _ = data.image_folder(tmp_path / "d")
    expected = torch.tensor([0.0, 1.0, 128.0, 255.0]) / 127.5 - 1.0
    assert images.shape == (2, 1, 4, 4)
    assert_close(images[:, 0], expected.expand(2, 4, 4))
    # beside a colour image, a 16-bit one is repeated over 3 channels
    rows.append({"file_name": "c.png", "text": "red"})
    (tmp_path / "d" / "metadata.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    mixed, _ = data.image_folder(tmp_path / "d")
    assert mixed.shape == (3, 3, 4, 4)
    assert_close(mixed[:2], expected.expand(2, 3, 4, 4))


def test_large_jpeg_is_decoded_reduced_not_whole(tmp_path):
    (tmp_path / "d").mkdir()
    Image.new("RGB", (512, 384), (0, 0, 255)).save(tmp_path / "d" / "big.jpg", quality=95)
    # 196,608 pixels: over max_pixels, so only a reduced decode (here 1/8: 64 x 48) may load it
    images, _ = data.image_folder(tmp_path / "d", caption_column=None, size=32, max_pixels=50_000)
    assert images.shape == (1, 3, 32, 32)
    assert_close(images[0, 2], torch.ones(32, 32), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match=r"big\.jpg.*max_pixels=50,000"):
        data.image_folder(tmp_path / "d", caption_column=None, max_pixels=50_000)


def test_mixed_grey_and_colour_resize_as_before(tmp_path):
    # a grey image beside a colour one equals converting it to RGB first, then resizing
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 13), dtype=np.uint8))
    grey.save(tmp_path / "a.png")
    Image.new("RGB", (13, 9), "red").save(tmp_path / "b.png")
    images, _ = data.image_folder(tmp_path, caption_column=None, size=5)
    before = np.asarray(data.folder._square(grey.convert("RGB"), 5), dtype=np.float32)
    assert_close(images[0], torch.from_numpy(before.transpose(2, 0, 1) / 127.5 - 1.0))


def test_load_dispatch_and_errors(capsys):
    assert data.load("moons", n=10).shape == (10, 2)
    assert data.load("digits", size=16, split="test")[0].shape[-1] == 16
    assert data.load("sprites", n=2).videos.shape == (2, 1, 8, 16, 16)
    with pytest.raises(ValueError, match="name"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="size"):
        data.digits(28)
    with pytest.raises(ValueError, match="split"):
        data.digits(8, "valid")
    with pytest.raises(ValueError, match="size"):
        data.shapes(4, size=8)
    with pytest.raises(ValueError, match="sprite"):
        data.sprites(4, sprite="ball")


def test_remote_falls_back_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFNOTES_DATA", str(tmp_path))
    images, labels = data.load("mnist", split="test", download=False)
    assert images.shape[1:] == (1, 28, 28) and len(images) == len(labels)
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    images, labels = data.load("cifar10", split="test", download=False)
    assert images.shape[1:] == (3, 32, 32) and len(images) == len(labels)
