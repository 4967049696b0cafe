"""The package graph is a DAG with a torch-free core at the bottom (docs/architecture.md).

Walks every import in the package, the lazy ones inside functions too, and fails on an
import that runs up the layers or sideways between packages of one layer; then imports the
torch-free layers in a fresh interpreter where torch cannot be imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pbd_deploy

ROOT = Path(pbd_deploy.__file__).parent

# Each top-level module or package of pbd_deploy and its layer: a module may import only
# from lower layers (and from inside its own package). Same layer = no imports either way.
LAYERS = {
    "__init__": 0,
    "errors": 0,
    "optional": 1,
    "core": 2,
    "runtime": 3,
    "models": 3,
    "data": 4,
    "eval": 5,
    "train": 6,
    "compress": 7,
    "export": 7,
    "bench": 8,
    "quickstart": 9,
    "cli": 10,
    "__main__": 11,
}
TORCH_FREE = ["core", "runtime"]


def _unit(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    """The pbd_deploy units that `path` imports anywhere (module level or inside functions)."""
    units = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pbd_deploy" and len(parts) > 1 and parts[1] in LAYERS:
                units.add(parts[1])
    return units


def package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        unit = _unit(path)
        edges.setdefault(unit, set()).update(_imported_units(path) - {unit})
    return edges


def test_every_unit_has_a_layer():
    assert set(package_edges()) <= set(LAYERS), set(package_edges()) - set(LAYERS)


def test_no_import_runs_up_or_sideways():
    bad = [
        f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]})"
        for a, targets in package_edges().items()
        for b in sorted(targets)
        if LAYERS[b] >= LAYERS[a]
    ]
    assert not bad, "\n".join(bad)


def test_the_graph_is_acyclic():
    edges = package_edges()
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, trail + [node])
        state[node] = 2

    for unit in edges:
        visit(unit, [])


def test_core_and_runtime_import_with_torch_blocked():
    modules = [
        f"pbd_deploy.{unit}.{p.stem}"
        for unit in TORCH_FREE
        for p in sorted((ROOT / unit).glob("*.py"))
        if p.stem != "__init__"
    ]
    code = (
        "import sys\n"
        "for name in ('torch', 'peft', 'onnx', 'onnxslim', 'matplotlib'):\n"
        "    sys.modules[name] = None  # any import of these now raises ImportError\n"
        f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
        "from pbd_deploy.runtime import Detector\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
