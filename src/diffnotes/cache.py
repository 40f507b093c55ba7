"""Trained models cached on disk, so rebuilding the book reuses them and any change retrains.

The key is (name, profile, config hash, diffnotes version, code hash): the code hash covers the
source of the model's module, of `diffnotes.train` and `diffnotes.losses`, and of the ``build`` and
``fit`` functions, so editing any of them retrains. Files live in ``$DIFFNOTES_CACHE`` (default
``~/.cache/diffnotes``) as safetensors with a checksum; a damaged entry is retrained, never loaded.
Every entry path is checked to lie inside that directory, and the directory is checked for
writing before a model is trained, not after.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import diffnotes
from diffnotes.io import read_safetensors, write_safetensors


def cache_dir() -> Path:
    """The cache directory: $DIFFNOTES_CACHE, else ~/.cache/diffnotes."""
    return Path(os.environ.get("DIFFNOTES_CACHE") or Path.home() / ".cache" / "diffnotes")


def _shown(path: Path) -> str:
    """``path`` as printed: relative to the cache directory, so no machine path is shown."""
    try:
        return f"$DIFFNOTES_CACHE/{path.relative_to(cache_dir())}"
    except ValueError:
        return path.name


def config_hash(config: dict) -> str:
    """A stable short hash of a JSON-able config (keys sorted; non-JSON values by repr)."""
    text = json.dumps(config, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)  # e.g. a lambda typed at a prompt
        return repr(code.co_code + repr(code.co_consts).encode()) if code else repr(obj)


def _class_source(cls: type) -> str:
    # a class defined in a notebook has no file: hash the source of each of its methods instead
    parts = [cls.__qualname__]
    for attr in sorted(vars(cls)):
        value = vars(cls)[attr]
        if inspect.isfunction(value):
            parts.append(_source(value))
    return "\n".join(parts)


def _code_hash(model: nn.Module, build: Callable, fit: Callable) -> str:
    h = hashlib.sha256()
    modules = {type(model).__module__, "diffnotes.train", "diffnotes.losses"}
    modules |= {
        type(m).__module__ for m in model.modules() if type(m).__module__.startswith("diffnotes")
    }
    for name in sorted(modules):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path and os.path.isfile(path):
            h.update(Path(path).read_bytes())
    # classes without a source file (defined in a notebook) are part of the key too
    fileless = {
        type(m)
        for m in model.modules()
        if not os.path.isfile(getattr(sys.modules.get(type(m).__module__), "__file__", "") or "")
    }
    for cls in sorted(fileless, key=lambda c: c.__qualname__):
        h.update(_class_source(cls).encode())
    h.update(repr(model).encode())
    h.update(_source(build).encode())
    h.update(_source(fit).encode())
    return h.hexdigest()[:16]


def entry_path(
    name: str, config: dict, *, profile: str | None = None, seed: int | None = None
) -> Path:
    """Where `cached` keeps ``name`` for this config, profile and seed (code hash: metadata).

    Always a file inside `cache_dir`: ``name`` and ``profile`` are reduced to letters, digits,
    ``_ . -`` (no ``/``, no leading dot), and a path that a link would lead out is refused.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string like 'ddpm/unet', got {name!r}")
    if profile is None or seed is None:
        from diffnotes.profile import profile as get_profile

        prof = get_profile()
        profile = prof.name if profile is None else profile
        seed = prof.seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.")
    safe_profile = re.sub(r"[^A-Za-z0-9_-]+", "_", str(profile))
    if not safe:
        raise ValueError(f"name={name!r} has no letter or digit to name its cache folder")
    if not safe_profile.strip("_"):
        raise ValueError(f"profile={profile!r} has no letter or digit to name a cache entry")
    file = f"{safe_profile}-s{seed}-{config_hash(config)}-v{diffnotes.__version__}.safetensors"
    root = cache_dir()
    path = root / safe / file
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"name={name!r}: {str(root / safe)!r} is a link out of the cache directory "
            f"{str(root)!r} (DIFFNOTES_CACHE); remove it"
        )
    return path


