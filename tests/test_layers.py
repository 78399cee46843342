"""The library's layering: no import cycles, and no module imports a layer above its own.

The graph is read from the source (every ``import`` anywhere in a module, function-local
ones included), so a cycle hidden behind a late import is still a cycle. A second test
imports every module alone, in a fresh process forked after the third-party libraries
are loaded, so that a module that only works when another was imported first fails.
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("neuron_ir", "passes", "dialects")

# Lower number = lower layer. A module may import its own layer and those below.
LAYERS = {
    "neuron_ir.errors": 0,
    "neuron_ir.kernels": 0,
    "neuron_ir.zoo": 0,
    "neuron_ir.onnx_wire": 0,
    "dialects": 0,
    "neuron_ir.ir": 1,
    "neuron_ir.importer": 1,
    "neuron_ir.analysis": 2,
    "neuron_ir.target": 3,
    "passes": 4,
    "neuron_ir.interp": 4,
    "neuron_ir.runtime": 5,
    "neuron_ir.compiler": 6,
    "neuron_ir.planner": 6,
    "neuron_ir.bucketing": 5,  # below the compiler: it gets compile as a callable
    "neuron_ir.sweep": 6,  # compiles for each batch: the compile API's layer
    "neuron_ir.cli": 7,
    "neuron_ir.testing": 7,
    "neuron_ir": 8,  # the package's __init__: the public API
}
# Same rank, but neither may import the other: passes never run the interpreter, and the
# interpreter never runs a pass.
SIBLINGS_APART = {("passes", "neuron_ir.interp"), ("neuron_ir.interp", "passes")}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                # The longest project module the target names (a.b.c -> a.b if c is a name).
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges[module].add(target)
    return edges


def _layer(module: str) -> tuple[str, int]:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"module {module} belongs to no layer: add it to LAYERS"
    return best, LAYERS[best]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _package_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:k]) for k in range(1, len(parts))}


def test_no_import_cycles():
    edges = _edges(_modules())
    # Importing a.b.c runs a/__init__ and a/b/__init__ first; that is not an edge of c.
    for module in edges:
        edges[module] -= _package_parents(module)
    assert _cycles(edges) == []


def test_no_module_imports_a_layer_above_its_own():
    edges = _edges(_modules())
    wrong = []
    for module, targets in edges.items():
        layer, rank = _layer(module)
        for target in targets - _package_parents(module):
            target_layer, target_rank = _layer(target)
            if target_rank > rank or (layer, target_layer) in SIBLINGS_APART:
                wrong.append(f"{module} ({layer}) imports {target} ({target_layer})")
    assert wrong == []


def test_the_checks_see_a_planted_cycle_and_an_upward_import():
    edges = {
        "neuron_ir.ir.util": {"neuron_ir.runtime.compiled"},
        "neuron_ir.runtime.compiled": {"neuron_ir.ir.util"},
    }
    assert _cycles(edges) == [["neuron_ir.ir.util", "neuron_ir.runtime.compiled"]]
    assert _layer("neuron_ir.ir.util")[1] < _layer("neuron_ir.runtime.compiled")[1]


def _import_alone(name: str, queue) -> None:
    try:
        __import__(name)
        queue.put((name, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put((name, f"{type(exc).__name__}: {exc}"))


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_every_module_imports_alone():
    # Third-party libraries first, so that each forked child pays only for our modules.
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import xdsl.dialects.builtin  # noqa: F401

    loaded = [m for m in sys.modules if m.split(".")[0] in PACKAGES]
    saved = {m: sys.modules.pop(m) for m in loaded}
    try:
        context = multiprocessing.get_context("fork")
        failures = []
        for name in sorted(_modules()):
            queue = context.Queue()
            child = context.Process(target=_import_alone, args=(name, queue))
            child.start()
            child.join(60)
            assert child.exitcode == 0, f"importing {name} alone crashed or hung"
            _, error = queue.get(timeout=5)
            if error is not None:
                failures.append(f"{name}: {error}")
        assert failures == []
    finally:
        sys.modules.update(saved)
