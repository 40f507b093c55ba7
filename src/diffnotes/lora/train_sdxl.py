"""Fine-tune SDXL with LoRA (Hu et al. 2021; Podell et al. 2023), accelerate-native.

``accelerate launch -m diffnotes.lora.train_sdxl ...`` (or ``python -m`` / ``torchrun -m``)
with the flags of diffusers' train_text_to_image_lora_sdxl.py. The loss is DDPM's
E ||eps - eps_theta(x_t, t, c)||^2 on VAE latents (Ho et al. 2020, Eq. 14; Rombach et al. 2022,
Eq. 2), with c = both text encoders' penultimate hidden states plus SDXL's pooled embedding and
size/crop time ids; only the low-rank factors B A of W + (alpha / r) B A are trained.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path

import torch

from diffnotes.lora import checkpoint as ckpt
from diffnotes.lora.cli import run_cli, validate
from diffnotes.lora.dataset import CaptionedImages, GlobalBatches, load_rows
from diffnotes.lora.objective import encode_latents, encode_prompt, step_loss  # noqa: F401 (API)
from diffnotes.lora.report import RunLog, trackers_for, write_model_card
from diffnotes.lora.validation import save_images, validation_images
from diffnotes.lora.weights import WEIGHT_NAME, save_lora

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # attention projections, as diffusers
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _load_models(args: argparse.Namespace):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    src, rev, var = args.pretrained_model_name_or_path, args.revision, args.variant
    common = {"revision": rev, "cache_dir": args.cache_dir}
    tok1 = AutoTokenizer.from_pretrained(src, subfolder="tokenizer", **common)
    tok2 = AutoTokenizer.from_pretrained(src, subfolder="tokenizer_2", **common)
    scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler", **common)
    te1 = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", variant=var, **common)
    te2 = CLIPTextModelWithProjection.from_pretrained(
        src, subfolder="text_encoder_2", variant=var, **common
    )
    if args.pretrained_vae_model_name_or_path is None:
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", variant=var, **common)
    else:
        vae = AutoencoderKL.from_pretrained(args.pretrained_vae_model_name_or_path, **common)
    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", variant=var, **common)
    return (tok1, tok2), scheduler, te1, te2, vae, unet


def train(args: argparse.Namespace) -> Path:
    """Run the fine-tune described by ``args``; returns the LoRA weights file."""
    validate(args)  # before anything is imported, loaded or written
    import diffusers
    import transformers
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params, compute_snr
    from peft import LoraConfig
    from tqdm import tqdm

    out = Path(args.output_dir)
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
    main = accelerator.is_main_process
    if main:
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
    named = {
        f"{k}.{n}": p for k, m in models.items() for n, p in m.named_parameters() if p.requires_grad
    }
    params = list(named.values())

    lr = args.learning_rate
    if args.scale_lr:
        lr *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    if args.use_8bit_adam:
        import bitsandbytes as bnb

        opt_cls = bnb.optim.AdamW8bit
    else:
        opt_cls = torch.optim.AdamW
    optimizer = opt_cls(
        params,
        lr=lr,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )

    rows, captions = load_rows(args)
    dataset = CaptionedImages(
        rows,
        captions,
        resolution=args.resolution,
        center_crop=args.center_crop,
        random_flip=args.random_flip,
        interpolation=args.image_interpolation_mode,
        tokenizers=tokenizers,
    )
    batches_per_epoch = GlobalBatches(
        len(dataset),
        args.train_batch_size,
        seed=args.seed,
        epoch=0,
        num_processes=accelerator.num_processes,
    ).num_batches()
    ga = args.gradient_accumulation_steps
    steps_per_epoch = math.ceil(batches_per_epoch / ga)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
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
    optimizer = prepared[-1]

    global_step, first_epoch = 0, 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.sweep_partial(out)
    accelerator.wait_for_everyone()
    resume = ckpt.resolve_resume(out, args.resume_from_checkpoint)
    if args.resume_from_checkpoint == "latest" and resume is None and main:
        print("Checkpoint 'latest' does not exist. Starting a new training run.")
    if resume is not None:
        trainable, opt_state, state = ckpt.load_checkpoint(resume)
        if set(trainable) != set(named):
            raise ValueError(
                f"--resume_from_checkpoint {resume}: its LoRA layers differ from this "
                "run's (--rank / --train_text_encoder changed?)"
            )
        with torch.no_grad():
            for k, p in named.items():
                p.copy_(trainable[k].to(p.device, p.dtype))
        optimizer.load_state_dict(opt_state)
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        global_step = state["global_step"]
        first_epoch = global_step // steps_per_epoch
        if main:
            print(f"Resuming from checkpoint {resume.name}")

    log = (
        RunLog(out / args.logging_dir / "train_log.csv", resume_step=global_step) if main else None
    )
    if main:
        accelerator.init_trackers(
            "text2image-fine-tune",
            config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))},
        )
    from diffnotes.profile import profile

    # the static book shows no bars: their carriage returns render as one long line there
    quiet_bar = not main or profile().static
    bar = tqdm(total=max_steps, initial=global_step, desc="Steps", disable=quiet_bar)
    unwrap = accelerator.unwrap_model
    text_encoders = [models.get("text_encoder", te1), models.get("text_encoder_2", te2)]
    lora_unwrapped = [unwrap(m) for m in models.values()]

    def write_lora(folder):
        save_lora(folder, *lora_unwrapped)

    for epoch in range(first_epoch, num_epochs):
        for m in models.values():
            m.train()
        skip = (global_step - epoch * steps_per_epoch) * ga if epoch == first_epoch else 0
        sampler = GlobalBatches(
            len(dataset),
            args.train_batch_size,
            seed=args.seed,
            epoch=epoch,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
            skip=skip,
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=args.dataloader_num_workers
        )
        batches = iter(loader)
        remaining = len(sampler)
        while remaining > 0 and global_step < max_steps:
            group = min(ga, remaining)  # the epoch's last step may accumulate fewer batches
            remaining -= group
            loss_sum = torch.zeros((), device=accelerator.device)
            for micro in range(group):
                batch = next(batches)
                sync = micro == group - 1
                with contextlib.ExitStack() as stack:
                    if not sync:  # DDP: all-reduce gradients only on the last micro-batch
                        for m in models.values():
                            stack.enter_context(accelerator.no_sync(m))
                    loss = step_loss(
                        args,
                        batch,
                        vae,
                        text_encoders,
                        models["unet"],
                        noise_scheduler,
                        weight_dtype,
                        accelerator,
                        compute_snr,
                    )
                    mean_loss = accelerator.gather(loss.detach().reshape(1)).mean()
                    if not torch.isfinite(mean_loss):
                        raise FloatingPointError(
                            f"loss is {mean_loss.item()} at step "
                            f"{global_step + 1} (epoch {epoch}); stopping"
                        )
                    accelerator.backward(loss / group)
                    loss_sum += mean_loss / group
            accelerator.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            bar.update(1)
            logs = {"train_loss": loss_sum.item(), "lr": lr_scheduler.get_last_lr()[0]}
            bar.set_postfix(loss=f"{logs['train_loss']:.4f}")
            accelerator.log(logs, step=global_step)
            if main:
                log.write(global_step, epoch, **logs)
            if global_step % args.checkpointing_steps == 0 and main:
                state = {
                    "global_step": global_step,
                    "epoch": epoch,
                    "seed": args.seed,
                    "lr_scheduler": lr_scheduler.state_dict(),
                    "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
                    "num_processes": accelerator.num_processes,
                }
                ckpt.save_checkpoint(
                    out,
                    global_step,
                    trainable=named,
                    optimizer_state=optimizer.state_dict(),
                    state=state,
                    write_lora=write_lora,
                    total_limit=args.checkpoints_total_limit,
                )
            ckpt.fault("kill_after_step", global_step)
        accelerator.wait_for_everyone()
        if main and args.validation_prompt and args.num_validation_images > 0:
            if epoch % args.validation_epochs == 0:
                for m in models.values():
                    m.eval()
                images = validation_images(
                    args,
                    accelerator,
                    vae,
                    unwrap(text_encoders[0]),
                    unwrap(text_encoders[1]),
                    unwrap(models["unet"]),
                    weight_dtype,
                )
                save_images(
                    images,
                    out / "validation" / f"epoch-{epoch:03d}",
                    accelerator,
                    epoch,
                    "validation",
                )
    bar.close()

    accelerator.wait_for_everyone()
    weights = out / WEIGHT_NAME
    if main:
        write_lora(out)  # the file that marks a finished run (written atomically)
        images = []
        if args.validation_prompt and args.num_validation_images > 0:
            vae.to(weight_dtype if args.pretrained_vae_model_name_or_path else torch.float32)
            images = validation_images(
                args, accelerator, vae, None, None, None, weight_dtype, lora_dir=out
            )
            save_images(images, out / "validation" / "final", accelerator, num_epochs, "test")
        write_model_card(
            out,
            args,
            images=[f"validation/final/{i}.png" for i in range(len(images))],
            global_step=global_step,
            num_processes=accelerator.num_processes,
        )
        if args.push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            repo_id = create_repo(
                args.hub_model_id or out.name, exist_ok=True, token=args.hub_token
            ).repo_id
            upload_folder(
                repo_id=repo_id,
                folder_path=out,
                commit_message="End of training",
                ignore_patterns=["checkpoint-*", ".checkpoint-*"],
                token=args.hub_token,
            )
    accelerator.end_training()
    return weights


def main(argv: list[str] | None = None) -> int:
    """CLI entry: bad input -> one line on stderr and exit status 2."""
    return run_cli(train, argv)


if __name__ == "__main__":
    sys.exit(main())
