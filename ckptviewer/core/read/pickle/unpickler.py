"""A pickle interpreter that never imports, looks up or calls anything a file names.

It implements every opcode of protocols 0 to 5 itself. ``GLOBAL``/``STACK_GLOBAL`` ask a *resolver*
for the name, which answers with one of our own safe reconstructors or values (see
``reconstructors.py``) or with an inert :class:`GlobalRef`. Calling a ``GlobalRef`` (``REDUCE``,
``NEWOBJ``, ``NEWOBJ_EX``, ``INST``, ``OBJ``) makes a :class:`StandIn`; ``BUILD`` on one records the
state. Python's own ``pickle``/``_pickle`` are never used on file bytes: the C unpickler grows its
memo to ``2 * index`` on ``LONG_BINPUT``, which a 30-byte file turns into a 64 GB allocation.

Bounds: the stream is read from a bytes-like object (bytes or an ``mmap``) with explicit length
checks, so declared lengths can never allocate more than the bytes present. Dict keys and set
members must be simple hashable values (hashing a 10**5-deep tuple would overflow the C stack).
Everything a file can make grows with the number of opcodes, which the input length bounds.
"""
from __future__ import annotations

import struct
from collections import Counter
from typing import Any, Callable

from ...model.objects import Buildable, GlobalRef, PickledDict, StandIn, Unreadable
from ...util.errors import CorruptFileError, LimitExceededError, TruncatedFileError

_unpack_i = struct.Struct("<i").unpack_from
_unpack_H = struct.Struct("<H").unpack_from
_unpack_I = struct.Struct("<I").unpack_from
_unpack_Q = struct.Struct("<Q").unpack_from
_unpack_d = struct.Struct(">d").unpack_from

# Opcodes (pickletools' names).
MARK, STOP, POP, POP_MARK, DUP = b"(", b".", b"0", b"1", b"2"
_OP = {name: code[0] for name, code in {
    "MARK": b"(", "STOP": b".", "POP": b"0", "POP_MARK": b"1", "DUP": b"2", "FLOAT": b"F", "INT": b"I",
    "BININT": b"J", "BININT1": b"K", "LONG": b"L", "BININT2": b"M", "NONE": b"N", "PERSID": b"P",
    "BINPERSID": b"Q", "REDUCE": b"R", "STRING": b"S", "BINSTRING": b"T", "SHORT_BINSTRING": b"U",
    "UNICODE": b"V", "BINUNICODE": b"X", "APPEND": b"a", "BUILD": b"b", "GLOBAL": b"c", "DICT": b"d",
    "EMPTY_DICT": b"}", "APPENDS": b"e", "GET": b"g", "BINGET": b"h", "INST": b"i", "LONG_BINGET": b"j",
    "LIST": b"l", "EMPTY_LIST": b"]", "OBJ": b"o", "PUT": b"p", "BINPUT": b"q", "LONG_BINPUT": b"r",
    "SETITEM": b"s", "TUPLE": b"t", "EMPTY_TUPLE": b")", "SETITEMS": b"u", "BINFLOAT": b"G",
    "PROTO": b"\x80", "NEWOBJ": b"\x81", "EXT1": b"\x82", "EXT2": b"\x83", "EXT4": b"\x84",
    "TUPLE1": b"\x85", "TUPLE2": b"\x86", "TUPLE3": b"\x87", "NEWTRUE": b"\x88", "NEWFALSE": b"\x89",
    "LONG1": b"\x8a", "LONG4": b"\x8b", "BINBYTES": b"B", "SHORT_BINBYTES": b"C",
    "SHORT_BINUNICODE": b"\x8c", "BINUNICODE8": b"\x8d", "BINBYTES8": b"\x8e", "EMPTY_SET": b"\x8f",
    "ADDITEMS": b"\x90", "FROZENSET": b"\x91", "NEWOBJ_EX": b"\x92", "STACK_GLOBAL": b"\x93",
    "MEMOIZE": b"\x94", "FRAME": b"\x95", "BYTEARRAY8": b"\x96", "NEXT_BUFFER": b"\x97",
    "READONLY_BUFFER": b"\x98",
}.items()}
OPCODE_NAMES = {v: k for k, v in _OP.items()}

