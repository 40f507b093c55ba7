"""Vanilla GAN against Diffusion-GAN on the 25-Gaussian grid: the sweep behind chapter 08.

    OMP_NUM_THREADS=1 python -m bench.sweep_diffusion_gan --n-data 0 200 --sigma 0.5 1 \\
        --d-target 0.6 0.3 --steps 1000 2000 --seeds 0 1 2

Both methods get the same networks (`models.Generator`, `models.Discriminator`, MLPs), Adam
settings, batches and steps. Every setting of the networks and optimiser (data size, learning
rates, width, depth, batch) is one `gan.train_gans` ensemble: the vanilla GAN and Diffusion-GAN at
every (sigma, d_target, C, interval), each from every seed, trained in lock-step. The seed sets
the initial weights, the batches, the noise and, with ``--n-data N``, the N training points drawn
from the grid (0: a fresh batch every step). The generator is evaluated at every step listed in
``--steps`` (2,500 samples, `gan.mode_coverage`). Prints one markdown row per (setting, method,
step): modes covered of 25 and the share of samples within 3 std of a mode as median (min-max)
over seeds, the adaptive T (median at that step, and the largest T any seed reached up to it),
the mean r_d over the last stretch of training, and seconds per ensemble.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from diffnotes.gan import AdaptiveDiffusion, finite_data, grid_mixture, mode_coverage, train_gans
from diffnotes.models import Discriminator, GANConfig, Generator

GRID = grid_mixture(5, spacing=1.0, std=0.05)
HEADER = [
    "data", "lr G/D", "hidden x depth", "batch", "method", "sigma", "d_target", "C/interval",
    "step", "modes of 25", "within 3 std", "T (max)", "r_d", "s",
]  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """What both methods share: the data, the networks and the optimiser."""

    n_data: int  # 0: fresh samples every step
    lr: float
    lr_d: float
    hidden: int
    depth: int
    batch_size: int


@dataclass(frozen=True)
class Noise:
    """Diffusion-GAN's instance noise (None in a `Member`: the vanilla GAN)."""

    sigma: float
    d_target: float
    C: int
    interval: int


def make_pair(setting: Setting, seed: int) -> tuple[Generator, Discriminator]:
    """G and D of the chapter, initialised from ``seed``."""
    torch.manual_seed(seed)
    cfg = GANConfig(kind="mlp", hidden=setting.hidden, depth=setting.depth, z_dim=8)
    return Generator(cfg), Discriminator(cfg)


def make_data(n_data: int, seed: int):
    """Fresh samples of the grid (n_data = 0), or a fixed set of n_data of them from ``seed``."""
    if not n_data:
        return GRID.sample
    return finite_data(GRID.sample(n_data, torch.Generator().manual_seed(10_000 + seed)))


def make_diffusion(noise: Noise | None) -> AdaptiveDiffusion | None:
    if noise is None:
        return None
    return AdaptiveDiffusion(
        sigma=noise.sigma, d_target=noise.d_target, C=noise.C, interval=noise.interval, T_max=1000
    )


def run_setting(
    setting: Setting, noises: Sequence[Noise | None], seeds: Sequence[int], steps: Sequence[int]
) -> tuple[dict, float]:
    """Train every (noise, seed) at once; {(noise, step): [per-seed dicts]} and the seconds."""
    members = [(noise, seed) for noise in noises for seed in seeds]
    start = time.perf_counter()
    runs = train_gans(
        [make_pair(setting, seed) for _, seed in members],
        [make_data(setting.n_data, seed) for _, seed in members],
        steps=max(steps),
        diffusions=[make_diffusion(noise) for noise, _ in members],
        seeds=[seed for _, seed in members],
        batch_size=setting.batch_size,
        lr=setting.lr,
        lr_d=setting.lr_d,
        snapshot_every=math.gcd(*steps),
    )
    seconds = time.perf_counter() - start
    out: dict = {}
    for (noise, _), run in zip(members, runs):
        t_max = 0
        for snap in run.snapshots:
            t_max = max(t_max, snap["T"])
            if snap["step"] in steps:
                modes, within = mode_coverage(snap["samples"], GRID)
                out.setdefault((noise, snap["step"]), []).append(
                    dict(modes=modes, within=within, T=snap["T"], T_max=t_max, r_d=snap["r_d_mean"])
                )  # fmt: skip
    return out, seconds


def _spread(values: list[float], fmt: str) -> str:
    v = sorted(values)
    return f"{statistics.median(v):{fmt}} ({v[0]:{fmt}}-{v[-1]:{fmt}})"


def rows(
    settings: Sequence[Setting],
    noises: Sequence[Noise | None],
    seeds: Sequence[int],
    steps: Sequence[int],
) -> Iterator[list[str]]:
    """One table row per (setting, noise, checkpoint)."""
    for setting in settings:
        results, seconds = run_setting(setting, noises, seeds, steps)
        for noise in noises:
            for step in sorted(steps):
                at = results[(noise, step)]
                t = "-"
                if noise is not None:
                    t = f"{statistics.median(a['T'] for a in at):g} ({max(a['T_max'] for a in at)})"
                yield [
                    str(setting.n_data or "fresh"),
                    f"{setting.lr:g}/{setting.lr_d:g}",
                    f"{setting.hidden}x{setting.depth}",
                    str(setting.batch_size),
                    "GAN" if noise is None else "Diffusion-GAN",
                    "-" if noise is None else f"{noise.sigma:g}",
                    "-" if noise is None else f"{noise.d_target:g}",
                    "-" if noise is None else f"{noise.C}/{noise.interval}",
                    str(step),
                    _spread([a["modes"] for a in at], "g"),
                    _spread([a["within"] for a in at], ".2f"),
                    t,
                    f"{statistics.mean(a['r_d'] for a in at):.2f}",
                    f"{seconds:.0f}",
                ]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-data", type=int, nargs="+", default=[0], help="0: fresh samples")
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-3], help="G's learning rate")
    ap.add_argument("--lr-d", type=float, nargs="+", default=[4e-3], help="D's learning rate")
    ap.add_argument("--hidden", type=int, nargs="+", default=[64])
    ap.add_argument("--depth", type=int, nargs="+", default=[3])
    ap.add_argument("--batch-size", type=int, nargs="+", default=[128])
    ap.add_argument("--sigma", type=float, nargs="+", default=[1.0])
    ap.add_argument("--d-target", type=float, nargs="+", default=[0.6])
    ap.add_argument("--C", type=int, nargs="+", default=[1])
    ap.add_argument("--interval", type=int, nargs="+", default=[4])
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-gan", action="store_true", help="Diffusion-GAN only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny MLPs: one thread, as the chapter
    settings = [
        Setting(*values)
        for values in itertools.product(
            args.n_data, args.lr, args.lr_d, args.hidden, args.depth, args.batch_size
        )
    ]
    noises: list[Noise | None] = [] if args.no_gan else [None]
    noises += [
        Noise(*values)
        for values in itertools.product(args.sigma, args.d_target, args.C, args.interval)
    ]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows(settings, noises, args.seeds, args.steps):
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