def _check_writable(path: Path) -> None:
    """Refuse, before any training, a cache entry that could not be written (names the variable).

    Creates the cache directory if missing and writes and removes a probe file in the deepest
    existing folder on the way to ``path``; nothing else is left behind.
    """
    root = cache_dir()
    env = os.environ.get("DIFFNOTES_CACHE")
    source = f"DIFFNOTES_CACHE={env!r}" if env else "the default (DIFFNOTES_CACHE unset)"
    try:
        root.mkdir(parents=True, exist_ok=True)
        folder = path.parent
        while not folder.exists() and folder != root:
            folder = folder.parent
        if not folder.is_dir():
            raise NotADirectoryError(f"{str(folder)!r} is not a directory")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(
            f"cache directory {str(root)!r} from {source} is not writable "
            f"({type(e).__name__}: {e}); set DIFFNOTES_CACHE to a writable folder"
        ) from e


def cached(
    name: str,
    config: dict,
    build: Callable[[], nn.Module],
    fit: Callable[[nn.Module], nn.Module],
    *,
    device: torch.device | str | None = None,
    verbose: bool = True,
    profile: str | None = None,
    seed: int | None = None,
) -> nn.Module:
    """``fit(build())``, or the weights stored by an earlier call with the same key, in eval mode.

    ``name`` is e.g. 'ddpm/unet'; ``config`` every setting that changes the result (JSON-able);
    ``fit`` returns the module to keep (e.g. ``lambda m: train(m, ...).ema``) with the
    architecture ``build()`` makes. The model is returned on ``device`` (default: the profile's).
    ``profile`` overrides the profile name in the key (e.g. 'any' for a profile-independent model).
    ``seed`` (default: the profile's, i.e. ``DIFFNOTES_SEED``) is part of the key and seeds the
    global RNG around ``build()``, so the initial weights follow it; ``fit`` should pass the same
    seed to `diffnotes.train.train`.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string like 'ddpm/unet', got {name!r}")
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of the settings, got {type(config).__name__}")
    from diffnotes.profile import profile as get_profile

    prof = get_profile()
    device = torch.device(device) if device is not None else prof.device
    key_profile = prof.name if profile is None else profile
    seed = prof.seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    path = entry_path(name, config, profile=key_profile, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initial weights follow the seed, not the notebook's history
        model = build()
    if not isinstance(model, nn.Module):
        raise ValueError(f"build must return an nn.Module, got {type(model).__name__}")
    code = _code_hash(model, build, fit)

    if path.exists():
        try:
            tensors, meta = read_safetensors(path)
            if meta.get("code") == code:
                model.load_state_dict(tensors)
                if verbose:
                    print(f"cache: loaded {name} ({key_profile}) from {_shown(path)}")
                return model.to(device).eval()
        except (ValueError, RuntimeError) as e:  # damaged or stale: retrain, never load it
            warnings.warn(f"cache: ignoring {path}: {e}", stacklevel=2)

    _check_writable(path)  # before training: a full run must not be lost to a read-only cache
    start = time.perf_counter()
    fitted = fit(model)
    if not isinstance(fitted, nn.Module):
        raise ValueError(
            f"fit must return an nn.Module (e.g. train(...).ema), got {type(fitted).__name__}"
        )
    seconds = time.perf_counter() - start
    # clone: tied weights would share storage, which safetensors refuses
    tensors = {k: v.detach().cpu().clone() for k, v in fitted.state_dict().items()}
    meta = {
        "name": name,
        "profile": key_profile,
        "config": json.dumps(config, sort_keys=True, default=repr),
        "version": diffnotes.__version__,
        "code": code,
        "seconds": f"{seconds:.1f}",
    }
    write_safetensors(path, tensors, meta)
    if verbose:
        print(f"cache: trained {name} ({key_profile}) in {seconds:.1f} s -> {_shown(path)}")
    return fitted.to(device).eval()
