"""STYLE.md's layering, checked: the numeric core imports one way, the package has no import
cycle, and importing diffnotes (models, training, metrics, the LoRA CLI) never loads diffusers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "diffnotes"

# Bottom to top: each module may import only those listed before it (schedules -> forward,
# param -> analytic, samplers, sde, guidance -> inpaint, likelihood, losses).
CORE = [
    "util",
    "schedules",
    "forward",
    "param",
    "analytic",
    "samplers",
    "sde",
    "guidance",
    "inpaint",
    "likelihood",
    "losses",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, lazy: bool) -> set[str]:
    """The diffnotes modules a file imports: at module level, or anywhere when lazy."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if lazy else iter(tree.body)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from diffnotes.x import y` may import the submodule diffnotes.x.y
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("diffnotes")}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


@pytest.mark.parametrize("name", CORE)
def test_core_imports_only_what_lies_below(name):
    below = {f"diffnotes.{m}" for m in CORE[: CORE.index(name)]}
    used = imports(SRC / f"{name}.py", lazy=True) & set(all_modules())
    assert used <= below, f"{name} reaches up or sideways to {sorted(used - below)}"


def test_no_import_cycle_at_module_level():
    modules = all_modules()
    graph = {
        name: {m for m in imports(path, lazy=False) if m in modules and m != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_importing_the_package_never_loads_diffusers():
    # only interop and the LoRA trainer use diffusers, and only when called: the CLI's --help,
    # the models, training and metrics stay importable (and fast) without it
    code = (
        "import importlib, sys\n"
        "for name in ['samplers', 'sde', 'losses', 'likelihood', 'models', 'train', 'metrics',\n"
        "             'data', 'plot', 'recipes', 'latent', 'video', 'ddgan', 'cache', 'interop',\n"
        "             'lora', 'lora.cli']:\n"
        "    importlib.import_module('diffnotes.' + name)\n"
        "heavy = ('diffusers', 'transformers', 'peft', 'accelerate')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing diffnotes loaded {out.stdout.strip()}"
