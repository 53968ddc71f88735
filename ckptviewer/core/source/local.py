"""Local files: memory-mapped read-only, so reading a tensor touches only its pages."""
from __future__ import annotations

import mmap
import os
from typing import Any


class FileMap(mmap.mmap):
    """A read-only map of a file that remembers the file's path (exports copy from it in the kernel)."""

    path: str = ""


def map_file(path: str) -> tuple[mmap.mmap | bytes, list[Any]]:
    """Memory-map ``path`` read-only (empty files give ``b""``). Returns the buffer and what to close."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b"", []
        mm = FileMap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mm.path = os.path.abspath(path)
    return mm, [mm]


def close_quietly(resources: list[Any]) -> None:
    for res in resources:
        try:
            res.close()
        except (BufferError, ValueError, OSError):
            # A view of the map is still alive somewhere (a numpy array, a traceback frame);
            # the map is unmapped when that view is collected.
            pass
