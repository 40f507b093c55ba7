"""Bad input to the SDXL LoRA trainer: exit 2, one line naming the flag or file, nothing written.

Each case runs the command line in this process (``train_sdxl.main``) on the tiny SDXL; the
output folder must be exactly as before (absent, for a new run). Checks that need no model run
before anything is loaded, so most cases take milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from safetensors.torch import load_file, save_file  # noqa: E402

from diffnotes.lora import checkpoint as ckpt  # noqa: E402
from diffnotes.lora import cli  # noqa: E402
from diffnotes.lora import train as train_lora  # noqa: E402
from diffnotes.lora.recipes import to_argv  # noqa: E402
from diffnotes.lora.train_sdxl import main  # noqa: E402
from diffnotes.lora.weights import WEIGHT_NAME  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


BASE = (
    "--resolution 64 --train_batch_size 2 --seed 0 --lr_warmup_steps 0 --report_to none "
    "--learning_rate 1e-3 --rank 2 --max_train_steps 3"
).split()


def flags(model: Path, images: Path, out: Path | str, **kw) -> list[str]:
    """The trainer's command line: ``model`` on ``images`` into ``out``, then ``kw`` (last wins)."""
    paths = dict(pretrained_model_name_or_path=model, train_data_dir=images, output_dir=out)
    return BASE + to_argv(**paths, **kw)


def snapshot(folder: Path) -> dict[str, str] | None:
    """Every file under ``folder`` (hidden ones too) and its SHA-256; None if it is absent."""
    if not folder.exists():
        return None
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def fails(capsys, argv: list[str], *names: str) -> str:
    """Run the CLI: exit 2 and one line on stderr that contains each of ``names``."""
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "error:" in lines[0], err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# --- numeric flags: each outside its range ---------------------------------------------------

BAD_VALUES = {  # flag: values outside its range, as typed on the command line
    "max_grad_norm": ("-1", "0", "nan", "inf"),  # -1 flipped the sign of the update
    "snr_gamma": ("-1", "0"),  # so did -1
    "learning_rate": ("0", "-0.0001", "nan"),
    "adam_beta1": ("1", "-0.1"),
    "adam_beta2": ("1.5",),
    "adam_epsilon": ("0",),
    "adam_weight_decay": ("-0.01",),
    "noise_offset": ("-0.1", "inf"),
    "seed": ("-1", str(2**32)),
    "resolution": ("0", "60"),
    "local_rank": ("-2",),
    "max_train_steps": ("-3",),
    "lr_warmup_steps": ("-1",),
    "num_validation_images": ("-1",),
    "dataloader_num_workers": ("-1",),
    **dict.fromkeys(
        "train_batch_size num_train_epochs checkpointing_steps checkpoints_total_limit rank "
        "gradient_accumulation_steps validation_epochs max_train_samples "
        "validation_inference_steps".split(),
        ("0",),
    ),
}
FLAG_CASES = [(flag, value) for flag, values in BAD_VALUES.items() for value in values]


def test_every_numeric_flag_has_a_stated_range_and_a_case():
    helps = {a.dest: a.help for a in cli.build_parser()._actions if a.type in (int, float)}
    assert set(helps) == set(cli.RANGES) == set(BAD_VALUES)
    for name, allowed in cli.RANGES.items():
        assert str(allowed) in helps[name], name


@pytest.mark.parametrize("via", ["cli", "library"])
@pytest.mark.parametrize("flag,value", FLAG_CASES, ids=[f"{f}={v}" for f, v in FLAG_CASES])
def test_numeric_flag_out_of_range(tiny, shapes_dir, tmp_path, capsys, flag, value, via):
    out = tmp_path / "out"
    kw = flags(tiny, shapes_dir, out, **{flag: value})
    if via == "cli":
        fails(capsys, kw, f"--{flag}", value if flag != "resolution" else "")
    else:
        with pytest.raises(ValueError, match=f"--{flag}"):
            train_lora(kw)
    assert not out.exists()


# --- --output_dir and LOCAL_RANK ------------------------------------------------------------


