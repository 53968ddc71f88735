"""A zip archive seen two ways: through its central directory and through its local headers.

Readers disagree about zips on purpose-built files: torch (miniz) finds a member through the central
directory and skips its local header without comparing it; Python's zipfile (``numpy.load``, people
unpacking) also reads the directory but refuses a local name that differs; streaming unpackers walk the
local headers from the start and never look at the directory. A scanner that trusts one view misses what
another reader runs. :func:`layout` reads every local header the directory points to (vectorised with
numpy: a torch file has one member per tensor), compares the two views, and finds the bytes neither
accounts for (gaps, data before or after the archive), where local entries the directory does not list
can hide. :func:`walk_local` walks local headers through a byte range, for gaps and for archives whose
directory is unreadable. Nothing here inflates member data except to find where a deflated member of
unknown size ends.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np

from .zipreader import REFUSED_FLAGS, ZipArchive

_LFH = struct.Struct("<4sHHHHHIIIHH")          # local file header (30 bytes)
_LFH_DTYPE = np.dtype([("sig", "<u4"), ("version", "<u2"), ("flags", "<u2"), ("method", "<u2"), ("time", "<u2"),
                       ("date", "<u2"), ("crc", "<u4"), ("csize", "<u4"), ("usize", "<u4"), ("nlen", "<u2"),
                       ("xlen", "<u2")])
_CDH_DTYPE = np.dtype([("sig", "<u4"), ("made", "<u2"), ("need", "<u2"), ("flags", "<u2"), ("method", "<u2"),
                       ("time", "<u2"), ("date", "<u2"), ("crc", "<u4"), ("csize", "<u4"), ("usize", "<u4"),
                       ("nlen", "<u2"), ("xlen", "<u2"), ("clen", "<u2"), ("disk", "<u2"), ("iattr", "<u2"),
                       ("eattr", "<u4"), ("hoff", "<u4")])
_LOCAL_SIG = 0x04034B50
_CD_SIG = 0x02014B50
_DESC_SIG = 0x08074B50
MAX_LOCAL_ENTRIES = 100_000     # local headers walked in one byte range
MAX_DESCRIPTOR_SEARCH = 4096    # candidate data descriptors tried for one stored member of unknown size
MAX_EXTENT_INFLATE = 1 << 30    # bytes inflated (and dropped) to find where a deflated member ends


@dataclass
class Layout:
    """The two views of an archive's members, and what lies outside both."""

    data_start: list[int]                    # per central directory entry: where torch reads its data (-1: none)
    local: dict[int, tuple]                  # entry index -> its local header's fields, where they differ
    anomalies: list[str] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)     # bytes no member, directory or end record holds
    trailing: tuple[int, int] | None = None  # bytes after the end record and its comment
    comment: tuple[int, int] | None = None   # the end record's comment


@dataclass
class LocalEntry:
    """A member found by its local header."""

    offset: int
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    size: int
    data_start: int
    data_end: int
    truncated: bool = False      # its data runs past the end of the range
    how: str = "sizes"           # how its end was found: sizes | descriptor | deflate | next header | end


