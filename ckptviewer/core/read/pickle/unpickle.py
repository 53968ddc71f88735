"""Pieces the torch readers share: running the safe unpickler and turning storage ids into handles."""
from __future__ import annotations

import ast
import re
from collections import Counter
from typing import Any, Callable

from ...model.checkpoint import PickleGlobals
from ...model.objects import Unreadable
from ...model.tensor import StorageRef
from ...source.regions import ByteSource
from .reconstructors import StorageType, resolve
from .unpickler import SafeUnpickler


def unpickle(buf, *, name: str, warnings: list[str], pickles: list[PickleGlobals], start: int = 0,
             end: int | None = None, persistent_load: Callable[[Any], Any] | None = None) -> tuple[Any, int]:
    """Interpret one pickle; record the globals it names. Returns the value and the offset after STOP."""
    up = SafeUnpickler(buf, start=start, end=end, resolver=resolve, persistent_load=persistent_load,
                       warn=warnings.append, name=name)
    try:
        value = up.load()
    finally:
        pickles.append(PickleGlobals(name, up.globals_seen, frozenset(up.opcodes), up.proto))
    note = up.py2_note()
    if note:
        warnings.append(note)
    return value, up.end


class StorageTable:
    """Turns ``('storage', type, key, location, numel, ...)`` persistent ids into shared StorageRefs.

    ``source_for(key, nbytes)`` returns the bytes of a record, or None when the file lacks it. The
    same key always yields the same StorageRef, so tied tensors share one handle.
    """

    def __init__(self, source_for: Callable[[str], ByteSource | None] | None, warnings: list[str],
                 byteorder: str = "little", what: str = "storage"):
        self.source_for = source_for
        self.warnings = warnings
        self.byteorder = byteorder
        self.storages: dict[str, StorageRef] = {}
        self.what = what
        self.class_sources: dict[str, str] = {}   # legacy module classes -> their source text
        # Classes named inside protocol-0 text persistent ids: no GLOBAL opcode names them, but
        # torch.load would import them all the same, so they count as globals the pickle names.
        self.text_globals: Counter = Counter()

    def load(self, pid: Any) -> Any:
        # The common case first (one call per tensor of a state_dict): a torch storage record whose key was
        # seen before (a tied tensor) or is new; everything else takes the general path below.
        if type(pid) is tuple and len(pid) >= 5 and pid[0] == "storage":
            key = pid[2]
            if type(key) is str:
                found = self.storages.get(key)
                if found is not None:
                    return found
            return self.storage(pid[1], key, pid[3], pid[4])
        if isinstance(pid, str):
            # Protocol 0 writes a persistent id as text: PERSID holds str() of the tuple, e.g.
            # "('storage', <class 'torch.FloatStorage'>, '0', 'cpu', 2)". torch itself cannot load such a
            # file (its persistent_load receives the string); we parse the tuple with a strict grammar.
            parsed = parse_text_persid(pid, self.text_globals)
            if parsed is None:
                self.warnings.append(f"a text persistent id that is not a storage record: {pid[:80]!r}")
                return Unreadable("persistent id", "unparsable text id")
            pid = parsed
        if not isinstance(pid, tuple) or not pid:
            self.warnings.append(f"a persistent id that is not a storage record: {type(pid).__name__}")
            return Unreadable("persistent id", "not a storage tuple")
        tag = pid[0]
        if tag == "storage" and len(pid) >= 5:
            return self.storage(*pid[1:5])
        if tag == "module" and len(pid) >= 2:
            return self.module(pid)
        self.warnings.append(f"a persistent id of an unknown kind {str(tag)[:40]!r}; shown as unreadable")
        return Unreadable("persistent id", f"kind {str(tag)[:40]!r}")

    def module(self, pid: tuple) -> Any:
        # Legacy files name module classes by persistent id, with their source text; keep it for display.
        cls = pid[1]
        if len(pid) >= 4 and isinstance(pid[3], str) and hasattr(cls, "qualname"):
            self.class_sources[cls.qualname] = pid[3]
        return cls

    def storage(self, stype: Any, key: Any, location: Any, numel: Any) -> Any:
        key = str(key)
        found = self.storages.get(key)
        if found is not None:
            return found
        if not isinstance(stype, StorageType):
            name = getattr(stype, "qualname", type(stype).__name__)
            self.warnings.append(f"storage {key} has an unknown storage type {name}; its tensors are unreadable")
            return Unreadable("storage", f"unknown storage type {name}")
        if type(numel) is not int or numel < 0:
            self.warnings.append(f"storage {key} declares an invalid size {numel!r}")
            return Unreadable("storage", "invalid size")
        nbytes = numel * stype.dtype.itemsize if stype.dtype is not None else numel
        st = StorageRef(key, stype.dtype, nbytes, str(location), typed=stype.dtype is not None,
                        byteorder=self.byteorder)
        if self.source_for is not None:
            st.source = self.source_for(key)
            if st.source is None:
                st.problem = f"{self.what} record {key} is missing from the file"
                self.warnings.append(f"{self.what} record {key} is missing from the file")
            elif st.source.size != nbytes:
                self.warnings.append(f"{self.what} record {key} holds {st.source.size:,} bytes; "
                                     f"the pickle declares {nbytes:,}")
        self.storages[key] = st
        return st


_PERSID_TOKEN = re.compile(r"""\s*(?:(\()|(\))|(,)|('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""
                           r"""|<class '([\w.]+)'>|(-?\d{1,30})|(None))""")


def parse_text_persid(text: str, named: Counter | None = None) -> tuple | None:
    """The tuple a protocol-0 ``PERSID`` line spells out (strings, ints, None, nested tuples and
    ``<class 'module.Name'>``, which becomes what the resolver makes of that global), or None."""
    if len(text) > (1 << 20):      # a legacy module id carries the class's source text
        return None
    pos, stack, cur = 0, [], None
    while pos < len(text):
        m = _PERSID_TOKEN.match(text, pos)
        if m is None:
            return None
        pos = m.end()
        opened, closed, comma, string, cls, number, none = m.groups()
        if opened:
            if len(stack) > 4:
                return None
            stack.append([])
            continue
        if comma:
            continue
        if not stack:
            return None
        if closed:
            done = tuple(stack.pop())
            if not stack:
                cur = done
                break
            stack[-1].append(done)
        elif string is not None:
            try:    # one quoted literal: literal_eval parses it without evaluating anything
                stack[-1].append(ast.literal_eval(string))
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
        elif cls:
            module, _, name = cls.rpartition(".")
            if named is not None:
                named[(module, name)] += 1
            stack[-1].append(resolve(module, name))
        elif number is not None:
            stack[-1].append(int(number))
        else:
            stack[-1].append(None)
    if cur is None or text[pos:].strip():
        return None
    return cur
