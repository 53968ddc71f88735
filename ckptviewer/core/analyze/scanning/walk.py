"""The light pass over one pickle: every global it names, without building anything.

A walk over the opcodes that models the stack only as far as names go (strings and opaque values), so
it builds no tensors and no object graph and keeps going as far as the bytes allow. Two readings of one
pickle can differ: protocol 4 frames are checked by pickle.py, while Python's C unpickler reads across
their ends (and, reading a file before 3.13.15/3.14.7, skips to a frame's end when an opcode crosses it).
:func:`walk_pickle` walks the bytes as the C unpickler does; where frames and opcodes disagree it also
walks every other reading, reports the globals of all of them, and marks the disagreement dangerous.
"""
from __future__ import annotations

import re
import struct
from typing import Any

from ...read.pickle.unpickler import BASE_UNITS, BYTES_PER_UNIT
from .report import COMPUTED, FRAMES, PickleScan

MAX_NAME = 4096                # longer strings are kept as a placeholder (no module name is that long)
MAX_REREAD = 64 << 20          # a divergent pickle up to this size is also re-read as the C unpickler reads a file
MAX_SPLICES = 16               # frame ends the C reading skips before the scan stops following it

class _Opaque:
    """A stack value the walk does not model (anything that is not a literal string)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<value>"


_V = _Opaque()


class _Broken(Exception):
    def __init__(self, message: str, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated


# Opcodes by what they do to the stack (pickletools' stack_before/stack_after, values opaque).
_PUSH0 = frozenset(b"NF)]}\x88\x89\x8f")                  # no argument, push one value
_POP1_PUSH1 = frozenset(b"Q\x85")                          # BINPERSID, TUPLE1
_POP2_PUSH1 = frozenset(b"R\x81\x86")                      # REDUCE, NEWOBJ, TUPLE2
_MARK_PUSH1 = frozenset(b"tld\x91o")                       # TUPLE, LIST, DICT, FROZENSET, OBJ
_FIXED_ARG = {0x4B: 1, 0x4D: 2, 0x4A: 4, 0x47: 8, 0x80: 1}   # BININT1/2, BININT, BINFLOAT, PROTO
_UNPACK_I = struct.Struct("<I").unpack_from
_PUSH_FAST = frozenset(b"K\x89)]}\x88N")       # BININT1, NEWFALSE, EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, NEWTRUE, NONE


def walk_pickle(data, *, start: int = 0, end: int | None = None, name: str = "pickle") -> PickleScan:
    """Every global one pickle names, read from ``data[start:end]`` without building any object.

    Stops at ``STOP`` (``end`` of the result is the offset after it) or at the first byte that plain
    pickle would also stop at (then ``complete`` is False and ``problem`` says why). Strings are the only
    values modelled, so that ``STACK_GLOBAL`` sees the names it would import, also through the memo.
    ``storage_keys`` of the result: the keys of torch storages its persistent ids name.
    """
    end = len(data) if end is None else min(end, len(data))
    first = _walk(data, start, end, name, True)
    if first.divergence is None:
        return first
    where, frame_end, kind, frame_start = first.divergence
    label = ("an opcode crosses the end of its FRAME" if kind == "crossing" else
             "a FRAME begins before the previous frame ends")
    # pickle.py stops at the divergence; the C unpickler reading bytes (pickle.loads) reads frames as if
    # they were not there; reading a file it skips to the frame's end. Report what every reading names.
    result = _walk(data, start, end, name, False)
    result.counts |= first.counts
    result.counts[(FRAMES, f"{label} at byte {where - start}")] += 1
    result.storage_keys |= first.storage_keys
    if kind == "crossing" and end - start <= MAX_REREAD:
        buf = bytearray(data[start:end])
        cut, cut_end, body = where - start, frame_end - start, frame_start - start
        for _ in range(MAX_SPLICES):
            # What the C unpickler reads: the frame's bytes up to where the crossing read began, then the
            # bytes from the frame's declared end on (the rest of the frame is dropped), read as one stream.
            del buf[cut:cut_end]
            del buf[body - 9:body]
            again = _walk(buf, 0, len(buf), name, True)
            result.counts |= again.counts
            result.storage_keys |= again.storage_keys
            if again.divergence is None or again.divergence[2] != "crossing":
                break
            cut, cut_end, body = again.divergence[0], again.divergence[1], again.divergence[3]
    return result


def _walk(data, start: int, end: int, name: str, frames: bool) -> PickleScan:
    """One reading of the pickle. ``frames``: follow FRAME opcodes as the C unpickler reading a file
    does, and stop at the first opcode that crosses a frame's end (``divergence`` says where)."""
    result = PickleScan(name)
    result.divergence = None
    counts = result.counts
    storage_keys = result.storage_keys
    real_end = end
    frame_end = frame_start = -1
    stack: list = []
    metastack: list = []
    memo: dict = {}
    pos = start
    # The reader's object budget (unpickler.BASE_UNITS) allows half as many memo entries; past that a
    # pickle is built to exhaust memory (3 MB of MEMOIZE opcodes once took 360 MB here).
    memo_limit = (BASE_UNITS + max(end - start, 0) // BYTES_PER_UNIT) // 2
    # LONG_BINPUT (5 bytes each, the most frequent opcode of a torch pickle) can add at most a fifth of the
    # pickle's length in entries: when that is within the limit, it need not check (the other opcodes
    # still do, so the memo stays under twice the limit).
    put_check = max(end - start, 0) // 5 > memo_limit

    def too_big() -> _Broken:
        return _Broken(f"{name}: the memo grows past {memo_limit:,} entries; the pickle looks built to "
                       f"exhaust memory")

    def need(n: int) -> None:
        nonlocal end, frame_end
        if pos + n > end:
            if pos == end < real_end:
                # A read that starts exactly where the frame ends reads on past it (pickle.py writes large
                # strings and bytes after the frame that holds their opcode).
                end, frame_end = real_end, -1
                if pos + n <= end:
                    return
            raise _Broken(f"{name} ends at byte {end - start} in the middle of a pickle", truncated=True)

    def line() -> bytes:
        nonlocal pos, end, frame_end
        nl = data.find(b"\n", pos, end)
        if nl < 0 and pos == end < real_end:
            end, frame_end = real_end, -1
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
    push_fast = _PUSH_FAST
    try:
        while True:
            if pos >= end:
                if end < real_end:               # the current frame ends here; reads go on past it
                    end = real_end
                    frame_end = -1
                    continue
                raise _Broken(f"{name} ends at byte {end - start} in the middle of a pickle", truncated=True)
            op = data[pos]
            pos += 1
            # The opcodes of a state_dict pickle, most frequent first (this loop is the scan's hot path).
            if op == 0x72:                                      # LONG_BINPUT
                if pos + 4 > end:
                    need(4)
                try:
                    memo[unpack_I(data, pos)[0]] = stack[-1]
                except IndexError:
                    raise _Broken(f"{name}: PUT on an empty stack at byte {pos - start}") from None
                pos += 4
                if put_check and len(memo) > memo_limit:
                    raise too_big()
                continue
            if op == 0x68:                                      # BINGET
                if pos >= end:
                    need(1)
                idx = data[pos]
                pos += 1
                try:
                    stack.append(memo[idx])
                except KeyError:
                    raise _Broken(f"{name}: memo entry {idx} read before it was written") from None
                continue
            if op in push_fast:
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
                items = stack
                stack = metastack.pop()
                # torch's persistent id ("storage", type, key, location, numel[, view]): keep its key, as
                # bytes (no other stack value is bytes, and bytes are not tracked by the garbage collector,
                # which 10^5 tuples kept in the memo would wake up a hundred times)
                if items and type(items[0]) is str and items[0] == "storage" and len(items) > 2 and type(items[2]) is str:
                    stack.append(items[2].encode("utf-8", "surrogatepass"))
                else:
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
                if op == 0x51 and type(stack[-1]) is bytes:
                    storage_keys.add(stack[-1].decode("utf-8", "surrogatepass"))
                stack[-1] = _V
                continue
            if op == 0x95:                                      # FRAME
                need(8)
                n = int.from_bytes(data[pos:pos + 8], "little")
                pos += 8
                if not frames:
                    continue
                if 0 <= pos < frame_end:
                    # pickle.py refuses a frame that begins inside another; the C unpickler reads on, its
                    # buffer still ending where the first frame ends.
                    if result.divergence is None:
                        result.divergence = (pos - 9, frame_end, "nested", frame_start)
                    need(n)                  # reading the frame's bytes must not cross the current one's end
                    if frame_end >= 0:
                        continue
                frame_start, frame_end = pos, pos + n
                end = min(frame_end, real_end)
                continue
            if op in _FIXED_ARG:
                n = _FIXED_ARG[op]
                need(n)
                if op == 0x80 and data[pos] > 5:
                    raise _Broken(f"{name}: unsupported pickle protocol {data[pos]}")
                pos += n
                if op != 0x80:
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
        if e.truncated and end < real_end:
            # A read crosses the end of the current frame: pickle.py stops; the C unpickler reading a file
            # drops what is left of the frame and reads on from its end. The caller walks both readings.
            result.divergence = (pos, frame_end, "crossing", frame_start)
        result.complete = False
        result.problem = str(e)
        result.end = pos
        return result
    except (MemoryError, RecursionError):
        result.complete = False
        result.problem = f"{name}: too large to scan"
        result.end = pos
        return result




_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def looks_like_pickle(scan: PickleScan) -> bool:
    """Whether a walk from a member's first byte found a pickle, whatever the member is called: the walk
    read to STOP, or it names a global a loader could import (module and name are identifiers). Text and
    tensor bytes stop at their first bytes without naming one; a pickle that runs code names one."""
    if scan.complete:
        return True
    # An extension code (EXT1/2/4) is not evidence: two bytes of tensor data make one, and unpickling it
    # needs a registry a normal process does not have.
    return any(type(m) is str and type(n) is str and _IDENT.match(m) is not None and _IDENT.match(n) is not None
               and not (m == "copyreg" and n.startswith("extension_code_")) for m, n in scan.counts)
