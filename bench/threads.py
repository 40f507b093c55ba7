"""Two torch threads on a shared 2-core machine: what OpenMP's spin-waiting costs.

    python -m bench.threads [--repeats 2] [--spins 100 10000]

torch's CPU wheels for Linux run their parallel regions on GNU OpenMP, whose idle threads spin
(GOMP_SPINCOUNT, 300,000 by default) before they sleep. Alone on the cores that is the fastest
choice; beside another job that uses the same cores, a spinning thread holds a core the working
thread needs, and every small operation waits for a time slice. This prints ms per training step
of a 2-D MLP (the toy chapters' networks) and of the digits U-Net (`UNetConfig()`, batch 32) at
two threads, quiet and beside a competing two-thread U-Net training, for the default, for
GOMP_SPINCOUNT=1000 (`diffnotes.util.OPENMP_DEFAULTS`: what `make book`, `python -m diffnotes.book`
and `bench.claims` give notebook kernels unless you set it yourself)
and for OMP_WAIT_POLICY=PASSIVE (no spinning). Each cell runs in a fresh process, since OpenMP
reads these variables once. Run it on an otherwise idle machine: it makes its own competitor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from diffnotes.util import OPENMP_DEFAULTS

SETTINGS = {
    "default": {},
    f"GOMP_SPINCOUNT={OPENMP_DEFAULTS['GOMP_SPINCOUNT']}": dict(OPENMP_DEFAULTS),
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}

# one process: a few warm-up steps, then ms per step (MLP 300 steps, U-Net 10), or forever
STEP = """
import sys, time, torch
kind, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
if kind == "mlp":
    net = torch.nn.Sequential(torch.nn.Linear(3, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                              torch.nn.SiLU(), torch.nn.Linear(128, 2))
    x, y = torch.randn(512, 3), torch.randn(512, 2)
    loss_of = lambda: ((net(x) - y) ** 2).mean()
else:
    from diffnotes.models.unet import UNet, UNetConfig
    net, x = UNet(UNetConfig()), torch.randn(32, 1, 16, 16)
    loss_of = lambda: (net(x, torch.randint(0, 1000, (32,))) ** 2).mean()
opt = torch.optim.Adam(net.parameters(), 1e-3)
def step():
    loss = loss_of()
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3):
    step()
start, n = time.perf_counter(), 0
while steps < 0 or n < steps:
    step(); n += 1
print(1e3 * (time.perf_counter() - start) / n)
"""


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    return {**env, "OMP_NUM_THREADS": "2", **extra}


def ms_per_step(kind: str, extra: dict[str, str]) -> float:
    steps = "300" if kind == "mlp" else "10"
    cmd = [sys.executable, "-c", STEP, kind, steps]
    out = subprocess.run(cmd, env=_env(extra), capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell (>= 1)")
    parser.add_argument(
        "--spins", type=int, nargs="*", default=[], help="more GOMP_SPINCOUNT values to try"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if any(spin < 0 for spin in args.spins):
        parser.error(f"--spins must be counts >= 0, got {args.spins}")
    settings = dict(SETTINGS)
    settings.update({f"GOMP_SPINCOUNT={n}": {"GOMP_SPINCOUNT": str(n)} for n in args.spins})
    print(f"{'condition':<34}{'setting':<26}{'MLP ms/step':>14}{'U-Net ms/step':>16}")
    for condition in ("quiet", "beside a 2-thread U-Net"):
        competitor = None
        if condition != "quiet":  # default settings: what another torch job would run with
            cmd = [sys.executable, "-c", STEP, "unet", "-1"]
            competitor = subprocess.Popen(cmd, env=_env({}), stdout=subprocess.DEVNULL)
            time.sleep(3.0)
        try:
            for name, extra in settings.items():
                cells = []
                for kind in ("mlp", "unet"):
                    runs = [ms_per_step(kind, extra) for _ in range(args.repeats)]
                    cells.append("/".join(f"{r:.3g}" for r in runs))
                print(f"{condition:<34}{name:<26}{cells[0]:>14}{cells[1]:>16}", flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()


if __name__ == "__main__":
    main()
