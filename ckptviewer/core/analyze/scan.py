"""The safety report: every global each pickle of a file names, and what loading it would have done.

``scan_file(path)`` answers "what would ``torch.load(weights_only=False)`` or ``pickle.load`` import
and call if I loaded this?" without loading anything. It is a *light pass*: a walk over the pickle
opcodes that models the stack only as far as names go (strings and opaque values), so it builds no
tensors and no object graph, never reads tensor bytes, and keeps going as far as the bytes allow: a
pickle that names ``os.system`` and is then cut short still reports ``os.system``, and says the file
is broken. ``scan_checkpoint(ckpt)`` gives the same report for a file already opened by the reader
(from :attr:`Checkpoint.pickles`, without reading the file again).

Which pickles a file has: torch zip archives and TorchScript archives hold ``data.pkl`` (and
``constants.pkl``) plus any other member named ``*.pkl`` (TorchScript's ``*.debug_pkl``); a legacy
torch.save file holds five consecutive pickles; a plain pickle file (``.pkl``, not a checkpoint the
viewer opens) one or more consecutive pickles; a numpy ``.npy`` of object dtype one pickle after its
header (also inside ``.npz`` archives); a torch < 0.1.10 tar the pickles its three members hold;
safetensors none. Each global is classified with :func:`reconstructors.classify`: *safe* (one of our
own reconstructors: tensor rebuilders, containers), *unknown* (shown as an inert stand-in, e.g. a
model's own class) or *dangerous* (on the list in ``danger.py``, with its reason). A
``STACK_GLOBAL`` whose module or name is not a literal string (computed while loading, e.g. by
``str(b"os", "ascii")``) is reported as dangerous: only running the file would tell what it names.

Exit statuses of ``ckptviewer scan``: 1 when anything dangerous was seen (even in a broken file), 0
when every pickle was read to its end and names nothing dangerous, 2 when the file could not be
read, or could be read only in part (what was seen before the break is still listed).
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..read.pickle.danger import danger_reason
from ..read.pickle.reconstructors import _py3_names, classify
from ..read.pickle.unpickler import BASE_UNITS, BYTES_PER_UNIT
from ..source.filebytes import file_bytes
from ..util.errors import CheckpointError
from ..util.locations import is_url, shown_location

COMPUTED = "<computed>"        # a STACK_GLOBAL operand that is not a literal string
MAX_PICKLES = 1000             # consecutive pickles walked in one plain pickle file
MAX_NAME = 4096                # longer strings are kept as a placeholder (no module name is that long)
MAX_INFLATE = 256 << 20        # a compressed pickle member is inflated to at most this many bytes

CATEGORIES = ("dangerous", "unknown", "safe")
_SAFE_REASON = "rebuilt by ckptviewer's own code (tensor rebuilders, containers, numpy values)"
_UNKNOWN_REASON = ("not imported: shown as an inert stand-in (a model's own class, a config object, ...); "
                   "torch.load refuses it by default since torch 2.6 (weights_only=True)")
_COMPUTED_REASON = ("a STACK_GLOBAL whose module or name is computed while loading, not a literal: "
                    "only running the file would tell what it imports")


@dataclass(frozen=True)
class GlobalUse:
    """One global one pickle names: a row of the report."""

    pickle: str
    module: str
    name: str
    count: int
    category: str          # "safe" | "unknown" | "dangerous"
    reason: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def row(self) -> tuple[str, str, int, str, str]:
        """(pickle, module.name, count, category, reason): what a table or panel shows."""
        return self.pickle, self.qualname, self.count, self.category, self.reason


@dataclass
class PickleScan:
    """What one pickle of the file names. ``complete`` is False when the walk stopped at a break."""

    name: str
    counts: Counter = field(default_factory=Counter)     # (module, name) -> count
    complete: bool = True
    problem: str | None = None
    end: int = 0            # offset just past STOP (when complete)


@dataclass
class ScanResult:
    """The safety report of one file."""

    path: str
    format: str | None = None
    pickles: list[PickleScan] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)    # why the file is broken or only partly read
    error: str | None = None                             # the file could not be scanned at all
    notes: list[str] = field(default_factory=list)       # facts worth showing that are not problems

    @property
    def globals(self) -> list[GlobalUse]:
        """Every global of every pickle, dangerous first, then unknown, then safe; by name within."""
        rows = []
        for p in self.pickles:
            for (module, name), count in p.counts.items():
                category, reason = categorize(module, name)
                rows.append(GlobalUse(p.name, module, name, count, category, reason))
        order = {c: i for i, c in enumerate(CATEGORIES)}
        rows.sort(key=lambda g: (order[g.category], g.qualname, g.pickle))
        return rows

    @property
    def dangerous(self) -> list[GlobalUse]:
        return [g for g in self.globals if g.category == "dangerous"]

    @property
    def broken(self) -> bool:
        """True when some pickle could not be read to its end, or the file could not be read."""
        return self.error is not None or bool(self.problems) or any(not p.complete for p in self.pickles)

    @property
    def status(self) -> int:
        """1: something dangerous; 0: fully read and clean; 2: unreadable or read only in part."""
        if self.dangerous:
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
        if dangerous:
            names = sorted({g.qualname for g in dangerous})
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            return (f"DANGEROUS: loading this file with torch.load(weights_only=False) or pickle would import "
                    f"and call {shown}. ckptviewer never imports or calls anything a file names, so it is safe "
                    f"to inspect here; do not load it with torch.load(weights_only=False) unless you trust "
                    f"its source.")
        if self.broken and self.pickles and all(p.complete for p in self.pickles) and self.error is None:
            return ("INCOMPLETE: every pickle was read to its end and names nothing dangerous, but the file is "
                    f"not whole: {self.problems[0]}")
        if self.broken:
            return ("INCOMPLETE: the file is broken, so only part of it could be scanned; nothing dangerous "
                    "was seen in that part.")
        if not self.pickles:
            return f"clean: a {self.format or 'file'} without pickles cannot run code when loaded."
        unknown = sum(1 for g in self.globals if g.category == "unknown")
        if not unknown:
            return "clean: no dangerous globals."
        n = f"{unknown} class{'es' if unknown != 1 else ''} that {'are' if unknown != 1 else 'is'} not torch's own"
        return (f"clean: no dangerous globals. The file names {n} (shown as stand-ins here): torch.load refuses "
                f"{'them' if unknown != 1 else 'it'} by default since torch 2.6 (weights_only=True), and "
                f"torch.load(weights_only=False) would import {'them' if unknown != 1 else 'it'}. Run "
                f"`ckptviewer doctor FILE` to see how to load it.")

    def to_json(self) -> dict:
        return {
            "file": self.path,
            "format": self.format,
            "status": self.status,
            "dangerous": bool(self.dangerous),
            "broken": self.broken,
            "error": self.error,
            "verdict": self.verdict(),
            "pickles": [{"name": p.name, "complete": p.complete, "problem": p.problem,
                         "globals": sum(p.counts.values())} for p in self.pickles],
            "globals": [{"pickle": g.pickle, "module": g.module, "name": g.name, "qualname": g.qualname,
                         "count": g.count, "category": g.category, "reason": g.reason} for g in self.globals],
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def categorize(module: str, name: str) -> tuple[str, str]:
    """(category, reason) of a global as a pickle names it."""
    if module == COMPUTED or name == COMPUTED:
        return "dangerous", _COMPUTED_REASON
    kind = classify(module, name)
    if kind == "dangerous":
        m, n = _py3_names(module, name)
        return kind, danger_reason(m, n) or danger_reason(module, name) or "on the list of dangerous globals"
    return kind, _SAFE_REASON if kind == "safe" else _UNKNOWN_REASON


# -- the light pass over one pickle -------------------------------------------------------------------
class _Opaque:
    """A stack value the walk does not model (anything that is not a literal string)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<value>"


