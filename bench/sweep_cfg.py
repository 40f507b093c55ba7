"""Chapter 07's sweep: where does classifier-free guidance give FD-digits a U-shape over w?

    OMP_NUM_THREADS=1 python -m bench.sweep_cfg [--steps 300 600 1200] [--widths 8 16]
        [--lrs 2e-3] [--batch-sizes 64] [--p-uncond 0.2] [--size 8] [--seeds 0 1 2]
        [--per-class 30] [--sample-steps 20]

For each cell (training steps, U-Net width, label-drop probability) and seed, trains the
class-conditional digits U-Net of `diffnotes.recipes.digits_cfg_budget` (label dropout, Ho &
Salimans 2022 Alg. 1; cached like the chapter's), samples ``per-class`` digits of every class at
each guidance weight w from the same noise (DDIM with eta = 1, i.e. DDPM's posterior step on a
strided schedule) and grades them with the book's independent digits classifier: FD-digits
against all 1,797 real digits, and an Inception-Score analogue, exp E KL(p(y|x) || p(y)) of that
classifier (at most 10). Prints one markdown row per cell: FD at each w as mean ± std over the
seeds, the argmin of each seed, FD(0) - min over 0 < w <= 1 in units of the seeds' std of FD(0),
FD(w_max) / minimum (the smallest over seeds), and IS at w = 0 and w_max (means over seeds).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffnotes.metrics.digits import digits_classifier, fd_digits, fd_digits_floor
from diffnotes.profile import Profile
from diffnotes.recipes import digits_cfg_budget
from diffnotes.samplers import ddim
from diffnotes.schedules import DiscreteSchedule, spaced_steps

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@torch.no_grad()
def inception_score(images: Tensor, judge: nn.Module) -> float:
    """exp E_x KL(p(y|x) || p(y)) of the digits classifier (Salimans et al. 2016's IS; max 10)."""
    logp = torch.cat([judge(b).log_softmax(1) for b in images.split(512)]).double()
    log_marginal = logp.exp().mean(0).log()
    return float((logp.exp() * (logp - log_marginal)).sum(1).mean().exp())


@torch.no_grad()
def guided_samples(
    model: nn.Module,
    schedule: DiscreteSchedule,
    labels: Tensor,
    w: float,
    x_T: Tensor,
    steps: int,
    seed: int,
) -> Tensor:
    """Digits at guidance weight w (eq. 6, one batched call), DDIM eta = 1 from x_T."""
    null = torch.full_like(labels, -1)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        if w == 0:
            return model(x, t, labels)
        eps_c, eps_u = model(x.repeat(2, 1, 1, 1), t.repeat(2), torch.cat([labels, null])).chunk(2)
        return (1 + w) * eps_c - w * eps_u

    g = torch.Generator().manual_seed(seed)
    ts = spaced_steps(1000, steps)
    return ddim(guided, schedule, ts, x_T, eta=1.0, generator=g).clamp(-1, 1)


def run_seed(args: argparse.Namespace, cell: dict, seed: int, judge: nn.Module) -> dict:
    """Train one cell at one seed; FD-digits and IS at every w (the chapter's seeds: seed+1, +2)."""
    prof = Profile("book", torch.device("cpu"), static=True, progress=False)
    model, schedule = digits_cfg_budget(prof, size=args.size, seed=seed, **cell)
    labels = torch.arange(10).repeat_interleave(args.per_class)
    g = torch.Generator().manual_seed(seed + 1)
    x_T = torch.randn(len(labels), 1, args.size, args.size, generator=g)
    fd, score = {}, {}
    for w in args.weights:
        x = guided_samples(model, schedule, labels, w, x_T, args.sample_steps, seed + 2)
        fd[w] = fd_digits(x, classifier=judge)
        score[w] = inception_score(x, judge)
    return dict(fd=fd, inception=score)


def summarise(weights: Sequence[float], runs: list[dict]) -> dict:
    """Mean and std over seeds of FD at each w, the argmins, the dip and the rise."""
    fd = {w: [r["fd"][w] for r in runs] for w in weights}
    mean = {w: statistics.fmean(v) for w, v in fd.items()}
    std = {w: statistics.stdev(v) if len(v) > 1 else float("nan") for w, v in fd.items()}
    small = [w for w in weights if 0 < w <= 1]
    dips = [r["fd"][0] - min(r["fd"][w] for w in small) for r in runs]
    rises = [r["fd"][weights[-1]] / min(r["fd"].values()) for r in runs]
    return dict(
        mean=mean,
        std=std,
        argmin=[min(weights, key=r["fd"].get) for r in runs],
        dip_over_std=statistics.fmean(dips) / std[0] if len(runs) > 1 else float("nan"),
        rise_min=min(rises),
        is0=statistics.fmean(r["inception"][weights[0]] for r in runs),
        is_last=statistics.fmean(r["inception"][weights[-1]] for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 600, 1200])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--p-uncond", type=float, nargs="+", default=[0.2])
    parser.add_argument("--size", type=int, default=8, choices=(8, 16, 32))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=30, help="samples per class and w")
    parser.add_argument("--sample-steps", type=int, default=20, help="DDIM steps (eta = 1)")
    parser.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    args = parser.parse_args()
    if args.weights[0] != 0 or sorted(args.weights) != args.weights:
        parser.error("--weights must be increasing and start at 0")

    judge = digits_classifier(verbose=False)
    floor = fd_digits_floor(10 * args.per_class, size=args.size, classifier=judge)
    ws = " | ".join(f"FD w={w:g}" for w in args.weights)
    print(
        f"| steps | batch | lr | width | p_uncond | {ws} | argmin per seed | dip / std | "
        f"FD(w={args.weights[-1]:g}) / min | IS w=0 | IS w={args.weights[-1]:g} |"
    )
    print("|" + " --- |" * (len(args.weights) + 10))
    start = time.perf_counter()
    grid = itertools.product(args.p_uncond, args.widths, args.lrs, args.batch_sizes, args.steps)
    for p_uncond, width, lr, batch_size, steps in grid:
        cell = dict(
            steps=steps, base_channels=width, p_uncond=p_uncond, batch_size=batch_size, lr=lr
        )
        runs = [run_seed(args, cell, seed, judge) for seed in args.seeds]
        s = summarise(args.weights, runs)
        fds = " | ".join(f"{s['mean'][w]:.1f} ± {s['std'][w]:.1f}" for w in args.weights)
        argmins = ", ".join(f"{w:g}" for w in s["argmin"])
        print(
            f"| {steps} | {batch_size} | {lr:g} | {width} | {p_uncond:g} | {fds} | {argmins} | "
            f"{s['dip_over_std']:.1f} | {s['rise_min']:.1f} | {s['is0']:.2f} | "
            f"{s['is_last']:.2f} |",
            flush=True,
        )
    print(
        f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}) per cell, "
        f"{10 * args.per_class} digits ({args.size} px) per w, {args.sample_steps} DDIM steps; "
        f"FD-digits floor (real vs real, same n) {floor:.1f}; "
        f"dip / std: mean over seeds of FD(0) - min over 0 < w <= 1, over the std of FD(0); "
        f"FD(w={args.weights[-1]:g}) / min: the smallest over seeds; "
        f"{time.perf_counter() - start:.0f} s (trained models come from the cache when there)."
    )


if __name__ == "__main__":
    main()
