"""Inference with a trained LoRA, and a base-vs-LoRA grid for the same prompts and seeds.

The command line is ``python -m diffnotes.lora.generate`` (generate.py).
The LoRA scale s multiplies the update:
W + s (alpha / r) B A (Hu et al. 2021, Eq. 3), so s = 0 is exactly the base model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw


def generate(
    pretrained_model_name_or_path: str | None,
    prompts: str | Sequence[str],
    *,
    lora: str | Path | None = None,
    lora_scale: float = 1.0,
    seeds: int | Sequence[int] = 0,
    num_inference_steps: int = 30,
    guidance_scale: float = 5.0,
    height: int | None = None,
    width: int | None = None,
    vae: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    pipe=None,
) -> list[Image.Image]:
    """Images for every (prompt, seed), prompt-major; pass ``pipe`` to reuse a loaded pipeline.

    ``guidance_scale`` is diffusers' CFG scale 1 + w (Ho & Salimans 2021); SDXL's default is 5.
    """
    from diffnotes.lora.weights import load_pipeline

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not prompts or not seeds:
        raise ValueError("prompts and seeds must be non-empty")
    if num_inference_steps <= 0:
        raise ValueError(f"num_inference_steps must be > 0, got {num_inference_steps}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if pipe is None:
        if pretrained_model_name_or_path is None:
            raise ValueError("pass pretrained_model_name_or_path or a loaded pipe")
        pipe = load_pipeline(
            pretrained_model_name_or_path, lora=lora, vae=vae, device=device, dtype=dtype
        )
    kwargs = {}
    if getattr(pipe.unet, "peft_config", None):  # scale only exists once a LoRA is loaded
        kwargs["cross_attention_kwargs"] = {"scale": lora_scale}
    elif lora_scale != 1.0:
        raise ValueError("lora_scale given but the pipeline has no LoRA loaded")
    images = []
    for prompt in prompts:
        for seed in seeds:
            g = torch.Generator(device=pipe.device).manual_seed(seed)
            with torch.no_grad():
                out = pipe(
                    prompt,
                    generator=g,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    height=height,
                    width=width,
                    **kwargs,
                )
            images.append(out.images[0])
    return images


def compare(
    pretrained_model_name_or_path: str | None,
    lora: str | Path | None,
    prompts: str | Sequence[str],
    *,
    seeds: int | Sequence[int] = 0,
    lora_scale: float = 1.0,
    pipe=None,
    **kwargs,
) -> tuple[list, list, Image.Image]:
    """(base images, LoRA images, grid): row 1 base, row 2 LoRA, same prompts and seeds.

    One pipeline with the LoRA loaded; the base row is the LoRA at scale 0, which is the base
    model exactly (W + 0 * B A = W).
    """
    from diffnotes.lora.weights import load_pipeline

    if pipe is None:
        device = kwargs.pop("device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = kwargs.pop("dtype", None) or (
            torch.float16 if torch.device(device).type == "cuda" else torch.float32
        )
        pipe = load_pipeline(
            pretrained_model_name_or_path,
            lora=lora,
            vae=kwargs.pop("vae", None),
            device=device,
            dtype=dtype,
        )
    base = generate(None, prompts, seeds=seeds, lora_scale=0.0, pipe=pipe, **kwargs)
    tuned = generate(None, prompts, seeds=seeds, lora_scale=lora_scale, pipe=pipe, **kwargs)
    return base, tuned, grid([base, tuned], ["base", f"LoRA x{lora_scale:g}"])


def grid(
    rows: Sequence[Sequence[Image.Image]],
    labels: Sequence[str] | None = None,
    *,
    pad: int = 4,
    label_width: int = 80,
) -> Image.Image:
    """Rows of equal-size images side by side on white, with a text label left of each row."""
    w, h = rows[0][0].size
    cols = max(len(r) for r in rows)
    left = label_width if labels else 0
    canvas = Image.new("RGB", (left + cols * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = pad + r * (h + pad)
        if labels:
            draw.text((4, y + h // 2 - 6), labels[r], fill="black")
        for c, image in enumerate(row):
            canvas.paste(image.convert("RGB").resize((w, h)), (left + pad + c * (w + pad), y))
    return canvas
