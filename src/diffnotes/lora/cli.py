"""Flags of the SDXL LoRA trainer and the checks that run before any model is loaded.

The flags and their defaults mean what they mean in diffusers'
``examples/text_to_image/train_text_to_image_lora_sdxl.py``, so the reading list's command
parses unchanged. Every check here is cheap (no torch model, no download) and raises
ValueError / FileNotFoundError naming the flag and the allowed values.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

# The reading list's experiment, verbatim (shared/seed/Diffusion-Study.md).
READING_LIST_COMMAND = (
    "accelerate launch train_text_to_image_lora_sdxl.py"
    ' --pretrained_model_name_or_path="stabilityai/stable-diffusion-xl-base-1.0"'
    ' --pretrained_vae_model_name_or_path="madebyollin/sdxl-vae-fp16-fix"'
    ' --dataset_name="AdamLucek/oldbookillustrations-small"'
    ' --validation_prompt="An inventor tinkers with a complex machine in his workshop,'
    ' oblivious to the setting sun outside" --num_validation_images=4 --validation_epochs=1'
    ' --output_dir="output" --resolution=1024 --center_crop --random_flip --train_text_encoder'
    " --train_batch_size=1 --num_train_epochs=10 --checkpointing_steps=500"
    " --gradient_accumulation_steps=4 --learning_rate=1e-04 --lr_warmup_steps=0"
    ' --report_to="wandb" --dataloader_num_workers=8 --allow_tf32 --mixed_precision="fp16"'
    ' --hub_model_id="sdxl-lora-testing"'
)
READING_LIST_ARGV = shlex.split(READING_LIST_COMMAND)[3:]

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
TRACKERS = ("tensorboard", "wandb", "comet_ml", "all", "none")
PREDICTION_TYPES = (None, "epsilon", "v_prediction")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
HUB_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), like every other check here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The trainer's flags: diffusers' names, meanings and defaults, plus a few of our own."""
    p = OneLineParser(prog="diffnotes.lora.train_sdxl", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--pretrained_model_name_or_path", required=True, help="local folder or Hub id")
    a("--pretrained_vae_model_name_or_path", default=None, help="e.g. the fp16-fix VAE")
    a("--revision", default=None)
    a("--variant", default=None)
    a("--dataset_name", default=None, help="Hub dataset id or a local image folder")
    a("--dataset_config_name", default=None)
    a("--train_data_dir", default=None, help="image folder with metadata.jsonl")
    a("--image_column", default="image")
    a("--caption_column", default="text")
    a("--validation_prompt", default=None)
    a("--num_validation_images", type=int, default=4)
    a("--validation_epochs", type=int, default=1)
    a("--max_train_samples", type=int, default=None)
    a("--output_dir", default="sd-model-finetuned-lora")
    a("--cache_dir", default=None)
    a("--seed", type=int, default=None)
    a("--resolution", type=int, default=1024)
    a("--center_crop", action="store_true")
    a("--random_flip", action="store_true")
    a("--train_text_encoder", action="store_true")
    a("--train_batch_size", type=int, default=16, help="per device")
    a("--num_train_epochs", type=int, default=100)
    a("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    a("--checkpointing_steps", type=int, default=500)
    a("--checkpoints_total_limit", type=int, default=None)
    a("--resume_from_checkpoint", default=None, help='a checkpoint folder or "latest"')
    a("--gradient_accumulation_steps", type=int, default=1)
    a("--gradient_checkpointing", action="store_true")
    a("--learning_rate", type=float, default=1e-4)
    a("--scale_lr", action="store_true")
    a("--lr_scheduler", default="constant", help=", ".join(LR_SCHEDULERS))
    a("--lr_warmup_steps", type=int, default=500)
    a("--snr_gamma", type=float, default=None)
    a("--allow_tf32", action="store_true")
    a("--dataloader_num_workers", type=int, default=0)
    a("--use_8bit_adam", action="store_true")
    a("--adam_beta1", type=float, default=0.9)
    a("--adam_beta2", type=float, default=0.999)
    a("--adam_weight_decay", type=float, default=1e-2)
    a("--adam_epsilon", type=float, default=1e-8)
    a("--max_grad_norm", type=float, default=1.0)
    a("--push_to_hub", action="store_true")
    a("--hub_token", default=None)
    a("--prediction_type", default=None, help="epsilon or v_prediction; default: scheduler's")
    a("--hub_model_id", default=None, help="repository name; used only with --push_to_hub")
    a("--logging_dir", default="logs")
    a("--report_to", default="tensorboard", help=", ".join(TRACKERS))
    a("--mixed_precision", default=None, help=", ".join(MIXED_PRECISION))
    a("--local_rank", type=int, default=-1)
    a("--noise_offset", type=float, default=0.0)
    a("--rank", type=int, default=4, help="LoRA rank r (lora_alpha = r, as in diffusers)")
    a("--image_interpolation_mode", default="lanczos", help=", ".join(INTERPOLATIONS))
    # Ours: validation sampling steps (diffusers uses the pipeline default of 50).
    a("--validation_inference_steps", type=int, default=50)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse trainer flags (``argv`` None reads sys.argv), with diffusers' LOCAL_RANK rule."""
    args = build_parser().parse_args(argv)
    env_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_rank != -1:
        args.local_rank = env_rank
    return args


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be > 0, got {value}")


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
        if not (path / marker).exists():
            raise FileNotFoundError(f"--{flag} {name!r} is a folder without {marker}")
        return
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"--{flag} {name!r}: no such folder (and not a Hub id org/name)")
    if _hub_cached(name, marker) or hub_reachable():
        return
    raise ConnectionError(
        f"--{flag} {name!r} is a Hub id, not in the local cache, and the Hub is unreachable; "
        "pass a local folder (e.g. one written by diffnotes.lora.tiny_sdxl)"
    )


def read_folder_columns(folder: Path) -> list[str]:
    """Columns of an image folder, named as datasets' imagefolder does ('file_name' -> 'image')."""
    meta = folder / "metadata.jsonl"
    if not meta.exists():
        raise FileNotFoundError(f"image folder {str(folder)!r} has no metadata.jsonl")
    with meta.open() as f:
        first = f.readline().strip()
    if not first:
        raise ValueError(f"{meta} is empty")
    keys = list(json.loads(first))
    return ["image" if k == "file_name" else k for k in keys]


def validate(args: argparse.Namespace, *, device_type: str | None = None) -> None:
    """Every check that needs no model: raise before anything is loaded or written."""
    if args.dataset_name is None and args.train_data_dir is None:
        raise ValueError(
            "Need either a dataset name or a training folder: --dataset_name or --train_data_dir"
        )
    if args.resolution <= 0 or args.resolution % 8:
        raise ValueError(
            f"--resolution must be a positive multiple of 8 (VAE downsampling), "
            f"got {args.resolution}"
        )
    if args.rank <= 0:
        raise ValueError(f"--rank must be a positive integer, got {args.rank}")
    _positive(args, "train_batch_size", "num_train_epochs", "max_train_steps")
    _positive(args, "checkpointing_steps", "checkpoints_total_limit", "learning_rate")
    _positive(args, "gradient_accumulation_steps", "validation_epochs", "max_train_samples")
    _positive(args, "validation_inference_steps")
    if args.num_validation_images < 0 or args.dataloader_num_workers < 0:
        raise ValueError("--num_validation_images and --dataloader_num_workers must be >= 0")
    if args.mixed_precision is not None and args.mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"--mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
            f"got {args.mixed_precision!r}"
        )
    if args.lr_scheduler not in LR_SCHEDULERS:
        raise ValueError(
            f"--lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {args.lr_scheduler!r}"
        )
    if args.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"--prediction_type must be epsilon or v_prediction, got {args.prediction_type!r}"
        )
    if args.image_interpolation_mode not in INTERPOLATIONS:
        raise ValueError(f"--image_interpolation_mode must be one of {', '.join(INTERPOLATIONS)}")
    for tracker in args.report_to.split(","):
        if tracker.strip() not in TRACKERS:
            raise ValueError(f"--report_to must be among {', '.join(TRACKERS)}, got {tracker!r}")
    if "wandb" in args.report_to and args.hub_token is not None:
        raise ValueError(
            "--report_to wandb with --hub_token would expose the token; use `hf auth login` instead"
        )
    if args.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("--use_8bit_adam needs bitsandbytes: pip install bitsandbytes")

    if device_type is None:
        import torch

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if args.mixed_precision == "fp16" and device_type == "cpu":
        raise ValueError("--mixed_precision fp16 needs a GPU (none found); use no or bf16 on CPU")

    check_model_source(
        "pretrained_model_name_or_path", args.pretrained_model_name_or_path, "model_index.json"
    )
    if args.pretrained_vae_model_name_or_path is not None:
        check_model_source(
            "pretrained_vae_model_name_or_path",
            args.pretrained_vae_model_name_or_path,
            "config.json",
        )
    validate_dataset(args)
    if args.push_to_hub:
        from huggingface_hub import get_token

        if args.hub_token is None and get_token() is None:
            raise ValueError("--push_to_hub needs a Hub login (`hf auth login`) or --hub_token")
        if not hub_reachable():
            raise ConnectionError("--push_to_hub: the Hugging Face Hub is unreachable")


