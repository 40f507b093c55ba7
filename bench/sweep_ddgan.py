"""DDGAN on the 8-Gaussian ring at T = 4: which width, learning rate, R1 weight, EMA and budget
make the trained sampler cover every mode sharply, over seeds (chapter 09's hyperparameters).

    python -m bench.sweep_ddgan [--steps 4500] [--hidden 64] [--depth 3] [--lr 6e-3]
        [--r1 0.1] [--r1-every 15] [--ema 0.999] [--decay cosine] [--batch 128]
        [--seeds 0 1 2] [--variants ddgan noz gauss] [--one-at-a-time]

Every combination of the listed values is one cell (with ``--one-at-a-time``: the first values,
then each other value with the rest at their first). In a cell the GAN variants of all seeds are
trained as one ensemble (`models.ddgan_mlp.stack`: one independent network per seed and variant,
initialised under ``torch.manual_seed(seed)``, the data stream from ``--train-seed``), on one
thread, exactly as the chapter trains them. A row gives, per variant, the modes covered of 8 and
the share of 2,000 samples within 3 std of a mode for each seed, the medians, and the seconds the
cell took. ``--ema 0`` samples the raw generator; ``--decay none`` keeps the learning rates
constant (``cosine``: down to 1e-5, the official code). Variants: ``ddgan`` (the paper's
G(x_t, z, t)), ``noz`` (z = 0: the paper's ablation without z) and ``gauss`` (an eps-MLP of the
same width and depth trained with L_simple for the same steps and batch on the same T-step
schedule, sampled with T Gaussian DDPM steps; learning rate ``--lr-gauss``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from diffnotes.analytic import ring_mixture
from diffnotes.ddgan import ddgan_schedule, train_ddgan, train_gaussian_steps
from diffnotes.gan import mode_coverage
from diffnotes.models.ddgan_mlp import (
    DDGANMLPConfig,
    DDGANMLPDiscriminator,
    DDGANMLPEps,
    DDGANMLPGenerator,
    stack,
)
from diffnotes.samplers import ddpm

VARIANTS = ("ddgan", "noz", "gauss")
KEYS = ("hidden", "depth", "z_dim", "lr", "r1", "r1_every", "ema", "decay", "batch", "steps")
N_EVAL = 2000


def _ring_data(n: int, g: torch.Generator) -> torch.Tensor:
    return ring_mixture().sample(n, g).float()


def gan_cell(cell: dict, variants: list[str], seeds: list[int], args) -> dict[str, list]:
    """Train every (variant, seed) of one cell as one ensemble; variant -> [(modes, within)]."""
    mix, schedule = ring_mixture(), ddgan_schedule(args.T)
    cfg = DDGANMLPConfig(hidden=cell["hidden"], depth=cell["depth"], z_dim=cell["z_dim"], T=args.T)
    Gs, Ds, latent = [], [], []
    for variant in variants:
        for seed in seeds:
            torch.manual_seed(seed)
            Gs.append(DDGANMLPGenerator(cfg))
            Ds.append(DDGANMLPDiscriminator(cfg))
            latent.append(variant == "ddgan")
    run = train_ddgan(
        stack(Gs), stack(Ds), _ring_data, schedule, steps=cell["steps"],
        batch_size=cell["batch"], lr_g=cell["lr"], lr_d=cell["lr"], r1_gamma=cell["r1"],
        r1_every=cell["r1_every"], ema_decay=cell["ema"] or None,
        lr_min=1e-5 if cell["decay"] == "cosine" else None, latent=latent,
        seed=args.train_seed, n_snapshot=N_EVAL,
    )  # fmt: skip
    per_member = run.snapshots[-1]["samples"].chunk(len(Gs))
    scores = [mode_coverage(s, mix) for s in per_member]
    return {v: scores[i * len(seeds) : (i + 1) * len(seeds)] for i, v in enumerate(variants)}


def gauss_cell(cell: dict, seeds: list[int], args) -> list[tuple[int, float]]:
    """The Gaussian baseline of one network size and budget: one eps-MLP per seed, as one
    ensemble, sampled from the same x_T as the GANs' snapshots."""
    mix, schedule = ring_mixture(), ddgan_schedule(args.T)
    cfg = DDGANMLPConfig(hidden=cell["hidden"], depth=cell["depth"], T=args.T)
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(DDGANMLPEps(cfg))
    model = train_gaussian_steps(
        stack(nets), _ring_data, schedule, steps=cell["steps"], batch_size=cell["batch"],
        lr=args.lr_gauss, seed=args.train_seed,
    )  # fmt: skip
    x_T = torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(args.train_seed + 1))
    ts, g = list(range(args.T - 1, -1, -1)), torch.Generator().manual_seed(args.train_seed + 2)
    with torch.no_grad():
        samples = ddpm(model, schedule, ts, x_T.repeat(len(seeds), 1), generator=g)
    return [mode_coverage(s, mix) for s in samples.chunk(len(seeds))]


