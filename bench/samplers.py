"""The sampler zoo: quality vs NFE with the exact mixture score, and loop overhead vs diffusers.

    python -m bench.samplers [--n 4000] [--nfe 5 10 20 50 100 1000] [--out zoo.json|zoo.csv]

(1) Every sampler at each NFE, sliced Wasserstein-2 to exact samples of a 2-D 8-mode ring with
unequal weights, next to the sampling-noise floor (two exact sets of the same size); each number
is the mean over independent draws, with its standard error. The model is
the exact eps of the mixture, so every gap above the floor is discretization error.
(2) Per-step time of diffnotes' DDIM and DDPM loops vs diffusers' DDIMScheduler / DDPMScheduler
loops on the same trivial model (goal: ours / diffusers <= 0.5).
`zoo()` returns everything as plain dicts and lists, for the book's appendix page.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from diffnotes.analytic import GaussianMixture, ring_mixture
from diffnotes.metrics.samples import sliced_wasserstein
from diffnotes.samplers import ddim, ddpm
from diffnotes.schedules import linear_schedule, spaced_steps
from diffnotes.sde import VPSDE, predictor_corrector, probability_flow, reverse_sde, time_steps

NFES = (5, 10, 20, 50, 100, 1000)
WEIGHTS = (0.25, 0.2, 0.15, 0.1, 0.1, 0.08, 0.07, 0.05)


def mixture() -> GaussianMixture:
    """The benchmark's target: 8 modes on a circle of radius 2, std 0.1, unequal weights."""
    return ring_mixture(n_modes=8, radius=2.0, std=0.1, weights=WEIGHTS)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# name -> (x_T, nfe, generator) -> (samples, nfe actually used); discrete ones use linear T=1000
def _samplers(mix: GaussianMixture) -> dict[str, Callable]:
    sched, vp = linear_schedule(1000), VPSDE()
    eps_d, eps_c = mix.eps_model(sched), mix.eps_model(vp)

    def half(nfe: int) -> int:  # two model calls per step
        return max(nfe // 2, 1)

    return {
        "ddpm_small": lambda x, n, g: (
            ddpm(eps_d, sched, spaced_steps(1000, n), x, generator=g),
            n,
        ),
        "ddpm_large": lambda x, n, g: (
            ddpm(eps_d, sched, spaced_steps(1000, n), x, variance="large", generator=g),
            n,
        ),
        "ddim_eta0": lambda x, n, g: (ddim(eps_d, sched, spaced_steps(1000, n), x), n),
        "ddim_eta1": lambda x, n, g: (
            ddim(eps_d, sched, spaced_steps(1000, n), x, eta=1.0, generator=g),
            n,
        ),
        "reverse_sde": lambda x, n, g: (reverse_sde(eps_c, vp, time_steps(n), x, generator=g), n),
        "pc": lambda x, n, g: (
            predictor_corrector(eps_c, vp, time_steps(half(n)), x, generator=g),
            2 * half(n),
        ),
        "pf_euler": lambda x, n, g: (probability_flow(eps_c, vp, time_steps(n), x), n),
        "pf_heun": lambda x, n, g: (
            probability_flow(eps_c, vp, time_steps(half(n)), x, method="heun"),
            2 * half(n),
        ),
    }


def _split(x: torch.Tensor, draws: int) -> list[torch.Tensor]:
    return list(x.reshape(draws, -1, x.shape[-1]).unbind(0))


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def quality(n: int = 4000, nfes: Sequence[int] = NFES, *, seed: int = 0, draws: int = 5) -> dict:
    """Sliced-W2 to exact samples for every sampler and NFE, the floor, and RK45 with its NFE.

    Every number is the mean over ``draws`` independent draws (of x_T, of the reference set and
    of the sampler's noise) with its standard error: one draw of 4,000 points moves the distance
    by about 20%, so a single draw cannot tell a 10% difference from noise. The draws run as one
    batch (the samplers are shape-agnostic), then are split and scored one by one.
    """
    if not (isinstance(draws, int) and draws >= 1):
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    mix = mixture()
    refs = [mix.sample(n, _gen(seed + 1000 + d), dtype=torch.float64) for d in range(draws)]
    x_T = torch.randn(draws * n, 2, generator=_gen(seed + 2), dtype=torch.float64)
    g = _gen(seed + 3)
    floors = [
        sliced_wasserstein(mix.sample(n, g, dtype=torch.float64), refs[d]) for d in range(draws)
    ]
    floor, floor_se = _mean_se(floors)

    def score(x: torch.Tensor) -> tuple[float, float]:
        return _mean_se([sliced_wasserstein(a, ref) for a, ref in zip(_split(x, draws), refs)])

    rows = []
    for name, run in _samplers(mix).items():
        for nfe in nfes:
            t0 = time.perf_counter()
            x, used = run(x_T, int(nfe), _gen(seed + 4))
            sw, se = score(x)
            rows.append(
                dict(
                    sampler=name, nfe_target=int(nfe), nfe=int(used), sliced_w2=sw, se=se,
                    ratio_to_floor=sw / floor, seconds=time.perf_counter() - t0,
                )
            )  # fmt: skip
    vp = VPSDE()
    for tol in (1e-3, 1e-5):
        t0 = time.perf_counter()
        x, used = probability_flow(
            mix.eps_model(vp), vp, time_steps(1), x_T, method="rk45", rtol=tol, atol=tol,
            return_nfe=True,
        )  # fmt: skip
        sw, se = score(x)
        rows.append(
            dict(
                sampler=f"pf_rk45_tol{tol:g}", nfe_target=None, nfe=int(used), sliced_w2=sw,
                se=se, ratio_to_floor=sw / floor, seconds=time.perf_counter() - t0,
            )
        )  # fmt: skip
    return dict(
        mixture=dict(n_modes=8, radius=2.0, std=0.1, weights=list(WEIGHTS)),
        n=n, draws=draws, noise_floor=floor, noise_floor_se=floor_se, rows=rows,
    )  # fmt: skip


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def overhead(
    steps: int = 100, shape: Sequence[int] = (4, 3, 32, 32), repeats: int = 5
) -> list[dict]:
    """Seconds per step of our DDIM/DDPM loops vs diffusers' scheduler loops, trivial model."""
    from diffusers import DDIMScheduler, DDPMScheduler

    sched = linear_schedule(1000)
    x_T = torch.randn(*shape, generator=_gen(0))

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.1 * x

    ts = spaced_steps(1000, steps)
    ddim_d = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True
    )
    ddpm_d = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
        variance_type="fixed_small",
    )  # fmt: skip

    def diffusers_loop(scheduler, **kw) -> torch.Tensor:
        scheduler.set_timesteps(steps)
        x = x_T
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t), t, x, **kw).prev_sample
        return x

    with torch.no_grad():
        cases = {
            "ddim": (
                lambda: ddim(model, sched, ts, x_T),
                lambda: diffusers_loop(ddim_d, eta=0.0),
            ),
            "ddpm": (
                lambda: ddpm(model, sched, ts, x_T, generator=_gen(1)),
                lambda: diffusers_loop(ddpm_d, generator=_gen(1)),
            ),
        }
        out = []
        for name, (ours, theirs) in cases.items():
            ours(), theirs()  # warm up
            t_ours, t_theirs = _best(ours, repeats) / steps, _best(theirs, repeats) / steps
            out.append(
                dict(
                    loop=name, steps=steps, shape=list(shape), ours_us_per_step=1e6 * t_ours,
                    diffusers_us_per_step=1e6 * t_theirs, ratio=t_ours / t_theirs,
                )
            )  # fmt: skip
    return out


