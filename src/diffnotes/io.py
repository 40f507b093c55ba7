"""Files on disk: checksummed safetensors, and optimizer state as tensors plus JSON.

`write_safetensors` / `read_safetensors` are the one way diffnotes writes and reads its own
tensor files (training checkpoints, the model cache): atomic, with a SHA-256 of every tensor in
the metadata, so a damaged file is refused instead of loaded.

An optimizer's ``state_dict()`` mixes tensors with plain values. Safetensors holds only the
tensors, so the rest goes to JSON. Two layouts of that split exist on disk and both are kept
byte for byte, since old checkpoints must stay readable:

- flat (`flatten_optimizer`): ``optim.<param index>.<key>`` tensors, and param groups plus
  non-tensor per-parameter values as JSON; the ``diffnotes.train`` checkpoint (one file).
- nested (`split_tensors`): any nesting, each tensor named by its dotted path under a prefix
  (``opt.state.0.exp_avg``), and a JSON skeleton that points at them; the LoRA checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# safetensors files with a checksum


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_safetensors(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str]
) -> None:
    """Write tensors + metadata (with their digest) atomically: temp file, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    blob = st_save(tensors, metadata={**metadata, "sha256": tensor_digest(tensors)})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a file written by `write_safetensors`; ValueError if it is truncated or altered."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such file")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise ValueError(f"path={str(path)!r} is corrupt or half-written: {e}") from e
    metadata = header.get("__metadata__") or {}
    expected = metadata.get("sha256")
    if expected is None or tensor_digest(tensors) != expected:
        raise ValueError(
            f"path={str(path)!r} is corrupt: checksum mismatch (delete it to start over)"
        )
    return tensors, metadata


# ---------------------------------------------------------------------------------------------
# optimizer state: the flat layout of diffnotes.train checkpoints


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], str]:
    """Optimizer state as flat tensors `optim.<param index>.<key>` + param groups as JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:  # e.g. a python int step in older optimizers
                scalars[f"{idx}.{key}"] = value
    return tensors, json.dumps({"param_groups": sd["param_groups"], "scalars": scalars})


def unflatten_optimizer(tensors: dict[str, Tensor], groups_json: str) -> dict[str, Any]:
    """The ``state_dict`` that `flatten_optimizer` split, for ``Optimizer.load_state_dict``."""
    meta = json.loads(groups_json)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------------------------------------
# any nested state: the layout of LoRA checkpoints


def split_tensors(obj: Any, prefix: str) -> tuple[dict[str, Tensor], Any]:
    """(tensors named ``prefix.<dotted path>``, a JSON-able skeleton that references them)."""
    tensors: dict[str, Tensor] = {}
    return tensors, _split(obj, prefix, tensors)


def join_tensors(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """The object `split_tensors` took apart (tuples come back as lists, as JSON has no tuple)."""
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        # pairs, not a JSON object: keeps non-string keys (param indices) as they were
        return {k: join_tensors(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [join_tensors(v, tensors) for v in skeleton]
    return skeleton


def _split(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _split(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj
