"""A read-only zip directory parser that checks what a hostile archive could get wrong.

torch.save writes an uncompressed zip (with data descriptors and 64-byte aligned members); we only
need the directory and each member's byte range, read through a memory map. The standard
``zipfile`` module would parse the directory too, but it keeps the last of duplicate names, does not
compare local and central headers, and has no inflation cap; these checks are the point here.
Member names are never used as file system paths.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ...source.filebytes import file_bytes
from ...util.checksum import crc32
from ...util.errors import CorruptFileError, LimitExceededError, TruncatedFileError, UnsupportedFormatError

_EOCD = struct.Struct("<4sHHHHIIH")            # end of central directory (22 bytes)
_EOCD64_LOC = struct.Struct("<4sIQI")          # zip64 end of central directory locator (20 bytes)
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")        # zip64 end of central directory record (56 bytes)
_CDH = struct.Struct("<4sHHHHHHIIIHHHHHII")    # central directory header (46 bytes)
_LFH = struct.Struct("<4sHHHHHIIIHH")          # local file header (30 bytes)

MAX_INFLATED = 4 << 30          # a compressed member may not expand past 4 GiB
MAX_RATIO = 1000                # ... nor by more than 1000:1 once past 1 MiB
# A pickle is inflated whole when the file is opened (a tensor record only when its values are read),
# so pickles get a tighter guard: a 2 MB file may not make the reader allocate more than ~200 MB.
# Real pickles deflate 3-20:1; torch itself stores them uncompressed.
PICKLE_MAX_RATIO = 100
MAX_ENTRIES = 5_000_000
# Flags torch (miniz) and zipfile refuse a member for: encrypted, patched data, strong encryption, encrypted
# central directory.
REFUSED_FLAGS = 0x1 | 0x20 | 0x40 | 0x2000


@dataclass(slots=True)
class ZipMember:
    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int = -1
    directory_offset: int = -1     # where its central directory entry starts (for patching a CRC)
    problem: str | None = None     # why its bytes cannot be read (encrypted, outside the file)
    name_size: int = 0             # bytes of its name in the directory


class ZipArchive:
    """The members of a zip held in ``buf`` (bytes or an mmap). ``warnings`` collects oddities."""

    def __init__(self, buf, *, name: str = "archive", start: int = 0, end: int | None = None,
                 recover: bool = False):
        # [start, end) of ``buf`` is the archive: a torch.save archive embedded in a bigger file (a
        # torch.distributed.checkpoint chunk) is read in place, its offsets relative to ``start``.
        # ``buf`` is a buffer (a map, bytes) or a FileBytes (a remote file): every read goes through
        # ``self.src``, so the directory and each header are fetched by range when the file is remote.
        self.src = file_bytes(buf, name)
        if end is None:
            end = self.src.size
        if not 0 <= start <= end <= self.src.size:
            raise CorruptFileError(f"an embedded archive at bytes {start}..{end} lies outside the file")
        self.buf = buf
        self.name = name
        self.start = start
        self.end = end
        self.warnings: list[str] = []
        self.nested = False          # stored inside another archive's member (that member's CRC covers it)
        self.members: dict[str, ZipMember] = {}
        self.order: list[str] = []
        # Every central directory entry in order, duplicates included (``members`` keeps the later of two
        # entries with one name, as torch and zipfile read it); the scan looks at all of them.
        self.entries: list[ZipMember] = []
        self.cd_start = self.cd_end = self.eocd = -1
        self.shift = start
        self.cut: str | None = None          # set when the archive was read from its local headers
        if recover:
            self._parse_local()
        else:
            self._parse()

    # ------------------------------------------------------------------------------------------
    def _parse_local(self) -> None:
        """An archive without its directory (a download cut short): walk the local headers from the
        start. torch writes each member's sizes in a data descriptor after its bytes, so a member ends at
        the first descriptor whose size field equals the distance from the member's start (a chance
        match inside tensor bytes would also have to name that distance). The member the cut falls in
        keeps the bytes that are there; members after it do not exist. Nothing is read but headers."""
        buf = None if self.src.is_remote else self.src.buffer
        if not hasattr(buf, "find"):
            # Finding where each member ends means reading all of it: not done over the network (nor for
            # an archive held in another kind of buffer).
            raise TruncatedFileError("the zip archive has no end record (the file was cut short)")
        pos, size = self.start, self.end
        while pos + _LFH.size <= size and len(self.members) < MAX_ENTRIES:
            sig, _v, flags, method, _t, _d, crc, csize, usize, nlen, xlen = _LFH.unpack_from(buf, pos)
            if sig != b"PK\x03\x04":
                break
            data = pos + _LFH.size + nlen + xlen
            if data > size:
                break
            name = bytes(buf[pos + 30:pos + 30 + nlen]).decode("utf-8" if flags & 0x800 else "cp437", "replace")
            if flags & 0x1 or flags & 0x40 or flags & 0x2000:
                raise UnsupportedFormatError(f"zip member {name!r} is encrypted")
            if name in self.members:
                raise CorruptFileError(f"the zip archive holds two members named {name!r}")
            after = 0
            if flags & 0x8 or csize == 0xFFFFFFFF:
                found = self._descriptor(data)
                if found is None:
                    csize = usize = size - data           # the cut falls inside this member
                    self.cut = name
                else:
                    crc, csize, usize, after = found
            elif data + csize > size:
                csize = usize = size - data
                self.cut = name
            self.members[name] = ZipMember(name, method, flags, crc, csize, usize, pos, data, -1, None, nlen)
            self.entries.append(self.members[name])
            self.order.append(name)
            if self.cut is not None:
                return
            pos = data + csize + after
        if not self.members:
            raise TruncatedFileError("the zip archive has no end record (the file was cut short), and no "
                                     "member could be found from the start of the file")
        self.cut = self.cut or ""

    def _descriptor(self, data: int) -> tuple[int, int, int, int] | None:
        """(crc, compressed size, size, descriptor length) of the member whose bytes start at ``data``."""
        buf, size = self.src.buffer, self.end
        p = buf.find(b"PK\x07\x08", data, size)
        while p >= 0:
            if p + 16 <= size:
                crc, c32, u32 = struct.unpack_from("<III", buf, p + 4)
                if c32 == p - data:
                    return crc, c32, u32, 16
            if p + 24 <= size:
                crc, c64, u64 = struct.unpack_from("<IQQ", buf, p + 4)
                if c64 == p - data:
                    return crc, c64, u64, 24
            p = buf.find(b"PK\x07\x08", p + 1, size)
        return None

    # ------------------------------------------------------------------------------------------
    def _find_eocd(self) -> int:
        size = self.end
        if size - self.start < _EOCD.size:
            raise TruncatedFileError("the zip archive is shorter than its end record")
        lo = max(self.start, size - _EOCD.size - 0xFFFF)
        # The end record and, when torch wrote them, the zip64 records before it: one read of the tail.
        tail_lo = max(self.start, lo - _EOCD64_LOC.size - _EOCD64.size)
        self._tail = (tail_lo, bytes(self.src.view(tail_lo, size - tail_lo)))
        tail = self._tail[1]
        pos = tail.rfind(b"PK\x05\x06", lo - tail_lo)
        pos = pos + tail_lo if pos >= 0 else -1
        while pos >= 0:
            if pos + _EOCD.size <= size:
                comment_len = _EOCD.unpack_from(tail, pos - tail_lo)[7]
                if pos + _EOCD.size + comment_len <= size:
                    if pos + _EOCD.size + comment_len < size:
                        self.warnings.append(f"{size - pos - _EOCD.size - comment_len} bytes follow the end of "
                                             f"the zip archive (a polyglot or appended data)")
                    return pos
            found = tail.rfind(b"PK\x05\x06", lo - tail_lo, pos - tail_lo)
            pos = found + tail_lo if found >= 0 else -1
        raise TruncatedFileError("the zip archive has no end record (the file was cut short)")

    def _read_at(self, pos: int, length: int) -> bytes:
        """Bytes [pos, pos + length), from the tail already read when they lie in it."""
        tail_lo, tail = self._tail
        if tail_lo <= pos and pos + length <= tail_lo + len(tail):
            return tail[pos - tail_lo:pos - tail_lo + length]
        return bytes(self.src.view(pos, length))

    def _parse(self) -> None:
        size = self.end
        eocd = self._find_eocd()
        _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _ = _EOCD.unpack(self._read_at(eocd, _EOCD.size))
        cd_end_expected = eocd
        loc = eocd - _EOCD64_LOC.size
        needs64 = n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF
        if loc >= self.start and self._read_at(loc, 4) == b"PK\x06\x07":
            # torch always writes zip64 end records; the central directory ends where they begin.
            _, _, rec_off, _ = _EOCD64_LOC.unpack(self._read_at(loc, _EOCD64_LOC.size))
            rec_off += self.start
            if (rec_off + _EOCD64.size > loc or self._read_at(rec_off, 4) != b"PK\x06\x06") \
                    and loc - _EOCD64.size >= self.start and self._read_at(loc - _EOCD64.size, 4) == b"PK\x06\x06":
                # Data before the archive shifts the locator's offset too; the record sits right before it.
                rec_off = loc - _EOCD64.size
            if rec_off < self.start or rec_off + _EOCD64.size > loc or self._read_at(rec_off, 4) != b"PK\x06\x06":
                raise CorruptFileError("the zip64 end record is missing or misplaced")
            (_, _, _, _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset) = _EOCD64.unpack(
                self._read_at(rec_off, _EOCD64.size))
            cd_end_expected = rec_off
        elif needs64:
            raise CorruptFileError("the zip64 end record locator is missing")
        if disk != 0 or cd_disk != 0 or n_disk != n_total:
            raise UnsupportedFormatError("multi-part (spanned) zip archives are not supported")
        if n_total > MAX_ENTRIES:
            raise LimitExceededError(f"the zip archive declares {n_total:,} members")
        # Data prepended to the archive shifts every offset; torch never writes it.
        shift = cd_end_expected - cd_size - cd_offset
        if shift < self.start or cd_offset + shift + cd_size > size:
            raise CorruptFileError("the zip central directory lies outside the file")
        if shift > self.start:
            self.warnings.append(f"{shift - self.start} bytes precede the zip archive (a polyglot or "
                                 f"self-extracting file)")
        # The whole directory in one read (one fetch for a remote file), parsed in memory; positions
        # below stay file positions, ``base`` turns them into positions in ``buf``.
        base = cd_offset + shift
        buf = self._read_at(base, cd_size)
        pos = 0
        end = cd_size
        self.cd_start, self.cd_end, self.eocd = base, base + cd_size, eocd
        self.shift = shift              # bytes before the archive's own offset 0 (prepended data)
        for i in range(n_total):
            entry_pos = base + pos
            if pos + _CDH.size > end:
                raise CorruptFileError(f"the zip central directory ends inside entry {i}")
            (sig, _vmade, _vneed, flags, method, _t, _d, crc, csize, usize, nlen, xlen, clen, disk_start,
             _ia, _ea, hoff) = _CDH.unpack_from(buf, pos)
            if sig != b"PK\x01\x02":
                raise CorruptFileError(f"zip central directory entry {i} has a bad signature")
            name = str(buf[pos + 46:pos + 46 + nlen], "utf-8" if flags & 0x800 else "cp437", "replace")
            if usize == 0xFFFFFFFF or csize == 0xFFFFFFFF or hoff == 0xFFFFFFFF:
                extra = bytes(buf[pos + 46 + nlen:pos + 46 + nlen + xlen])
                usize, csize, hoff = _zip64_extra(extra, usize, csize, hoff)
            pos += 46 + nlen + xlen + clen
            if pos > end:
                raise CorruptFileError(f"zip central directory entry {i} runs past the directory")
            hoff += shift
            member = ZipMember(name, method, flags, crc, csize, usize, hoff, -1, entry_pos, None, nlen)
            # Oddities that concern one member are recorded, not raised: the archive's other members stay
            # readable, and what the member holds is refused only when it is read (see directory_anomalies).
            if flags & REFUSED_FLAGS:
                member.problem = (f"zip member {name!r} is encrypted or patched (flags 0x{flags:04x}): torch.load and "
                                  f"zipfile refuse it")
            elif hoff + _LFH.size > size or hoff + csize > size:
                member.problem = f"zip member {name!r} lies outside the file"
            self.entries.append(member)
            if name not in self.members:
                self.order.append(name)
            self.members[name] = member       # a later duplicate wins, as in torch (miniz) and zipfile
        if pos != end:
            self.warnings.append("the zip central directory has bytes after its last entry")

    # ------------------------------------------------------------------------------------------
    def data_offset(self, member: ZipMember) -> int:
        """Where the member's bytes start, after checking its local header against the directory."""
        if member.data_offset >= 0:
            return member.data_offset
        if member.problem is not None:
            raise (UnsupportedFormatError if member.flags & REFUSED_FLAGS else CorruptFileError)(member.problem)
        h = member.header_offset
        sig, _v, flags, method, _t, _d, _crc, _cs, _us, nlen, xlen = _LFH.unpack(self.src.view(h, _LFH.size))
        if sig != b"PK\x03\x04":
            raise CorruptFileError(f"zip member {member.name!r} has no local header where the directory says")
        if h + 30 + nlen > self.end:
            raise TruncatedFileError(f"zip member {member.name!r} has a local header cut off by the end of the file")
        # torch (miniz) reads a member as its central directory entry says and skips the local header's
        # name and extra fields without comparing them; so do we, with a warning when they disagree.
        local_name = bytes(self.src.view(h + 30, nlen)).decode("utf-8" if flags & 0x800 else "cp437", "replace")
        self.warnings.extend(local_header_anomalies(member, local_name, flags, method))
        start = h + 30 + nlen + xlen
        if start + member.compressed_size > self.end:
            raise TruncatedFileError(f"zip member {member.name!r} ends past the end of the file")
        member.data_offset = start
        return start

    def raw(self, name: str) -> memoryview:
        """The member's stored bytes (compressed if it is compressed), as a view of the buffer."""
        m = self.members[name]
        start = self.data_offset(m)
        return self.src.view(start, m.compressed_size)

    def read(self, name: str, *, check_crc: bool = False, limit: int = MAX_INFLATED,
             max_ratio: int = MAX_RATIO) -> bytes:
        """The member's content, inflated under a cap (and a ratio guard) when compressed."""
        m = self.members[name]
        raw = self.raw(name)
        if m.method == 0:
            if m.compressed_size != m.size:
                raise CorruptFileError(f"stored zip member {name!r} has two different sizes")
            data = bytes(raw)
        elif m.method == 8:
            data = inflate(raw, m.size, name, limit, max_ratio)
        else:
            raise UnsupportedFormatError(f"zip member {name!r} uses compression method {m.method}")
        if check_crc and crc32(data) != m.crc:
            raise CorruptFileError(f"zip member {name!r} fails its CRC-32 check")
        return data

    def __contains__(self, name: str) -> bool:
        return name in self.members