_SIMPLE_KEY_TYPES = (str, int, float, bool, type(None), bytes, complex)
# What a reconstructor raises on arguments of the wrong kind; the value becomes Unreadable.
REBUILD_ERRORS = (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError, ArithmeticError)
MAX_KEY_DEPTH = 32
# Memory bound. A one-byte opcode can make an object of 50-200 bytes (EMPTY_SET is 216), and a pickle
# inflated from a small compressed zip member can be megabytes of them: a 66 KB file asked for 6 GB.
# Objects are counted in units of about 64 bytes (an empty list or dict, a small tuple; a set is 4, a
# stand-in or a rebuilt tensor 2; a MEMOIZE entry 1); a pickle may make BASE_UNITS plus one unit per
# BYTES_PER_UNIT bytes of its own length. Measured bytes per unit: a 100,000-key state_dict 12.6, a
# pickled module 8.0, GPU training checkpoints 175, torch.distributed.checkpoint metadata 4.4 (protocol
# 4 memoizes every object), 600,000 small containers pickled with protocol 5 2.7: all inside the
# budget. An attack is held to ~30 MB plus ~40 bytes per byte of pickle.
BASE_UNITS = 500_000
BYTES_PER_UNIT = 2


class Reconstructor:
    """One of our own safe implementations of a global a checkpoint may name.

    ``fn(args, ctx)`` builds the value for ``REDUCE``; ``new(args, ctx)`` for ``NEWOBJ`` when the class
    may be instantiated that way. Both receive plain data and must validate it: a wrong argument type
    raises ``TypeError``/``ValueError`` and the caller turns that into an :class:`Unreadable` value.
    """

    __slots__ = ("module", "name", "fn", "new")

    def __init__(self, module: str, name: str, fn: Callable | None, new: Callable | None = None):
        self.module = module
        self.name = name
        self.fn = fn
        self.new = new

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<safe {self.qualname}>"


def _check_key(key: Any) -> Any:
    """Allow only keys whose hashing cannot recurse deeply or run file-chosen code."""
    if type(key) in _SIMPLE_KEY_TYPES:
        return key
    todo = [(key, 0)]
    while todo:
        item, depth = todo.pop()
        if type(item) in _SIMPLE_KEY_TYPES or isinstance(item, (GlobalRef, StandIn)):
            continue
        if isinstance(item, (tuple, frozenset)) and depth < MAX_KEY_DEPTH:
            todo.extend((x, depth + 1) for x in item)
            continue
        if getattr(type(item), "__hash__", None) is not None and type(item).__module__.startswith("ckptviewer"):
            continue  # our own inert values hash by identity or by plain fields
        raise CorruptFileError(f"the pickle uses a {type(item).__name__} as a dict key or set member")
    return key


