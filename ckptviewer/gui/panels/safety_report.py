"""What a tab's safety banner and Safety panel show, made in a worker from a :class:`ScanResult`. Qt-free.

The loader makes the report from the globals the reader recorded while opening the file
(``scan_checkpoint``: no second read of what the reader read). For zip archives the reader reads only
``data.pkl`` (and a TorchScript archive's ``constants.pkl``), while ``ckptviewer scan`` walks every
pickle member (``*.debug_pkl``, stray ``*.pkl``); :func:`file_scan` adds the light pass over those
other members, so the window never calls clean a file that ``ckptviewer scan`` calls dangerous.
Every string here is display-safe (``safe_text``).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ...core.analyze.scan import CATEGORIES, PickleScan, ScanResult, finish, scan_checkpoint, scan_file
from ...core.analyze.scanning.report import JIT_LOAD, PLAIN_FILE, TORCH_LOAD
from ...core.util.locations import MASK, is_url
from ...core.util.textsafe import safe_text
from ...core.util.units import counted

# Formats whose files may hold pickles the reader does not read (the light pass walks those), TorchScript
# code that runs at load, and archive anomalies.
FULL_SCAN_FORMATS = ("torch-zip", "torchscript", "torch-tar")

# Levels, worst first: what the verdict line and icons say.
DANGEROUS, INCOMPLETE, UNKNOWN, CLEAN = "dangerous", "incomplete", "unknown", "clean"

NOTHING_RUN = ("Nothing was run: ckptviewer never calls what a file names; plain torch.load(weights_only=False) "
               "would have.")
FORMAT_WORDS = {"safetensors": "a safetensors file", "torch-dcp": "this torch.distributed.checkpoint folder"}
BANNER_NAMES = 5           # dangerous globals listed in the banner (the panel lists them all)
DIRECT_LOADERS = {TORCH_LOAD, JIT_LOAD, PLAIN_FILE}     # loaders the banner's wording already names


@dataclass(frozen=True)
class SafetyRow:
    """One row of the imports table (display-safe text)."""

    category: str           # "dangerous" | "unknown" | "safe"
    qualname: str
    pickle: str
    count: int
    reason: str
    where: str = ""         # the member and the view of the archive that held it
    loader: str = ""        # who would unpickle (or run) it: torch.load, numpy.load, a person unpacking, ...
    code: bool = False      # TorchScript code that runs at load, not a global


@dataclass
class SafetyReport:
    level: str                                   # DANGEROUS | INCOMPLETE | UNKNOWN | CLEAN
    verdict: str                                 # one line for the panel's top
    summary: str                                 # pickles and counts
    rows: list[SafetyRow]
    dangerous: list[tuple[str, str]]             # distinct (qualname, reason), for the banner
    counts: dict[str, int]                       # distinct globals per category
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    full_verdict: str = ""                       # ScanResult.verdict(), as `ckptviewer scan` ends
    scan: ScanResult | None = None
    torch_load: Any = None                       # TorchLoadReport: will plain torch.load open it (or None)
    anomalies: list[str] = field(default_factory=list)   # archive structure readers see differently
    loaders: int = 0                             # distinct loaders among the rows (the panel shows the column if > 1)

    @property
    def is_dangerous(self) -> bool:
        return self.level == DANGEROUS

    def banner_title(self) -> str:
        """The banner's first line: dangerous globals, TorchScript code that runs at load, or both."""
        code = sum(1 for r in self.rows if r.code and r.category == "dangerous")
        n = len(self.dangerous) - code
        parts = []
        if n:
            parts.append(f"it names {n} global{'s' if n != 1 else ''} that would run code when loaded with "
                         f"torch.load(weights_only=False) or pickle")
        if code:
            parts.append(f"{'it holds ' if not n else ''}{code} TorchScript method{'s' if code != 1 else ''} that "
                         f"torch.jit.load runs at load and that write{'s' if code == 1 else ''} files or run"
                         f"{'s' if code == 1 else ''} native code")
        return "Dangerous file: " + ", and ".join(parts)

    def text(self) -> str:
        """The report as plain text (Copy Report), one global per line, like ``ckptviewer scan``."""
        lines = [self.verdict, self.summary]
        for r in self.rows:
            label = "DANGEROUS" if r.category == "dangerous" else ("runs" if r.code else r.category)
            lines.append(f"  {label:<9}  {r.qualname}  x{r.count}  [{r.pickle}]"
                         + (f"  {r.reason}" if r.category == "dangerous" or r.code else ""))
            if r.category == "dangerous" and (r.where or r.loader):
                lines.append(f"             found in {r.where or r.pickle}; loaded by {r.loader or 'torch.load'}")
        lines += [f"  anomaly: {a}" for a in self.anomalies]
        lines += [f"  broken: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]
        if self.level == DANGEROUS:
            lines.append(NOTHING_RUN)
        return "\n".join(lines)


def build_report(scan: ScanResult) -> SafetyReport:
    """The display report of ``scan`` (one pass over its globals; safe to call on any thread)."""
    globals_ = scan.globals
    rows = [SafetyRow(g.category, safe_text(g.qualname, 200), safe_text(g.pickle, 120), g.count,
                      safe_text(g.reason, 300), safe_text(g.where, 300), safe_text(g.loader, 160)) for g in globals_]
    distinct: dict[str, set[str]] = {c: set() for c in CATEGORIES}
    dangerous: dict[str, str] = {}
    for g, r in zip(globals_, rows):
        distinct[g.category].add(r.qualname)
        if g.category == "dangerous":
            # Say where a global sits when plain torch.load would not reach it (a stray archive member).
            direct = not r.loader or r.loader in DIRECT_LOADERS
            dangerous.setdefault(r.qualname, r.reason if direct else f"{r.reason} (in {r.pickle}: {r.loader})")
    counts = {c: len(distinct[c]) for c in CATEGORIES}
    # TorchScript code that torch.jit.load runs: rows of their own, first among their category.
    code_rows = [SafetyRow(c.category, safe_text(c.title, 200), safe_text(c.member, 120), 1, safe_text(c.reason, 300),
                           safe_text(f"{c.member} (TorchScript code)", 300), safe_text(c.loader, 160), True)
                 for c in scan.code]
    for r in code_rows:
        if r.category == "dangerous":
            dangerous.setdefault(r.qualname, r.reason)
    rows = [r for r in code_rows if r.category == "dangerous"] + rows + [r for r in code_rows
                                                                         if r.category != "dangerous"]
    problems = [safe_text(p, 400) for p in scan.problems]
    if scan.error is not None:
        problems.insert(0, safe_text(scan.error, 400))
    notes = [safe_text(n, 400) for n in scan.notes]
    anomalies = [safe_text(a, 400) for a in scan.anomalies]

    n_pickles = len(scan.pickles)
    if scan.error is not None:
        summary = "The file could not be scanned."
    elif not n_pickles:
        summary = "No pickles."
    else:
        names = ", ".join(safe_text(p.name, 60) for p in scan.pickles[:4]) + (", …" if n_pickles > 4 else "")
        total = sum(counts.values())
        parts = [f"{counts[c]:,} {c}" for c in CATEGORIES if counts[c]]
        summary = (f"{counted(n_pickles, 'pickle')} ({names}) · {counted(total, 'distinct global')}"
                   + (f": {', '.join(parts)}" if parts else ""))
    if code_rows:
        summary += f" · {counted(len(code_rows), 'TorchScript method')} {'runs' if len(code_rows) == 1 else 'run'} at load"
    if anomalies:
        summary += f" · {counted(len(anomalies), 'archive anomaly', 'archive anomalies')}"

    if dangerous:
        level = DANGEROUS
        names = sorted(g for g in dangerous if g in distinct["dangerous"])
        code = [r.qualname for r in code_rows if r.category == "dangerous"]
        parts = []
        if names:
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            parts.append(f"loading this file with torch.load(weights_only=False) or pickle would import and call "
                         f"{shown}")
        if code:
            parts.append(f"torch.jit.load would run TorchScript code at load ({'; '.join(code[:2])})")
        text = "; and ".join(parts)
        verdict = f"Dangerous: {text}."
    elif scan.broken:
        level = INCOMPLETE
        verdict = ("Not scanned: " + safe_text(scan.error, 200) if scan.error is not None else
                   "Incomplete: part of the file could not be read; nothing dangerous was seen in the part "
                   "that was.")
    elif counts["unknown"]:
        level = UNKNOWN
        n = counts["unknown"]
        verdict = (f"No dangerous globals. Plain torch.load would import {counted(n, 'class', 'classes')} "
                   f"(a model's own code, a config object); here {'they are' if n != 1 else 'it is'} "
                   f"shown as inert stand-ins.")
    elif not n_pickles:
        level = CLEAN
        what = FORMAT_WORDS.get(scan.format or "", f"this {scan.format} checkpoint" if scan.format else "this file")
        verdict = f"Clean: {what} holds no pickle, so loading it cannot run code."
    else:
        level = CLEAN
        verdict = ("Clean: names only tensor rebuilders and containers." if counts["safe"] else
                   "Clean: the pickles name no globals.")
    loaders = len({r.loader for r in rows if r.loader})
    return SafetyReport(level, verdict, summary, rows, list(dangerous.items()), counts, problems, notes,
                        safe_text(scan.verdict(), 600), scan, anomalies=anomalies, loaders=loaders)


def file_scan(ckpt) -> ScanResult:
    """The scan of an opened checkpoint: the reader's record, plus, for a zip archive, the light pass
    over its pickle members the reader did not read (those it read are not walked twice)."""
    reader = scan_checkpoint(ckpt)
    # A remote zip is walked too (its pickle members by range, mostly from the cache by now), unless its
    # URL lost a signature to redaction and could not be fetched again.
    remote = is_url(ckpt.path) and MASK not in ckpt.path
    if ckpt.format not in FULL_SCAN_FORMATS or not (remote or os.path.isfile(ckpt.path)):
        return reader
    # The tensor records the reader's pickles name: raw bytes the light pass need not read.
    known = frozenset(k if k.startswith("constants/") else f"data/{k}" for k in getattr(ckpt, "storages", {}) or {})
    skip = frozenset(p.name for p in reader.pickles) if ckpt.format != "torch-tar" else frozenset()
    light = scan_file(ckpt.path, skip=skip, known_storages=known if ckpt.format != "torch-tar" else None)
    return merge_scans(reader, light)


def merge_scans(reader: ScanResult, light: ScanResult) -> ScanResult:
    """The union of the reader's record and the light pass over the file, pickle by pickle (where
    both walked a pickle, the larger count of each global: the reader resolves some names the light
    pass can only call computed, ``<computed>``; keeping both never hides one)."""
    out = ScanResult(reader.path, reader.format)
    merged: dict[str, PickleScan] = {}
    for p in light.pickles:
        merged.setdefault(p.name, PickleScan(p.name, Counter(), p.complete, p.problem, p.end, p.where, p.loader))
        merged[p.name].counts |= p.counts
    loader = JIT_LOAD if reader.format == "torchscript" else TORCH_LOAD
    for p in reader.pickles:
        if p.name in merged:
            merged[p.name].counts |= p.counts          # the larger count of each global
        else:
            merged[p.name] = PickleScan(p.name, Counter(p.counts), where=f"{p.name} (central directory, as "
                                        f"{loader} reads it)", loader=loader)
    out.pickles = list(merged.values())
    out.problems = list(dict.fromkeys(reader.problems + light.problems))
    out.notes = list(light.notes)
    out.anomalies = list(light.anomalies)
    out.code = list(light.code)
    if light.error is not None:
        out.notes.append(f"the second pass over the file could not read it: {light.error}")
    return finish(out)


def refused_scan(path: str) -> SafetyReport | None:
    """The light pass over a file the reader refused (what it would have imported), or None when that
    says nothing useful (the file or folder could not be read at all)."""
    try:
        scan = scan_file(path)
    except Exception:  # noqa: BLE001 - a scanner bug must not hide the reader's own message
        return None
    if scan.error is not None and not scan.pickles:
        return None
    return build_report(scan)
