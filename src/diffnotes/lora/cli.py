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
import math
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from diffnotes.lora.sources import (  # noqa: F401 (hub_reachable, check_model_source: API)
    check_model_source,
    check_sources,
    hub_reachable,
)

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


@dataclass(frozen=True)
class Range:
    """The values a numeric flag allows: finite, and ``low <= v`` (``low < v`` if
    ``open_low``), ``v <= high`` (``v < high`` if ``open_high``)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.open_low else v < self.low):
            return False
        return self.high is None or (v < self.high if self.open_high else v <= self.high)

    def __str__(self) -> str:
        def num(v: float) -> str:
            return f"{v:.0f}" if float(v).is_integer() else f"{v:g}"

        if self.high is None:
            return f"{'>' if self.open_low else '>='} {num(self.low)}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{num(self.low)}, {num(self.high)}{right}"


POSITIVE, NON_NEGATIVE = Range(0, open_low=True), Range(0)
UNIT = Range(0, 1, open_high=True)  # Adam's betas: torch.optim.AdamW refuses 1
# Every numeric flag and its range: checked by `validate`, stated in --help.
RANGES = {
    "num_validation_images": NON_NEGATIVE,
    "validation_epochs": POSITIVE,
    "max_train_samples": POSITIVE,
    "seed": Range(0, 2**32 - 1),  # numpy's and accelerate's set_seed range
    "resolution": POSITIVE,  # and a multiple of 8
    "train_batch_size": POSITIVE,
    "num_train_epochs": POSITIVE,
    "max_train_steps": POSITIVE,
    "checkpointing_steps": POSITIVE,
    "checkpoints_total_limit": POSITIVE,
    "gradient_accumulation_steps": POSITIVE,
    "learning_rate": POSITIVE,
    "lr_warmup_steps": NON_NEGATIVE,
    "snr_gamma": POSITIVE,  # min(SNR, gamma): gamma <= 0 flips or zeroes the loss
    "dataloader_num_workers": NON_NEGATIVE,
    "adam_beta1": UNIT,
    "adam_beta2": UNIT,
    "adam_weight_decay": NON_NEGATIVE,
    "adam_epsilon": POSITIVE,
    "max_grad_norm": POSITIVE,  # clip_grad_norm_ with a negative norm flips the update
    "local_rank": Range(-1),
    "noise_offset": NON_NEGATIVE,
    "rank": POSITIVE,
    "validation_inference_steps": POSITIVE,
}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), like every other check here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The trainer's flags: diffusers' names, meanings and defaults, plus a few of our own."""
    p = OneLineParser(prog="diffnotes.lora.train_sdxl", description=__doc__.splitlines()[0])

    def a(flag: str, **kw) -> None:
        if flag[2:] in RANGES:
            kw["help"] = f"{kw.get('help', '')} ({RANGES[flag[2:]]})".lstrip()
        p.add_argument(flag, **kw)

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
    env_rank = os.environ.get("LOCAL_RANK", "-1").strip()
    try:
        env_rank = int(env_rank)
    except ValueError:
        env_rank = None
    if env_rank is None or env_rank < -1:
        got = os.environ["LOCAL_RANK"]
        raise ValueError(f"LOCAL_RANK must be an integer >= -1 (set by the launcher), got {got!r}")
    if env_rank != -1:
        args.local_rank = env_rank
    return args


def check_ranges(args: argparse.Namespace) -> None:
    """Every numeric flag inside its `RANGES` entry (None: not given, allowed)."""
    for name, allowed in RANGES.items():
        value = getattr(args, name)
        if value is not None and value not in allowed:
            kind = "an integer" if isinstance(value, int) else "a finite number"
            raise ValueError(f"--{name} must be {kind} {allowed}, got {value!r}")
    if args.resolution % 8:
        raise ValueError(
            f"--resolution must be a positive multiple of 8 (VAE downsampling), "
            f"got {args.resolution}"
        )
    world = os.environ.get("LOCAL_WORLD_SIZE", "")
    if world.isdigit() and args.local_rank >= int(world):
        raise ValueError(f"LOCAL_RANK {args.local_rank} must be < LOCAL_WORLD_SIZE {world}")


def check_output_dir(value: str) -> None:
    """--output_dir: a non-empty path to a folder that exists or can be made, and is writable."""
    if not value.strip():
        raise ValueError(f"--output_dir must be a folder path, got {value!r}")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {value!r} is an existing file, not a folder")
    probe = path  # the folder itself, or the nearest existing folder above it
    while not probe.exists():
        if probe.is_symlink():
            raise ValueError(f"--output_dir {value!r}: {probe} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--output_dir {value!r}: {probe} is a file, so no folder can go there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--output_dir {value!r}: {probe} is not writable")


def read_folder_columns(folder: Path) -> list[str]:
    """Columns of an image folder, named as datasets' imagefolder does ('file_name' -> 'image')."""
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"image folder {str(folder)!r} has no metadata.jsonl")
    with meta.open("rb") as f:
        first = next((line for line in f if line.strip()), b"")
    if not first:
        raise ValueError(f"{meta} is empty")
    try:
        row = json.loads(first)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{meta}: the first row is not JSON ({e})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{meta}: the first row is not a JSON object")
    return ["image" if k == "file_name" else k for k in row]


def validate(args: argparse.Namespace, *, device_type: str | None = None) -> None:
    """Every check that needs no model: raise before anything is loaded or written."""
    if args.dataset_name is None and args.train_data_dir is None:
        raise ValueError(
            "Need either a dataset name or a training folder: --dataset_name or --train_data_dir"
        )
    check_ranges(args)
    check_output_dir(args.output_dir)
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

    check_sources(args)
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


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (a DataLoader worker's error: its last line)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught "):  # torch's worker-exception wrapper
        return lines[-1]
    return " ".join(lines) or type(err).__name__


def run_cli(main, argv: list[str] | None = None) -> int:
    """Call ``main(args)``; bad input exits with one line on stderr and status 2."""
    try:
        main(parse_args(argv))
    except (ValueError, FileNotFoundError, ConnectionError, FloatingPointError) as err:
        prog = os.path.basename(sys.argv[0]) or "train_sdxl"
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2 if not isinstance(err, FloatingPointError) else 1
    return 0