def test_output_dir_must_be_a_writable_folder_path(tiny, shapes_dir, tmp_path, capsys, monkeypatch):
    for empty in ("", "  "):
        fails(capsys, flags(tiny, shapes_dir, "x") + ["--output_dir", empty], "--output_dir")
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    fails(capsys, flags(tiny, shapes_dir, a_file), "--output_dir", "existing file")
    fails(capsys, flags(tiny, shapes_dir, a_file / "out"), "--output_dir", "file.txt")
    assert a_file.read_text() == "not a folder"
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    fails(capsys, flags(tiny, shapes_dir, locked / "out"), "--output_dir", "not writable")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize(
    "env", ["LOCAL_RANK=x", "LOCAL_RANK=-3", "LOCAL_RANK=1 LOCAL_WORLD_SIZE=1"]
)
def test_bad_local_rank(tiny, shapes_dir, tmp_path, capsys, monkeypatch, env):
    for pair in env.split():
        monkeypatch.setenv(*pair.split("="))
    fails(capsys, flags(tiny, shapes_dir, tmp_path / "out"), "LOCAL_RANK")
    assert not (tmp_path / "out").exists()


# --- the base model folder -------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    if how == "remove":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # flip one byte; a position
        blob = bytearray(path.read_bytes())
        blob[int(how)] ^= 0x01
        path.write_bytes(bytes(blob))


UNET = "unet/diffusion_pytorch_model.safetensors"
MODEL_CASES = {  # name: (what, in a copy of the tiny SDXL, how, what the message names)
    "no unet folder": ("unet", "remove", "unet/"),
    "no unet weights": (UNET, "remove", "unet holds no weights"),
    "truncated unet": (UNET, "truncate", UNET),
    "truncated text encoder": ("text_encoder_2/model.safetensors", "truncate", "text_encoder_2/"),
    "no scheduler config": ("scheduler/scheduler_config.json", "remove", "scheduler_config.json"),
    "truncated vae, apart": ("vae/diffusion_pytorch_model.safetensors", "truncate", "vae/"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_damaged_model_folder(tiny, shapes_dir, tmp_path, capsys, case):
    what, how, named = MODEL_CASES[case]
    model, out = tmp_path / "model", tmp_path / "out"
    shutil.copytree(tiny, model)
    damage(model / what, how)
    apart = {"pretrained_vae_model_name_or_path": model / "vae"} if "apart" in case else {}
    flag = next(iter(apart), "pretrained_model_name_or_path")
    fails(capsys, flags(model, shapes_dir, out, **apart), f"--{flag}", named)
    assert not out.exists()


def test_a_loading_error_becomes_one_line():
    from diffnotes.lora.run import load_part

    def load():
        raise OSError("Unable to load weights\nfrom checkpoint file\n")

    with pytest.raises(ValueError) as e:
        load_part("pretrained_vae_model_name_or_path", "m", "unet", load)
    assert str(e.value) == (
        "--pretrained_vae_model_name_or_path: cannot load m/unet: "
        "Unable to load weights from checkpoint file"
    )


# --- dataset rows ----------------------------------------------------------------------------


def _dataset_with(tmp_path: Path, shapes_dir: Path, second_line: str) -> Path:
    """A copy of the shapes folder whose metadata's second line is ``second_line``."""
    folder = tmp_path / "images"
    shutil.copytree(shapes_dir, folder)
    first = (shapes_dir / "metadata.jsonl").read_text().splitlines()[0]
    (folder / "metadata.jsonl").write_text(f"{first}\n{second_line}\n")
    outside = tmp_path / "outside.png"
    shutil.copy(folder / "00000.png", outside)
    (folder / "link.png").symlink_to(outside)
    (folder / "junk.png").write_bytes(b"\x89PNG not really")
    (folder / "half.png").write_bytes((folder / "00000.png").read_bytes()[:60])
    return folder


ROW_CASES = {  # name: (second metadata line, what the message names besides "line 2")
    "dotdot": ('{"file_name": "../outside.png", "text": "a"}', "../outside.png"),
    "absolute": ('{"file_name": "OUTSIDE/outside.png", "text": "a"}', "outside.png"),
    "symlink out": ('{"file_name": "link.png", "text": "a"}', "link.png"),
    "no caption": ('{"file_name": "00001.png"}', "00001.png"),
    "null caption": ('{"file_name": "00001.png", "text": null}', "00001.png"),
    "number caption": ('{"file_name": "00001.png", "text": 3}', "'text'"),
    "empty caption list": ('{"file_name": "00001.png", "text": []}', "'text'"),
    "missing file": ('{"file_name": "nope.png", "text": "a"}', "nope.png"),
    "not an image": ('{"file_name": "junk.png", "text": "a"}', "junk.png"),
    "truncated image": ('{"file_name": "half.png", "text": "a"}', "half.png"),
    "no file name": ('{"text": "a"}', "file_name"),
    "not json": ('{"file_name": "00001.png", "text": ', "not JSON"),
    "not an object": ('["00001.png", "a"]', "not a JSON object"),
}


@pytest.mark.parametrize("case", ROW_CASES)
def test_bad_dataset_row(tiny, shapes_dir, tmp_path, capsys, case):
    line, named = ROW_CASES[case]
    folder = _dataset_with(tmp_path, shapes_dir, line.replace("OUTSIDE", str(tmp_path)))
    out = tmp_path / "out"
    fails(capsys, flags(tiny, folder, out), "metadata.jsonl line 2", named)
    assert not out.exists()


def test_undecodable_image_at_training_time_names_file_and_line(tmp_path):
    """An image that passes the header check but does not decode: one line, file and line."""
    from PIL import Image

    from diffnotes.lora.dataset import CaptionedImages

    path = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:400])
    kw = dict(resolution=64, center_crop=True, random_flip=False, interpolation="bilinear")
    images = CaptionedImages([path], ["a"], tokenizers=(), origins=["meta line 7"], **kw)
    with pytest.raises(ValueError, match=r"^meta line 7: image .*cut\.jpg"):
        images[(0, 0)]


