"""One SDXL LoRA fine-tune as a small state object, and `setup`, which builds it from the flags.

`setup` checks the flags, verifies the checkpoint to resume from and every dataset row, then
loads SDXL's parts, adds the LoRA adapters, makes the optimizer, the data and the LR schedule,
and hands the trained models to accelerate; the steps in `train_sdxl` read and advance the `Run`
it returns. Its order of operations is the trainer's: the seed is set right before peft
draws the adapters' initial weights.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffnotes.lora import checkpoint as ckpt
from diffnotes.lora.cli import validate
from diffnotes.lora.dataset import CaptionedImages, GlobalBatches, Rows, load_rows, subset
from diffnotes.lora.report import RunLog, trackers_for
from diffnotes.lora.weights import save_lora

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # attention projections, as diffusers
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class Run:
    """What the steps of one fine-tune share: the models, optimizer, data and how far it got."""

    args: argparse.Namespace
    accelerator: Any
    out: Path  # --output_dir
    noise_scheduler: Any  # diffusers' DDPMScheduler: alpha_bar_t, add_noise, prediction type
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]  # both, as the loss calls them (prepared if trained)
    models: dict[str, torch.nn.Module]  # the trained ones, prepared: unet [+ text encoders]
    lora_models: list[torch.nn.Module]  # the same, unwrapped: what the LoRA file is taken from
    named: dict[str, torch.Tensor]  # the trainable LoRA factors by "<model>.<parameter name>"
    optimizer: Any
    lr_scheduler: Any
    dataset: CaptionedImages
    weight_dtype: torch.dtype  # of the frozen weights: --mixed_precision's
    steps_per_epoch: int  # optimizer steps, i.e. global batches / --gradient_accumulation_steps
    max_steps: int
    num_epochs: int
    global_step: int = 0  # optimizer steps done
    first_epoch: int = 0  # where a resumed run starts
    log: RunLog | None = None  # the main process's CSV log
    bar: Any = None
    checkpoint: ckpt.Checkpoint | None = None  # verified by `setup`, loaded by `resume`

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def params(self) -> list[torch.Tensor]:
        return list(self.named.values())

    def write_lora(self, folder: str | Path) -> None:
        """The diffusers-format LoRA file of the adapters as they are now, into ``folder``."""
        save_lora(folder, *self.lora_models)


def setup(args: argparse.Namespace) -> Run:
    """Check the flags, then build everything the training steps need; nothing is trained yet."""
    validate(args)  # before anything is imported, loaded or written
    out = Path(args.output_dir)
    checkpoint = verified_checkpoint(args, out)
    rows = load_rows(args)  # every row checked: paths inside the folder, images, captions
    from diffusers.optimization import get_scheduler

    accelerator = _accelerator(args, out)
    tokenizers, noise_scheduler, te1, te2, vae, unet = _load_models(args)
    if args.prediction_type is not None:
        noise_scheduler.register_to_config(prediction_type=args.prediction_type)
    for m in (vae, te1, te2, unet):
        m.requires_grad_(False)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )
    unet.to(accelerator.device, dtype=weight_dtype)
    # The original SDXL VAE NaNs in fp16; keep it in fp32 unless a (fp16-fix) VAE was given.
    vae_dtype = torch.float32 if args.pretrained_vae_model_name_or_path is None else weight_dtype
    vae.to(accelerator.device, dtype=vae_dtype)
    te1.to(accelerator.device, dtype=weight_dtype)
    te2.to(accelerator.device, dtype=weight_dtype)

    models = _add_lora(args, unet, te1, te2)
    named = {
        f"{k}.{n}": p for k, m in models.items() for n, p in m.named_parameters() if p.requires_grad
    }
    optimizer = _optimizer(args, list(named.values()), accelerator.num_processes)

    dataset = _dataset(args, tokenizers, rows)
    batches_per_epoch = GlobalBatches(
        len(dataset),
        args.train_batch_size,
        seed=args.seed,
        epoch=0,
        num_processes=accelerator.num_processes,
    ).num_batches()
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps,
        num_training_steps=max_steps,
    )

    # Only the models and the optimizer go through accelerate (DDP, AMP scaler); batches and
    # the LR schedule are ours so the sample order and step count never depend on the launcher.
    prepared = accelerator.prepare(*models.values(), optimizer)
    models = dict(zip(models, prepared[:-1]))
    return Run(
        args=args,
        accelerator=accelerator,
        out=out,
        noise_scheduler=noise_scheduler,
        vae=vae,
        text_encoders=[models.get("text_encoder", te1), models.get("text_encoder_2", te2)],
        models=models,
        lora_models=[accelerator.unwrap_model(m) for m in models.values()],
        named=named,
        optimizer=prepared[-1],
        lr_scheduler=lr_scheduler,
        dataset=dataset,
        weight_dtype=weight_dtype,
        steps_per_epoch=steps_per_epoch,
        max_steps=max_steps,
        num_epochs=math.ceil(max_steps / steps_per_epoch),
        checkpoint=checkpoint,
    )


def verified_checkpoint(args: argparse.Namespace, out: Path) -> ckpt.Checkpoint | None:
    """--resume_from_checkpoint's checkpoint, checksums verified and its rank and text-encoder
    flag matching this run's; None for a new run."""
    path = ckpt.resolve_resume(out, args.resume_from_checkpoint)
    if path is None:
        return None
    found = ckpt.load_checkpoint(path)
    ckpt.check_flags(found, rank=args.rank, train_text_encoder=args.train_text_encoder)
    return found


