"""The scan of one file: what each byte range holds, found from its bytes, and where to look next.

:class:`Scanner` carries the report and the limits through nested containers. The containers' own
modules (``zips``, ``archives``) hand it every member's bytes; it tells them apart by content (a pickle, a
numpy array, a torch legacy file, another archive) whatever the member is called, and walks what could be
unpickled. Nested archives are followed to a bounded depth and a bounded number of unpacked bytes.
"""
from __future__ import annotations

import os
import re
import struct

from ...read.formats.torch_legacy import MAGIC_PREFIX
from ...read.formats.torch_tar import tar_checksum_ok
from . import archives, zips
from .report import NUMPY_LOAD, PickleScan, ScanResult
from .walk import looks_like_pickle, walk_pickle

MAX_PICKLES = 1000             # consecutive pickles walked in one byte range
MAX_DEPTH = 4                  # archives inside archives followed
MAX_UNPACKED = 1 << 30         # bytes decompressed for nested content in one scan

_NPY_OBJECT = re.compile(rb"""['"]descr['"]\s*:\s*['"][|<>=]?O""")
_LEGACY_PICKLES = ("magic number", "protocol version", "sys_info", "object pickle", "storage key list")


def kind_of(head: bytes) -> str | None:
    """The container ``head`` starts (by its magic bytes), or None for anything else (maybe a pickle)."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(MAGIC_PREFIX):
        return "torch-legacy"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if (len(head) >= 262 and head[257:262] == b"ustar") or tar_checksum_ok(head):
        return "tar"
    return None


class Scanner:
    """The report being built, and the limits that bound following one container into another."""

    def __init__(self, result: ScanResult, *, skip: frozenset[str] = frozenset(),
                 known_storages: frozenset[str] | None = None):
        self.result = result
        self.skip = skip                          # labels of pickles the caller has already walked
        self.known_storages = known_storages      # tensor records (relative to the archive folder) not to read
        self.unpacked = 0

    # -- the report ----------------------------------------------------------------------------------
    def problem(self, text: str) -> None:
        if text not in self.result.problems:
            self.result.problems.append(text)

    def anomaly(self, text: str) -> None:
        if text not in self.result.anomalies:
            self.result.anomalies.append(text)

    def note(self, text: str) -> None:
        if text not in self.result.notes:
            self.result.notes.append(text)

    def add(self, scan: PickleScan, where: str = "", loader: str = "") -> PickleScan:
        scan.where, scan.loader = where, loader
        self.result.pickles.append(scan)
        if not scan.complete and scan.problem:
            self.problem(scan.problem)
        return scan

    def outer_name(self, label: str) -> str:
        return label or os.path.basename(self.result.path)

    def spend(self, n: int, label: str) -> bool:
        """Take ``n`` bytes of the budget for unpacking nested content; False (and a problem) past it."""
        if self.unpacked + n > MAX_UNPACKED:
            self.problem(f"{label or 'the archive'}: unpacking it would pass the scan's limit of "
                         f"{MAX_UNPACKED >> 20} MiB of unpacked data; not scanned")
            return False
        self.unpacked += n
        return True

    # -- bytes of unknown kind ---------------------------------------------------------------------------
    def blob(self, data, start: int, end: int, *, label: str, where: str, loader: str, depth: int) -> list:
        """Bytes that belong to no named member (gaps, trailing data, comments): scanned by content."""
        return self.content(data, start, end, label=label, where=where, loader=loader, named=False,
                            npy_loader=None, depth=depth)

    def content(self, data, start: int, end: int, *, label: str, where: str, loader: str, named: bool,
                npy_loader: str | None, depth: int) -> list[PickleScan]:
        """One member's bytes: a nested archive, a numpy array, a torch legacy file or pickles. ``named``:
        the member's name says it is a pickle, so it is reported even when it does not look like one.
        Returns the pickles found."""
        if end <= start:
            return []
        head = bytes(data[start:start + 512])
        kind = kind_of(head)
        if kind == "npy":
            return self.npy(data, start, end, label=label, where=where, loader=npy_loader or loader)
        if kind == "torch-legacy":
            return self.legacy(data, start, end, label=label, where=where, loader=loader)
        if kind is not None:
            if depth + 1 > MAX_DEPTH:
                self.problem(f"{label}: an archive nested more than {MAX_DEPTH} deep; not scanned")
                return []
            before = len(self.result.pickles)
            if kind == "zip":
                zips.scan_zip(self, data, start, end, label=label, depth=depth + 1)
            elif kind == "tar":
                archives.scan_tar(self, data, start, end, label=label, depth=depth + 1)
            elif kind == "7z":
                archives.scan_7z(self, data, start, end, label=label, depth=depth + 1)
            else:
                archives.scan_compressed(self, kind, data, start, end, label=label, depth=depth + 1)
            return self.result.pickles[before:]
        return self.pickles(data, start, end, label=label, where=where, loader=loader, named=named)

    def worth_reading(self, head: bytes, named: bool, label: str) -> bool:
        """From the first inflated bytes of a compressed member: is the rest worth inflating?"""
        if named or not head:
            return named
        kind = kind_of(head)
        if kind == "npy":
            obj = self.npy_header(head, 0, len(head), label)
            return obj is not False
        if kind is not None:
            return True
        first = walk_pickle(head, name=label)
        return looks_like_pickle(first) or (not first.complete and first.end >= len(head) - 8)

    # -- pickles -------------------------------------------------------------------------------------------
    def pickles(self, data, start: int, end: int, *, label: str, where: str, loader: str,
                named: bool, next_loader: str | None = None) -> list[PickleScan]:
        """The pickles from ``start`` on, one after another, as long as what follows is one (``next_loader``:
        who reads the ones after the first, when that differs)."""
        found: list[PickleScan] = []
        first = walk_pickle(data, start=start, end=end, name=label)
        if not named and not looks_like_pickle(first):
            return found
        found.append(self.add(first, where, loader))
        pos, last = first.end, first
        while last.complete and pos < end:
            if len(found) >= MAX_PICKLES:
                self.problem(f"{label}: stopped after {MAX_PICKLES} consecutive pickles")
                break
            nxt = walk_pickle(data, start=pos, end=end, name=f"{label} (pickle {len(found) + 1})")
            if not looks_like_pickle(nxt):
                self.note(f"{label} has {end - pos:,} bytes after its STOP opcode")
                break
            found.append(self.add(nxt, where, next_loader or loader))
            pos, last = nxt.end, nxt
        return found

    def npy_header(self, data, start: int, end: int, label: str) -> int | bool | None:
        """Where an object array's pickle starts, False for an array of plain numbers, None when the header
        is cut off."""
        if end - start < 10:
            return None
        major = data[start + 6]
        width = 2 if major == 1 else 4
        (hlen,) = struct.unpack_from("<H" if width == 2 else "<I", data, start + 8)
        hstart = start + 8 + width
        if hstart + hlen > end:
            return None
        header = bytes(data[hstart:hstart + min(hlen, 65536)])
        return hstart + hlen if _NPY_OBJECT.search(header) else False

    def npy(self, data, start: int, end: int, *, label: str, where: str, loader: str = NUMPY_LOAD) -> list:
        """A numpy .npy array: only object arrays hold a pickle (``numpy.load(allow_pickle=True)`` runs it)."""
        self.result.format = self.result.format or "numpy"
        at = self.npy_header(data, start, end, label)
        if at is None:
            self.problem(f"{label}: the .npy header is cut off")
            return []
        if at is False:
            self.note(f"{label}: a numpy array of plain numbers (no pickle)")
            return []
        return [self.add(walk_pickle(data, start=at, end=end, name=label), where, loader)]

    def legacy(self, data, start: int, end: int, *, label: str, where: str, loader: str) -> list:
        """torch.save's legacy format: five consecutive pickles; the raw storages after them are not scanned."""
        found = []
        pos = start
        for name in _LEGACY_PICKLES:
            full = f"{label}: {name}" if label else name
            scan = self.add(walk_pickle(data, start=pos, end=end, name=full), where, loader)
            found.append(scan)
            if not scan.complete:
                break
            pos = scan.end
        return found