def test_a_dataloader_worker_error_is_one_line():
    from torch._utils import ExceptionWrapper

    try:
        raise ValueError("d/metadata.jsonl line 7: image 'x.png' cannot be decoded")
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ValueError) as caught:
        wrapped.reraise()
    assert "\n" in str(caught.value)
    assert cli.one_line(caught.value).endswith("line 7: image 'x.png' cannot be decoded")


# --- checkpoints: damaged, truncated, empty, foreign, old, or for another rank ----------------


@pytest.fixture(scope="module")
def trained(tiny, shapes_dir, tmp_path_factory) -> Path:
    """An uninterrupted run of 2 steps with checkpoint-1 and checkpoint-2."""
    out = tmp_path_factory.mktemp("trained") / "out"
    assert main(flags(tiny, shapes_dir, out, max_train_steps=2, checkpointing_steps=1)) == 0
    assert (out / WEIGHT_NAME).is_file() and (out / "checkpoint-2" / ckpt.MANIFEST).is_file()
    return out


def _edit_state(folder: Path, **changes) -> None:
    """Change state.json and sign the folder again: valid checksums, bad content."""
    state = json.loads((folder / ckpt.STATE).read_text())
    (folder / ckpt.STATE).write_text(json.dumps({**state, **changes}))
    ckpt.write_manifest(folder)


