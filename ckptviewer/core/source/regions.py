"""Byte sources: where a storage record's bytes are, and how to hand them out on demand.

A reader describes each storage record as a :class:`ByteSource` (a range of a mapped file, bytes in
memory, bytes inflated on first use); tensor handles read their values through it and nothing else.
"""
from __future__ import annotations

import mmap
from typing import Callable

from ..util.errors import StorageError


class ByteSource:
    """Where a storage's bytes live. ``size`` is how many bytes are really there.

    A source whose container stores a checksum (a zip member's CRC-32) checks it when its bytes are
    read: ``crc_error`` is then None while nothing contradicts the checksum, or says what does.
    ``verify()`` reads what has not been checked yet; ``verified`` says whether the check has run.
    """

    # No instance dict here: a file of 300,000 tensors has 300,000 sources, and an empty __dict__ pointer
    # made each one allocate twice. Subclasses that declare no __slots__ still get one.
    __slots__ = ()

    size: int = 0
    crc_error: str | None = None
    verified: bool = True           # nothing to check: sources without a stored checksum
    remote: bool = False           # reads go over the network (through the block cache), not to a local map

    def verify(self, progress: Callable[[int], None] | None = None) -> str | None:
        """Check the stored checksum against the bytes (once; later calls answer from the first)."""
        return self.crc_error

    def view(self, offset: int, length: int) -> memoryview:  # pragma: no cover - interface
        raise NotImplementedError

    def read_through(self, offset: int, length: int) -> memoryview:
        """``view`` for reads that go through the whole record in order (hashing, copying, statistics):
        a source with a stored checksum checks these bytes against it as they pass (random reads, such
        as a sampled histogram's, use ``view`` and touch only the pages they need)."""
        return self.view(offset, length)

    def describe(self) -> str:
        return type(self).__name__

    def release(self, offset: int, length: int) -> None:
        """Done with these bytes for now: let a memory map drop its pages (they stay in the page cache)."""

    def file_location(self, offset: int) -> tuple[str, int] | None:
        """(file path, position) of byte ``offset`` of this record, when the file holds it as is."""
        return None


_PAGE = mmap.PAGESIZE


def release_map_range(mm, start: int, length: int) -> None:
    """madvise(DONTNEED) on the whole pages inside [start, start + length) of a read-only file map.

    Reading a 6 GB file through a map would otherwise leave 6 GB resident in this process. For a
    read-only shared file mapping, dropped pages are simply read again from the page cache if needed.
    """
    if length < 4 * _PAGE or not isinstance(mm, mmap.mmap):
        return
    lo = (start + _PAGE - 1) // _PAGE * _PAGE
    hi = (start + length) // _PAGE * _PAGE
    if hi > lo:
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError, AttributeError):
            pass


class MappedRegion(ByteSource):
    """A byte range of a memory-mapped file (a stored zip member, a legacy storage, safetensors data)."""

    __slots__ = ("mm", "start", "size")

    def __init__(self, mm: mmap.mmap | memoryview | bytes, start: int, size: int):
        self.mm = mm
        self.start = start
        self.size = size

    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise StorageError(f"read of bytes {offset}..{offset + length} outside a record of {self.size} bytes")
        return memoryview(self.mm)[self.start + offset:self.start + offset + length]

    def describe(self) -> str:
        return f"file bytes {self.start}..{self.start + self.size}"

    def release(self, offset: int, length: int) -> None:
        release_map_range(self.mm, self.start + offset, length)

    def file_location(self, offset: int) -> tuple[str, int] | None:
        path = getattr(self.mm, "path", None)
        return (path, self.start + offset) if path else None


class BytesRegion(MappedRegion):
    """Bytes held in memory (a numpy array's data from the pickle, an inflated zip member)."""

    def __init__(self, data: bytes | bytearray | memoryview):
        super().__init__(data, 0, len(data))

    def describe(self) -> str:
        return f"{self.size} bytes in memory"

    def file_location(self, offset: int) -> tuple[str, int] | None:
        return None


class DeferredRegion(ByteSource):
    """Bytes produced on first use by ``loader`` (e.g. a compressed zip member inflated under a cap)."""

    def __init__(self, size: int, loader: Callable[[], bytes], what: str):
        self.size = size
        self._loader = loader
        self._data: bytes | None = None
        self._what = what

    def view(self, offset: int, length: int) -> memoryview:
        if self._data is None:
            self._data = self._loader()
            self.size = len(self._data)
        if offset < 0 or length < 0 or offset + length > self.size:
            raise StorageError(f"read of bytes {offset}..{offset + length} outside a record of {self.size} bytes")
        return memoryview(self._data)[offset:offset + length]

    def describe(self) -> str:
        return self._what
