"""Fine-tune SDXL with LoRA (Hu et al. 2021; Podell et al. 2023), accelerate-native.

``accelerate launch -m diffnotes.lora.train_sdxl ...`` (or ``python -m`` / ``torchrun -m``)
with the flags of diffusers' train_text_to_image_lora_sdxl.py. The loss is DDPM's
E ||eps - eps_theta(x_t, t, c)||^2 on VAE latents (Ho et al. 2020, Eq. 14; Rombach et al. 2022,
Eq. 2), with c = both text encoders' penultimate hidden states plus SDXL's pooled embedding and
size/crop time ids; only the low-rank factors B A of W + (alpha / r) B A are trained.

`train` runs named steps over one `Run`: `setup` (models, LoRA, optimizer, data; in
`diffnotes.lora.run`), `resume`, `open_log`, then per epoch `train_epoch` (`step` per optimizer
step, `save` every --checkpointing_steps, validation images), and `finish`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from diffnotes.lora import checkpoint as ckpt
from diffnotes.lora.cli import run_cli
from diffnotes.lora.dataset import GlobalBatches
from diffnotes.lora.objective import (  # noqa: F401 (API)
    Batch,
    encode_latents,
    encode_prompt,
    step_loss,
)
from diffnotes.lora.report import RunLog, write_model_card
from diffnotes.lora.run import Run, setup
from diffnotes.lora.validation import save_images, validation_images
from diffnotes.lora.weights import WEIGHT_NAME
from diffnotes.util import env_flag


def resume(run: Run) -> None:
    """Sweep half-written checkpoints, then load the checkpoint `setup` verified, if any."""
    args, accelerator, out = run.args, run.accelerator, run.out
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.sweep_partial(out)
    accelerator.wait_for_everyone()
    if args.resume_from_checkpoint == "latest" and run.checkpoint is None and run.main:
        print("Checkpoint 'latest' does not exist. Starting a new training run.")
    if run.checkpoint is None:
        return
    found = run.checkpoint
    ckpt.check_matches(found, run.named)  # names and shapes, before any weight is touched
    with torch.no_grad():
        for k, p in run.named.items():
            p.copy_(found.trainable[k].to(p.device, p.dtype))
    run.optimizer.load_state_dict(found.optimizer_state)
    run.lr_scheduler.load_state_dict(found.state["lr_scheduler"])
    if accelerator.scaler is not None and found.state["scaler"]:
        accelerator.scaler.load_state_dict(found.state["scaler"])
    run.global_step = found.state["global_step"]
    run.first_epoch = run.global_step // run.steps_per_epoch
    run.checkpoint = None  # its tensors are in the models and the optimizer now
    if run.main:
        print(f"Resuming from checkpoint {found.path.name}")


def open_log(run: Run) -> None:
    """The CSV log (cut back to the resumed step), the trackers and the progress bar."""
    from tqdm import tqdm

    args = run.args
    if run.main:
        run.log = RunLog(run.out / args.logging_dir / "train_log.csv", resume_step=run.global_step)
        run.accelerator.init_trackers(
            "text2image-fine-tune",
            config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))},
        )
    # the static book shows no bars: their carriage returns render as one long line there
    quiet_bar = not run.main or env_flag("DIFFNOTES_STATIC")
    run.bar = tqdm(total=run.max_steps, initial=run.global_step, desc="Steps", disable=quiet_bar)


def step(run: Run, epoch: int, batches: Iterator[dict], group: int) -> torch.Tensor:
    """One optimizer step over ``group`` micro-batches; returns their mean loss (all processes)."""
    accelerator = run.accelerator
    loss_sum = torch.zeros((), device=accelerator.device)
    for micro in range(group):
        batch = Batch.from_dict(next(batches))
        sync = micro == group - 1
        with contextlib.ExitStack() as stack:
            if not sync:  # DDP: all-reduce gradients only on the last micro-batch
                for m in run.models.values():
                    stack.enter_context(accelerator.no_sync(m))
            loss = step_loss(
                batch,
                unet=run.models["unet"],
                vae=run.vae,
                text_encoders=run.text_encoders,
                noise_scheduler=run.noise_scheduler,
                device=accelerator.device,
                weight_dtype=run.weight_dtype,
                noise_offset=run.args.noise_offset,
                snr_gamma=run.args.snr_gamma,
                train_text_encoder=run.args.train_text_encoder,
            )
            mean_loss = accelerator.gather(loss.detach().reshape(1)).mean()
            if not torch.isfinite(mean_loss):
                raise FloatingPointError(
                    f"loss is {mean_loss.item()} at step "
                    f"{run.global_step + 1} (epoch {epoch}); stopping"
                )
            accelerator.backward(loss / group)
            loss_sum += mean_loss / group
    accelerator.clip_grad_norm_(run.params, run.args.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.global_step += 1
    return loss_sum


def log_step(run: Run, epoch: int, loss: torch.Tensor) -> None:
    """The step's loss and learning rate to the bar, the trackers and the CSV log."""
    run.bar.update(1)
    logs = {"train_loss": loss.item(), "lr": run.lr_scheduler.get_last_lr()[0]}
    run.bar.set_postfix(loss=f"{logs['train_loss']:.4f}")
    run.accelerator.log(logs, step=run.global_step)
    if run.main:
        run.log.write(run.global_step, epoch, **logs)


