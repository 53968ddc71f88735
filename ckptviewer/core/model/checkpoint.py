"""An opened checkpoint: the object tree the file describes, its storages, and what we noticed."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..source.local import close_quietly
from ..util.units import human_bytes
from .tensor import StorageRef, TensorRef


@dataclass
class PickleGlobals:
    """The globals one pickle of the file names, with how often (for the safety report), and which opcodes
    beyond protocol 2's common core it uses (for predicting what torch's weights-only unpickler accepts)."""

    pickle: str
    counts: Counter = field(default_factory=Counter)   # (module, name) -> count
    # Opcodes seen outside the reader's hot loop, plus MEMOIZE, SHORT_BINUNICODE and STACK_GLOBAL (see
    # SafeUnpickler.opcodes): a superset of the opcodes torch's weights-only unpickler refuses.
    opcodes: frozenset = frozenset()
    protocol: int = 0                                  # the PROTO opcode's value (0: none)


@dataclass(frozen=True)
class MissingBytes:
    """A file whose tensors' bytes are not all there (a download cut short, a record missing).

    The reader records each such tensor's ``problem``; this is the same fact for the file as a whole, so
    every view can say it first: ``info``'s first line, a banner in the window, ``scan``'s exit status.
    """

    tensors: int                 # distinct tensors in the file
    without_bytes: int           # of them, how many have no bytes, or too few, in the file
    file_size: int
    bytes_needed: int            # bytes the tensors' storages declare
    bytes_missing: int           # of those, how many the file does not hold
    first_problem: str           # one tensor's problem, as an example
    cut: bool = False            # the reader found the file ending before the data it declares

    @property
    def truncated(self) -> bool:
        """The file was cut short (as opposed to a record left out): the reader saw it end early, or it is
        smaller than its tensors."""
        return self.cut or self.file_size < self.bytes_needed

    def headline(self) -> str:
        """One line: ``truncated: 40 of 48 tensors have no bytes; the file is 293.0 KiB, the tensors need
        12.0 MiB``."""
        word = "truncated" if self.truncated else "incomplete"
        verb = "has" if self.without_bytes == 1 else "have"
        return (f"{word}: {self.without_bytes:,} of {self.tensors:,} tensor{'s' if self.tensors != 1 else ''} "
                f"{verb} no bytes; the file is {human_bytes(self.file_size)}, the tensors need "
                f"{human_bytes(self.bytes_needed)}")

    def advice(self) -> str:
        return ("Their values cannot be read, compared or exported; download or copy the file again."
                if self.truncated else "Their values cannot be read, compared or exported.")

    def to_json(self) -> dict:
        return {"truncated": self.truncated, "tensors": self.tensors, "tensors_without_bytes": self.without_bytes,
                "file_size": self.file_size, "bytes_needed": self.bytes_needed, "bytes_missing": self.bytes_missing,
                "example": self.first_problem}


def _storage_short(st: StorageRef) -> int:
    """How many of the bytes ``st`` declares the file lacks (0 when all are there)."""
    have = st.source.size if st.source is not None else 0
    if st.problem and st.source is None:
        have = 0
    return max(0, st.nbytes - have)


def missing_bytes_of(tensors: list[TensorRef], file_size: int, *, cut: bool = False) -> MissingBytes | None:
    """The :class:`MissingBytes` of a file holding ``tensors`` (distinct), or None when every tensor that
    should have bytes has them. A tensor counts when its values cannot be read because its storage is
    absent or shorter than declared; other problems (a malformed view) are not missing bytes."""
    without, needed, missing, first = 0, 0, 0, ""
    seen: set[int] = set()          # storages counted
    bad: set[int] = set()           # storages absent or shorter than declared
    for t in tensors:               # one pass, cheap per tensor: it runs on every file `info` lists
        st = t.storage
        if st is None:
            if t.kind == "meta":
                continue
        else:
            sid = id(st)
            if sid not in seen:
                seen.add(sid)
                nbytes = st.nbytes
                needed += nbytes
                src = st.source
                if src is None or st.problem or src.size < nbytes:
                    bad.add(sid)
                    missing += _storage_short(st)
            if sid not in bad:
                continue            # the storage is whole: any problem of this view is not missing bytes
        t.validate()
        if t.problem:
            without += 1
            first = first or t.problem
    if not without:
        return None
    return MissingBytes(len(tensors), without, file_size, needed, missing, first, cut)


class Checkpoint:
    """What a reader returns. Holds the file open (memory-mapped) until :meth:`close`.

    ``root`` is the unpickled object graph: dicts, lists, tuples, scalars, numpy values, and our inert
    objects (:class:`TensorRef`, :class:`StandIn`, ...). ``meta`` holds format facts worth showing
    (archive name, byte order, format version, safetensors metadata, ...).
    """

    def __init__(self, path: str, fmt: str, root: Any, *, storages: dict[str, StorageRef] | None = None,
                 warnings: list[str] | None = None, meta: dict[str, Any] | None = None,
                 pickles: list[PickleGlobals] | None = None, file_size: int | None = None,
                 resources: list[Any] | None = None):
        self.path = path
        self.format = fmt
        self.root = root
        self.storages = storages or {}
        self.warnings = warnings if warnings is not None else []
        self.meta = meta or {}
        self.pickles = pickles or []
        self.file_size = file_size if file_size is not None else (os.path.getsize(path) if path else 0)
        self._resources = resources or []
        self._entries = None
        self.archives: list[Any] = []     # zip archives the file was read from (for a full CRC-32 check)
        self._missing: MissingBytes | None | bool = False       # False: not computed yet
        self._distinct: list[TensorRef] | None = None
        for st in self.storages.values():       # set each tensor's ``problem`` now, so views can show it
            for t in st.users:
                t.validate()

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def tensor_entries(self):
        """Every tensor reachable from the root as ``(key path, TensorRef)`` (see ``walk.iter_tensors``)."""
        if self._entries is None:
            from .walk import iter_tensors
            self._entries = list(iter_tensors(self.root, warnings=self.warnings))
        return self._entries

    def all_tensors(self) -> list[TensorRef]:
        """Distinct tensor handles (a tensor reachable under two keys counts once)."""
        if self._distinct is None:
            seen, out = set(), []
            for _, t in self.tensor_entries():
                if id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
            self._distinct = out
        return list(self._distinct)

    def missing_bytes(self) -> MissingBytes | None:
        """What bytes the file lacks, as one fact (None when every tensor's bytes are there)."""
        if self._missing is False:
            self._missing = missing_bytes_of(self.all_tensors(), self.file_size,
                                             cut=bool(self.meta.get("cut_short")))
        return self._missing

    def globals_named(self) -> Counter:
        total: Counter = Counter()
        for p in self.pickles:
            total.update(p.counts)
        return total

    def close(self) -> None:
        close_quietly(self._resources)
        self._resources = []

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Checkpoint {self.name} {self.format}>"