class SafeUnpickler:
    """Interpret one pickle from ``data[start:]``.

    ``resolver(module, name)`` returns what ``GLOBAL`` pushes (a :class:`Reconstructor`, a value, or a
    :class:`GlobalRef`). ``persistent_load(pid)`` turns a persistent id into a value (a storage).
    After :meth:`load`, ``end`` is the offset just past ``STOP`` and ``globals_seen`` counts every
    global the stream named, as ``(module, name)``. ``opcodes`` holds every opcode the stream used
    outside the hot loop's common protocol-2 set, plus MEMOIZE, SHORT_BINUNICODE and STACK_GLOBAL (the
    three hot ones of protocol 4): enough to tell which opcodes torch's weights-only unpickler would
    refuse, at no cost on the hot path.
    """

    def __init__(self, data, *, start: int = 0, end: int | None = None,
                 resolver: Callable[[str, str], Any],
                 persistent_load: Callable[[Any], Any] | None = None,
                 warn: Callable[[str], None] | None = None,
                 name: str = "pickle"):
        self.data = data
        self.start = start
        self.end_limit = len(data) if end is None else end
        self.resolver = resolver
        self.persistent_load_fn = persistent_load
        self.warn = warn or (lambda msg: None)
        self.name = name
        self.end = start
        self.globals_seen: Counter[tuple[str, str]] = Counter()
        self._resolved: dict[tuple[str, str], Any] = {}
        self.proto = 0
        self.opcodes: set[int] = set()
        self.budget = BASE_UNITS + max(self.end_limit - start, 0) // BYTES_PER_UNIT
        self.made = 0                 # units spent so far (see BASE_UNITS)
        # Python 2 ``str`` values (STRING, BINSTRING, SHORT_BINSTRING): how many were decoded how, a few
        # examples of those that were not UTF-8, and the bytes behind non-ASCII ones (numpy array data
        # pickled by Python 2 arrives this way and must be the original bytes, not re-encoded text).
        self.py2_utf8 = 0
        self.py2_latin1 = 0
        self.py2_examples: list[str] = []
        self.py2_bytes: dict[str, bytes] = {}

    # ------------------------------------------------------------------------------------------
    def _truncated(self, pos: int) -> TruncatedFileError:
        return TruncatedFileError(f"{self.name} ends at byte {pos} in the middle of a pickle")

    def _corrupt(self, what: str, pos: int) -> CorruptFileError:
        return CorruptFileError(f"{self.name}: {what} (at byte {pos - self.start})")

    def _global(self, module: str, name: str) -> Any:
        key = (module, name)
        self.globals_seen[key] += 1
        found = self._resolved.get(key)
        if found is None:
            found = self.resolver(module, name)
            self._resolved[key] = found
        return found

    def _persistent(self, pid: Any) -> Any:
        if self.persistent_load_fn is None:
            self.warn(f"{self.name}: a persistent id appears where none is expected")
            return Unreadable("persistent id", repr(pid)[:80])
        return self.persistent_load_fn(pid)

    def _call(self, func: Any, args: Any, pos: int, via: str = "REDUCE", kwargs: dict | None = None) -> Any:
        if type(args) is not tuple and not isinstance(args, tuple):
            raise self._corrupt(f"{via} arguments are a {type(args).__name__}, not a tuple", pos)
        if type(func) is Reconstructor:
            impl = func.fn if via == "REDUCE" or func.new is None or not via.startswith("NEWOBJ") else func.new
            if impl is None:
                self.warn(f"{func.qualname} is called in an unsupported way ({via}); shown as a stand-in")
                return StandIn(GlobalRef(func.module, func.name), args, kwargs, via)
            try:
                return impl(args, self) if kwargs is None else impl(args, self, **kwargs)
            except REBUILD_ERRORS as e:
                return self._rebuild_failed(func, args, e)
        if isinstance(func, (GlobalRef, StandIn)):
            return StandIn(func, args, kwargs, via)
        raise self._corrupt(f"{via} of a {type(func).__name__}, which is not callable", pos)

    def _rebuild_failed(self, func: Reconstructor, args: tuple, e: Exception) -> Unreadable:
        self.warn(f"{func.qualname}{_short(args)} could not be rebuilt: {e}")
        return Unreadable(func.qualname, str(e))

    def _build(self, inst: Any, state: Any) -> None:
        if isinstance(inst, StandIn):
            if inst.state is not None and isinstance(inst.state, dict) and isinstance(state, dict):
                merged = dict(inst.state)
                merged.update(state)
                inst.state = merged
            else:
                inst.state = state
        elif isinstance(inst, PickledDict):
            if isinstance(state, dict):
                inst.pickle_attrs.update(state)
            else:
                inst.pickle_attrs["__state__"] = state
        elif isinstance(inst, Buildable):
            try:
                inst.pickle_build(state, self)
            except (TypeError, ValueError, IndexError, KeyError, OverflowError) as e:
                self.warn(f"BUILD of {type(inst).__name__} failed: {e}")
        else:
            self.warn(f"{self.name}: BUILD on a {type(inst).__name__} was ignored")

    def _py2_text(self, raw) -> str:
        """A Python 2 ``str``: UTF-8 text as torch.load's default ``encoding='utf-8'`` gives it, and latin-1
        (the usual ``encoding='latin1'`` fix, a byte-for-byte mapping) when it is not UTF-8."""
        raw = bytes(raw)
        try:
            text = str(raw, "utf-8")
            self.py2_utf8 += 1
        except UnicodeDecodeError:
            text = str(raw, "latin-1")
            self.py2_latin1 += 1
            if len(self.py2_examples) < 3:
                self.py2_examples.append(text[:40])
        if not raw.isascii() and len(self.py2_bytes) < 100_000:
            self.py2_bytes[text] = raw
        return text

    def py2_note(self) -> str | None:
        """One line saying how this pickle's Python 2 strings were decoded, when some were not UTF-8."""
        if not self.py2_latin1:
            return None        # UTF-8 only: read exactly as torch.load reads it, nothing to say
        total = self.py2_utf8 + self.py2_latin1
        shown = ", ".join(repr(x) for x in self.py2_examples)
        return (f"{self.name}: {self.py2_latin1:,} of its {total:,} Python 2 byte strings are not UTF-8 and are shown "
                f"decoded as latin-1 (e.g. {shown}); the other {self.py2_utf8:,} decoded as UTF-8, as torch.load does. "
                f"torch.load fails on this file unless given encoding='latin1'")

    # ------------------------------------------------------------------------------------------
    def _too_many(self) -> LimitExceededError:
        size = self.end_limit - self.start
        return LimitExceededError(
            f"{self.name} builds more objects than a pickle of {size:,} bytes can hold honestly (over "
            f"{self.budget:,} units of ~64 bytes): it looks built to exhaust memory")

    def _spend(self, units: int) -> None:
        self.made += units
        if self.made > self.budget:
            raise self._too_many()

    def _pop_mark(self, stack: list, metastack: list, pos: int) -> tuple[list, list]:
        """The items since the last MARK, and the stack below it."""
        if not metastack:
            raise self._corrupt("MARK expected", pos)
        return stack, metastack.pop()

    def _readline(self, data, pos: int, end: int) -> tuple[bytes, int]:
        nl = data.find(b"\n", pos, end)
        if nl < 0:
            raise self._truncated(end)
        return bytes(data[pos:nl]), nl + 1

    @staticmethod
    def _memo_put(memo: list, sparse: dict, idx: int, value: Any) -> None:
        """memo[idx] = value for a memo kept as a list (indices 0 .. len-1, all written) plus a dict of the
        other indices. The dict never holds an index below the list's length, so the number of entries is
        len(memo) + len(sparse); an index that extends the list pulls the dict's next ones in after it
        (each moves once)."""
        n = len(memo)
        if 0 <= idx < n:
            memo[idx] = value
        elif idx == n:
            memo.append(value)
            sparse.pop(idx, None)
            while sparse and len(memo) in sparse:
                memo.append(sparse.pop(len(memo)))
        else:
            sparse[idx] = value

    def _memo_get(self, memo: list, sparse: dict, idx: int, pos: int) -> Any:
        if 0 <= idx < len(memo):
            return memo[idx]
        try:
            return sparse[idx]
        except KeyError:
            raise self._corrupt(f"memo entry {idx} read before it was written", pos) from None

    def load(self) -> Any:
        """Interpret the stream. Hot opcodes are inline (this loop is the reader's hot path); the rest
        go to :meth:`_rare`. Every length is checked against ``end`` before it is used."""
        data = self.data
        pos = self.start
        end = self.end_limit
        stack: list = []
        metastack: list = []
        # The memo is a list while its indices come in order (torch's pickler and MEMOIZE number them 0, 1,
        # 2, ...), and a dict for the others: a list costs 8 bytes an entry where a dict with int keys
        # costs ~70, and 100,000 tensors memoize over a million objects. See _memo_put for the rule.
        memo: list = []
        sparse: dict = {}
        memo_append = memo.append
        push = stack.append
        unpack_I, unpack_i, unpack_H = _unpack_I, _unpack_i, _unpack_H
        call = self._call
        persistent = self.persistent_load_fn or self._persistent
        made, budget = self.made, self.budget
        # Protocol-4 opcodes of the hot loop, noted as plain flags (a set insertion there would cost).
        memoized = short_unicode = stack_global = False
        try:
            while True:
                if pos >= end:
                    raise self._truncated(end)
                op = data[pos]
                pos += 1
                if op == 0x72:  # LONG_BINPUT
                    if pos + 4 > end:
                        raise self._truncated(end)
                    if not stack:
                        raise self._corrupt("LONG_BINPUT on an empty stack", pos)
                    idx = unpack_I(data, pos)[0]
                    if idx == len(memo) and not sparse:
                        memo_append(stack[-1])
                    else:
                        self._memo_put(memo, sparse, idx, stack[-1])
                    pos += 4
                elif op == 0x68:  # BINGET
                    if pos >= end:
                        raise self._truncated(end)
                    idx = data[pos]
                    push(memo[idx] if idx < len(memo) else self._memo_get(memo, sparse, idx, pos))
                    pos += 1
                elif op == 0x4B:  # BININT1
                    if pos >= end:
                        raise self._truncated(end)
                    push(data[pos])
                    pos += 1
                elif op == 0x28:  # MARK
                    metastack.append(stack)
                    stack = []
                    push = stack.append
                elif op == 0x58:  # BINUNICODE
                    if pos + 4 > end:
                        raise self._truncated(end)
                    n = unpack_I(data, pos)[0]
                    pos += 4
                    if pos + n > end:
                        raise self._truncated(end)
                    push(_decode(data[pos:pos + n]))
                    pos += n
                elif op == 0x74:  # TUPLE
                    if not metastack:
                        raise self._corrupt("TUPLE without MARK", pos)
                    made += 1
                    if made > budget:
                        raise self._too_many()
                    items = tuple(stack)
                    stack = metastack.pop()
                    push = stack.append
                    push(items)
                elif op == 0x52:  # REDUCE
                    if len(stack) < 2:
                        raise self._corrupt("REDUCE needs a callable and its arguments", pos)
                    args = stack.pop()
                    func = stack[-1]
                    made += 2
                    if made > budget:
                        raise self._too_many()
                    if type(func) is Reconstructor and type(args) is tuple and func.fn is not None:
                        # The common case (a tensor rebuilder, OrderedDict) without _call's general path.
                        try:
                            stack[-1] = func.fn(args, self)
                        except REBUILD_ERRORS as e:
                            stack[-1] = self._rebuild_failed(func, args, e)
                    else:
                        stack[-1] = call(func, args, pos)
                elif op == 0x85:  # TUPLE1
                    if not stack:
                        raise self._corrupt("TUPLE1 on an empty stack", pos)
                    made += 1
                    if made > budget:
                        raise self._too_many()
                    stack[-1] = (stack[-1],)
                elif op == 0x86:  # TUPLE2
                    if len(stack) < 2:
                        raise self._corrupt("TUPLE2 on a short stack", pos)
                    made += 1
                    if made > budget:
                        raise self._too_many()
                    b = stack.pop()
                    stack[-1] = (stack[-1], b)
                elif op == 0x87:  # TUPLE3
                    if len(stack) < 3:
                        raise self._corrupt("TUPLE3 on a short stack", pos)
                    made += 1
                    if made > budget:
                        raise self._too_many()
                    c = stack.pop()
                    b = stack.pop()
                    stack[-1] = (stack[-1], b, c)
                elif op == 0x29:  # EMPTY_TUPLE
                    push(())
                elif op == 0x89:  # NEWFALSE
                    push(False)
                elif op == 0x88:  # NEWTRUE
                    push(True)
                elif op == 0x51:  # BINPERSID
                    if not stack:
                        raise self._corrupt("BINPERSID on an empty stack", pos)
                    stack[-1] = persistent(stack[-1])
                elif op == 0x71:  # BINPUT
                    if pos >= end:
                        raise self._truncated(end)
                    if not stack:
                        raise self._corrupt("BINPUT on an empty stack", pos)
                    idx = data[pos]
                    if idx == len(memo) and not sparse:
                        memo_append(stack[-1])
                    else:
                        self._memo_put(memo, sparse, idx, stack[-1])
                    pos += 1
                elif op == 0x4A:  # BININT
                    if pos + 4 > end:
                        raise self._truncated(end)
                    push(unpack_i(data, pos)[0])
                    pos += 4
                elif op == 0x4D:  # BININT2
                    if pos + 2 > end:
                        raise self._truncated(end)
                    push(unpack_H(data, pos)[0])
                    pos += 2
                elif op == 0x6A:  # LONG_BINGET
                    if pos + 4 > end:
                        raise self._truncated(end)
                    idx = unpack_I(data, pos)[0]
                    push(memo[idx] if idx < len(memo) else self._memo_get(memo, sparse, idx, pos))
                    pos += 4
                elif op == 0x94:  # MEMOIZE
                    memoized = True
                    if not stack:
                        raise self._corrupt("MEMOIZE on an empty stack", pos)
                    made += 1
                    if made > budget:
                        raise self._too_many()
                    idx = len(memo) + len(sparse)       # the number of entries, as pickle counts them
                    if idx == len(memo):
                        memo_append(stack[-1])
                    else:
                        self._memo_put(memo, sparse, idx, stack[-1])
                elif op == 0x8C:  # SHORT_BINUNICODE
                    short_unicode = True
                    if pos >= end:
                        raise self._truncated(end)
                    n = data[pos]
                    pos += 1
                    if pos + n > end:
                        raise self._truncated(end)
                    push(_decode(data[pos:pos + n]))
                    pos += n
                elif op == 0x7D:  # EMPTY_DICT
                    made += 1
                    if made > budget:
                        raise self._too_many()
                    push({})
                elif op == 0x5D:  # EMPTY_LIST
                    made += 1
                    if made > budget:
                        raise self._too_many()
                    push([])
                elif op == 0x4E:  # NONE
                    push(None)
                elif op == 0x75:  # SETITEMS
                    if not metastack:
                        raise self._corrupt("SETITEMS without MARK", pos)
                    items = stack
                    stack = metastack.pop()
                    push = stack.append
                    if not stack:
                        raise self._corrupt("SETITEMS without a dict", pos)
                    if len(items) % 2:
                        raise self._corrupt("SETITEMS with an odd number of items", pos)
                    self._setitems(stack[-1], items, pos)
                elif op == 0x73:  # SETITEM
                    if len(stack) < 3:
                        raise self._corrupt("SETITEM on a short stack", pos)
                    v = stack.pop()
                    k = stack.pop()
                    self._setitems(stack[-1], [k, v], pos)
                elif op == 0x63:  # GLOBAL
                    module, pos = self._readline(data, pos, end)
                    name, pos = self._readline(data, pos, end)
                    push(self._global(module.decode("utf-8", "replace"), name.decode("utf-8", "replace")))
                elif op == 0x93:  # STACK_GLOBAL
                    stack_global = True
                    if len(stack) < 2:
                        raise self._corrupt("STACK_GLOBAL on a short stack", pos)
                    name = stack.pop()
                    module = stack.pop()
                    if type(module) is not str or type(name) is not str:
                        raise self._corrupt("STACK_GLOBAL names that are not strings", pos)
                    push(self._global(module, name))
                elif op == 0x62:  # BUILD
                    if len(stack) < 2:
                        raise self._corrupt("BUILD on a short stack", pos)
                    state = stack.pop()
                    self._build(stack[-1], state)
                elif op == 0x2E:  # STOP
                    if len(stack) != 1 or metastack:
                        if not stack:
                            raise self._corrupt("STOP with an empty stack", pos)
                        self.warn(f"{self.name}: the pickle stops with {len(stack)} values on its stack")
                    self.end = pos
                    self.made = made
                    return stack[-1]
                else:
                    self.made = made
                    pos, stack = self._rare(op, data, pos, end, stack, metastack, memo, sparse)
                    made = self.made
                    push = stack.append
        except RecursionError:
            raise LimitExceededError(f"{self.name}: structure nested too deeply") from None
        except MemoryError:
            raise LimitExceededError(f"{self.name}: out of memory while reading the pickle") from None
        finally:
            for flag, code in ((memoized, 0x94), (short_unicode, 0x8C), (stack_global, 0x93)):
                if flag:
                    self.opcodes.add(code)

    def _rare(self, op: int, data, pos: int, end: int, stack: list, metastack: list,
              memo: list, sparse: dict) -> tuple[int, list]:
        """The less frequent opcodes. Returns the new position and the (possibly new) current stack."""
        # No closures here: a closure over pos and stack made every rare opcode cost ~1 us.
        push = stack.append
        self.opcodes.add(op)

        if op == 0x61:  # APPEND
            if len(stack) < 2:
                raise self._corrupt("APPEND on a short stack", pos)
            v = stack.pop()
            self._appends(stack[-1], [v], pos)
        elif op == 0x65:  # APPENDS
            items, stack = self._pop_mark(stack, metastack, pos)
            if not stack:
                raise self._corrupt("APPENDS without a list", pos)
            self._appends(stack[-1], items, pos)
        elif op == 0x47:  # BINFLOAT
            if pos + 8 > end:
                raise self._truncated(end)
            push(_unpack_d(data, pos)[0])
            pos += 8
        elif op == 0x81:  # NEWOBJ
            self._spend(2)
            if len(stack) < 2:
                raise self._corrupt("NEWOBJ on a short stack", pos)
            args = stack.pop()
            stack[-1] = self._call(stack[-1], args, pos, via="NEWOBJ")
        elif op == 0x92:  # NEWOBJ_EX
            self._spend(2)
            if len(stack) < 3:
                raise self._corrupt("NEWOBJ_EX on a short stack", pos)
            kwargs = stack.pop()
            args = stack.pop()
            if not isinstance(kwargs, dict):
                raise self._corrupt("NEWOBJ_EX keyword arguments are not a dict", pos)
            stack[-1] = self._call(stack[-1], args, pos, via="NEWOBJ_EX", kwargs=_str_keys(kwargs))
        elif op == 0x80:  # PROTO
            if pos + 1 > end:
                raise self._truncated(end)
            self.proto = data[pos]
            pos += 1
            if self.proto > 5:
                raise self._corrupt(f"unsupported pickle protocol {self.proto}", pos)
        elif op == 0x95:  # FRAME
            if pos + 8 > end:
                raise self._truncated(end)
            pos += 8  # frames only group bytes; lengths are checked per opcode anyway
        elif op == 0x8A:  # LONG1
            if pos + 1 > end:
                raise self._truncated(end)
            n = data[pos]
            pos += 1
            if pos + n > end:
                raise self._truncated(end)
            push(int.from_bytes(data[pos:pos + n], "little", signed=True))
            pos += n
        elif op == 0x8B:  # LONG4
            if pos + 4 > end:
                raise self._truncated(end)
            (n,) = _unpack_i(data, pos)
            pos += 4
            if n < 0:
                raise self._corrupt("LONG4 with a negative length", pos)
            if n > 1 << 16:
                raise LimitExceededError(f"{self.name}: an integer of {n:,} bytes")
            if pos + n > end:
                raise self._truncated(end)
            push(int.from_bytes(data[pos:pos + n], "little", signed=True))
            pos += n
        elif op == 0x42:  # BINBYTES
            if pos + 4 > end:
                raise self._truncated(end)
            (n,) = _unpack_I(data, pos)
            pos += 4
            if pos + n > end:
                raise self._truncated(end)
            push(bytes(data[pos:pos + n]))
            pos += n
        elif op == 0x43:  # SHORT_BINBYTES
            if pos + 1 > end:
                raise self._truncated(end)
            n = data[pos]
            pos += 1
            if pos + n > end:
                raise self._truncated(end)
            push(bytes(data[pos:pos + n]))
            pos += n
        elif op in (0x8D, 0x8E, 0x96):  # BINUNICODE8, BINBYTES8, BYTEARRAY8
            if pos + 8 > end:
                raise self._truncated(end)
            (n,) = _unpack_Q(data, pos)
            pos += 8
            if pos + n > end:
                raise self._truncated(end)
            chunk = data[pos:pos + n]
            pos += n
            push(_decode(chunk) if op == 0x8D else bytes(chunk) if op == 0x8E else bytearray(chunk))
        elif op == 0x54:  # BINSTRING (Python 2 str)
            if pos + 4 > end:
                raise self._truncated(end)
            (n,) = _unpack_i(data, pos)
            pos += 4
            if n < 0:
                raise self._corrupt("BINSTRING with a negative length", pos)
            if pos + n > end:
                raise self._truncated(end)
            push(self._py2_text(data[pos:pos + n]))
            pos += n
        elif op == 0x55:  # SHORT_BINSTRING
            if pos + 1 > end:
                raise self._truncated(end)
            n = data[pos]
            pos += 1
            if pos + n > end:
                raise self._truncated(end)
            push(self._py2_text(data[pos:pos + n]))
            pos += n
        elif op == 0x8F:  # EMPTY_SET
            self._spend(4)
            push(set())
        elif op == 0x90:  # ADDITEMS
            items, stack = self._pop_mark(stack, metastack, pos)
            if not stack or not isinstance(stack[-1], set):
                raise self._corrupt("ADDITEMS without a set", pos)
            stack[-1].update(_check_key(x) for x in items)
        elif op == 0x91:  # FROZENSET
            self._spend(4)
            items, stack = self._pop_mark(stack, metastack, pos)
            stack.append(frozenset(_check_key(x) for x in items))
        elif op == 0x64:  # DICT
            self._spend(1)
            items, stack = self._pop_mark(stack, metastack, pos)
            if len(items) % 2:
                raise self._corrupt("DICT with an odd number of items", pos)
            d: dict = {}
            self._setitems(d, items, pos)
            stack.append(d)
        elif op == 0x6C:  # LIST
            self._spend(1)
            items, stack = self._pop_mark(stack, metastack, pos)
            stack.append(items)
        elif op == 0x30:  # POP
            if stack:
                stack.pop()
            elif metastack:
                _, stack = self._pop_mark(stack, metastack, pos)
            else:
                raise self._corrupt("POP on an empty stack", pos)
        elif op == 0x31:  # POP_MARK
            _, stack = self._pop_mark(stack, metastack, pos)
        elif op == 0x32:  # DUP
            if not stack:
                raise self._corrupt("DUP on an empty stack", pos)
            push(stack[-1])
        elif op == 0x70:  # PUT
            line, pos = self._readline(data, pos, end)
            if not stack:
                raise self._corrupt("PUT on an empty stack", pos)
            self._memo_put(memo, sparse, _int_line(line, self, pos), stack[-1])
        elif op == 0x67:  # GET
            line, pos = self._readline(data, pos, end)
            push(self._memo_get(memo, sparse, _int_line(line, self, pos), pos))
        elif op == 0x49:  # INT (also True/False in protocol 0)
            line, pos = self._readline(data, pos, end)
            if line == b"00":
                push(False)
            elif line == b"01":
                push(True)
            else:
                push(_int_line(line, self, pos))
        elif op == 0x4C:  # LONG (protocol 0: decimal digits, optional L)
            line, pos = self._readline(data, pos, end)
            push(_int_line(line[:-1] if line.endswith(b"L") else line, self, pos))
        elif op == 0x46:  # FLOAT
            line, pos = self._readline(data, pos, end)
            try:
                push(float(line))
            except ValueError:
                raise self._corrupt("FLOAT is not a number", pos) from None
        elif op == 0x53:  # STRING (protocol 0, quoted repr)
            line, pos = self._readline(data, pos, end)
            push(self._py2_text(_unquote(line, self, pos)))
        elif op == 0x56:  # UNICODE (raw-unicode-escape)
            line, pos = self._readline(data, pos, end)
            try:
                push(line.decode("raw-unicode-escape"))
            except UnicodeDecodeError:
                raise self._corrupt("UNICODE is not decodable", pos) from None
        elif op == 0x50:  # PERSID
            line, pos = self._readline(data, pos, end)
            push(self._persistent(line.decode("ascii", "replace")))
        elif op == 0x69:  # INST
            self._spend(2)
            module, pos = self._readline(data, pos, end)
            name, pos = self._readline(data, pos, end)
            cls = self._global(module.decode("utf-8", "replace"), name.decode("utf-8", "replace"))
            items, stack = self._pop_mark(stack, metastack, pos)
            args = tuple(items)
            stack.append(self._call(cls, args, pos, via="INST"))
        elif op == 0x6F:  # OBJ
            self._spend(2)
            items, stack = self._pop_mark(stack, metastack, pos)
            if not items:
                raise self._corrupt("OBJ without a class", pos)
            stack.append(self._call(items[0], tuple(items[1:]), pos, via="OBJ"))
        elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
            width = {0x82: 1, 0x83: 2, 0x84: 4}[op]
            if pos + width > end:
                raise self._truncated(end)
            code = int.from_bytes(data[pos:pos + width], "little")
            pos += width
            # copyreg's extension registry is process state, not file content: never consult it.
            push(self._global("copyreg", f"extension_code_{code}"))
        elif op == 0x97:  # NEXT_BUFFER
            raise self._corrupt("the pickle needs out-of-band buffers (protocol 5), which files cannot carry", pos)
        elif op == 0x98:  # READONLY_BUFFER
            pass
        else:
            raise self._corrupt(f"unknown opcode 0x{op:02x}", pos)
        return pos, stack

    # ------------------------------------------------------------------------------------------
    def _setitems(self, target: Any, items: list, pos: int) -> None:
        if isinstance(target, dict):
            for i in range(0, len(items), 2):
                target[_check_key(items[i])] = items[i + 1]
        elif isinstance(target, StandIn):
            if target.items is None:
                target.items = []
            # A dict subclass's items: the same key rule as a dict's (keys become hashed key paths).
            target.items.extend((_check_key(k), v) for k, v in zip(items[0::2], items[1::2]))
        else:
            raise self._corrupt(f"SETITEMS on a {type(target).__name__}", pos)

    def _appends(self, target: Any, items: list, pos: int) -> None:
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, StandIn):
            if target.list_items is None:
                target.list_items = []
            target.list_items.extend(items)
        elif isinstance(target, set):
            target.update(_check_key(x) for x in items)
        else:
            raise self._corrupt(f"APPENDS on a {type(target).__name__}", pos)


def _decode(raw) -> str:
    try:
        return str(raw, "utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return str(raw, "latin-1")


def _int_line(line: bytes, up: SafeUnpickler, pos: int) -> int:
    try:
        return int(line)
    except ValueError:
        raise up._corrupt("an integer field is not a number (or has over 4300 digits)", pos) from None


def _unquote(line: bytes, up: SafeUnpickler, pos: int) -> bytes:
    """The bytes a protocol-0 STRING line spells (a quoted Python 2 repr with escapes)."""
    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
        body = line[1:-1]
        try:
            return body.decode("latin-1").encode("latin-1").decode("unicode_escape").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError):
            return bytes(body)
    raise up._corrupt("STRING is not quoted", pos)


def _str_keys(kwargs: dict) -> dict:
    return {str(k): v for k, v in kwargs.items()}


def _short(args: Any) -> str:
    """Argument types only: repr() of file data could be huge or deeply nested."""
    names = [type(a).__name__ for a in args[:6]] if isinstance(args, tuple) else [type(args).__name__]
    return "(" + ", ".join(names) + (", ..." if isinstance(args, tuple) and len(args) > 6 else "") + ")"
