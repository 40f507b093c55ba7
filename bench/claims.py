"""How robust is each claim? Rerun chapters over seeds and thread counts and table every claim.

    python -m bench.claims --profile book --seeds 0 1 2 --threads 1 2 [--out claims.json] [chapters]

Each (chapter, seed, thread count) runs in its own process with an empty model cache of its own
(`DIFFNOTES_CACHE`), `DIFFNOTES_SEED`, `OMP_NUM_THREADS` and `DIFFNOTES_CLAIMS_LOG` set, as many at
once as the cores allow (a run with 2 threads takes 2 cores). One progress line per finished run;
then a table per claim: threshold, min / median / max over the runs, worst margin, passes / runs,
and the paper's number. Exits 1 when any claim fails any run or a chapter fails outside a claim.
Chapters are notebook paths or names such as ``01-ddpm`` (default: every chapter and appendix).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffnotes.util import child_env

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("ci", "book", "gpu")


SKIP = {"appendix-robustness"}  # the page that shows this runner's output has no claims


def all_chapters() -> list[Path]:
    """Every chapter and every appendix notebook with claims, in the order of their folders."""
    paths = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.ipynb"))
    return [p for p in paths if p.stem not in SKIP]


def resolve(names: list[str]) -> list[Path]:
    """Notebook paths from paths or stems; a name that matches nothing is an error."""
    known = {p.stem: p for p in all_chapters()}
    out = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb":
            if not path.is_file():
                raise SystemExit(f"chapters: {name} is not a notebook file")
            out.append(path.resolve())
        elif name in known:
            out.append(known[name])
        else:
            raise SystemExit(f"chapters: {name!r} is not a chapter; allowed: {', '.join(known)}")
    return out


@dataclass
class Run:
    chapter: Path
    seed: int
    threads: int
    returncode: int | None = None
    seconds: float = 0.0
    error: str = ""
    records: list[dict] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    start: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.chapter.stem} seed={self.seed} threads={self.threads}"


def execute(path: Path, timeout: int) -> None:
    """Execute one notebook in place of a kernel of this interpreter (the child process's job)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()


def start(run: Run, profile: str, timeout: int, base: Path) -> None:
    run.workdir = Path(
        tempfile.mkdtemp(prefix=f"{run.chapter.stem}-s{run.seed}-t{run.threads}-", dir=base)
    )
    env = child_env(
        DIFFNOTES_PROFILE=profile,
        DIFFNOTES_SEED=str(run.seed),
        OMP_NUM_THREADS=str(run.threads),
        MKL_NUM_THREADS=str(run.threads),
        DIFFNOTES_CACHE=str(run.workdir / "cache"),
        DIFFNOTES_CLAIMS_LOG=str(run.workdir / "claims.jsonl"),
        DIFFNOTES_STATIC="1",
    )
    cmd = [sys.executable, "-m", "bench.claims", "--execute", str(run.chapter)]
    cmd += ["--timeout", str(timeout)]
    log = open(run.workdir / "output.txt", "wb")  # noqa: SIM115 - closed when the run ends
    run.start = time.perf_counter()
    run.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def finish(run: Run) -> None:
    run.seconds = time.perf_counter() - run.start
    run.returncode = run.proc.returncode
    path = run.workdir / "claims.jsonl"
    if path.is_file():
        run.records = [json.loads(line) for line in path.read_text().splitlines() if line]
    if run.returncode != 0:
        text = (run.workdir / "output.txt").read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if "Error" in ln or "error" in ln]
        run.error = (lines[-1] if lines else text.strip().splitlines()[-1:] or ["?"])[0][:300]


