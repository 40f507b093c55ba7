"""Held-out measurement of a LoRA: the denoising loss on fixed (image, t, eps) triples."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def denoising_loss(
    pipe,
    images: torch.Tensor,
    captions: Sequence[str],
    *,
    lora_scale: float = 1.0,
    seed: int = 0,
    repeats: int = 4,
) -> float:
    """Mean ||eps - eps_theta(x_t, t, c)||^2 (DDPM Eq. 14) over fixed noise and timesteps.

    ``images`` (N, 3, H, W) in [-1, 1]. The same seed gives the same x0 latents, t and eps
    for every call, so base (``lora_scale=0``) and LoRA are compared on identical draws.
    """
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    has_lora = bool(getattr(pipe.unet, "peft_config", None))
    kwargs = {"cross_attention_kwargs": {"scale": lora_scale}} if has_lora else {}
    embeds, _, pooled, _ = pipe.encode_prompt(
        list(captions),
        device=device,
        do_classifier_free_guidance=False,
        lora_scale=lora_scale if has_lora else None,
    )
    h, w = images.shape[-2:]
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=device, dtype=dtype).repeat(len(images), 1)
    latents = pipe.vae.encode(images.to(device, pipe.vae.dtype)).latent_dist.mean
    x0 = (latents * pipe.vae.config.scaling_factor).to(dtype)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(repeats):
        eps = torch.randn(x0.shape, generator=g).to(device, dtype)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=g).to(device)
        x_t = sched.add_noise(x0, eps, t)  # sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
        cond = {"text_embeds": pooled, "time_ids": time_ids}
        pred = pipe.unet(x_t, t, embeds, added_cond_kwargs=cond, return_dict=False, **kwargs)[0]
        total += torch.nn.functional.mse_loss(pred.float(), eps.float()).item()
    return total / repeats
