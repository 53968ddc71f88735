"""A whole file's bytes, read by position: the one way format readers reach a file.

A reader asks for ``view(start, length)`` (exactly those bytes, or a :class:`TruncatedFileError`),
``region(start, size)`` (a :class:`ByteSource` for a storage record, read when a tensor's values are) and,
when it knows ahead what it will read, ``prefetch(ranges)``. A local file is a :class:`MappedBytes`: its
views are zero-copy slices of the memory map, exactly as fast as slicing the map. A remote file
(``source.remote.RemoteFile``) answers the same calls from its block cache and the network, so a zip's
directory, its pickle and each tensor are fetched by range and nothing else is.
"""
from __future__ import annotations

import mmap
from typing import Any

from ..util.errors import TruncatedFileError
from .regions import ByteSource, MappedRegion, release_map_range


class FileBytes:
    """Random access to a file's bytes. ``size`` is the file's length; ``name`` says which file it is."""

    size: int = 0
    name: str = ""
    is_remote: bool = False

    def view(self, start: int, length: int) -> memoryview:  # pragma: no cover - interface
        raise NotImplementedError

    def region(self, start: int, size: int) -> ByteSource:  # pragma: no cover - interface
        raise NotImplementedError

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """``[(start, end), ...]`` will be read soon: fetch what is missing together (remote files)."""

    def release(self, start: int, length: int) -> None:
        """Done with these bytes for now (a memory map drops its pages)."""

    def file_location(self, start: int) -> tuple[str, int] | None:
        """(local path, position) of byte ``start`` when the file is a local file."""
        return None

    @property
    def buffer(self) -> Any:
        """The whole file as a buffer (local files only: readers that need one, like the legacy format)."""
        raise NotImplementedError("this file is not held in memory or mapped")

    def check(self, start: int, length: int) -> None:
        if start < 0 or length < 0 or start + length > self.size:
            raise TruncatedFileError(f"the file ends before bytes {start:,}..{start + length:,} "
                                     f"(it has {self.size:,})")

    def rfind(self, needle: bytes, lo: int, hi: int) -> int:
        """Position of the last ``needle`` within [lo, hi), or -1."""
        lo, hi = max(0, lo), min(hi, self.size)
        if hi - lo < len(needle):
            return -1
        pos = bytes(self.view(lo, hi - lo)).rfind(needle)
        return lo + pos if pos >= 0 else -1

    def close(self) -> None:
        """Let go of what the file holds (a map, cached blocks)."""


class MappedBytes(FileBytes):
    """A buffer in this process: a memory-mapped local file (``source.local.map_file``) or bytes."""

    __slots__ = ("buf", "name", "size")

    def __init__(self, buf: Any, name: str = ""):
        self.buf = buf
        self.size = len(buf)
        self.name = name or getattr(buf, "path", "")

    def view(self, start: int, length: int) -> memoryview:
        if start < 0 or length < 0 or start + length > self.size:
            self.check(start, length)
        return memoryview(self.buf)[start:start + length]

    def region(self, start: int, size: int) -> ByteSource:
        return MappedRegion(self.buf, start, size)

    def release(self, start: int, length: int) -> None:
        release_map_range(self.buf, start, length)

    def file_location(self, start: int) -> tuple[str, int] | None:
        path = getattr(self.buf, "path", None)
        return (path, start) if path else None

    @property
    def buffer(self) -> Any:
        return self.buf

    def rfind(self, needle: bytes, lo: int, hi: int) -> int:
        buf = self.buf
        if isinstance(buf, (bytes, bytearray, mmap.mmap)):
            return buf.rfind(needle, max(0, lo), min(hi, self.size))
        return super().rfind(needle, lo, hi)


def file_bytes(buf: Any, name: str = "") -> FileBytes:
    """``buf`` as a :class:`FileBytes`: itself when it is one, else a buffer wrapped without a copy."""
    return buf if isinstance(buf, FileBytes) else MappedBytes(buf, name)