def zoo(
    n: int = 4000,
    nfes: Sequence[int] = NFES,
    *,
    seed: int = 0,
    draws: int = 5,
    with_overhead: bool = True,
    overhead_steps: int = 100,
) -> dict:
    """The whole benchmark as plain data: quality rows, the floor, and the overhead table."""
    out = quality(n, nfes, seed=seed, draws=draws)
    best20 = [r for r in out["rows"] if r["nfe_target"] == 20]
    if best20:
        best = min(best20, key=lambda r: r["sliced_w2"])
        out["best_at_nfe20"] = dict(
            sampler=best["sampler"], ratio_to_floor=best["ratio_to_floor"], se=best["se"]
        )
    out["overhead"] = overhead(overhead_steps) if with_overhead else []
    return out


def _print(result: dict) -> None:
    rows = result["rows"]
    nfes = sorted({r["nfe_target"] for r in rows if r["nfe_target"] is not None})
    print(
        f"sliced W2 to {result['n']} exact samples, mean of {result['draws']} draws; noise floor "
        f"{result['noise_floor']:.4f} +- {result['noise_floor_se']:.4f} (standard error)"
    )
    print(f"{'sampler':<20}" + "".join(f"{f'NFE {k}':>12}" for k in nfes))
    for name in dict.fromkeys(r["sampler"] for r in rows if r["nfe_target"] is not None):
        cells = {r["nfe_target"]: r for r in rows if r["sampler"] == name}
        print(
            f"{name:<20}"
            + "".join(
                f"{cells[k]['sliced_w2']:>7.4f}+-{cells[k]['se']:.3f}" if k in cells else " " * 15
                for k in nfes
            )
        )
    for r in rows:
        if r["nfe_target"] is None:
            print(f"{r['sampler']:<20} NFE {r['nfe']:>5}  sliced W2 {r['sliced_w2']:.4f}")
    if "best_at_nfe20" in result:
        b = result["best_at_nfe20"]
        print(f"best at NFE 20: {b['sampler']} at {b['ratio_to_floor']:.2f}x the floor (goal 1.5x)")
    for o in result["overhead"]:
        print(
            f"{o['loop']} loop, {o['steps']} steps, x {tuple(o['shape'])}: ours "
            f"{o['ours_us_per_step']:.1f} us/step, diffusers {o['diffusers_us_per_step']:.1f} "
            f"us/step, ratio {o['ratio']:.2f} (goal <= 0.5)"
        )


def _write(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        fields = ["sampler", "nfe_target", "nfe", "sliced_w2", "se", "ratio_to_floor", "seconds"]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*fields, "noise_floor"])
            w.writeheader()
            for r in result["rows"]:
                w.writerow({**{k: r[k] for k in fields}, "noise_floor": result["noise_floor"]})
    else:
        path.write_text(json.dumps(result, indent=1))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="samples per set")
    p.add_argument("--nfe", type=int, nargs="+", default=list(NFES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=5, help="independent draws averaged per cell")
    p.add_argument("--no-overhead", action="store_true", help="skip the diffusers comparison")
    p.add_argument("--out", type=Path, default=None, help="write the table (.json or .csv)")
    args = p.parse_args(argv)
    if args.n < 2 or any(k < 1 for k in args.nfe) or args.draws < 1:
        raise ValueError("--n must be >= 2, --draws >= 1 and every --nfe >= 1")
    torch.set_num_threads(1)
    result = zoo(
        args.n, args.nfe, seed=args.seed, draws=args.draws, with_overhead=not args.no_overhead
    )
    _print(result)
    if args.out is not None:
        _write(result, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
