"""Atomic, checksummed training checkpoints: written to a hidden temp folder, fsynced, renamed.

A kill at any moment leaves either the previous checkpoints or the new complete one; a
half-written temp folder is never picked by ``latest`` and is swept on the next start. Tensors
go to safetensors (no pickles); everything else to JSON. ``checksums.json``, written last, holds
the SHA-256 of every other file and one over its own list, so a resume refuses a flipped byte
anywhere, a truncated or missing file, or a folder this trainer did not write, in one line
naming the file, before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save_file

from diffnotes.io import join_tensors, split_tensors

NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
STATE = "state.json"
MANIFEST = "checksums.json"  # written last: the SHA-256 of every other file
FORMAT = 1  # of the manifest; checkpoints before it had none and are refused
REQUIRED = (TRAINABLE, OPTIMIZER, OPTIMIZER_JSON, STATE)


@dataclass
class Checkpoint:
    """A verified checkpoint: the LoRA factors, the optimizer state and the training state."""

    path: Path
    trainable: dict[str, torch.Tensor]  # by "<model>.<parameter name>", as Run.named
    optimizer_state: dict
    state: dict  # state.json: global_step, epoch, seed, lr_scheduler, scaler, rank, ...


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint-<step> folders in ``output_dir``, oldest first.

    Such a folder appears only by a rename of a complete temp folder, so each one is complete
    unless damaged; `load_checkpoint` tells which.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if NAME.match(d.name) and d.is_dir()]
    return sorted(found, key=lambda d: int(NAME.match(d.name).group(1)))


def sweep_partial(output_dir: str | Path) -> None:
    """Remove temp folders left by a kill during a save or a removal."""
    for d in Path(output_dir).glob(".checkpoint-*"):
        shutil.rmtree(d, ignore_errors=True)


def _remove(folder: Path) -> None:
    """Hide ``folder`` by a rename first: a kill mid-way leaves no half-deleted checkpoint."""
    hidden = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(hidden, ignore_errors=True)
    os.replace(folder, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def _list_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_manifest(folder: str | Path) -> Path:
    """checksums.json: the SHA-256 of every file in ``folder``, and one of that list."""
    folder = Path(folder)
    files = {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name != MANIFEST
    }
    manifest = {"format": FORMAT, "files": files, "sha256": _list_digest(files)}
    (folder / MANIFEST).write_bytes(_dump(manifest))
    return folder / MANIFEST


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict,
    state: dict,
    write_lora=None,
    total_limit: int | None = None,
) -> Path:
    """Write checkpoint-``step`` atomically, then keep at most ``total_limit`` checkpoints."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, tmp / TRAINABLE)
    tensors, opt_meta = split_tensors(optimizer_state, "opt")
    save_file(tensors, tmp / OPTIMIZER)
    (tmp / OPTIMIZER_JSON).write_text(json.dumps(opt_meta))
    if write_lora is not None:
        write_lora(tmp)  # the diffusers-format LoRA too: any checkpoint is a usable LoRA
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    write_manifest(tmp)
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        _remove(final)
    os.replace(tmp, final)
    _fsync(root)
    if total_limit is not None:
        for old in list_checkpoints(root)[:-total_limit]:
            _remove(old)
    return final


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: 'latest' (None if there is none) or a given folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.exists():
        path = Path(output_dir) / Path(resume).name  # diffusers: a name inside --output_dir
    if not path.is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume!r}: no such checkpoint folder (nor {path})"
        )
    return path


