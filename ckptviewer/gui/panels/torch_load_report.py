"""What the Safety panel's "Loading in PyTorch" section shows, made in the loading worker. Qt-free.

The verdict comes from the core's load doctor (``core/analyze/doctor.py``) on the checkpoint the reader
has just opened, so nothing is read twice. The window never imports torch to open a file: the
allowlist is ckptviewer's table for the installed torch release, and the devices are inferred without
torch (a ``+cpu`` build has no GPU); the section says so. ``ckptviewer doctor`` (which asks torch itself)
gives the same answer for the installed release. Every string here is display-safe.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ...core.analyze.doctor import Diagnosis, diagnose_checkpoint, probe_machine, target_for
from ...core.util.textsafe import safe_text

LOADS, FIXABLE, CONVERT, BROKEN, UNCHECKED = "loads", "fixable", "convert", "broken", "unchecked"


@dataclass
class TorchLoadReport:
    level: str                     # LOADS | FIXABLE (a snippet fixes it) | CONVERT (only a copy loads) | BROKEN |
                                   # UNCHECKED (the check itself failed)
    verdict: str                   # one line
    reasons: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)     # what each blocked global is
    notes: list[str] = field(default_factory=list)
    snippet: str | None = None     # Python code (names in it are checked Python names; the path is a literal)
    convert: str | None = None     # the ckptviewer convert command line
    can_export: bool = False       # a weights-only-safe export would make a copy that loads
    source: str = ""               # which torch, which allowlist, which devices
    diagnosis: Diagnosis | None = None

    @property
    def loads(self) -> bool:
        return self.level == LOADS

    def text(self) -> str:
        """The section as plain text (for the clipboard and tests)."""
        lines = [self.verdict, *self.reasons, *(f"  {c}" for c in self.classes)]
        if self.snippet:
            lines += ["", self.snippet]
        if self.convert:
            lines += ["", self.convert]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def _here():
    """This machine and the installed release, found once per process (reading package metadata costs)."""
    machine = probe_machine(import_torch=False)
    return machine, target_for(machine=machine, import_torch=False)


def build_torch_load_report(ckpt) -> TorchLoadReport:
    """The section for an opened checkpoint (a worker calls this; torch is not imported). A failure of the
    check itself is reported in the section and never stops the file from opening."""
    try:
        machine, target = _here()
        return report_from(diagnose_checkpoint(ckpt, target=target, machine=machine))
    except Exception as e:  # noqa: BLE001 - a bug in the check must not keep the file from opening
        return TorchLoadReport(UNCHECKED, f"Could not check how torch.load would do: internal error "
                               f"({type(e).__name__}: {safe_text(e, 200)}); ckptviewer doctor may say more.")


def report_from(d: Diagnosis) -> TorchLoadReport:
    rel = d.target.release
    call = "torch.load(path)" if rel.weights_only_default else "torch.load(path, weights_only=True)"
    blocking = [r for r in d.reasons if r.blocks]
    if d.loads:
        level, verdict = LOADS, f"Loads: {call} opens this file with torch {rel.version}'s defaults."
    elif d.snippet:
        level = FIXABLE
        verdict = (f"Does not load with {call} as it is; the code below loads it with the weights-only "
                   f"unpickler kept on.")
    elif d.convert:
        level = CONVERT
        verdict = f"Does not load with {call}, and no allowlist can fix that; export a copy that loads."
    else:
        level = BROKEN
        verdict = f"Does not load with {call}: the file itself is the problem."
    reasons = ["• " + safe_text(r.message, 500) for r in blocking]
    classes = [f"{safe_text(c.name, 120)}: {safe_text(c.text, 300)}" for c in d.classes]
    notes = [safe_text(r.message, 400) for r in d.reasons if not r.blocks]
    if d.weights_only_false and not d.loads:
        notes.append("weights_only=False: " + safe_text(d.weights_only_false, 400))
    notes += [safe_text(n, 400) for n in d.notes]
    source = safe_text(f"{d.target.source}; devices: {d.machine.how}", 400)
    can_export = bool(d.convert and "--weights-only-safe" in d.convert)
    return TorchLoadReport(level, verdict, reasons, classes, notes, d.snippet, d.convert, can_export, source, d)
