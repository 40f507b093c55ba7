"""What a run leaves behind besides weights: the CSV log, tracker choice and the model card."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import time
from pathlib import Path

TRACKER_MODULES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "comet_ml": ("comet_ml",),
}


def trackers_for(report_to: str) -> tuple[list[str], list[str]]:
    """(trackers that are installed, one-line warnings for the asked-for ones that are not)."""
    asked = [t.strip() for t in report_to.split(",") if t.strip() and t.strip() != "none"]
    if "all" in asked:
        asked = list(TRACKER_MODULES)
    found, warnings = [], []
    for name in asked:
        if any(importlib.util.find_spec(m) for m in TRACKER_MODULES[name]):
            found.append(name)
        elif report_to != "all":
            warnings.append(
                f"--report_to {name}: {name} is not installed; logging to the CSV log only"
            )
    return found, warnings


class RunLog:
    """Append-only CSV of step, epoch, loss and lr; a resumed run drops rows past its step."""

    FIELDS = ("step", "epoch", "train_loss", "lr", "seconds")  # seconds since this log opened

    def __init__(self, path: str | Path, *, resume_step: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()
        rows = []
        if resume_step and self.path.exists():
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, step: int, epoch: int, *, train_loss: float, lr: float) -> None:
        seconds = time.perf_counter() - self.start
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(
                [step, epoch, f"{train_loss:.6g}", f"{lr:.6g}", f"{seconds:.3f}"]
            )


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The CSV log as a list of {step, epoch, train_loss, lr, seconds}."""
    with Path(path).open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


SETTINGS = (
    "pretrained_model_name_or_path",
    "pretrained_vae_model_name_or_path",
    "dataset_name",
    "train_data_dir",
    "resolution",
    "center_crop",
    "random_flip",
    "train_text_encoder",
    "rank",
    "train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler",
    "lr_warmup_steps",
    "mixed_precision",
    "gradient_checkpointing",
    "use_8bit_adam",
    "seed",
    "snr_gamma",
    "noise_offset",
)


def write_model_card(
    out: Path, args: argparse.Namespace, *, images: list[str], global_step: int, num_processes: int
) -> Path:
    """README.md beside the weights: base model, data, every setting, validation images."""
    data = args.dataset_name or args.train_data_dir
    lines = [
        "---",
        f"base_model: {args.pretrained_model_name_or_path}",
        "library_name: diffusers",
        "tags: [stable-diffusion-xl, stable-diffusion-xl-diffusers, text-to-image, lora]",
        "---",
        "",
        f"# LoRA text2image fine-tuning of {args.pretrained_model_name_or_path}",
        "",
        f"LoRA (rank {args.rank}) weights fine-tuned on `{data}` by `diffnotes.lora.train_sdxl` "
        f"for {global_step} optimizer steps on {num_processes} process(es); global batch "
        f"{args.train_batch_size * num_processes * args.gradient_accumulation_steps}.",
        f"LoRA for the text encoders: {args.train_text_encoder}. "
        f"VAE used for training: {args.pretrained_vae_model_name_or_path}.",
        "",
        "```python",
        "from diffusers import StableDiffusionXLPipeline",
        f'pipe = StableDiffusionXLPipeline.from_pretrained("{args.pretrained_model_name_or_path}")',
        f'pipe.load_lora_weights("{out}")',
        "```",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "| --- | --- |",
        *(f"| {k} | {getattr(args, k)} |" for k in SETTINGS),
    ]
    if images:
        lines += ["", f"## Validation: {args.validation_prompt!r}", ""]
        lines += [f"![validation {i}]({p})" for i, p in enumerate(images)]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