def inflate(raw, declared: int, name: str, limit: int = MAX_INFLATED, max_ratio: int = MAX_RATIO) -> bytes:
    """Inflate a deflated member, refusing to grow past ``limit`` or far past its declared size."""
    cap = min(limit, max(declared, 0))
    if declared > limit:
        raise LimitExceededError(f"zip member {name!r} declares {declared:,} bytes inflated")
    if declared > (1 << 20) and declared / max(len(raw), 1) > max_ratio:
        raise LimitExceededError(f"zip member {name!r} would inflate {declared / len(raw):.0f}-fold")
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(raw, cap + 1)
    except zlib.error as e:
        raise CorruptFileError(f"zip member {name!r} does not inflate: {e}") from None
    if len(out) > cap or d.unconsumed_tail:
        raise LimitExceededError(f"zip member {name!r} inflates past its declared {declared:,} bytes")
    if len(out) != declared:
        raise CorruptFileError(f"zip member {name!r} inflates to {len(out):,} bytes, not {declared:,}")
    return out


def _zip64_extra(extra: bytes, usize: int, csize: int, hoff: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        pos += 4 + length
        if tag != 1:
            continue
        fields = iter(struct.unpack_from(f"<{len(body) // 8}Q", body))
        try:
            if usize == 0xFFFFFFFF:
                usize = next(fields)
            if csize == 0xFFFFFFFF:
                csize = next(fields)
            if hoff == 0xFFFFFFFF:
                hoff = next(fields)
        except StopIteration:
            raise CorruptFileError("a zip64 extra field is too short") from None
        return usize, csize, hoff
    raise CorruptFileError("a zip64 member has no zip64 extra field")


# -- archive anomalies (issue 13): each is a warning, and the member is read as torch reads it ---------------
def local_header_anomalies(member: ZipMember, local_name: str, flags: int, method: int) -> list[str]:
    """How ``member``'s local header disagrees with its central directory entry (name, method, encryption)."""
    out = []
    if local_name != member.name:
        out.append(f"zip member {member.name!r} is named {local_name!r} in its local header (torch.load reads "
                   f"the directory's name; Python's zipfile refuses the member)")
    if method != member.method:
        out.append(f"zip member {member.name!r} has compression method {member.method} in the directory and "
                   f"{method} in its local header (read as the directory says, as torch.load does)")
    if (flags ^ member.flags) & REFUSED_FLAGS:
        out.append(f"zip member {member.name!r} has different encryption or patch flags in its two headers "
                   f"(0x{member.flags:04x} and 0x{flags:04x})")
    return out


def directory_anomalies(archive: ZipArchive, prefix: str | None = None, *, limit: int = 5,
                        overlaps: bool = True) -> list[str]:
    """What the central directory alone shows is odd: duplicate names, encrypted members, members that
    overlap or lie outside the file, and, for a torch archive (``prefix``: the folder of its data.pkl),
    members outside the archive's top folder (torch.load reads only records under the first entry's
    folder). Reads no local header, so it costs nothing per tensor."""
    out: list[str] = []
    entries = archive.entries

    def listed(names: list[str]) -> str:
        shown = ", ".join(repr(n) for n in names[:limit])
        return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")

    if len(entries) != len(archive.members):
        seen: dict[str, int] = {}
        for m in entries:
            seen[m.name] = seen.get(m.name, 0) + 1
        dups = [n for n, k in seen.items() if k > 1]
        out.append(f"the zip archive holds {len(entries) - len(archive.members)} duplicate member name(s): "
                   f"{listed(dups)}; torch.load and zipfile read the later entry of each")
    # One pass (a torch file has one entry per tensor): unreadable members, and whether the entries are in
    # file order (then neighbours are all the overlap check needs).
    bad: list[ZipMember] = []
    outside: list[str] = []
    in_order = True
    last = -1
    first = entries[0].name if entries else ""
    top = first.split("/", 1)[0] + "/" if "/" in first else None
    check_top = prefix is not None and top is not None
    for m in entries:
        if m.problem is not None:
            bad.append(m)
        if m.header_offset <= last:
            in_order = False
        last = m.header_offset
        if check_top and not m.name.startswith(top):
            outside.append(m.name)
    for m in bad[:limit]:
        out.append(m.problem)
    if len(bad) > limit:
        out.append(f"{len(bad) - limit} more zip members cannot be read")
    if entries and prefix is not None:
        if top is None:
            out.append(f"the archive's first entry {entries[0].name!r} is not in a folder; torch.load refuses "
                       f"such archives")
        elif prefix is not None and prefix != top:
            out.append(f"torch.load looks for records under {top!r} (the first entry's folder), not under "
                       f"{prefix!r}")
        if outside:
            out.append(f"{len(outside)} zip member(s) lie outside the archive's top folder {top!r} "
                       f"(torch.load never reads them): {listed(outside)}")
    pairs = overlapping_members(entries, in_order) if overlaps else []
    for a, b in pairs[:limit]:
        out.append(f"zip members {a.name!r} and {b.name!r} overlap in the file")
    if len(pairs) > limit:
        out.append(f"{len(pairs) - limit} more pairs of zip members overlap")
    return out


def overlapping_members(entries: list[ZipMember], in_order: bool = False) -> list[tuple[ZipMember, ZipMember]]:
    """Pairs of neighbouring members whose byte ranges overlap. A member's range is at least its local
    header, its directory name and its data (the local extra field may add more), so a pair found here
    certainly overlaps; two entries that share one local header always do. ``in_order``: the entries are
    already sorted by offset (no sort needed)."""
    order = entries if in_order else sorted(entries, key=lambda m: m.header_offset)
    lfh = _LFH.size
    return [(a, b) for a, b in zip(order, order[1:])
            if a.header_offset + lfh + a.name_size + a.compressed_size > b.header_offset]
