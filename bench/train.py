"""U-Net training throughput on digits for the ci, book and gpu-sized configs.

    python -m bench.train [--steps 20] [--size 16]

Prints images/s of `diffnotes.train.train` with `eps_loss` (forward, backward, AdamW, EMA) for the
U-Net and batch size of each profile in `diffnotes.recipes.digits_ddpm`, and the wall time that
implies for that recipe's training budget. Runs on CUDA when present, else on the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from diffnotes.data import digits
from diffnotes.losses import eps_loss
from diffnotes.models.unet import UNet, count_parameters
from diffnotes.profile import profile
from diffnotes.recipes import digits_unet_config
from diffnotes.schedules import linear_schedule
from diffnotes.train import train

# the batch sizes and step budgets of recipes.digits_ddpm
BUDGET = dict(ci=(32, 200), book=(64, 1500), gpu=(128, 20000))


def bench(name: str, size: int, steps: int, device: torch.device) -> dict:
    cfg = digits_unet_config(profile(name), size)
    batch_size, budget = BUDGET[name]
    torch.manual_seed(0)
    model = UNet(cfg).to(device)
    x0 = digits(size, "all")[0].to(device)
    loss = eps_loss(linear_schedule(1000))
    kw = dict(batch_size=batch_size, lr=2e-4, progress=False)
    train(model, loss, x0, steps=2, **kw)  # warm-up: allocator, kernels
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(model, loss, x0, steps=steps, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rate = steps * batch_size / seconds
    return dict(
        profile=name,
        params=count_parameters(model),
        batch=batch_size,
        rate=rate,
        budget=budget,
        wall=budget * batch_size / rate,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config")
    parser.add_argument("--size", type=int, default=16, choices=(8, 16, 32))
    parser.add_argument("--profiles", default="ci,book,gpu")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"U-Net training on digits {args.size}x{args.size}, device {device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'config':>6} {'params':>9} {'batch':>5} {'images/s':>9} {'recipe steps':>12} {'wall':>8}"
    )
    for name in args.profiles.split(","):
        r = bench(name, args.size, args.steps, device)
        print(
            f"{r['profile']:>6} {r['params']:>9,} {r['batch']:>5} {r['rate']:>9.1f} "
            f"{r['budget']:>12} {r['wall']:>7.0f}s"
        )


if __name__ == "__main__":
    main()