def read_verified(path: str | Path) -> dict[str, bytes]:
    """Every file checksums.json lists, by name, after checking each against its SHA-256.

    ValueError, naming the file, for a checkpoint that is damaged, truncated, older than
    checksums, or not one of this trainer's.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        if (path / STATE).is_file():
            raise ValueError(
                f"checkpoint {path} has no {MANIFEST} (written before checkpoints were "
                "checksummed), so it cannot be verified; delete it, or train without "
                "--resume_from_checkpoint"
            )
        raise ValueError(f"{path} is not a checkpoint of this trainer: no {MANIFEST}")
    raw = manifest.read_bytes()
    try:
        body = json.loads(raw)
        files = body["files"]
        ok = raw == _dump(body) and body["format"] == FORMAT
        ok = ok and isinstance(files, dict) and body["sha256"] == _list_digest(files)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{manifest} is corrupt (altered or truncated); delete {path}")
    for name in REQUIRED:
        if name not in files:
            raise ValueError(f"{manifest} does not list {name}: not a checkpoint of this trainer")
    blobs = {}
    for name, digest in sorted(files.items()):
        f = path / name
        if "/" in name or "\\" in name or name.startswith(".") or not f.is_file():
            raise ValueError(f"{f}: missing (listed in {MANIFEST}); delete {path}")
        data = f.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(
                f"{f} is corrupt: checksum mismatch (truncated or altered); delete {path} "
                "to resume from an earlier checkpoint"
            )
        blobs[name] = data
    return blobs


def _parse(path: Path, name: str, parse, data: bytes) -> Any:
    try:
        return parse(data)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{path / name} cannot be read: {e}") from None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STATE_FIELDS = {  # state.json key: (test, what it must be)
    "global_step": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "seed": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0 or null"),
    "lr_scheduler": (lambda v: isinstance(v, dict), "an object"),
    "scaler": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "num_processes": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "rank": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "train_text_encoder": (lambda v: isinstance(v, bool), "true or false"),
}


def check_state(state: object, path: Path) -> dict:
    """state.json's fields, each of its type and range; ValueError naming the file and field."""
    where = path / STATE
    if not isinstance(state, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(state).__name__}")
    for key, (ok, what) in STATE_FIELDS.items():
        if key not in state or not ok(state[key]):
            raise ValueError(f"{where}: {key} must be {what}, got {state.get(key)!r}")
    m = NAME.match(path.name)
    if m and int(m.group(1)) != state["global_step"]:
        raise ValueError(
            f"{where}: global_step {state['global_step']} does not match the folder's name"
        )
    return state


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The verified contents of a checkpoint folder (`read_verified`, then `check_state`)."""
    path = Path(path)
    blobs = read_verified(path)
    trainable = _parse(path, TRAINABLE, st_load, blobs[TRAINABLE])
    tensors = _parse(path, OPTIMIZER, st_load, blobs[OPTIMIZER])
    skeleton = _parse(path, OPTIMIZER_JSON, json.loads, blobs[OPTIMIZER_JSON])
    optimizer_state = _parse(path, OPTIMIZER_JSON, lambda s: join_tensors(s, tensors), skeleton)
    if not (
        isinstance(optimizer_state, dict)
        and isinstance(optimizer_state.get("state"), dict)
        and isinstance(optimizer_state.get("param_groups"), list)
    ):
        raise ValueError(f"{path / OPTIMIZER_JSON} is not an optimizer state")
    # torch optimizers key per-parameter state by int (as the JSON pairs keep them).
    state_by_index = _parse(
        path, OPTIMIZER_JSON, lambda s: {int(k): v for k, v in s.items()}, optimizer_state["state"]
    )
    optimizer_state["state"] = state_by_index
    state = check_state(_parse(path, STATE, json.loads, blobs[STATE]), path)
    return Checkpoint(path, trainable, optimizer_state, state)


def check_flags(ckpt: Checkpoint, *, rank: int, train_text_encoder: bool) -> None:
    """The flags that shape the LoRA layers must be the checkpoint's (checked before loading)."""
    state = ckpt.state
    if state["rank"] != rank:
        raise ValueError(
            f"--rank {rank} differs from the rank {state['rank']} of {ckpt.path} "
            f"(resume with --rank {state['rank']} or use a new --output_dir)"
        )
    if state["train_text_encoder"] != train_text_encoder:
        raise ValueError(
            f"--train_text_encoder is {train_text_encoder} but {ckpt.path} was trained with "
            f"{state['train_text_encoder']}"
        )


def check_matches(ckpt: Checkpoint, named: dict[str, torch.Tensor]) -> None:
    """The checkpoint's LoRA factors and optimizer state fit this run's parameters exactly."""
    where = ckpt.path / TRAINABLE
    missing = sorted(set(named) - set(ckpt.trainable))
    extra = sorted(set(ckpt.trainable) - set(named))
    if missing or extra:
        example = f"no {missing[0]}" if missing else f"an unexpected {extra[0]}"
        raise ValueError(
            f"{where}: its LoRA layers differ from this run's ({example}; "
            "another base model, --rank or --train_text_encoder?)"
        )
    params = list(named.values())
    for (name, p), saved in zip(named.items(), (ckpt.trainable[k] for k in named)):
        if saved.shape != p.shape or not saved.is_floating_point():
            raise ValueError(
                f"{where}: {name} is {saved.dtype} {tuple(saved.shape)} where this run has "
                f"{tuple(p.shape)} (another base model or --rank?)"
            )
        if not torch.isfinite(saved).all():
            raise ValueError(f"{where}: {name} holds NaN or inf")
    where = ckpt.path / OPTIMIZER_JSON
    groups = ckpt.optimizer_state["param_groups"]
    count = sum(len(g.get("params", [])) for g in groups if isinstance(g, dict))
    if count != len(params):
        raise ValueError(f"{where}: state of {count} parameters where this run has {len(params)}")
    for idx, per_param in ckpt.optimizer_state["state"].items():
        if not (0 <= idx < len(params)) or not isinstance(per_param, dict):
            raise ValueError(f"{where}: state for parameter {idx} of {len(params)}")
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != params[idx].shape:
                raise ValueError(
                    f"{where}: {key} of parameter {idx} is {tuple(value.shape)} where the "
                    f"parameter is {tuple(params[idx].shape)}"
                )
