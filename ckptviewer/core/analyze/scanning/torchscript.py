"""TorchScript code that ``torch.jit.load`` runs while loading, read from the archive's ``code/`` text.

``torch.jit.load`` compiles the archive's ``code/**/*.py`` with the TorchScript compiler and, while it
unpickles ``data.pkl``, calls the ``__setstate__`` of every object whose class defines one, scripted
modules and classes alike; nothing else the code defines runs at load. That code is text a file's author
wrote (torch writes it, but anyone can edit it), and TorchScript can call ``torch.save`` (``aten::save``:
writes any file), ``torch.from_file`` (maps any file, creating it), custom operators (native code from
whatever library registered them) and TorchBind classes (native ``__setstate__``).

The text is parsed with :func:`ast.parse`, which builds a syntax tree and runs nothing; TorchScript's
serialized code is Python syntax. From each ``__setstate__`` the analysis follows the calls it makes to
other methods and functions of the archive (by name: a method called ``helper`` on any object counts as
every ``helper`` the archive defines, so nothing reachable is missed) and lists the side-effecting calls it
reaches. Writing files, reading files by path, custom operators and unknown TorchBind classes are
dangerous; printing, warnings, random seeds, threads and exceptions are listed as what the code does.
"""
from __future__ import annotations

import ast
import warnings

from .report import JIT_LOAD, CodeFinding

MAX_FUNCTIONS = 100_000          # definitions followed in one archive
ENTRY = "__setstate__"

# Operator namespaces torch itself registers: their operators run torch's own code.
TORCH_NAMESPACES = frozenset({
    "aten", "prim", "quantized", "_quantized", "quantized_decomposed", "prepacked", "mkldnn", "mkldnn_prepacked",
    "xnnpack", "_xnnpack", "sparse", "_nested", "rngprims", "higher_order", "inductor", "cuda", "_caffe2",
    "profiler", "torchvision_fake", "aten_", "onednn", "_onednn",
})
# TorchBind classes torch registers (their native __setstate__ rebuilds packed weights).
TORCH_CLASS_NAMESPACES = frozenset({"quantized", "xnnpack", "_xnnpack", "mkldnn", "sparse", "onednn", "cuda",
                                    "dist_c10d", "_TorchScriptTesting"})

# op ("namespace::name", or "namespace::*") -> reason it is dangerous
DANGEROUS_OPS = {
    "aten::save": "writes a tensor to any file path (torch.save)",
    "aten::from_file": "maps any file by its path; from_file(path, True, n) creates it",
    "debugprims::*": "debugprims::load_tensor reads a tensor from a file",
    "c10d::*": "collective communication over the network",
    "_c10d_functional::*": "collective communication over the network",
    "_dtensor::*": "collective communication over the network",
}
# op -> what it does (listed, not dangerous)
SIDE_EFFECT_OPS = {
    "prim::Print": "prints", "aten::_print": "prints", "aten::warn": "warns",
    "aten::manual_seed": "sets the random seed", "aten::seed": "reseeds the random generator",
    "prim::fork": "starts a task on another thread", "aten::wait": "waits for a task",
    "prim::RaiseException": "raises an exception (the load fails)", "profiler::*": "profiler records",
}
# How builtins are spelled in serialized code text.
_BUILTIN_OPS = {"print": "prim::Print", "fork": "prim::fork", "wait": "aten::wait", "warn": "aten::warn"}


def analyze_code(files: dict[str, str], problems: list[str] | None = None) -> list[CodeFinding]:
    """The code each ``__setstate__`` in ``files`` (member name -> source text) runs at load, and what it
    calls. Text that does not parse is reported in ``problems`` (torch.jit.load would refuse it too)."""
    problems = problems if problems is not None else []
    index = _Index()
    for member, text in files.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # SyntaxWarnings about the text are not ours
                tree = ast.parse(text, filename=member)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            problems.append(f"TorchScript code {member} could not be parsed ({type(e).__name__}); its "
                            f"__setstate__ methods, if any, were not checked")
            continue
        index.add(member, tree)
    findings = []
    for member, cls, fn in index.entries:
        calls = index.reach(fn)
        findings.append(_finding(member, f"{cls}.{fn.name}", calls))
    return findings


def torchbind_finding(member: str, module: str, name: str) -> CodeFinding | None:
    """A pickle global ``__torch__.torch.classes.<ns>.<Class>``: a TorchBind object whose native
    ``__setstate__`` torch.jit.load calls. Dangerous unless torch itself registers the namespace."""
    if not module.startswith("__torch__.torch.classes."):
        return None
    ns = module[len("__torch__.torch.classes."):].split(".", 1)[0]
    qual = f"torch.classes.{ns}.{name}"
    if ns in TORCH_CLASS_NAMESPACES:
        return CodeFinding(member, f"{qual}.__setstate__ (native)", (qual,), "unknown",
                           "a TorchBind class torch registers: torch.jit.load runs its native __setstate__",
                           JIT_LOAD)
    return CodeFinding(member, f"{qual}.__setstate__ (native)", (qual,), "dangerous",
                       f"a TorchBind class from a native library ({ns}): torch.jit.load runs its native "
                       f"__setstate__ if that library is loaded", JIT_LOAD)


