"""The SDXL LoRA objective: text conditioning, VAE latents, per-sample noise, the loss.

Every random draw comes from a per-sample seed (see dataset.GlobalBatches), which is what makes
a resumed run bit-identical and two processes equal to one.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from diffnotes.lora.dataset import mix_seed

if TYPE_CHECKING:  # diffusers only for the annotation: importing this module stays cheap
    from diffusers import DDPMScheduler


def encode_prompt(
    text_encoders, input_ids: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL text conditioning: concat of penultimate hidden states (B, 77, 768 + 1280) and the
    second encoder's pooled projection (B, 1280) (Podell et al. 2023, Sec. 2.1)."""
    hidden = []
    for encoder, ids in zip(text_encoders, input_ids):
        out = encoder(ids, output_hidden_states=True, return_dict=True)
        hidden.append(out.hidden_states[-2])
    pooled = out.text_embeds  # CLIPTextModelWithProjection of the second encoder
    return torch.cat(hidden, dim=-1), pooled


def encode_latents(
    vae, pixels: torch.Tensor, seeds: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """z = scaling * (mu + sigma * n), n drawn per sample from its seed; NaN-safe in fp16.

    The original SDXL VAE overflows in fp16 (hence the fp16-fix VAE). If the latents come
    out non-finite we encode again in float32 instead of training on NaNs.
    """

    def moments(x, vae_dtype):
        dist = vae.encode(x.to(vae_dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    mean, std = moments(pixels, vae.dtype)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        if vae.dtype == torch.float32:
            raise FloatingPointError("the VAE produced non-finite latents in float32")
        print(
            "warning: VAE latents are NaN/inf in half precision; upcasting the VAE to "
            "float32 (use --pretrained_vae_model_name_or_path madebyollin/sdxl-vae-fp16-fix)",
            file=sys.stderr,
        )
        vae.to(torch.float32)
        mean, std = moments(pixels, torch.float32)
    n = torch.stack(
        [
            torch.randn(
                mean.shape[1:], generator=torch.Generator().manual_seed(mix_seed(int(s), "vae"))
            )
            for s in seeds
        ]
    ).to(mean.device)
    return ((mean + std * n) * vae.config.scaling_factor).to(dtype)


def draw_noise(seeds: torch.Tensor, shape, num_timesteps: int, noise_offset: float):
    """Per-sample noise eps and timestep t, each from the sample's own seed."""
    eps, ts = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(mix_seed(int(s), "noise"))
        e = torch.randn(shape, generator=g)
        if noise_offset:  # offset noise (crosslabs.org/blog/diffusion-with-offset-noise)
            e = e + noise_offset * torch.randn((shape[0], 1, 1), generator=g)
        eps.append(e)
        ts.append(torch.randint(0, num_timesteps, (1,), generator=g))
    return torch.stack(eps), torch.cat(ts)


@dataclass
class Batch:
    """One micro-batch of `dataset.CaptionedImages` items, as the DataLoader collates them."""

    pixel_values: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    input_ids_one: torch.Tensor  # (B, 77) first tokenizer's ids
    input_ids_two: torch.Tensor  # (B, 77) second tokenizer's ids
    time_ids: torch.Tensor  # (B, 6) SDXL's c_size, c_crop and target size (Sec. 2.2)
    sample_seed: torch.Tensor  # (B,) per-sample seeds of the VAE sample, noise and timestep

    @classmethod
    def from_dict(cls, batch: Mapping[str, torch.Tensor]) -> Batch:
        """The batch from the DataLoader's dict (keys as `CaptionedImages.__getitem__`)."""
        return cls(**{f.name: batch[f.name] for f in fields(cls)})


def step_loss(
    batch: Batch,
    *,
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: Sequence[torch.nn.Module],
    noise_scheduler: DDPMScheduler,
    device: torch.device,
    weight_dtype: torch.dtype,
    noise_offset: float = 0.0,
    snr_gamma: float | None = None,
    train_text_encoder: bool = False,
) -> torch.Tensor:
    """One micro-batch of the DDPM eps-loss (or v-loss) on SDXL latents.

    ``noise_offset``, ``snr_gamma`` and ``train_text_encoder`` mean what the trainer's flags
    of the same names do (defaults: theirs).
    """
    seeds = batch.sample_seed
    with torch.no_grad():
        x0 = encode_latents(vae, batch.pixel_values.to(device), seeds, weight_dtype)
    eps, t = draw_noise(
        seeds, x0.shape[1:], noise_scheduler.config.num_train_timesteps, noise_offset
    )
    eps, t = eps.to(device, x0.dtype), t.to(device)
    # x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps   (DDPM Eq. 4)
    x_t = noise_scheduler.add_noise(x0, eps, t)
    with torch.set_grad_enabled(train_text_encoder):
        ids = [batch.input_ids_one.to(device), batch.input_ids_two.to(device)]
        prompt_embeds, pooled = encode_prompt(text_encoders, ids)
    cond = {"text_embeds": pooled, "time_ids": batch.time_ids.to(device, weight_dtype)}
    pred = unet(x_t, t, prompt_embeds, added_cond_kwargs=cond, return_dict=False)[0]
    if noise_scheduler.config.prediction_type == "epsilon":
        target = eps
    elif noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, eps, t)
    else:
        raise ValueError(f"unknown prediction_type {noise_scheduler.config.prediction_type}")
    if snr_gamma is None:
        return torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="mean")
    from diffusers.training_utils import compute_snr

    # Min-SNR-gamma weighting (Hang et al. 2023, Eq. 9 / Sec. 4.2 for eps and v targets).
    snr = compute_snr(noise_scheduler, t)
    w = torch.clamp(snr, max=snr_gamma)
    w = w / snr if noise_scheduler.config.prediction_type == "epsilon" else w / (snr + 1)
    per = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
    return (per.mean(dim=list(range(1, per.ndim))) * w).mean()
