"""Build the rendered book: ``python -m diffnotes.book build`` (what ``make book`` runs).

jupyter-cache keys a notebook only on its code cells, so a change to ``src/diffnotes`` or to the
profile would otherwise show stale outputs. We give each (profile, hash of the package source)
its own cache folder and drop the folders of older sources. Notebooks run with
``DIFFNOTES_STATIC=1``: no widgets or progress bars, which render as blank boxes in static HTML.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from diffnotes.profile import PROFILES, profile

ROOT = Path(__file__).resolve().parents[2]


def source_key(profile_name: str, root: Path = ROOT) -> str:
    """A short hash of the package source and the profile: the cache key beside code cells."""
    digest = hashlib.sha256(profile_name.encode())
    for path in sorted((root / "src" / "diffnotes").rglob("*.py")):
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
    env = dict(os.environ, DIFFNOTES_PROFILE=profile_name, DIFFNOTES_STATIC="1")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffnotes.book", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute the notebooks and build _build/html")
    b.add_argument("--profile", choices=PROFILES, default=None, help="default: DIFFNOTES_PROFILE")
    b.add_argument("--allow-warnings", action="store_true", help="do not fail on warnings")
    s = sub.add_parser("strip", help="remove outputs and execution counts from notebooks")
    s.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "strip":
        for path in strip(args.paths):
            print(f"stripped {path}")
        return 0
    name = args.profile or profile().name
    return build(name, warnings_as_errors=not args.allow_warnings)


if __name__ == "__main__":
    raise SystemExit(main())