# -- the index of definitions ---------------------------------------------------------------------------
class _Index:
    def __init__(self) -> None:
        self.by_name: dict[str, list[ast.AST]] = {}          # method and function name -> definitions
        self.entries: list[tuple[str, str, ast.FunctionDef]] = []
        self.count = 0

    def add(self, member: str, tree: ast.Module) -> None:
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, owner = stack.pop()
            for child in getattr(node, "body", ()):
                if isinstance(child, ast.ClassDef):
                    stack.append((child, f"{owner}.{child.name}" if owner else child.name))
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.count += 1
                    if self.count > MAX_FUNCTIONS:
                        return
                    self.by_name.setdefault(child.name, []).append(child)
                    if child.name == ENTRY and owner:
                        self.entries.append((member, owner, child))

    def reach(self, entry: ast.AST) -> dict[str, str]:
        """Side-effecting names (as spelled) reachable from ``entry`` -> the op each stands for."""
        seen: set[int] = set()
        todo = [entry]
        found: dict[str, str] = {}
        while todo:
            fn = todo.pop()
            if id(fn) in seen:
                continue
            seen.add(id(fn))
            for node in ast.walk(fn):
                name = _dotted(node)
                op = _op_of(name) if name is not None else None
                if op is not None and (_dangerous(op) or _effect(op) or op.startswith("torch.classes.")):
                    found.setdefault(name, op)
                # Calls to the archive's own methods and functions: follow every definition of that name.
                if isinstance(node, ast.Call):
                    callee = _dotted(node.func)
                    if callee is not None:
                        for d in self.by_name.get(callee.rsplit(".", 1)[-1], ()):
                            if id(d) not in seen:
                                todo.append(d)
        return found


def _dotted(node: ast.AST) -> str | None:
    """``torch.save`` for an attribute chain or name (and ``getattr(torch, "save")``), else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
        base = _dotted(node.args[0])
        return f"{base}.{node.args[1].value}" if base else None
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _op_of(name: str) -> str | None:
    """The operator a dotted name in TorchScript code stands for (``torch.save`` -> ``aten::save``)."""
    parts = name.split(".")
    if parts[0] == "torch" and len(parts) >= 2 and parts[1] == "ops":
        parts = parts[1:]
    if parts[0] == "__torch__" and parts[1:3] == ["torch", "classes"] and len(parts) >= 5:
        return "torch.classes." + ".".join(parts[3:5])
    if parts[0] == "torch" and len(parts) >= 4 and parts[1] == "classes":
        return "torch.classes." + ".".join(parts[2:4])
    if parts[0] == "ops" and len(parts) == 3:
        return f"{parts[1]}::{parts[2]}"
    if parts[0] == "torch" and len(parts) == 2:
        return f"aten::{parts[1]}"
    if len(parts) == 1 and parts[0] in _BUILTIN_OPS:
        return _BUILTIN_OPS[parts[0]]
    return None


def _ns(op: str) -> str:
    return op.split("::", 1)[0] if "::" in op else ""


def _dangerous(op: str) -> str | None:
    if op in DANGEROUS_OPS:
        return DANGEROUS_OPS[op]
    ns = _ns(op)
    if f"{ns}::*" in DANGEROUS_OPS:
        return DANGEROUS_OPS[f"{ns}::*"]
    if op.startswith("torch.classes."):
        cls_ns = op.split(".")[2]
        if cls_ns not in TORCH_CLASS_NAMESPACES:
            return f"a TorchBind class from a native library ({cls_ns}): runs native code"
        return None
    if ns and ns not in TORCH_NAMESPACES and f"{ns}::*" not in SIDE_EFFECT_OPS:
        return f"a custom operator ({ns}): runs native code from whichever library registered it"
    return None


def _effect(op: str) -> str | None:
    return SIDE_EFFECT_OPS.get(op) or SIDE_EFFECT_OPS.get(f"{_ns(op)}::*")


def _finding(member: str, method: str, calls: dict[str, str]) -> CodeFinding:
    danger = {n: _dangerous(op) for n, op in calls.items()}
    bad = sorted(n for n, why in danger.items() if why)
    names = tuple(sorted(calls))
    if bad:
        reason = "; ".join(f"{n}: {danger[n]}" for n in bad)
        return CodeFinding(member, method, names, "dangerous", f"torch.jit.load runs it: {reason}", JIT_LOAD)
    effects = sorted({_effect(op) or "uses a TorchBind class torch registers" for op in calls.values()})
    reason = ("torch.jit.load runs it while loading; it " + ", ".join(effects) if effects else
              "torch.jit.load runs it while loading; it calls nothing with effects outside the model")
    return CodeFinding(member, method, names, "unknown", reason, JIT_LOAD)
