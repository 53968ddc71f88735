"""The package's architecture, kept true mechanically: folder sizes, no import cycles, layers.

Imports are read from the source (every ``import`` anywhere in a module, deferred ones inside functions
included; only ``if TYPE_CHECKING:`` blocks are skipped, since they never run). A deferred import still
ties two modules together, so it counts for cycles and layers alike.
"""
from __future__ import annotations

import ast
import os
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ckptviewer"
MAX_MODULES = 15

# Layers from the top: a module may import from its own layer and any layer below it, never above.
# Names in one tuple are siblings that must not import each other.
CORE_LAYERS = [
    ("ckptviewer.core.analyze",),
    ("ckptviewer.core.edit",),
    ("ckptviewer.core.write",),
    ("ckptviewer.core.read",),
    ("ckptviewer.core.model",),
    ("ckptviewer.core.source",),
    ("ckptviewer.core.util",),
]
READ_LAYERS = [            # the read path, a straight way down
    ("ckptviewer.core.read.open",),
    ("ckptviewer.core.read.openurl",),
    ("ckptviewer.core.read.multifile",),
    ("ckptviewer.core.read.detect",),
    ("ckptviewer.core.read.formats",),
    ("ckptviewer.core.read.pickle",),
]
GUI_LAYERS = [
    ("ckptviewer.gui.shell",),
    ("ckptviewer.gui.checkpoint", "ckptviewer.gui.diff", "ckptviewer.gui.convert", "ckptviewer.gui.run"),
    ("ckptviewer.gui.dialogs",),
    ("ckptviewer.gui.panels",),
    ("ckptviewer.gui.widgets",),
]
QT = ("PySide6", "shiboken6", "pyqtgraph")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (fully qualified), deferred imports included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if is_pkg else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                full = f"{base}.{node.module}" if node.module else base
            else:
                full = node.module or ""
            found.add(full)
            found.update(f"{full}.{a.name}" for a in node.names)
    return found


def _internal(target: str) -> str | None:
    """The module of ours that ``target`` names (``pkg.mod.func`` -> ``pkg.mod``), if any."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for target in _imports(name, path):
            mod = _internal(target)
            if mod is None:
                external[name].add(target.split(".")[0])
            elif mod != name and not name.startswith(mod + "."):    # a module's own package is no edge
                edges[name].add(mod)
    return edges, external


EDGES, EXTERNAL = _graph()


def _layer_of(name: str, layers) -> int | None:
    for i, group in enumerate(layers):
        if any(name == g or name.startswith(g + ".") for g in group):
            return i
    return None


def _group_of(name: str, layers) -> str | None:
    for group in layers:
        for g in group:
            if name == g or name.startswith(g + "."):
                return g
    return None


def _violations(layers) -> list[str]:
    bad = []
    for src, targets in EDGES.items():
        ls = _layer_of(src, layers)
        if ls is None:
            continue
        for dst in targets:
            ld = _layer_of(dst, layers)
            if ld is None:
                continue
            if ld < ls:
                bad.append(f"{src} imports {dst}, a layer above it")
            elif ld == ls and _group_of(src, layers) != _group_of(dst, layers):
                bad.append(f"{src} imports {dst}, a sibling it must not depend on")
    return sorted(bad)


def test_no_folder_holds_more_than_fifteen_modules():
    per_folder = defaultdict(list)
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            per_folder[path.parent.relative_to(ROOT).as_posix()].append(path.name)
    crowded = {d: len(m) for d, m in per_folder.items() if len(m) > MAX_MODULES}
    assert not crowded, f"folders over {MAX_MODULES} modules: {crowded}"


def test_no_import_cycles_between_modules():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:        # Tarjan's strongly connected components, iterative enough here
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in EDGES.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_core_imports_no_gui_no_cli_and_no_qt():
    bad = [f"{src} imports {dst}" for src, targets in EDGES.items() if src.startswith("ckptviewer.core")
           for dst in targets if dst.startswith(("ckptviewer.gui", "ckptviewer.cli", "ckptviewer.desktop"))]
    bad += [f"{src} imports {lib}" for src, libs in EXTERNAL.items() if src.startswith("ckptviewer.core")
            for lib in libs if lib in QT]
    assert not bad, bad


@pytest.mark.parametrize("layers", [CORE_LAYERS, READ_LAYERS, GUI_LAYERS], ids=["core", "read", "gui"])
def test_layers_import_only_downwards(layers):
    assert _violations(layers) == []


def test_the_gui_never_reaches_into_the_command_line():
    bad = [f"{src} imports {dst}" for src, targets in EDGES.items() if src.startswith("ckptviewer.gui")
           for dst in targets if dst.startswith("ckptviewer.cli")]
    assert not bad, bad


def test_every_module_sits_in_a_named_layer():
    """A new folder must be placed in the layers above, so the contract covers it."""
    placed = [g for layers in (CORE_LAYERS, GUI_LAYERS) for group in layers for g in group]
    roots = {"ckptviewer", "ckptviewer.__main__", "ckptviewer.desktop", "ckptviewer.core", "ckptviewer.core.demo",
             "ckptviewer.gui"}
    loose = [n for n in MODULES if n not in roots and not n.startswith("ckptviewer.cli")
             and not any(n == g or n.startswith(g + ".") for g in placed)]
    assert loose == []


def test_the_layer_check_sees_a_violation():
    """The checker itself: an upward import in a made-up graph is reported."""
    saved = dict(EDGES)
    try:
        EDGES["ckptviewer.core.model.tree"] = EDGES.get("ckptviewer.core.model.tree", set()) | {
            "ckptviewer.core.analyze.stats"}
        assert _violations(CORE_LAYERS) == ["ckptviewer.core.model.tree imports ckptviewer.core.analyze.stats, "
                                            "a layer above it"]
    finally:
        EDGES.clear()
        EDGES.update(saved)


def test_pyproject_lists_every_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {n for n, p in MODULES.items() if p.name == "__init__.py"} | {"ckptviewer.resources"}
    assert listed == on_disk