def row(variant: str, values: tuple, scores: list[tuple[int, float]], seconds: float) -> str:
    modes, within = [m for m, _ in scores], [q for _, q in scores]
    cells = [variant] + [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    cells += [" ".join(map(str, modes)), " ".join(f"{q:.2f}" for q in within)]
    cells += [f"{statistics.median(modes):g}", f"{statistics.median(within):.2f}"]
    cells += [f"{min(within):.2f}", f"{seconds:.0f}"]
    return "| " + " | ".join(cells) + " |"


def cells(grid: list[list], one_at_a_time: bool) -> list[tuple]:
    """Every combination of the lists, or the first values and one change at a time."""
    if not one_at_a_time:
        return list(itertools.product(*grid))
    base = tuple(values[0] for values in grid)
    changed = [base[:i] + (v,) + base[i + 1 :] for i, vs in enumerate(grid) for v in vs[1:]]
    return [base, *changed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4500])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--depth", type=int, nargs="+", default=[3])
    parser.add_argument("--z-dim", type=int, nargs="+", default=[8])
    parser.add_argument("--lr", type=float, nargs="+", default=[6e-3])
    parser.add_argument("--r1", type=float, nargs="+", default=[0.1])
    parser.add_argument("--r1-every", type=int, nargs="+", default=[15], help="lazy R1")
    parser.add_argument("--ema", type=float, nargs="+", default=[0.999], help="0: no EMA")
    parser.add_argument("--decay", nargs="+", default=["cosine"], choices=["cosine", "none"])
    parser.add_argument("--batch", type=int, nargs="+", default=[128], help="per member")
    parser.add_argument("--lr-gauss", type=float, default=1e-3, help="lr of the gauss variant")
    parser.add_argument("--T", type=int, default=4, help="denoising steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-seed", type=int, default=0, help="data stream, t, z, noise")
    parser.add_argument("--variants", nargs="+", default=["ddgan"], choices=VARIANTS)
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="the first value of every list, then each other value alone (not the full grid)",
    )
    parser.add_argument(
        "--no-base", action="store_true", help="with --one-at-a-time: skip the base"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = [args.hidden, args.depth, args.z_dim, args.lr, args.r1, args.r1_every, args.ema]
    grid += [args.decay, args.batch, args.steps]
    head = ["variant", *KEYS, "modes per seed", "within 3 std per seed", "median modes"]
    head += ["median within", "min within", "s / cell"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    gans = [v for v in args.variants if v != "gauss"]
    todo = cells(grid, args.one_at_a_time)[1 if args.one_at_a_time and args.no_base else 0 :]
    for values in todo if gans else []:
        start = time.perf_counter()
        scores = gan_cell(dict(zip(KEYS, values)), gans, args.seeds, args)
        seconds = time.perf_counter() - start
        for variant in gans:
            print(row(variant, values, scores[variant], seconds), flush=True)
    if "gauss" in args.variants:  # no D, no z: one cell per network size and budget
        sizes = itertools.product(args.hidden, args.depth, args.batch, args.steps)
        for hidden, depth, batch, steps in sizes:
            values = (hidden, depth, 0, args.lr_gauss, 0.0, 0, 0.999, "-", batch, steps)
            start = time.perf_counter()
            scores = gauss_cell(dict(zip(KEYS, values)), args.seeds, args)
            print(row("gauss", values, scores, time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
