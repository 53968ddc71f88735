"""Full integrity check: read every member of a checkpoint's zip archives once and compare its CRC-32.

Opening reads metadata only, and a tensor's bytes are checked against their CRC-32 when they are read
(values, histogram, export, checksums). This is the explicit pass over everything: each member of each
archive the checkpoint was read from (tensor records, pickles, code, JSON), in archive order, in big
chunks with ``core.util.checksum.crc32`` (zlib, or ISA-L when installed), so it runs at about the speed the disk delivers. Members that back tensors
record their verdict, so every view of those tensors shows a mismatch from then on.

Formats without stored checksums (legacy torch files, safetensors) have nothing to compare; the report
says so rather than claiming they were verified.
"""
from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Generator

from ..model.checkpoint import Checkpoint
from ..read.formats.torch_zip import VERIFY_CHUNK, InflatedMemberSource, ZipMemberSource
from ..read.formats.zipreader import MAX_INFLATED, ZipArchive
from ..util.checksum import crc32
from ..util.errors import CheckpointError, CorruptFileError
from ..util.progress import Progress


@dataclass
class MemberProblem:
    archive: str
    member: str
    message: str


@dataclass
class IntegrityReport:
    members: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[MemberProblem] = field(default_factory=list)
    tensors: list[tuple] = field(default_factory=list)     # key paths of tensors whose bytes fail
    checkable: bool = True                                   # False: the format stores no checksums

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        if not self.checkable:
            return ["Integrity: this format stores no checksums (only zip archives carry CRC-32s); nothing to verify"]
        head = (f"Integrity: {self.members:,} zip members, {self.bytes:,} bytes read in {self.seconds:.2f} s "
                f"({self.rate / 1e9:.2f} GB/s): ")
        if self.ok:
            return [head + "every CRC-32 matches"]
        out = [head + f"{len(self.problems)} member{'s' if len(self.problems) != 1 else ''} FAIL"]
        out += [f"  - {p.member}: {p.message}" for p in self.problems[:50]]
        if self.tensors:
            shown = ", ".join("/".join(str(k) for k in p) for p in self.tensors[:10])
            out.append(f"  tensors whose bytes fail: {shown}" + (f", and {len(self.tensors) - 10} more"
                                                                 if len(self.tensors) > 10 else ""))
        return out

    def as_json(self) -> dict:
        return {"checkable": self.checkable, "members": self.members, "bytes": self.bytes,
                "seconds": round(self.seconds, 4), "ok": self.ok,
                "problems": [{"member": p.member, "message": p.message} for p in self.problems],
                "tensors": [list(p) for p in self.tensors]}


def archives_of(ckpt: Checkpoint) -> list[ZipArchive]:
    """The zip archives the checkpoint's tensors (and pickles) were read from, outermost first."""
    found: dict[int, ZipArchive] = {}
    for archive in getattr(ckpt, "archives", ()) or ():
        found.setdefault(id(archive), archive)
    for st in ckpt.storages.values():
        src = st.source
        if isinstance(src, (ZipMemberSource, InflatedMemberSource)):
            found.setdefault(id(src.archive), src.archive)
    # An archive held inside another's member (a nested torch.save zip) is covered by the outer CRC.
    outer = [a for a in found.values() if not getattr(a, "nested", False)]
    return outer or list(found.values())


def verify_steps(ckpt: Checkpoint, chunk: int = VERIFY_CHUNK) -> Generator[Progress, None, IntegrityReport]:
    """Read every member of the checkpoint's archives once; yields :class:`Progress` in bytes."""
    report = IntegrityReport()
    archives = archives_of(ckpt)
    if not archives:
        report.checkable = False
        return report
    started = time.perf_counter()
    sources: dict[tuple[int, str], list] = {}
    for st in ckpt.storages.values():
        src = st.source
        if isinstance(src, (ZipMemberSource, InflatedMemberSource)):
            sources.setdefault((id(src.archive), src.member.name), []).append(src)
    total = sum(m.compressed_size for a in archives for m in a.members.values())
    done = 0
    yield Progress(0, total, "verifying")
    for archive in archives:
        results: dict[str, tuple[int | None, str | None]] = {}
        stored: list[tuple[int, int, str]] = []
        for name in archive.order:
            m = archive.members[name]
            try:
                if m.method == 0:
                    stored.append((archive.data_offset(m), m.compressed_size, name))
                    continue
                crc = _inflated_crc(archive, name, m.size)
                results[name] = (crc, None)
            except CheckpointError as e:
                results[name] = (None, e.message)
            done += m.compressed_size
            yield Progress(done, total, "verifying")
        # Stored members are read in one sequential pass over the file (they lie one after another).
        for step in _stored_crcs(archive, stored, chunk, results):
            done += step
            yield Progress(done, total, "verifying")
        for name in archive.order:
            m = archive.members[name]
            crc, message = results.get(name, (None, "not read"))
            if message is None and crc != m.crc:
                message = f"CRC-32 {crc:08x}, the archive records {m.crc:08x}"
            report.members += 1
            report.bytes += m.compressed_size
            for src in sources.get((id(archive), name), ()):
                _record(src, message, m.crc, crc)
            if message:
                report.problems.append(MemberProblem(archive.name, name, message))
    report.seconds = time.perf_counter() - started
    bad = set()
    for path, t in ckpt.tensor_entries():
        if t.integrity_error and id(t) not in bad:
            bad.add(id(t))
            report.tensors.append(tuple(path))
    return report


