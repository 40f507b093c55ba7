"""Atomic training checkpoints: written to a hidden temp folder, fsynced, then renamed.

A kill at any moment leaves either the previous checkpoints or the new complete one; a
half-written temp folder is never picked by ``latest`` and is swept on the next start. Tensors
go to safetensors (no pickles); everything else to JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffnotes.io import join_tensors, split_tensors

NAME = re.compile(r"^checkpoint-(\d+)$")
STATE = "state.json"  # written last inside the temp folder: its presence marks a complete one


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if NAME.match(d.name) and (d / STATE).exists()]
    return sorted(found, key=lambda d: int(NAME.match(d.name).group(1)))


def sweep_partial(output_dir: str | Path) -> None:
    """Remove temp folders left by a kill during a save."""
    for d in Path(output_dir).glob(".checkpoint-*.tmp"):
        shutil.rmtree(d, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in trainable.items()},
        tmp / "trainable.safetensors",
    )
    tensors, opt_meta = split_tensors(optimizer_state, "opt")
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
    if write_lora is not None:
        write_lora(tmp)  # the diffusers-format LoRA too: any checkpoint is a usable LoRA
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if total_limit is not None:
        for old in list_checkpoints(root)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
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
    if not (path / STATE).exists():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume!r}: no complete checkpoint "
            f"there (expected {path}/{STATE})"
        )
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(trainable tensors, optimizer state dict, training state) of a checkpoint."""
    path = Path(path)
    trainable = load_file(path / "trainable.safetensors")
    tensors = load_file(path / "optimizer.safetensors")
    optimizer_state = join_tensors(json.loads((path / "optimizer.json").read_text()), tensors)
    # torch optimizers key per-parameter state by int; JSON made the keys strings.
    optimizer_state["state"] = {int(k): v for k, v in optimizer_state["state"].items()}
    state = json.loads((path / STATE).read_text())
    return trainable, optimizer_state, state