def _gather(arr: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """``width`` bytes at each offset (offsets must leave room for them), as an (n, width) array."""
    windows = np.lib.stride_tricks.as_strided(arr, shape=(arr.size - width + 1, width), strides=(1, 1),
                                              writeable=False)
    return windows[offsets]


def layout(archive: ZipArchive) -> Layout:
    """Compare each directory entry with its local header and find the bytes between records."""
    buf, start, end = archive.buf, archive.start, archive.end
    entries = archive.entries
    n = len(entries)
    out = Layout([-1] * n, {})
    arr = np.frombuffer(buf, dtype=np.uint8, count=end) if n else np.zeros(0, np.uint8)
    # The directory's fields, gathered from its bytes (one Python pass over 10^5 entries would cost more
    # than the rest together); zip64 values come from the parsed entries.
    cd_pos = np.fromiter(map(attrgetter("directory_offset"), entries), np.int64, n)
    cd = _gather(arr, cd_pos, 46).view(_CDH_DTYPE)[:, 0] if n else np.zeros(0, _CDH_DTYPE)
    offs = cd["hoff"].astype(np.int64) + archive.shift
    csize = cd["csize"].astype(np.int64)
    cd_usize = cd["usize"].astype(np.int64)
    for i in np.flatnonzero((cd["hoff"] == 0xFFFFFFFF) | (cd["csize"] == 0xFFFFFFFF)
                            | (cd["usize"] == 0xFFFFFFFF)).tolist():
        offs[i], csize[i], cd_usize[i] = entries[i].header_offset, entries[i].compressed_size, entries[i].size
    cd_method = cd["method"].astype(np.int64)
    cd_flags = cd["flags"].astype(np.int64)
    cd_crc = cd["crc"].astype(np.int64)
    cd_nlen = cd["nlen"].astype(np.int64)
    ok = (offs >= start) & (offs + _LFH.size <= end)
    if ok.all():
        heads = _gather(arr, offs, _LFH.size).view(_LFH_DTYPE)[:, 0]
    else:
        heads = np.zeros(n, _LFH_DTYPE)
        if ok.any():
            heads[ok] = _gather(arr, offs[ok], _LFH.size).view(_LFH_DTYPE)[:, 0]
    has_sig = ok & (heads["sig"] == _LOCAL_SIG)
    nlen = heads["nlen"].astype(np.int64)
    xlen = heads["xlen"].astype(np.int64)
    data_start = offs + _LFH.size + nlen + xlen
    data_end = data_start + csize
    readable = has_sig & (data_start <= end)
    out.data_start = np.where(readable, data_start, -1).tolist()

    # Local sizes count only when the header carries them (no data descriptor, or nonzero values).
    local_sizes = readable & (((heads["flags"] & 0x8) == 0) | (heads["csize"] != 0))
    zip64 = local_sizes & ((heads["csize"] == 0xFFFFFFFF) | (heads["usize"] == 0xFFFFFFFF))
    local_sizes &= ~zip64
    differs = readable & ((heads["method"] != cd_method)
                          | (((heads["flags"] ^ cd_flags) & REFUSED_FLAGS) != 0)
                          | (local_sizes & ((heads["csize"] != csize) | (heads["usize"] != cd_usize)
                                            | ((heads["crc"] != cd_crc) & ((heads["flags"] & 0x8) == 0)))))
    # Names: compare the local name bytes with the directory's, all at once (as fixed-width windows masked
    # to each name's length; names longer than the window, rare, one by one).
    same_len = readable & (nlen == cd_nlen)
    name_bad = readable & ~same_len
    width = int(min(nlen[same_len].max(initial=0), 256))
    if width:
        local_at, cd_at = offs + _LFH.size, cd_pos + 46
        fast = same_len & (nlen <= width) & (local_at + width <= end) & (cd_at + width <= end)
        idx = np.flatnonzero(fast)
        mask = np.arange(width) < nlen[idx, None]
        diff = (_gather(arr, local_at[idx], width) != _gather(arr, cd_at[idx], width)) & mask
        name_bad[idx[diff.any(axis=1)]] = True
        for i in np.flatnonzero(same_len & ~fast).tolist():
            k = int(nlen[i])
            if bytes(buf[int(local_at[i]):int(local_at[i]) + k]) != bytes(buf[int(cd_at[i]):int(cd_at[i]) + k]):
                name_bad[i] = True
    for i in np.flatnonzero(differs | name_bad).tolist():
        h = heads[i]
        lname = bytes(buf[int(offs[i]) + 30:int(offs[i]) + 30 + int(nlen[i])])
        out.local[i] = (lname.decode("utf-8" if int(h["flags"]) & 0x800 else "cp437", "replace"), int(h["flags"]),
                        int(h["method"]), int(h["crc"]), int(h["csize"]), int(h["usize"]), bool(local_sizes[i]))
    for i in np.flatnonzero(~has_sig).tolist():
        m = entries[i]
        out.anomalies.append(f"zip member {m.name!r} has no local header where the directory says (byte "
                             f"{m.header_offset - start})")
    for i, (lname, lflags, lmethod, lcrc, lcsize, lusize, sized) in out.local.items():
        out.anomalies.extend(_local_differences(entries[i], lname, lflags, lmethod, lcrc, lcsize, lusize, sized))

    # Where each member's bytes end: its data, then a data descriptor when the local flags say so.
    span_end = np.where(readable, data_end, offs)
    desc = _descriptor_lengths(arr, data_end, end, buf, cd_crc, csize, readable & ((heads["flags"] & 0x8) != 0))
    span_end = span_end + desc
    order = np.argsort(offs, kind="stable")
    s_offs, s_end = offs[order], span_end[order]
    if n:
        # Overlaps: a member that starts before the previous one's bytes end.
        reach = np.maximum.accumulate(s_end)
        over = np.flatnonzero(s_offs[1:] < reach[:-1])
        for k in over[:5].tolist():
            a, b = entries[int(order[k])], entries[int(order[k + 1])]
            out.anomalies.append(f"zip members {a.name!r} and {b.name!r} overlap (bytes {b.header_offset - start}.."
                                 f"{int(reach[k]) - start})")
        if over.size > 5:
            out.anomalies.append(f"{over.size - 5} more zip members overlap the one before them")
        # Gaps: between members, before the first one, and between the last one and the directory.
        bounds = np.concatenate(([archive.shift], reach))     # data before the archive is the caller's
        nexts = np.concatenate((s_offs, [archive.cd_start]))
        gap = np.flatnonzero(nexts > bounds)
        for k in gap.tolist():
            lo, hi = int(bounds[k]), min(int(nexts[k]), end)
            if hi > lo:
                out.gaps.append((lo, hi))
    elif archive.cd_start > archive.shift:
        out.gaps.append((archive.shift, archive.cd_start))
    # The end record: its comment, then whatever follows it.
    eocd = archive.eocd
    if eocd >= 0 and eocd + 22 <= end:
        clen = int.from_bytes(bytes(buf[eocd + 20:eocd + 22]), "little")
        if clen:
            out.comment = (eocd + 22, min(eocd + 22 + clen, end))
        if eocd + 22 + clen < end:
            out.trailing = (eocd + 22 + clen, end)
    return out


def _descriptor_lengths(arr: np.ndarray, data_end: np.ndarray, end: int, buf, crc: np.ndarray, csize: np.ndarray,
                        want: np.ndarray) -> np.ndarray:
    """The length of the data descriptor after each member whose local flags announce one: its signature,
    the CRC and 32-bit sizes (16 bytes) or 64-bit ones (24: when a header, not a header's worth of zeros,
    follows at 24). One without a signature (rare; torch always writes it) is checked on its own."""
    out = np.zeros(data_end.size, np.int64)
    idx = np.flatnonzero(want & (data_end + 28 <= end))
    if idx.size:
        words = _gather(arr, data_end[idx], 28).view("<u4")          # words at +0, +4, ..., +24
        has = words[:, 0] == _DESC_SIG
        after16 = (words[:, 4] == _LOCAL_SIG) | (words[:, 4] == _CD_SIG)
        after24 = (words[:, 6] == _LOCAL_SIG) | (words[:, 6] == _CD_SIG)
        out[idx] = np.where(has, np.where(~after16 & after24, 24, 16), 0)
        for k in np.flatnonzero(~has).tolist():                       # no signature: CRC and sizes must match
            i = int(idx[k])
            out[i] = _descriptor_at(buf, int(data_end[i]), end, int(crc[i]), int(csize[i]))
    for i in np.flatnonzero(want & (data_end + 28 > end) & (data_end < end)).tolist():   # the last bytes
        out[i] = _descriptor_at(buf, int(data_end[i]), end, int(crc[i]), int(csize[i]))
    return out


def _local_differences(m, lname: str, lflags: int, lmethod: int, lcrc: int, lcsize: int, lusize: int,
                       sized: bool) -> list[str]:
    out = []
    if lname != m.name:
        out.append(f"zip member {m.name!r} is named {lname!r} in its local header (torch.load reads the "
                   f"directory's name; Python's zipfile refuses the member; an unpacker that walks local "
                   f"headers writes {lname!r})")
    if lmethod != m.method:
        out.append(f"zip member {m.name!r} has compression method {m.method} in the directory and {lmethod} in "
                   f"its local header (torch.load and zipfile use the directory's; both readings are scanned)")
    if (lflags ^ m.flags) & REFUSED_FLAGS:
        out.append(f"zip member {m.name!r} has encryption or patch flags 0x{m.flags:04x} in the directory and "
                   f"0x{lflags:04x} in its local header")
    if sized and (lcsize != m.compressed_size or lusize != m.size):
        out.append(f"zip member {m.name!r} has sizes {m.compressed_size}/{m.size} in the directory and "
                   f"{lcsize}/{lusize} in its local header (both readings are scanned)")
    elif sized and not lflags & 0x8 and lcrc != m.crc:
        out.append(f"zip member {m.name!r} has different CRC-32 values in its two headers")
    return out


# -- walking local headers through a byte range -------------------------------------------------------------
def walk_local(buf, start: int, end: int, known: dict[int, int] | None = None) -> tuple[list[LocalEntry],
                                                                                         list[tuple[int, int]]]:
    """The local entries found from ``start`` to ``end``, one after another, and the byte ranges between
    them that are not local entries. ``known``: compressed sizes by header offset (from a directory), for
    members whose local header leaves the sizes to a data descriptor."""
    entries: list[LocalEntry] = []
    loose: list[tuple[int, int]] = []
    pos = start
    while pos < end and len(entries) < MAX_LOCAL_ENTRIES:
        if pos + _LFH.size > end or bytes(buf[pos:pos + 4]) != b"PK\x03\x04":
            nxt = buf.find(b"PK\x03\x04", pos + 1, end) if pos + 4 <= end else -1
            stop = end if nxt < 0 else nxt
            loose.append((pos, stop))
            pos = stop
            continue
        _sig, _v, flags, method, _t, _d, crc, csize, usize, nlen, xlen = _LFH.unpack_from(buf, pos)
        name = bytes(buf[pos + 30:pos + 30 + nlen]).decode("utf-8" if flags & 0x800 else "cp437", "replace")
        data_start = pos + 30 + nlen + xlen
        if data_start > end:
            loose.append((pos, end))
            break
        if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF:
            csize, usize = _local_zip64(bytes(buf[pos + 30 + nlen:data_start]), csize, usize)
        entry = LocalEntry(pos, name, flags, method, crc, csize, usize, data_start, data_start)
        length, how = _extent(buf, data_start, end, flags, method, csize, known.get(pos) if known else None)
        entry.how = how
        entry.data_end = min(data_start + length, end)
        entry.truncated = data_start + length > end
        entries.append(entry)
        pos = entry.data_end
        if flags & 0x8 and pos < end:
            pos += _descriptor_at(buf, pos, end, crc, length)
    if pos < end:
        loose.append((pos, end))
    return entries, loose


def _extent(buf, data_start: int, end: int, flags: int, method: int, csize: int, known: int | None) -> tuple[int, str]:
    """How many bytes of data a local entry has, and how that was found."""
    if not flags & 0x8 or csize:
        return csize, "sizes"
    if known is not None:
        return known, "directory"
    if method == 8:
        used = _deflate_extent(buf, data_start, end)
        if used is not None:
            return used, "deflate"
    # A stored member of unknown size: the data descriptor whose size field matches the distance to it.
    pos, tries = data_start, 0
    while tries < MAX_DESCRIPTOR_SEARCH:
        c = buf.find(b"PK\x07\x08", pos, end)
        if c < 0 or c + 16 > end:
            break
        tries += 1
        dist = c - data_start
        if int.from_bytes(bytes(buf[c + 8:c + 12]), "little") == dist or (
                c + 24 <= end and int.from_bytes(bytes(buf[c + 8:c + 16]), "little") == dist):
            return dist, "descriptor"
        pos = c + 1
    for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"):
        c = buf.find(sig, data_start, end)
        if c >= 0:
            return c - data_start, "next header"
    return end - data_start, "end"


def _deflate_extent(buf, start: int, end: int) -> int | None:
    """Where a deflate stream that starts at ``start`` ends (its output is dropped, up to a cap)."""
    d = zlib.decompressobj(-15)
    view = memoryview(buf)[start:end]
    used = produced = 0
    step = 1 << 20
    try:
        while used < len(view) and not d.eof and produced < MAX_EXTENT_INFLATE:
            piece = view[used:used + step]
            chunk = d.decompress(piece, step * 4)
            produced += len(chunk)
            while d.unconsumed_tail and produced < MAX_EXTENT_INFLATE:
                produced += len(d.decompress(d.unconsumed_tail, step * 4))
            used += len(piece) - len(d.unused_data)
            if d.eof:
                return used
    except zlib.error:
        return None
    return None


def _descriptor_at(buf, pos: int, end: int, crc: int, length: int) -> int:
    """The length of the data descriptor at ``pos``: an optional signature, the CRC, then 32-bit or 64-bit
    sizes (0 when the bytes there are not one)."""
    base = 4 if bytes(buf[pos:pos + 4]) == b"PK\x07\x08" else 0

    def field(off: int, width: int) -> int:
        return int.from_bytes(bytes(buf[pos + base + off:pos + base + off + width]), "little")

    if pos + base + 12 > end or (not base and field(0, 4) != crc):
        return 0
    fits32 = field(4, 4) == length & 0xFFFFFFFF
    fits64 = pos + base + 20 <= end and field(4, 8) == length
    if fits64 and (not fits32 or bytes(buf[pos + base + 20:pos + base + 22]) == b"PK"):
        return base + 20
    return base + 12 if fits32 or base else 0


def _local_zip64(extra: bytes, csize: int, usize: int) -> tuple[int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        pos += 4 + length
        if tag == 1 and len(body) >= 16:
            return struct.unpack_from("<Q", body, 8)[0], struct.unpack_from("<Q", body, 0)[0]
    return csize, usize