def _stored_crcs(archive: ZipArchive, members: list[tuple[int, int, str]], chunk: int,
                 results: dict) -> Generator[int, None, None]:
    """CRC-32 of each stored member (``(data start, size, name)``) from one sequential read of the span they
    cover, in pieces of ``chunk`` bytes; yields the member bytes covered by each piece. Members may overlap
    (a hostile archive): each gets the bytes of its own range."""
    members = sorted(members)
    crcs = {name: 0 for _, _, name in members}
    for _, size, name in members:
        if size == 0:
            results[name] = (0, None)
    members = [m for m in members if m[1] > 0]
    if not members:
        return
    lo = members[0][0]
    hi = max(start + size for start, size, _ in members)
    active: list[tuple[int, int, str]] = []
    nxt = 0
    for pos, piece in _pieces(archive, lo, hi - lo, chunk):
        end = pos + len(piece)
        while nxt < len(members) and members[nxt][0] < end:
            active.append(members[nxt])
            nxt += 1
        covered = 0
        still = []
        for start, size, name in active:
            a, b = max(start, pos), min(start + size, end)
            if b > a:
                crcs[name] = crc32(piece[a - pos:b - pos], crcs[name])
                covered += b - a
            if start + size > end:
                still.append((start, size, name))
            else:
                results[name] = (crcs[name], None)
        active = still
        yield covered


def _pieces(archive: ZipArchive, start: int, size: int, chunk: int):
    """``(position, bytes)`` of ``[start, start + size)`` of the archive's buffer in pieces. A file on disk is
    read with ``pread`` by a helper thread one piece ahead of the caller (``preadv`` and ``crc32`` both
    release the GIL, so the pass runs at the slower of disk and CRC speed, not their sum; sequential reads
    also get the kernel's read-ahead, which page faults through the map do not). Bytes already in memory are
    used in place."""
    src = archive.src
    where = src.file_location(start)
    path = where[0] if where else None
    if not path:
        for pos in range(start, start + size, chunk):
            n = min(chunk, start + size - pos)
            yield pos, src.view(pos, n)
            src.release(pos, n)
        return
    from concurrent.futures import ThreadPoolExecutor
    fd = os.open(path, os.O_RDONLY)
    buffers = [bytearray(min(chunk, size)), bytearray(min(chunk, size))]

    def read(i: int, pos: int) -> memoryview:
        n = min(chunk, start + size - pos)
        view = memoryview(buffers[i])[:n]
        got = os.preadv(fd, [view], pos)
        if got != n:
            raise CorruptFileError(f"the file ends {start + size - pos - got:,} bytes early")
        return view

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckptviewer-verify-read") as pool:
            pos, turn = start, 0
            pending = pool.submit(read, turn, pos)
            while pending is not None:
                view = pending.result()
                here = pos
                pos += len(view)
                turn ^= 1
                pending = pool.submit(read, turn, pos) if pos < start + size else None
                yield here, view
    finally:
        os.close(fd)


def _record(src, message: str | None, expected: int, got: int | None) -> None:
    """Give a tensor record's source the verdict of the full pass (if it had none yet)."""
    if src.verified:
        return
    src.verified = True
    if message:
        got_text = f"{got:08x}" if got is not None else "unreadable bytes"
        src.crc_error = (f"zip member {src.member.name} fails its CRC-32 check (the archive records {expected:08x}, "
                         f"the bytes give {got_text}): the file is damaged and these values may be wrong")


def _inflated_crc(archive: ZipArchive, name: str, declared: int) -> int:
    """CRC-32 of a deflated member, inflated piece by piece under a cap (never held whole)."""
    d = zlib.decompressobj(-15)
    raw = archive.raw(name)
    crc, produced = 0, 0
    limit = min(max(declared, 0), MAX_INFLATED)
    try:
        for pos in range(0, len(raw), 1 << 20):
            data = raw[pos:pos + (1 << 20)]
            while data:
                piece = d.decompress(data, 16 << 20)
                data = d.unconsumed_tail
                produced += len(piece)
                if produced > limit:
                    raise CorruptFileError(f"inflates past its declared {declared:,} bytes")
                crc = crc32(piece, crc)
        crc = crc32(d.flush(), crc)
    except zlib.error as e:
        raise CorruptFileError(f"does not inflate ({e})") from None
    return crc
