"""Where the base model comes from: a local SDXL folder (checked part by part) or the Hub.

Every check reads at most a file's header: no model is loaded. Each raises one line naming the
flag and the folder or file that is missing or damaged.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

HUB_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")

# The parts of an SDXL pipeline folder the trainer loads, and the file each must hold.
SDXL_PARTS = {
    "tokenizer": None,
    "tokenizer_2": None,
    "scheduler": "scheduler_config.json",
    "text_encoder": "config.json",
    "text_encoder_2": "config.json",
    "vae": "config.json",
    "unet": "config.json",
}
WEIGHTS = ("*.safetensors", "*.bin")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face Hub answers a TCP connect (and offline mode is off)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(HUB_ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(repo_id: str, filename: str, repo_type: str = "model") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
        return isinstance(hit, str)
    except Exception:  # any malformed id is simply "not cached"
        return False


def check_model_source(flag: str, name: str, marker: str) -> None:
    """A local folder holding ``marker``, or a Hub id that is cached or reachable."""
    path = Path(name)
    if path.exists():
        if not path.is_dir() or not (path / marker).exists():
            raise FileNotFoundError(f"--{flag} {name!r} is not a folder with {marker}")
        return
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"--{flag} {name!r}: no such folder (and not a Hub id org/name)")
    if _hub_cached(name, marker) or hub_reachable():
        return
    raise ConnectionError(
        f"--{flag} {name!r} is a Hub id, not in the local cache, and the Hub is unreachable; "
        "pass a local folder (e.g. one written by diffnotes.lora.tiny_sdxl)"
    )


def check_safetensors(flag: str, path: Path) -> None:
    """A safetensors file whose header parses and whose size is what the header promises."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or 8 + n > size:
                raise ValueError("shorter than its header")
            header = json.loads(f.read(n))
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
        if 8 + n + end != size:
            raise ValueError(f"{size} bytes where its header promises {8 + n + end}")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"--{flag}: {path} is truncated or corrupt ({e})") from None


def check_weights(flag: str, folder: Path) -> None:
    """``folder`` holds weights, and each safetensors file among them is whole."""
    files = [f for pattern in WEIGHTS for f in sorted(folder.glob(pattern))]
    if not files:
        raise FileNotFoundError(f"--{flag}: {folder} holds no weights (*.safetensors or *.bin)")
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors(flag, f)


def check_sdxl_folder(flag: str, folder: Path, *, vae: bool = True) -> None:
    """Every part of a local SDXL pipeline folder the trainer loads (the VAE unless given)."""
    for part, marker in SDXL_PARTS.items():
        if part == "vae" and not vae:
            continue
        sub = folder / part
        if not sub.is_dir():
            raise FileNotFoundError(
                f"--{flag} {str(folder)!r} has no {part}/ folder "
                f"(an SDXL pipeline has {', '.join(SDXL_PARTS)})"
            )
        if marker is not None and not (sub / marker).is_file():
            raise FileNotFoundError(f"--{flag}: {sub / marker}: no such file")
        if marker == "config.json":
            check_weights(flag, sub)


def check_sources(args) -> None:
    """--pretrained_model_name_or_path (and the VAE's): present, whole, or on the Hub."""
    model, vae = args.pretrained_model_name_or_path, args.pretrained_vae_model_name_or_path
    check_model_source("pretrained_model_name_or_path", model, "model_index.json")
    if Path(model).is_dir():
        check_sdxl_folder("pretrained_model_name_or_path", Path(model), vae=vae is None)
    if vae is not None:
        check_model_source("pretrained_vae_model_name_or_path", vae, "config.json")
        if Path(vae).is_dir():
            check_weights("pretrained_vae_model_name_or_path", Path(vae))