def schedule(runs: list[Run], profile: str, timeout: int, cores: int, base: Path) -> None:
    """Run everything, at most ``cores`` threads at once; print one line per finished run."""
    pending = sorted(runs, key=lambda r: -r.threads)  # the 2-thread runs first, the 1s fill in
    active: list[Run] = []
    done = 0
    while pending or active:
        free = cores - sum(r.threads for r in active)
        for run in list(pending):
            if run.threads <= free or not active:
                start(run, profile, timeout, base)
                active.append(run)
                pending.remove(run)
                free -= run.threads
        time.sleep(0.5)
        for run in list(active):
            if run.proc.poll() is not None:
                active.remove(run)
                finish(run)
                done += 1
                claims = [r for r in run.records if r["kind"] == "claim"]
                failed = [r["name"] for r in claims if not r["passed"]]
                status = "ok" if run.returncode == 0 else "FAILED"
                detail = f"{len(claims) - len(failed)}/{len(claims)} claims held"
                if failed:
                    detail += f"; failed: {'; '.join(failed)}"
                elif run.returncode != 0:
                    detail += f"; {run.error}"
                print(
                    f"[{done}/{len(runs)}] {run.label}: {status}, {detail}, {run.seconds:.0f} s",
                    flush=True,
                )


def summarise(runs: list[Run]) -> dict:
    """Per claim and per report: values over the runs of its chapter; a missing claim fails."""
    per_chapter: dict[str, list[Run]] = {}
    for run in runs:
        per_chapter.setdefault(run.chapter.stem, []).append(run)
    claims, reports = [], []
    for chapter, chapter_runs in per_chapter.items():
        names: dict[tuple[str, str], dict] = {}
        for run in chapter_runs:
            for rec in run.records:
                names.setdefault((rec["kind"], rec["name"]), rec)
        for (kind, name), first in names.items():
            recs = [
                next((r for r in run.records if r["name"] == name and r["kind"] == kind), None)
                for run in chapter_runs
            ]
            values = [r["value"] for r in recs if r is not None]
            row = dict(
                chapter=chapter,
                name=name,
                paper=first.get("paper"),
                evidence=first.get("evidence"),
                runs=len(chapter_runs),
                min=min(values),
                median=statistics.median(values),
                max=max(values),
            )
            if kind == "claim":
                margins = [r["margin"] for r in recs if r is not None]
                row.update(
                    op=first["op"],
                    threshold=first["threshold"],
                    passes=sum(1 for r in recs if r is not None and r["passed"]),
                    worst_margin=min(margins),
                )
                claims.append(row)
            else:
                reports.append(row)
    return dict(claims=claims, reports=reports)


def print_tables(summary: dict) -> None:
    print("\nclaims (asserted):")
    head = f"{'chapter':24s} {'claim':60s} {'thr':>12s} {'min':>9s} {'median':>9s} {'max':>9s}"
    print(head + f" {'worst margin':>13s} {'pass':>7s}  paper")
    for c in summary["claims"]:
        thr = f"{c['op']} {c['threshold']:.4g}"
        print(
            f"{c['chapter']:24s} {c['name'][:60]:60s} {thr:>12s} {c['min']:9.4g} "
            f"{c['median']:9.4g} {c['max']:9.4g} {c['worst_margin']:+13.4g} "
            f"{c['passes']:>3d}/{c['runs']:<3d}  {c['paper'] or ''}"
        )
    if summary["reports"]:
        print("\nreported (not asserted):")
        for c in summary["reports"]:
            print(
                f"{c['chapter']:24s} {c['name'][:60]:60s} {'':>12s} {c['min']:9.4g} "
                f"{c['median']:9.4g} {c['max']:9.4g}  {c['paper'] or ''}"
            )


def load_runs(path: Path) -> tuple[dict, list[Run]]:
    """The header and the runs (with their records) of a `--out` file."""
    data = json.loads(path.read_text())
    runs = []
    for r in data.get("runs", []):
        if "records" not in r:
            raise SystemExit(f"--merge: {path} has no per-run records (written by an older runner)")
        run = Run(ROOT / "notebooks" / f"{r['chapter']}.ipynb", r["seed"], r["threads"])
        run.returncode, run.seconds, run.error = (0 if r["ok"] else 1), r["seconds"], r["error"]
        run.records = r["records"]
        runs.append(run)
    return data, runs


