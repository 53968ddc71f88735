"""An opened checkpoint: the object tree the file describes, its storages, and what we noticed."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..source.local import close_quietly
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
        seen, out = set(), []
        for _, t in self.tensor_entries():
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
        return out

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


