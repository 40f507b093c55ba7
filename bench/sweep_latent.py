"""Chapter 10's controlled case: pixel against latent diffusion with an exact PCA first stage.

    python -m bench.sweep_latent [--d 8 16 32] [--checkpoints 250 1000 3000] [--hidden 128 256]
                                 [--lr 1e-3] [--seeds 0 1 2] [--n 2000]

For each (hidden, lr, seed) one pixel model and one latent model per d are trained (the same
class-conditional `TimeMLP`, the same batches and steps; `diffnotes.latent_pca`), and snapshots
at each step count are scored: FD-digits of conditional samples (w = 0) against exact samples of
the digit mixture, and the digits classifier's accuracy on the requested class at CFG weights
w = 0, 1, 2, 4. Prints one Markdown table row per (hidden, lr, space, steps) with the median
(min-max) over seeds, then the FLOPs per training step of each space. Set OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from diffnotes.latent_pca import (
    digit_mixture,
    pixel_and_latent,
    sample,
    step_flops,
    train_snapshots,
)
from diffnotes.metrics.digits import (
    digits_classifier,
    digits_features,
    frechet_distance,
    predict_digits,
)
from diffnotes.schedules import linear_schedule

WEIGHTS = (0.0, 1.0, 2.0, 4.0)


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[250, 1000, 3000])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--batch", type=int, default=256, help="batch size of both models")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=2000, help="samples per evaluation")
    args = parser.parse_args(argv)
    if any(d < 1 or d > 64 for d in args.d):
        parser.error(f"--d must be in 1..64, got {args.d}")
    if any(s < 1 for s in args.checkpoints) or args.checkpoints != sorted(set(args.checkpoints)):
        parser.error(f"--checkpoints must be increasing step counts >= 1, got {args.checkpoints}")
    if args.n < 100 or any(h < 1 for h in args.hidden) or any(lr <= 0 for lr in args.lr):
        parser.error("--n must be >= 100, --hidden >= 1 and --lr > 0")
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    torch.set_num_threads(1)
    schedule = linear_schedule(1000)
    mixture = digit_mixture()
    classifier = digits_classifier(verbose=False)
    g = torch.Generator().manual_seed(1234)
    exact = mixture.sample(10_000, generator=g, dtype=torch.float64)
    ref = digits_features(exact.reshape(-1, 1, 8, 8).float(), classifier=classifier)

    def score(x: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        images = x.reshape(-1, 1, 8, 8).float()
        feats = digits_features(images, classifier=classifier)
        acc = (predict_digits(images, classifier=classifier) == labels).double().mean().item()
        return frechet_distance(feats, ref), acc

    floor = score(mixture.sample(args.n, generator=g, dtype=torch.float64), torch.zeros(1))[0]
    print(f"FD-digits floor (exact samples, n = {args.n}): {floor:.2f}", flush=True)
    rows = []
    for hidden in args.hidden:
        for lr in args.lr:
            results: dict[tuple[str, int], list] = {}
            first_stage: dict[str, float] = {}
            for seed in args.seeds:
                labels = torch.multinomial(
                    mixture.weights.float(),
                    args.n,
                    True,
                    generator=torch.Generator().manual_seed(seed),
                )
                spaces = [pixel_and_latent(mixture, d, seed=seed) for d in args.d]
                for space in [spaces[0][0]] + [lat for _, lat in spaces]:
                    start = time.perf_counter()
                    snaps = train_snapshots(
                        space,
                        schedule,
                        args.checkpoints,
                        hidden=hidden,
                        lr=lr,
                        batch_size=args.batch,
                        seed=seed,
                    )
                    seconds = time.perf_counter() - start
                    if space.stage is not None and space.name not in first_stage:
                        x = mixture.sample(args.n, generator=g, dtype=torch.float64)
                        first_stage[space.name] = score(space.decode(space.encode(x)), labels)[0]
                    for steps, model in snaps.items():
                        scores = [
                            score(sample(model, space, schedule, labels, w, seed=seed), labels)
                            for w in WEIGHTS
                        ]
                        results.setdefault((space.name, steps), []).append(scores)
                    print(
                        f"  hidden {hidden} lr {lr:g} seed {seed} {space.name}: {seconds:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            for (name, steps), per_seed in results.items():
                fd0 = [s[0][0] for s in per_seed]
                accs = [spread([s[i][1] for s in per_seed], ".3f") for i in range(len(WEIGHTS))]
                bound = f"{first_stage[name]:.1f}" if name in first_stage else "—"
                rows.append(
                    f"| {hidden} | {lr:g} | {name} | {steps} | {spread(fd0, '.1f')} | {bound} | "
                    + " | ".join(accs)
                    + " |"
                )
    print(
        "\n| hidden | lr | space | steps | FD-digits, w = 0 | first stage D(E(x)) | "
        + " | ".join(f"accuracy w = {w:g}" for w in WEIGHTS)
        + " |"
    )
    print("|---" * (6 + len(WEIGHTS)) + "|")
    print("\n".join(rows))
    mixture_spaces = pixel_and_latent(mixture, args.d[0])
    for hidden in args.hidden:
        spaces = [mixture_spaces[0]] + [pixel_and_latent(mixture, d)[1] for d in args.d]
        flops = ", ".join(f"{s.name} {step_flops(s, hidden=hidden) / 1e6:.1f}" for s in spaces)
        print(f"\nMFLOPs per training step (batch 256), hidden {hidden}: {flops}")
    print(f"(batch size {args.batch} in training)")
    print(f"(medians (min-max) over seeds {args.seeds}; {args.n} samples, 50 DDIM steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
