"""Build the rendered book: ``python -m diffnotes.book build`` (what ``make book`` runs).

jupyter-cache keys a notebook only on its code cells, so a change to ``src/diffnotes`` or to the
profile would otherwise show stale outputs. We give each (profile, hash of the package source)
its own cache folder and drop the folders of older sources. Notebooks run with
``DIFFNOTES_STATIC=1``: no widgets or progress bars, which render as blank boxes in static HTML.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from diffnotes.profile import PROFILES, profile
from diffnotes.util import child_env

ROOT = Path(__file__).resolve().parents[2]


def source_key(profile_name: str, root: Path = ROOT) -> str:
    """A short hash of the package source and the profile: the cache key beside code cells."""
    digest = hashlib.sha256(profile_name.encode())
    pkg = root / "src" / "diffnotes"
    # the package's code and its data (the claim-robustness summary the chapters' tables show)
    for path in sorted([*pkg.rglob("*.py"), *pkg.rglob("*.json")]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build(profile_name: str, *, root: Path = ROOT, warnings_as_errors: bool = True) -> int:
    """Run jupyter-book on ``root`` under ``profile_name`` with a source-keyed execution cache."""
    if profile_name not in PROFILES:
        raise ValueError(f"profile={profile_name!r}; allowed values: {', '.join(PROFILES)}")
    if not (root / "_config.yml").is_file():
        raise FileNotFoundError(f"root={root} has no _config.yml")
    build_dir = root / "_build"
    cache_root = build_dir / ".jupyter_cache"
    key = f"{profile_name}-{source_key(profile_name, root)}"
    for stale in cache_root.glob(f"{profile_name}-*"):
        if stale.name != key:
            shutil.rmtree(stale, ignore_errors=True)
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("execute", {})["cache"] = str(cache_root / key)
    build_dir.mkdir(exist_ok=True)
    generated = build_dir / f"_config.{profile_name}.yml"
    generated.write_text(yaml.safe_dump(config, sort_keys=False))
    env = child_env(DIFFNOTES_PROFILE=profile_name, DIFFNOTES_STATIC="1")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    # --all: Sphinx would otherwise keep pages rendered from an older cache.
    cmd = [str(jupyter_book), "build", str(root), "--config", str(generated), "--all"]
    if warnings_as_errors:
        cmd += ["--warningiserror", "--keep-going"]
    print(f"building the book under profile {profile_name!r} (cache {key})", flush=True)
    return subprocess.run(cmd, env=env, cwd=root).returncode


def strip(paths: list[Path]) -> list[Path]:
    """Remove outputs and execution counts from notebooks in place; return those changed."""
    import nbformat

    changed = []
    for path in paths:
        if path.suffix != ".ipynb" or not path.is_file():
            raise ValueError(f"paths: {path} is not an .ipynb file")
        nb = nbformat.read(path, as_version=4)
        dirty = False
        for cell in nb.cells:
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
                cell.outputs, cell.execution_count, dirty = [], None, True
        if dirty:
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def figure(path: Path, profile_name: str = "book") -> Path:
    """The README's picture: DDPM on the digits, forward noising above and samples below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from diffnotes import plot
    from diffnotes.data import digits
    from diffnotes.forward import q_sample
    from diffnotes.recipes import digits_ddpm
    from diffnotes.samplers import ddpm

    model, schedule = digits_ddpm(profile(profile_name))
    g = torch.Generator().manual_seed(0)
    x0 = digits(16, "all")[0][:1].repeat(8, 1, 1, 1)
    ts = torch.tensor([0, 50, 100, 200, 300, 500, 700, 999])
    x_t = q_sample(schedule, x0, ts, torch.randn(x0.shape, generator=g))
    x_T = torch.randn(32, 1, 16, 16, generator=g)
    samples = ddpm(model, schedule, None, x_T, generator=g)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 4.4), height_ratios=[1, 4])
    plot.grid(x_t, nrow=8, ax=top, title="forward process q(x_t | x_0), t = 0 ... 999")
    plot.grid(samples, nrow=8, ax=bottom, title="DDPM samples (1000 ancestral steps)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffnotes.book", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute the notebooks and build _build/html")
    b.add_argument("--profile", choices=PROFILES, default=None, help="default: DIFFNOTES_PROFILE")
    b.add_argument("--allow-warnings", action="store_true", help="do not fail on warnings")
    s = sub.add_parser("strip", help="remove outputs and execution counts from notebooks")
    s.add_argument("paths", nargs="+", type=Path)
    f = sub.add_parser("figure", help="render the README picture")
    f.add_argument("--out", type=Path, default=ROOT / "book" / "_static" / "diffnotes.png")
    f.add_argument("--profile", choices=PROFILES, default="book")
    args = parser.parse_args(argv)
    if args.command == "figure":
        print(f"wrote {figure(args.out, args.profile)}")
        return 0
    if args.command == "strip":
        for path in strip(args.paths):
            print(f"stripped {path}")
        return 0
    name = args.profile or profile().name
    return build(name, warnings_as_errors=not args.allow_warnings)


if __name__ == "__main__":
    raise SystemExit(main())