_V = _Opaque()


class _Mark:
    __slots__ = ()


class _Broken(Exception):
    def __init__(self, message: str, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated


# Opcodes by what they do to the stack (pickletools' stack_before/stack_after, values opaque).
_PUSH0 = frozenset(b"NF)]}\x88\x89\x8f")                  # no argument, push one value
_POP1_PUSH1 = frozenset(b"Q\x85")                          # BINPERSID, TUPLE1
_POP2_PUSH1 = frozenset(b"R\x81\x86")                      # REDUCE, NEWOBJ, TUPLE2
_MARK_PUSH1 = frozenset(b"tld\x91o")                       # TUPLE, LIST, DICT, FROZENSET, OBJ
_FIXED_ARG = {0x4B: 1, 0x4D: 2, 0x4A: 4, 0x47: 8, 0x80: 1, 0x95: 8}   # BININT1/2, BININT, BINFLOAT, PROTO, FRAME
_UNPACK_I = struct.Struct("<I").unpack_from


def walk_pickle(data, *, start: int = 0, end: int | None = None, name: str = "pickle") -> PickleScan:
    """Every global one pickle names, read from ``data[start:end]`` without building any object.

    Stops at ``STOP`` (``end`` of the result is the offset after it) or at the first byte that plain
    pickle would also stop at (then ``complete`` is False and ``problem`` says why). Strings are the only
    values modelled, so that ``STACK_GLOBAL`` sees the names it would import, also through the memo.
    """
    end = len(data) if end is None else min(end, len(data))
    result = PickleScan(name)
    counts = result.counts
    stack: list = []
    metastack: list = []
    memo: dict = {}
    pos = start
    # The reader's object budget (unpickler.BASE_UNITS) allows half as many memo entries; past that a
    # pickle is built to exhaust memory (3 MB of MEMOIZE opcodes once took 360 MB here).
    memo_limit = (BASE_UNITS + max(end - start, 0) // BYTES_PER_UNIT) // 2

    def too_big() -> _Broken:
        return _Broken(f"{name}: the memo grows past {memo_limit:,} entries; the pickle looks built to "
                       f"exhaust memory")

    def need(n: int) -> None:
        if pos + n > end:
            raise _Broken(f"{name} ends at byte {end - start} in the middle of a pickle", truncated=True)

    def line() -> bytes:
        nonlocal pos
        nl = data.find(b"\n", pos, end)
        if nl < 0:
            raise _Broken(f"{name} ends at byte {end - start} in the middle of a pickle", truncated=True)
        text = bytes(data[pos:nl])
        pos = nl + 1
        return text

    def pop(n: int = 1) -> list:
        if len(stack) < n:
            raise _Broken(f"{name}: an opcode at byte {pos - start} needs {n} value(s) on the stack")
        items = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        return items

    def pop_mark() -> list:
        nonlocal stack
        if not metastack:
            raise _Broken(f"{name}: an opcode at byte {pos - start} needs a MARK")
        items = stack
        stack = metastack.pop()
        return items

    def text(raw, decode=True) -> Any:
        if len(raw) > MAX_NAME:
            return _V
        try:
            return str(raw, "utf-8", "surrogatepass") if decode else raw
        except UnicodeDecodeError:
            return str(raw, "latin-1")

    def sized(width: int, signed: bool = False) -> int:
        nonlocal pos
        need(width)
        n = int.from_bytes(data[pos:pos + width], "little", signed=signed)
        pos += width
        if n < 0:
            raise _Broken(f"{name}: a negative length at byte {pos - start}")
        need(n)
        return n

    unpack_I = _UNPACK_I
    try:
        while True:
            if pos >= end:
                raise _Broken(f"{name} ends at byte {end - start} in the middle of a pickle", truncated=True)
            op = data[pos]
            pos += 1
            # The opcodes of a state_dict pickle, most frequent first (this loop is the scan's hot path).
            if op == 0x72:                                      # LONG_BINPUT
                if pos + 4 > end or not stack:
                    need(4)
                    raise _Broken(f"{name}: PUT on an empty stack at byte {pos - start}")
                memo[unpack_I(data, pos)[0]] = stack[-1]
                pos += 4
                if len(memo) > memo_limit:
                    raise too_big()
                continue
            if op == 0x68:                                      # BINGET
                if pos >= end:
                    need(1)
                idx = data[pos]
                pos += 1
                if idx not in memo:
                    raise _Broken(f"{name}: memo entry {idx} read before it was written")
                stack.append(memo[idx])
                continue
            if op == 0x4B or op == 0x89 or op == 0x29 or op == 0x5D or op == 0x7D or op == 0x88 or op == 0x4E:
                # BININT1, NEWFALSE, EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, NEWTRUE, NONE
                if op == 0x4B:
                    if pos >= end:
                        need(1)
                    pos += 1
                stack.append(_V)
                continue
            if op == 0x28:                                      # MARK
                metastack.append(stack)
                stack = []
                continue
            if op == 0x58 or op == 0x8C:                        # BINUNICODE, SHORT_BINUNICODE
                if op == 0x58:
                    if pos + 4 > end:
                        need(4)
                    n = unpack_I(data, pos)[0]
                    pos += 4
                else:
                    if pos >= end:
                        need(1)
                    n = data[pos]
                    pos += 1
                if pos + n > end:
                    need(n)
                stack.append(text(data[pos:pos + n]) if n <= MAX_NAME else _V)
                pos += n
                continue
            if op == 0x52 or op == 0x81 or op == 0x86:          # REDUCE, NEWOBJ, TUPLE2
                if len(stack) < 2:
                    pop(2)
                del stack[-1]
                stack[-1] = _V
                continue
            if op == 0x74:                                      # TUPLE
                if not metastack:
                    pop_mark()
                stack = metastack.pop()
                stack.append(_V)
                continue
            if op == 0x61 or op == 0x62:                        # APPEND, BUILD
                if len(stack) < 2:
                    pop(2)
                del stack[-1]
                continue
            if op == 0x85 or op == 0x51:                        # TUPLE1, BINPERSID
                if not stack:
                    pop(1)
                stack[-1] = _V
                continue
            if op in _FIXED_ARG:
                n = _FIXED_ARG[op]
                need(n)
                if op == 0x80 and data[pos] > 5:
                    raise _Broken(f"{name}: unsupported pickle protocol {data[pos]}")
                pos += n
                if op != 0x80 and op != 0x95:
                    stack.append(_V)
            elif op in (0x58, 0x8C, 0x8D):                      # BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                n = sized({0x58: 4, 0x8C: 1, 0x8D: 8}[op])
                stack.append(text(data[pos:pos + n]))
                pos += n
            elif op in (0x71, 0x72):                            # BINPUT, LONG_BINPUT
                width = 1 if op == 0x71 else 4
                need(width)
                if not stack:
                    raise _Broken(f"{name}: PUT on an empty stack at byte {pos - start}")
                memo[int.from_bytes(data[pos:pos + width], "little")] = stack[-1]
                pos += width
                if len(memo) > memo_limit:
                    raise too_big()
            elif op in (0x68, 0x6A):                            # BINGET, LONG_BINGET
                width = 1 if op == 0x68 else 4
                need(width)
                idx = int.from_bytes(data[pos:pos + width], "little")
                pos += width
                if idx not in memo:
                    raise _Broken(f"{name}: memo entry {idx} read before it was written")
                stack.append(memo[idx])
            elif op == 0x94:                                    # MEMOIZE
                if not stack:
                    raise _Broken(f"{name}: MEMOIZE on an empty stack at byte {pos - start}")
                memo[len(memo)] = stack[-1]
                if len(memo) > memo_limit:
                    raise too_big()
            elif op == 0x28:                                    # MARK
                metastack.append(stack)
                stack = []
            elif op in _PUSH0:
                stack.append(_V)
            elif op in _POP2_PUSH1:
                pop(2)
                stack.append(_V)
            elif op in _POP1_PUSH1:
                pop(1)
                stack.append(_V)
            elif op in _MARK_PUSH1:
                items = pop_mark()
                if op == 0x6F and not items:
                    raise _Broken(f"{name}: OBJ without a class at byte {pos - start}")
                stack.append(_V)
            elif op in (0x65, 0x75, 0x90):                      # APPENDS, SETITEMS, ADDITEMS
                pop_mark()
                pop(1)
                stack.append(_V)
            elif op in (0x61, 0x62):                            # APPEND, BUILD
                pop(2)
                stack.append(_V)
            elif op == 0x73:                                    # SETITEM
                pop(3)
                stack.append(_V)
            elif op == 0x87:                                    # TUPLE3
                pop(3)
                stack.append(_V)
            elif op == 0x92:                                    # NEWOBJ_EX
                pop(3)
                stack.append(_V)
            elif op == 0x63 or op == 0x69:                      # GLOBAL, INST
                module = line().decode("utf-8", "replace")
                gname = line().decode("utf-8", "replace")
                counts[(module, gname)] += 1
                if op == 0x69:
                    pop_mark()
                stack.append(_V)
            elif op == 0x93:                                    # STACK_GLOBAL
                module, gname = pop(2)
                counts[(module if type(module) is str else COMPUTED, gname if type(gname) is str else COMPUTED)] += 1
                stack.append(_V)
            elif op in (0x82, 0x83, 0x84):                      # EXT1, EXT2, EXT4
                width = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                need(width)
                code = int.from_bytes(data[pos:pos + width], "little")
                pos += width
                counts[("copyreg", f"extension_code_{code}")] += 1
                stack.append(_V)
            elif op in (0x42, 0x43, 0x8E, 0x96):                # BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                n = sized({0x42: 4, 0x43: 1, 0x8E: 8, 0x96: 8}[op])   # (sized() moves pos: not `pos +=`)
                pos += n
                stack.append(_V)
            elif op in (0x54, 0x55):                            # BINSTRING, SHORT_BINSTRING (Python 2 str)
                n = sized(4 if op == 0x54 else 1, signed=op == 0x54)
                stack.append(text(data[pos:pos + n]))
                pos += n
            elif op in (0x8A, 0x8B):                            # LONG1, LONG4
                n = sized(1 if op == 0x8A else 4, signed=op == 0x8B)
                pos += n
                stack.append(_V)
            elif op == 0x56:                                    # UNICODE
                raw = line()
                try:
                    stack.append(raw.decode("raw-unicode-escape") if len(raw) <= MAX_NAME else _V)
                except UnicodeDecodeError:
                    raise _Broken(f"{name}: UNICODE is not decodable at byte {pos - start}") from None
            elif op == 0x53:                                    # STRING (quoted)
                raw = line()
                if len(raw) < 2 or raw[:1] not in (b"'", b'"') or raw[-1:] != raw[:1]:
                    raise _Broken(f"{name}: STRING is not quoted at byte {pos - start}")
                body = raw[1:-1]
                try:
                    stack.append(body.decode("unicode_escape") if len(body) <= MAX_NAME else _V)
                except UnicodeDecodeError:
                    stack.append(_V)
            elif op in (0x49, 0x4C, 0x46):                      # INT, LONG, FLOAT (text)
                line()
                stack.append(_V)
            elif op == 0x50:                                    # PERSID
                line()
                stack.append(_V)
            elif op in (0x70, 0x67):                            # PUT, GET (text index)
                raw = line()
                try:
                    idx = int(raw)
                except ValueError:
                    raise _Broken(f"{name}: a memo index is not a number at byte {pos - start}") from None
                if op == 0x70:
                    if not stack:
                        raise _Broken(f"{name}: PUT on an empty stack at byte {pos - start}")
                    memo[idx] = stack[-1]
                    if len(memo) > memo_limit:
                        raise too_big()
                else:
                    if idx not in memo:
                        raise _Broken(f"{name}: memo entry {idx} read before it was written")
                    stack.append(memo[idx])
            elif op == 0x30:                                    # POP
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif op == 0x31:                                    # POP_MARK
                pop_mark()
            elif op == 0x32:                                    # DUP
                stack.append(pop(1)[0])
                stack.append(stack[-1])
            elif op == 0x98:                                    # READONLY_BUFFER
                pop(1)
                stack.append(_V)
            elif op == 0x97:                                    # NEXT_BUFFER
                raise _Broken(f"{name}: the pickle needs out-of-band buffers (protocol 5), which files cannot "
                              f"carry")
            elif op == 0x2E:                                    # STOP
                pop(1)
                result.end = pos
                return result
            else:
                raise _Broken(f"{name}: unknown opcode 0x{op:02x} at byte {pos - 1 - start}")
    except _Broken as e:
        result.complete = False
        result.problem = str(e)
        result.end = pos
        return result
    except (MemoryError, RecursionError):
        result.complete = False
        result.problem = f"{name}: too large to scan"
        result.end = pos
        return result


# -- containers ---------------------------------------------------------------------------------------
def scan_file(path: str | os.PathLike, *, skip: frozenset[str] = frozenset()) -> ScanResult:
    """The safety report of the file at ``path`` (never raises for what the file holds).

    ``skip``: zip members, named as the report names its pickles (``data.pkl``), not to walk because
    the caller already has their globals (the window has them from the reader)."""
    from ..source.local import close_quietly, map_file
    path = os.fspath(path)
    if is_url(path):
        return _scan_url(path, skip)
    result = ScanResult(path)
    try:
        if os.path.isdir(path):
            metadata = os.path.join(path, ".metadata")
            if not os.path.isfile(metadata):
                result.error = "this is a folder, not a file (a torch.distributed.checkpoint folder has .metadata)"
                return result
            # torch.distributed.checkpoint's reader pickle.loads the folder's .metadata.
            scan = scan_file(metadata)
            scan.path = path
            scan.format = "torch.distributed.checkpoint" if scan.format == "pickle" else scan.format
            return scan
        buf, resources = map_file(path)
    except OSError as e:
        result.error = f"cannot read the file ({e.strerror or e})"
        return result
    try:
        return scan_buffer(buf, path, result, skip=skip)
    finally:
        close_quietly(resources)


def _scan_url(url: str, skip: frozenset[str]) -> ScanResult:
    """A file at a URL: a zip's directory and pickles are fetched by range (tensors never are); formats
    whose pickles are interleaved with data (legacy, tar, plain pickles) are downloaded first, their size
    said before (``task.notice``)."""
    from ..read.detect import sniff
    from ..source.local import close_quietly, map_file
    from ..source.remote import RemoteFolder, open_remote
    result = ScanResult(shown_location(url))
    resources: list = []
    try:
        target = open_remote(url)
        if isinstance(target, RemoteFolder):
            result.error = "this is a folder, not a file; scan the checkpoint files in it by their URLs"
            return result
        resources.append(target)
        head = target.head(512)
        if target.ranges and head and sniff(head, target.size) in ("zip", "safetensors"):
            return scan_buffer(target, result.path, result, skip=skip)
        why = "scanning this format needs the whole file" if target.ranges else "the server does not serve byte ranges"
        buf, mapped = map_file(target.full_copy(why))
        resources.extend(mapped)
        return scan_buffer(buf, result.path, result, skip=skip)
    except CheckpointError as e:
        result.error = f"{e.message} {e.hint}".strip()
        return result
    finally:
        close_quietly(resources)


def scan_buffer(buf, path: str, result: ScanResult | None = None, *,
                skip: frozenset[str] = frozenset()) -> ScanResult:
    """The safety report of a file held in ``buf`` (bytes, an mmap, or a remote file's ``FileBytes``);
    ``path`` names it."""
    from ..read.detect import describe_other, sniff
    result = result or ScanResult(path)
    src = file_bytes(buf)
    size = src.size
    if size == 0:
        result.error = "the file is empty"
        return result
    head = bytes(src.view(0, min(512, size)))
    kind = sniff(head, size)
    try:
        if kind == "zip":
            _scan_zip(buf, result, skip)
        elif kind == "torch-legacy":
            _scan_legacy(buf, result)
        elif kind == "tar":
            _scan_tar(buf, path, result)
        elif kind == "safetensors":
            result.format = "safetensors"
            result.notes.append("safetensors files hold no pickle: loading one cannot run code")
        elif head.startswith(b"\x93NUMPY"):
            _scan_npy(buf, 0, size, "array", result)
        else:
            _scan_plain(buf, result, describe_other(head) if kind is None else None)
    except CheckpointError as e:      # a container we could not walk at all
        result.problems.append(e.message)
    except (MemoryError, RecursionError):
        result.problems.append("the file is too large or too deeply nested to scan")
    return result


def scan_checkpoint(ckpt) -> ScanResult:
    """The report for a file the reader has opened, from the globals it recorded (no second read)."""
    result = ScanResult(ckpt.path, ckpt.format)
    for p in ckpt.pickles:
        result.pickles.append(PickleScan(p.pickle, Counter(p.counts)))
    missing_bytes_problem(ckpt, result)
    return result


def _add(result: ScanResult, scan: PickleScan) -> PickleScan:
    result.pickles.append(scan)
    if not scan.complete and scan.problem:
        result.problems.append(scan.problem)
    return scan


def _scan_plain(buf, result: ScanResult, other: str | None) -> None:
    """One pickle after another until the end of the file (what a loop of pickle.load would run)."""
    pos, size = 0, len(buf)
    first = walk_pickle(buf, name="pickle")
    if other is not None and not first.complete and not first.counts:
        if bytes(buf[:64]).lstrip().startswith(b"{"):
            result.error = ("a JSON file (a sharded checkpoint's index?) holds no pickle; scan its shard files, "
                            "e.g. ckptviewer scan *.bin")
        else:
            result.error = f"this is {other}, not a checkpoint or a pickle"
        return
    result.format = "pickle"
    _add(result, first)
    pos = first.end
    n = 1
    while first.complete and pos < size:
        if n >= MAX_PICKLES:
            result.problems.append(f"stopped after {MAX_PICKLES} consecutive pickles")
            return
        nxt = walk_pickle(buf, start=pos, name=f"pickle {n + 1}")
        if not nxt.complete and not nxt.counts:
            result.notes.append(f"{size - pos:,} bytes after the last pickle are not a pickle")
            return
        _add(result, nxt)
        if not nxt.complete:
            return
        pos = nxt.end
        n += 1


_LEGACY_PICKLES = ("magic number", "protocol version", "sys_info", "object pickle", "storage key list")


def _scan_legacy(buf, result: ScanResult) -> None:
    """torch.save's legacy format: five consecutive pickles, then the raw storages. The storages hold no
    code, but a file cut short keeps all five pickles and loses the storages: once the pickles are read,
    the reader locates each storage (headers only, no data) and a missing one makes the file incomplete."""
    result.format = "torch-legacy"
    pos = 0
    for name in _LEGACY_PICKLES:
        scan = _add(result, walk_pickle(buf, start=pos, name=name))
        if not scan.complete:
            return
        pos = scan.end
    from ..read.formats.torch_legacy import read_torch_legacy
    try:
        ckpt = read_torch_legacy(buf, result.path)
    except CheckpointError as e:
        result.problems.append(f"the storages after the pickles cannot be located ({e.message})")
        return
    missing_bytes_problem(ckpt, result)


def missing_bytes_problem(ckpt, result: ScanResult) -> None:
    """A file whose tensors lack bytes was read only in part: say so as a problem (exit status 2)."""
    missing = ckpt.missing_bytes()
    if missing is not None:
        result.problems.append(f"{missing.headline()}. {missing.advice()}")


_NPY_OBJECT = re.compile(rb"""['"]descr['"]\s*:\s*['"][|<>=]?O""")


def _scan_npy(buf, start: int, end: int, name: str, result: ScanResult) -> None:
    """A numpy .npy array: only object arrays hold a pickle (``numpy.load(allow_pickle=True)`` runs it)."""
    result.format = result.format or "numpy"
    if end - start < 10:
        result.problems.append(f"{name}: the .npy header is cut off")
        return
    major = buf[start + 6]
    width = 2 if major == 1 else 4
    (hlen,) = struct.unpack_from("<H" if width == 2 else "<I", buf, start + 8)
    hstart = start + 8 + width
    if hstart + hlen > end:
        result.problems.append(f"{name}: the .npy header is cut off")
        return
    header = bytes(buf[hstart:hstart + min(hlen, 65536)])
    if _NPY_OBJECT.search(header):
        _add(result, walk_pickle(buf, start=hstart + hlen, end=end, name=name))
    else:
        result.notes.append(f"{name}: a numpy array of plain numbers (no pickle)")


def _scan_tar(buf, path: str, result: ScanResult) -> None:
    """torch < 0.1.10: the reader walks its interleaved pickles and records each one's globals."""
    from ..read.formats.torch_tar import read_torch_tar
    result.format = "torch-tar"
    try:
        ckpt = read_torch_tar(buf, path)
    except CheckpointError as e:
        result.problems.append(e.message)
        return
    for p in ckpt.pickles:
        result.pickles.append(PickleScan(p.pickle, Counter(p.counts)))


def _is_pickle_member(name: str, prefix_folders: tuple[str, ...]) -> bool:
    if any(name.startswith(f) for f in prefix_folders):
        return False               # storage records: raw tensor bytes, never unpickled
    base = name.rsplit("/", 1)[-1]
    return base.endswith("pkl") or base.endswith(".pickle")


def _scan_zip(buf, result: ScanResult, skip: frozenset[str] = frozenset()) -> None:
    from ..read.formats.zipreader import PICKLE_MAX_RATIO, ZipArchive, inflate
    try:
        archive = ZipArchive(buf, name=result.path)
    except CheckpointError as e:
        if file_bytes(buf).is_remote:
            result.problems.append(f"the zip directory is unreadable ({e.message}); download the file and scan "
                                   f"the copy to walk the members from their local headers")
            return
        result.problems.append(f"the zip directory is unreadable ({e.message}); scanning members found by "
                               f"their local headers instead")
        _scan_zip_local(buf, result)
        return
    names = archive.order
    data_pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    prefix = data_pkls[0][: -len("data.pkl")] if len(data_pkls) == 1 else ""
    if any(n.startswith(prefix + "code/") for n in names) or prefix + "constants.pkl" in archive:
        result.format = "torchscript"
    elif data_pkls:
        result.format = "torch-zip"
    else:
        result.format = "zip"
    storage_folders = tuple(f"{p[: -len('data.pkl')]}{d}/" for p in data_pkls for d in ("data", "constants"))
    for name in names:
        is_npy = name.endswith(".npy")
        if not is_npy and not _is_pickle_member(name, storage_folders):
            continue
        if skip and _member_label(name, prefix) in skip:
            continue
        m = archive.members[name]
        try:
            if m.method == 0:
                start = archive.data_offset(m)
                end = start + m.compressed_size
                data = buf
                if archive.src.is_remote:     # fetched by range: just this member's bytes
                    data, start, end = bytes(archive.src.view(start, m.compressed_size)), 0, m.compressed_size
            elif m.method == 8:
                data = inflate(archive.raw(name), m.size, name, MAX_INFLATE, PICKLE_MAX_RATIO)
                start, end = 0, len(data)
                if name in data_pkls and zlib.crc32(data) != m.crc:
                    result.problems.append(f"zip member {name!r} fails its CRC-32 check")
            else:
                result.problems.append(f"zip member {name!r} uses compression method {m.method}; not scanned")
                continue
        except CheckpointError as e:
            result.problems.append(e.message)
            continue
        if m.method == 0 and name in data_pkls and zlib.crc32(data[start:end]) != m.crc:
            result.problems.append(f"zip member {name!r} fails its CRC-32 check")
        if is_npy:
            if bytes(data[start:start + 6]) == b"\x93NUMPY":
                _scan_npy(data, start, end, name, result)
            continue
        scan = _add(result, walk_pickle(data, start=start, end=end, name=_member_label(name, prefix)))
        if scan.complete and scan.end < end:
            result.notes.append(f"{name} has {end - scan.end:,} bytes after its STOP opcode")
    if not data_pkls and result.format == "zip" and not result.pickles:
        result.notes.append("a zip archive without data.pkl or other pickles")


def _inflate_bounded(view: memoryview, name: str) -> tuple[bytes, int, str | None]:
    """Inflate a deflate stream of unknown length piece by piece, under the pickle ratio guard and cap.

    Returns (what was inflated, compressed bytes used, why it stopped early or None)."""
    from ..read.formats.zipreader import PICKLE_MAX_RATIO
    d = zlib.decompressobj(-15)
    out, used, total = [], 0, 0
    step = 1 << 20
    while used < len(view) and not d.eof:
        piece = view[used:used + step]
        try:
            chunk = d.decompress(piece, MAX_INFLATE - total + 1)
        except zlib.error as e:
            return b"".join(out), used, f"zip member {name!r} does not inflate: {e}"
        used += len(piece) - len(d.unused_data) - len(d.unconsumed_tail)
        total += len(chunk)
        out.append(chunk)
        if total > MAX_INFLATE or (total > (1 << 20) and total > PICKLE_MAX_RATIO * max(used, 1)):
            return b"".join(out), used, f"zip member {name!r} inflates too far (a zip bomb?); scanned in part"
    return b"".join(out), used, None


def _member_label(name: str, prefix: str) -> str:
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


_LFH = struct.Struct("<4sHHHHHIIIHH")


def _scan_zip_local(buf, result: ScanResult) -> None:
    """A zip whose directory is cut off or damaged: walk the local headers from the start of the file.

    torch writes data descriptors (sizes after the data, zero in the local header), so a pickle member
    is walked from its first byte to its STOP, bounded by the end of the file.
    """
    result.format = "torch-zip"
    pos, size, seen = 0, len(buf), 0
    while pos + _LFH.size <= size and seen < 100_000:
        sig, _v, flags, method, _t, _d, _crc, csize, _usize, nlen, xlen = _LFH.unpack_from(buf, pos)
        if sig != b"PK\x03\x04":
            break
        seen += 1
        name = bytes(buf[pos + 30:pos + 30 + nlen]).decode("utf-8", "replace")
        start = pos + 30 + nlen + xlen
        if start > size:
            break
        known = csize if not flags & 0x8 or csize else None
        if _is_pickle_member(name, ()) and "/data/" not in name and "/constants/" not in name:
            if method == 0:
                scan = _add(result, walk_pickle(buf, start=start, end=start + known if known else size, name=name))
                if known is None and scan.complete:
                    known = scan.end - start
            elif method == 8:
                data, used, problem = _inflate_bounded(memoryview(buf)[start:], name)
                if problem:
                    result.problems.append(problem)
                _add(result, walk_pickle(data, name=name))
                known = known or used
            else:
                result.problems.append(f"zip member {name!r} uses compression method {method}; not scanned")
        if known is None:
            # Skip to the next local header (data descriptor sizes are unknown without the directory).
            nxt = buf.find(b"PK\x03\x04", start)
            if nxt < 0:
                break
            pos = nxt
            continue
        pos = start + known
        if flags & 0x8:   # data descriptor: optional signature, CRC, sizes (32- or 64-bit)
            nxt = buf.find(b"PK\x03\x04", pos)
            if nxt < 0:
                break
            pos = nxt
    if not result.pickles:
        result.problems.append("no pickle could be found in what is left of the archive")
