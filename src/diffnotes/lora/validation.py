"""Validation images during and after training, saved to disk and to the trackers."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from diffnotes.lora.weights import WEIGHT_NAME, sdxl_pipeline_class


def validation_pipeline(args, vae, te1, te2, unet, weight_dtype, lora_dir):
    StableDiffusionXLPipeline = sdxl_pipeline_class()

    common = {"revision": args.revision, "variant": args.variant, "torch_dtype": weight_dtype}
    if lora_dir is None:
        return StableDiffusionXLPipeline.from_pretrained(
            args.pretrained_model_name_or_path,
            vae=vae,
            text_encoder=te1,
            text_encoder_2=te2,
            unet=unet,
            **common,
        )
    # The saved file on a fresh base model: proves the file users will load.
    pipe = StableDiffusionXLPipeline.from_pretrained(
        args.pretrained_model_name_or_path, vae=vae, **common
    )
    pipe.load_lora_weights(str(lora_dir), weight_name=WEIGHT_NAME)
    return pipe


def validation_images(args, accelerator, vae, te1, te2, unet, weight_dtype, *, lora_dir=None):
    """Images for --validation_prompt from the current adapters (or a saved LoRA, at the end)."""
    from diffnotes.lora.weights import quiet

    with quiet():
        pipe = validation_pipeline(args, vae, te1, te2, unet, weight_dtype, lora_dir)
    pipe = pipe.to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    seed = 0 if args.seed is None else args.seed
    g = torch.Generator(device=accelerator.device).manual_seed(seed)
    autocast = (
        torch.autocast(accelerator.device.type)
        if accelerator.device.type == "cuda"
        else contextlib.nullcontext()
    )
    with torch.no_grad(), autocast:
        images = [
            pipe(
                args.validation_prompt,
                generator=g,
                num_inference_steps=args.validation_inference_steps,
            ).images[0]
            for _ in range(args.num_validation_images)
        ]
    del pipe
    return images


def save_images(images, folder: Path, accelerator, epoch: int, phase: str) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            arr = np.stack([np.asarray(im) for im in images])
            tracker.writer.add_images(phase, arr, epoch, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({phase: [wandb.Image(im) for im in images]})