def merge(paths: list[Path], out: Path) -> int:
    """One summary from several runner outputs of the same profile (e.g. a run split in parts)."""
    headers, runs = [], []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"--merge: {path} is not a file")
        header, part = load_runs(path)
        headers.append(header)
        runs += part
    profiles = {h["profile"] for h in headers}
    if len(profiles) != 1:
        raise SystemExit(f"--merge: the files mix profiles {sorted(profiles)}")
    keys = [(r.chapter.stem, r.seed, r.threads) for r in runs]
    if len(set(keys)) != len(keys):
        raise SystemExit("--merge: the same (chapter, seed, threads) run appears twice")
    summary = summarise(runs)
    print_tables(summary)
    write(out, profiles.pop(), runs, summary, sum(h["wall_seconds"] for h in headers))
    failed = [c for c in summary["claims"] if c["passes"] < c["runs"]]
    return 1 if failed or any(r.returncode != 0 for r in runs) else 0


def write(path: Path, profile: str, runs: list[Run], summary: dict, wall: float) -> None:
    """The runner's JSON: header, every run with its records, the per-claim summary."""
    payload = dict(
        profile=profile,
        seeds=sorted({r.seed for r in runs}),
        threads=sorted({r.threads for r in runs}),
        wall_seconds=round(wall, 1),
        runs=[
            dict(
                chapter=r.chapter.stem,
                seed=r.seed,
                threads=r.threads,
                ok=r.returncode == 0,
                seconds=round(r.seconds, 1),
                error=r.error,
                records=r.records,
            )
            for r in runs
        ],
        **summary,
    )
    tmp_out = path.with_suffix(path.suffix + ".tmp")
    tmp_out.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp_out, path)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="notebook paths or names (default: all)")
    parser.add_argument("--profile", default="ci", choices=PROFILES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per notebook cell")
    parser.add_argument("--out", type=Path, help="write the summary and every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (outputs)")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="no runs: combine the runs of earlier --out files into one summary (needs --out)",
    )
    parser.add_argument("--execute", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute is not None:
        execute(args.execute, args.timeout)
        return 0
    if any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be integers >= 0, got {args.seeds}")
    if any(t < 1 for t in args.threads):
        parser.error(f"--threads must be integers >= 1, got {args.threads}")
    if args.cores < 1 or args.timeout < 1:
        parser.error("--cores and --timeout must be >= 1")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out: folder {args.out.parent} does not exist")
    if args.merge:
        if args.out is None:
            parser.error("--merge needs --out")
        return merge(args.merge, args.out)
    chapters = resolve(args.chapters) if args.chapters else all_chapters()
    runs = [Run(c, s, t) for c in chapters for s in args.seeds for t in args.threads]
    print(
        f"bench.claims: {len(runs)} runs ({len(chapters)} chapters x seeds {args.seeds} x threads "
        f"{args.threads}) under profile {args.profile!r} on {args.cores} cores",
        flush=True,
    )
    start_time = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffnotes-claims-") as tmp:
        base = Path(tmp)
        if args.keep:
            base = Path(tempfile.mkdtemp(prefix="diffnotes-claims-"))
            print(f"run folders kept in {base}")
        schedule(runs, args.profile, args.timeout, args.cores, base)
    summary = summarise(runs)
    print_tables(summary)
    errors = [r for r in runs if r.returncode != 0]
    failed = [c for c in summary["claims"] if c["passes"] < c["runs"]]
    wall = time.perf_counter() - start_time
    print(
        f"\n{len(summary['claims'])} claims, {len(failed)} failed in some run; "
        f"{len(errors)} of {len(runs)} runs failed; {wall:.0f} s wall"
    )
    if args.out is not None:
        write(args.out, args.profile, runs, summary, wall)
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