def validate_dataset(args: argparse.Namespace) -> None:
    """The dataset exists and has the image and caption columns (a local folder or the Hub)."""
    local = args.train_data_dir if args.dataset_name is None else args.dataset_name
    flag = "train_data_dir" if args.dataset_name is None else "dataset_name"
    if args.dataset_name is None or Path(args.dataset_name).exists():
        folder = Path(local)
        if not folder.is_dir():
            raise FileNotFoundError(f"--{flag} {local!r}: no such folder")
        columns = read_folder_columns(folder)
    else:
        if importlib.util.find_spec("datasets") is None:
            raise ValueError(
                f"--dataset_name {args.dataset_name!r} is a Hub dataset: it needs "
                "the `datasets` package (pip install datasets) and network"
            )
        if not hub_reachable():
            raise ConnectionError(
                f"--dataset_name {args.dataset_name!r} is a Hub dataset and the "
                "Hub is unreachable; pass a local --train_data_dir"
            )
        from diffnotes.lora.dataset import load_hub_dataset

        columns = load_hub_dataset(args).column_names
    for flag, col in (("image_column", args.image_column), ("caption_column", args.caption_column)):
        if col not in columns:
            raise ValueError(
                f"--{flag} {col!r} is not a dataset column; columns: {', '.join(columns)}"
            )


def run_cli(main, argv: list[str] | None = None) -> int:
    """Call ``main(args)``; bad input exits with one line on stderr and status 2."""
    args = parse_args(argv)
    try:
        main(args)
    except (ValueError, FileNotFoundError, ConnectionError, FloatingPointError) as err:
        print(f"{os.path.basename(sys.argv[0]) or 'train_sdxl'}: error: {err}", file=sys.stderr)
        return 2 if not isinstance(err, FloatingPointError) else 1
    return 0