def save(run: Run, epoch: int) -> None:
    """checkpoint-<global step>: LoRA factors, optimizer, LR schedule, scaler; main process."""
    accelerator = run.accelerator
    state = {
        "global_step": run.global_step,
        "epoch": epoch,
        "seed": run.args.seed,
        "lr_scheduler": run.lr_scheduler.state_dict(),
        "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
        "num_processes": accelerator.num_processes,
        "rank": run.args.rank,  # the flags that shape the LoRA layers: checked on resume
        "train_text_encoder": run.args.train_text_encoder,
    }
    ckpt.save_checkpoint(
        run.out,
        run.global_step,
        trainable=run.named,
        optimizer_state=run.optimizer.state_dict(),
        state=state,
        write_lora=run.write_lora,
        total_limit=run.args.checkpoints_total_limit,
    )


def train_epoch(run: Run, epoch: int) -> None:
    """This process's batches of ``epoch`` (minus those a resume already trained on)."""
    args, accelerator = run.args, run.accelerator
    for m in run.models.values():
        m.train()
    ga = args.gradient_accumulation_steps
    skip = 0
    if epoch == run.first_epoch:
        skip = (run.global_step - epoch * run.steps_per_epoch) * ga
    sampler = GlobalBatches(
        len(run.dataset),
        args.train_batch_size,
        seed=args.seed,
        epoch=epoch,
        process_index=accelerator.process_index,
        num_processes=accelerator.num_processes,
        skip=skip,
    )
    loader = torch.utils.data.DataLoader(
        run.dataset, batch_sampler=sampler, num_workers=args.dataloader_num_workers
    )
    batches = iter(loader)
    remaining = len(sampler)
    while remaining > 0 and run.global_step < run.max_steps:
        group = min(ga, remaining)  # the epoch's last step may accumulate fewer batches
        remaining -= group
        loss = step(run, epoch, batches, group)
        log_step(run, epoch, loss)
        if run.global_step % args.checkpointing_steps == 0 and run.main:
            save(run, epoch)
    accelerator.wait_for_everyone()
    if run.main and args.validation_prompt and args.num_validation_images > 0:
        if epoch % args.validation_epochs == 0:
            epoch_validation(run, epoch)


def epoch_validation(run: Run, epoch: int) -> None:
    """--validation_prompt images from the adapters in memory, under validation/epoch-<n>."""
    unwrap = run.accelerator.unwrap_model
    for m in run.models.values():
        m.eval()
    images = validation_images(
        run.args,
        run.accelerator,
        run.vae,
        unwrap(run.text_encoders[0]),
        unwrap(run.text_encoders[1]),
        unwrap(run.models["unet"]),
        run.weight_dtype,
    )
    folder = run.out / "validation" / f"epoch-{epoch:03d}"
    save_images(images, folder, run.accelerator, epoch, "validation")


def finish(run: Run) -> Path:
    """The LoRA file, final images from it, the model card and the Hub push; the file's path."""
    args, accelerator, out = run.args, run.accelerator, run.out
    run.bar.close()
    accelerator.wait_for_everyone()
    weights = out / WEIGHT_NAME
    if run.main:
        run.write_lora(out)  # the file that marks a finished run (written atomically)
        images = []
        if args.validation_prompt and args.num_validation_images > 0:
            run.vae.to(
                run.weight_dtype if args.pretrained_vae_model_name_or_path else torch.float32
            )
            images = validation_images(
                args, accelerator, run.vae, None, None, None, run.weight_dtype, lora_dir=out
            )
            folder = out / "validation" / "final"
            save_images(images, folder, accelerator, run.num_epochs, "test")
        write_model_card(
            out,
            args,
            images=[f"validation/final/{i}.png" for i in range(len(images))],
            global_step=run.global_step,
            num_processes=accelerator.num_processes,
        )
        if args.push_to_hub:
            push_to_hub(run)
    accelerator.end_training()
    return weights


def push_to_hub(run: Run) -> None:
    """Upload the output folder, without its checkpoints, to --hub_model_id."""
    from huggingface_hub import create_repo, upload_folder

    args = run.args
    repo_id = create_repo(
        args.hub_model_id or run.out.name, exist_ok=True, token=args.hub_token
    ).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=run.out,
        commit_message="End of training",
        ignore_patterns=["checkpoint-*", ".checkpoint-*"],
        token=args.hub_token,
    )


def train(args: argparse.Namespace) -> Path:
    """Run the fine-tune described by ``args``; returns the LoRA weights file."""
    run = setup(args)
    resume(run)
    open_log(run)
    for epoch in range(run.first_epoch, run.num_epochs):
        train_epoch(run, epoch)
    return finish(run)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: bad input -> one line on stderr and exit status 2."""
    return run_cli(train, argv)


if __name__ == "__main__":
    sys.exit(main())