def _accelerator(args: argparse.Namespace, out: Path):
    """The Accelerator, quiet libraries, and a seed every process agrees on."""
    import diffusers
    import transformers
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    trackers, tracker_warnings = trackers_for(args.report_to)
    # With no accelerator device, say so: accelerate then maps torchrun's WORLD_SIZE > 1 to
    # MULTI_CPU (gloo) instead of running every process as an independent single one.
    no_device = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    accelerator = Accelerator(
        cpu=no_device,
        mixed_precision=args.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=str(out), logging_dir=str(out / args.logging_dir)
        ),
        # The first text encoder's last layer feeds nothing (SDXL uses its penultimate layer).
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=args.train_text_encoder)
        ],
    )
    if accelerator.is_main_process:
        for line in tracker_warnings:
            print(f"warning: {line}", file=sys.stderr)
    for lib in (transformers, diffusers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    if args.seed is None:  # draw one, and share it: every process must agree on the data order
        from accelerate.utils import broadcast_object_list

        args.seed = broadcast_object_list([int.from_bytes(os.urandom(4), "little")])[0]
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator


def _load_models(args: argparse.Namespace):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    src, rev, var = args.pretrained_model_name_or_path, args.revision, args.variant
    common = {"revision": rev, "cache_dir": args.cache_dir}
    flag = "pretrained_model_name_or_path"

    def part(cls, sub, **kw):
        return load_part(flag, src, sub, lambda: cls.from_pretrained(src, subfolder=sub, **kw))

    tok1 = part(AutoTokenizer, "tokenizer", **common)
    tok2 = part(AutoTokenizer, "tokenizer_2", **common)
    scheduler = part(DDPMScheduler, "scheduler", **common)
    te1 = part(CLIPTextModel, "text_encoder", variant=var, **common)
    te2 = part(CLIPTextModelWithProjection, "text_encoder_2", variant=var, **common)
    if args.pretrained_vae_model_name_or_path is None:
        vae = part(AutoencoderKL, "vae", variant=var, **common)
    else:
        vae_src = args.pretrained_vae_model_name_or_path
        vae = load_part(
            "pretrained_vae_model_name_or_path",
            vae_src,
            None,
            lambda: AutoencoderKL.from_pretrained(vae_src, **common),
        )
    unet = part(UNet2DConditionModel, "unet", variant=var, **common)
    return (tok1, tok2), scheduler, te1, te2, vae, unet


def load_part(flag: str, src: str, subfolder: str | None, load):
    """``load()``, with any loading error as one line naming the flag and the subfolder."""
    from safetensors import SafetensorError

    try:
        return load()
    except (OSError, ValueError, RuntimeError, EOFError, SafetensorError, pickle.PickleError) as e:
        where = f"{src}/{subfolder}" if subfolder else src
        reason = " ".join(str(e).split())[:400] or type(e).__name__
        raise ValueError(f"--{flag}: cannot load {where}: {reason}") from None


def _add_lora(args: argparse.Namespace, unet, te1, te2) -> dict[str, torch.nn.Module]:
    """LoRA adapters W + (alpha / r) B A on the attention projections; the models they train."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    torch.manual_seed(args.seed)  # peft's gaussian init of A draws from the global RNG
    unet.add_adapter(
        LoraConfig(
            r=args.rank,
            lora_alpha=args.rank,
            init_lora_weights="gaussian",
            target_modules=UNET_TARGETS,
        )
    )
    models = {"unet": unet}
    if args.train_text_encoder:
        text_cfg = LoraConfig(
            r=args.rank,
            lora_alpha=args.rank,
            init_lora_weights="gaussian",
            target_modules=TEXT_TARGETS,
        )
        te1.add_adapter(text_cfg)
        te2.add_adapter(text_cfg)
        models.update(text_encoder=te1, text_encoder_2=te2)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if args.train_text_encoder:
            te1.gradient_checkpointing_enable()
            te2.gradient_checkpointing_enable()
    cast_training_params(list(models.values()), dtype=torch.float32)  # LoRA factors in fp32
    return models


def _dataset(args: argparse.Namespace, tokenizers, rows: Rows) -> CaptionedImages:
    # after the seed is drawn: every process must pick the same --max_train_samples rows
    rows = subset(rows, args.max_train_samples, args.seed)
    return CaptionedImages(
        rows.images,
        rows.captions,
        origins=rows.origins,
        resolution=args.resolution,
        center_crop=args.center_crop,
        random_flip=args.random_flip,
        interpolation=args.image_interpolation_mode,
        tokenizers=tokenizers,
    )


def _optimizer(args: argparse.Namespace, params: list[torch.Tensor], num_processes: int):
    """AdamW (or bitsandbytes' 8-bit AdamW) at --learning_rate, scaled if --scale_lr."""
    lr = args.learning_rate
    if args.scale_lr:
        lr *= args.gradient_accumulation_steps * args.train_batch_size * num_processes
    if args.use_8bit_adam:
        import bitsandbytes as bnb

        opt_cls = bnb.optim.AdamW8bit
    else:
        opt_cls = torch.optim.AdamW
    return opt_cls(
        params,
        lr=lr,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