def _foreign(out: Path) -> None:
    """checkpoint-5 as diffusers' script writes it (accelerate's save_state)."""
    (out / "checkpoint-5").mkdir()
    for name in (WEIGHT_NAME, "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        shutil.copy(out / WEIGHT_NAME, out / "checkpoint-5" / name)


C2 = Path("checkpoint-2")
# A byte of each file (the issue's: tensor data of trainable.safetensors, where -1e-4 became 1e5
# and training went on), safetensors' header of optimizer.safetensors, and JSON.
FLIPS = dict(zip([*ckpt.REQUIRED, WEIGHT_NAME, ckpt.MANIFEST], [20_000, 9, 100, 20, 30_000, 50]))
CHECKPOINT_CASES = {  # name: (damage to a copy of the trained folder, extra flags, named)
    **{
        f"flipped {name}": (lambda o, n=name, i=i: damage(o / C2 / n, i), {}, str(C2 / name))
        for name, i in FLIPS.items()
    },
    "truncated": (lambda o: damage(o / C2 / ckpt.TRAINABLE, "truncate"), {}, ckpt.TRAINABLE),
    "emptied": (lambda o: (o / C2 / ckpt.OPTIMIZER).write_bytes(b""), {}, str(C2 / ckpt.OPTIMIZER)),
    "missing file": (lambda o: (o / C2 / WEIGHT_NAME).unlink(), {}, "missing"),
    "empty folder": (lambda o: (o / "checkpoint-3").mkdir(), {}, "checkpoint-3"),
    "foreign": (_foreign, {}, "checkpoint-5"),
    "older, no checksums": (lambda o: (o / C2 / ckpt.MANIFEST).unlink(), {}, "checksums.json"),
    "negative global_step": (lambda o: _edit_state(o / C2, global_step=-5), {}, "global_step"),
    "global_step of another": (lambda o: _edit_state(o / C2, global_step=7), {}, "global_step"),
    "other rank": (lambda o: None, {"rank": 4}, "--rank 4"),
    "other text encoders": (lambda o: None, {"train_text_encoder": True}, "--train_text_encoder"),
    "no such folder": (lambda o: None, {"resume_from_checkpoint": "checkpoint-9"}, "checkpoint-9"),
    "not a checkpoint": (lambda o: None, {"resume_from_checkpoint": "IMAGES"}, "not a checkpoint"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_resume_refuses_a_bad_checkpoint(tiny, shapes_dir, trained, tmp_path, capsys, case):
    harm, extra, named = CHECKPOINT_CASES[case]
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    harm(out)
    before = snapshot(out)
    kw = {"resume_from_checkpoint": "latest", **extra}
    if kw["resume_from_checkpoint"] == "IMAGES":
        kw["resume_from_checkpoint"] = str(shapes_dir)
    fails(capsys, flags(tiny, shapes_dir, out, **kw), named)
    assert snapshot(out) == before  # nothing swept, trained, logged or written


def test_a_flipped_byte_anywhere_is_refused(trained, tmp_path):
    """Every file of a checkpoint, bytes all over it: load_checkpoint names the file."""
    folder = tmp_path / "checkpoint-2"
    shutil.copytree(trained / "checkpoint-2", folder)
    ckpt.load_checkpoint(folder)  # intact: loads
    files = sorted(f for f in folder.iterdir())
    assert {f.name for f in files} == {*ckpt.REQUIRED, WEIGHT_NAME, ckpt.MANIFEST}
    for f in files:
        size = f.stat().st_size  # the first 96 bytes (safetensors' header), then 150 apart
        for i in sorted({*range(min(size, 96)), *range(0, size, max(1, size // 150)), size - 1}):
            damage(f, i)
            with pytest.raises(ValueError) as caught:
                ckpt.load_checkpoint(folder)
            assert str(f) in str(caught.value) and "\n" not in str(caught.value), (f.name, i)
            damage(f, i)  # flipped back
    ckpt.load_checkpoint(folder)


def test_shape_mismatch_is_refused_before_training(tiny, shapes_dir, trained, tmp_path, capsys):
    """A signed checkpoint whose factors have another shape: refused after loading the models,
    before the first step; nothing in the output folder changes."""
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    folder = out / "checkpoint-2"
    tensors = load_file(folder / ckpt.TRAINABLE)
    name = sorted(tensors)[0]
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:])
    save_file(tensors, folder / ckpt.TRAINABLE)
    ckpt.write_manifest(folder)
    before = snapshot(out)
    kw = flags(tiny, shapes_dir, out, resume_from_checkpoint="latest")
    fails(capsys, kw, name, str(C2 / ckpt.TRAINABLE))
    assert snapshot(out) == before


def test_check_matches_names_the_mismatch(tmp_path):
    named = {"unet.a": torch.zeros(2, 3), "unet.b": torch.zeros(3, 2)}
    groups = torch.optim.AdamW(list(named.values())).state_dict()["param_groups"]

    def checkpoint(trainable, per_param=None):
        opt = {"state": per_param or {}, "param_groups": groups}
        return ckpt.Checkpoint(tmp_path, {**named, **trainable}, opt, {})

    ckpt.check_matches(checkpoint({}), named)
    with pytest.raises(ValueError, match="unet.b is"):
        ckpt.check_matches(checkpoint({"unet.b": torch.zeros(4, 2)}), named)
    with pytest.raises(ValueError, match="an unexpected unet.c"):
        ckpt.check_matches(checkpoint({"unet.c": torch.zeros(2)}), named)
    with pytest.raises(ValueError, match="NaN"):
        ckpt.check_matches(checkpoint({"unet.a": torch.full((2, 3), float("nan"))}), named)
    with pytest.raises(ValueError, match="exp_avg of parameter 1"):
        ckpt.check_matches(checkpoint({}, {1: {"exp_avg": torch.zeros(5)}}), named)
