"""What a scan found: the pickles (with their globals, where each sat and which loader reaches it), the
TorchScript code that runs at load, archive anomalies, problems and notes; and the classification of a
global as safe, unknown or dangerous.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...read.pickle.danger import danger_reason
from ...read.pickle.reconstructors import _py3_names, classify

COMPUTED = "<computed>"        # a STACK_GLOBAL operand that is not a literal string
FRAMES = "<frames>"            # the module of a FRAME divergence: two unpicklers read the bytes differently

CATEGORIES = ("dangerous", "unknown", "safe")
_SAFE_REASON = "rebuilt by ckptviewer's own code (tensor rebuilders, containers, numpy values)"
_UNKNOWN_REASON = ("not imported: shown as an inert stand-in (a model's own class, a config object, ...); "
                   "torch.load refuses it by default since torch 2.6 (weights_only=True)")
_COMPUTED_REASON = ("a STACK_GLOBAL whose module or name is computed while loading, not a literal: "
                    "only running the file would tell what it imports")
_FRAMES_REASON = ("the pickle's FRAME boundaries do not match its opcodes: pickle.py stops there, but Python's "
                  "C unpickler reads on (from a file, before 3.13.15 and 3.14.7, it skips to the frame's end), "
                  "so the bytes can hide opcodes from scanners; the globals of every reading are listed")

# Who would unpickle what (a pickle's ``loader``).
TORCH_LOAD = "torch.load"
JIT_LOAD = "torch.jit.load"
NUMPY_LOAD = "numpy.load"
PICKLE_LOAD = "pickle.load"
PLAIN_FILE = "torch.load, numpy.load, pickle.load"     # a file that is one pickle: every loader runs it
UNPACKING = "a person unpacking the archive"


@dataclass
class PickleScan:
    """What one pickle of the file names. ``complete`` is False when the walk stopped at a break."""

    name: str
    counts: Counter = field(default_factory=Counter)     # (module, name) -> count
    complete: bool = True
    problem: str | None = None
    end: int = 0            # offset just past STOP (when complete)
    where: str = ""         # the member and the view of the archive that held it (empty: the file itself)
    loader: str = ""        # what would unpickle it (torch.load, numpy.load, a person unpacking, ...)
    storage_keys: set = field(default_factory=set)       # keys of torch storages its persistent ids name
    divergence: tuple | None = None   # (byte, frame end, kind) where its frames and opcodes disagree


@dataclass(frozen=True)
class GlobalUse:
    """One global one pickle names: a row of the report."""

    pickle: str
    module: str
    name: str
    count: int
    category: str          # "safe" | "unknown" | "dangerous"
    reason: str
    where: str = ""
    loader: str = ""

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def row(self) -> tuple[str, str, int, str, str]:
        """(pickle, module.name, count, category, reason): what a table or panel shows."""
        return self.pickle, self.qualname, self.count, self.category, self.reason


@dataclass(frozen=True)
class CodeFinding:
    """TorchScript code that ``torch.jit.load`` runs while loading (a ``__setstate__``), and what it calls."""

    member: str                 # code/__torch__.py
    method: str                 # SideEffects.__setstate__
    calls: tuple[str, ...]      # the side-effecting calls it reaches: torch.save, print, ops.myns.op, ...
    category: str               # "dangerous" (files, native code) | "unknown" (runs, no such effects)
    reason: str
    loader: str = JIT_LOAD

    @property
    def title(self) -> str:
        what = ", ".join(self.calls) if self.calls else "no side-effecting calls"
        return f"{self.method} runs at load: {what}"


@dataclass
class ScanResult:
    """The safety report of one file."""

    path: str
    format: str | None = None
    pickles: list[PickleScan] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)    # why the file is broken or only partly read
    error: str | None = None                             # the file could not be scanned at all
    notes: list[str] = field(default_factory=list)       # facts worth showing that are not problems
    anomalies: list[str] = field(default_factory=list)   # archive structure that readers see differently
    code: list[CodeFinding] = field(default_factory=list)

    @property
    def globals(self) -> list[GlobalUse]:
        """Every global of every pickle, dangerous first, then unknown, then safe; by name within."""
        rows = []
        for p in self.pickles:
            for (module, name), count in p.counts.items():
                category, reason = categorize(module, name)
                rows.append(GlobalUse(p.name, module, name, count, category, reason, p.where, p.loader))
        order = {c: i for i, c in enumerate(CATEGORIES)}
        rows.sort(key=lambda g: (order[g.category], g.qualname, g.pickle))
        return rows

    @property
    def dangerous(self) -> list[GlobalUse]:
        return [g for g in self.globals if g.category == "dangerous"]

    @property
    def dangerous_code(self) -> list[CodeFinding]:
        return [c for c in self.code if c.category == "dangerous"]

    @property
    def broken(self) -> bool:
        """True when some pickle could not be read to its end, or the file could not be read."""
        return self.error is not None or bool(self.problems) or any(not p.complete for p in self.pickles)

    @property
    def status(self) -> int:
        """1: something dangerous; 0: fully read and clean; 2: unreadable or read only in part."""
        if self.dangerous or self.dangerous_code:
            return 1
        return 2 if self.broken else 0

    def rows(self) -> list[tuple[str, str, int, str, str]]:
        """(pickle, module.name, count, category, reason) for each global: what the GUI lists."""
        return [g.row() for g in self.globals]

    def verdict(self) -> str:
        """One line for a banner or the end of the CLI report."""
        if self.error is not None:
            return f"not scanned: {self.error}"
        dangerous = self.dangerous
        code = self.dangerous_code
        n = len(self.anomalies)
        odd = (f" The archive also has {n} structural anomal{'ies' if n != 1 else 'y'} (readers see it "
               f"differently)." if n else "")
        if dangerous or code:
            parts = []
            if dangerous:
                names = sorted({g.qualname for g in dangerous})
                shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
                parts.append(f"loading this file with torch.load(weights_only=False) or pickle would import and "
                             f"call {shown}")
            if code:
                shown = "; ".join(f"{c.method} ({', '.join(c.calls)})" for c in code[:4])
                parts.append(f"torch.jit.load would run TorchScript code that {shown} at load")
            return (f"DANGEROUS: {'; and '.join(parts)}. ckptviewer never imports or calls anything a file names, "
                    f"so it is safe to inspect here; do not load it with torch.load(weights_only=False) or "
                    f"torch.jit.load unless you trust its source.{odd}")
        if self.broken and self.pickles and all(p.complete for p in self.pickles) and self.problems:
            return ("INCOMPLETE: every pickle was read to its end and names nothing dangerous, but the file is "
                    f"not whole: {self.problems[0]}{odd}")
        if self.broken:
            return ("INCOMPLETE: the file is broken, so only part of it could be scanned; nothing dangerous "
                    f"was seen in that part.{odd}")
        if not self.pickles:
            return f"clean: a {self.format or 'file'} without pickles cannot run code when loaded.{odd}"
        unknown = sum(1 for g in self.globals if g.category == "unknown")
        runs = (f" {len(self.code)} TorchScript method{'s' if len(self.code) != 1 else ''} would run at "
                f"torch.jit.load, with no file, process or native-code calls." if self.code else "")
        if not unknown:
            return f"clean: no dangerous globals.{runs}{odd}"
        n = f"{unknown} class{'es' if unknown != 1 else ''} that {'are' if unknown != 1 else 'is'} not torch's own"
        them = "them" if unknown != 1 else "it"
        return (f"clean: no dangerous globals. The file names {n} (shown as stand-ins here): torch.load refuses "
                f"{them} by default since torch 2.6 (weights_only=True), and torch.load(weights_only=False) would "
                f"import {them}. Run `ckptviewer doctor FILE` to see how to load it.{runs}{odd}")

    def to_json(self) -> dict:
        return {
            "file": self.path,
            "format": self.format,
            "status": self.status,
            "dangerous": bool(self.dangerous) or bool(self.dangerous_code),
            "broken": self.broken,
            "error": self.error,
            "verdict": self.verdict(),
            "pickles": [{"name": p.name, "complete": p.complete, "problem": p.problem,
                         "globals": sum(p.counts.values()), "where": p.where, "loader": p.loader}
                        for p in self.pickles],
            "globals": [{"pickle": g.pickle, "module": g.module, "name": g.name, "qualname": g.qualname,
                         "count": g.count, "category": g.category, "reason": g.reason, "where": g.where,
                         "loader": g.loader} for g in self.globals],
            "code": [{"member": c.member, "method": c.method, "calls": list(c.calls), "category": c.category,
                      "reason": c.reason, "loader": c.loader} for c in self.code],
            "anomalies": list(self.anomalies),
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def categorize(module: str, name: str) -> tuple[str, str]:
    """(category, reason) of a global as a pickle names it."""
    if module == COMPUTED or name == COMPUTED:
        return "dangerous", _COMPUTED_REASON
    if module == FRAMES:
        return "dangerous", _FRAMES_REASON
    kind = classify(module, name)
    if kind == "dangerous":
        m, n = _py3_names(module, name)
        return kind, danger_reason(m, n) or danger_reason(module, name) or "on the list of dangerous globals"
    return kind, _SAFE_REASON if kind == "safe" else _UNKNOWN_REASON
