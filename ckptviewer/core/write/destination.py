"""Where an export may write: never a file it reads from, never half a file.

Shared by the single-file export and the sharded one: the destination checks, the set of files a
checkpoint's tensors come from, and the fsyncs that make a rename durable.
"""
from __future__ import annotations

import os
from typing import Iterable

from ..model.tensor import TensorRef
from ..util.errors import OperationError


# -- destinations -----------------------------------------------------------------------------------------
def check_destination(dest: str, sources: Iterable[str], overwrite: bool) -> str:
    """Resolve ``dest``; refuse the source file (or a link to it) and, unless allowed, an existing file."""
    dest = os.path.abspath(os.fspath(dest))
    real = os.path.realpath(dest)
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise OperationError(f"the folder {folder} does not exist")
    for src in sources:
        if not src:
            continue
        if os.path.realpath(src) == real or (os.path.exists(dest) and os.path.exists(src)
                                             and os.path.samefile(src, dest)):
            raise OperationError("the destination is the file being read; choose another name",
                                 hint="A source file is never changed in place.")
    if os.path.isdir(real):
        raise OperationError(f"{dest} is a folder")
    if os.path.exists(real) and not overwrite:
        raise OperationError(f"{dest} already exists", hint="Pass --force (or confirm) to replace it.")
    return real


def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def source_files(tensors: Iterable[TensorRef]) -> set[str]:
    """The files the tensors' bytes are read from (several for sharded and distributed checkpoints)."""
    out: set[str] = set()
    seen: set[int] = set()
    for t in tensors:
        st = t.storage
        src = st.source if st is not None else None
        if src is None or id(src) in seen:
            continue
        seen.add(id(src))
        files = getattr(src, "files", None)
        if files:
            out.update(files)
            continue
        for holder in (src, getattr(src, "archive", None)):
            path = getattr(getattr(holder, "mm", None) or getattr(holder, "buf", None), "path", None)
            if path:
                out.add(path)
                break
    return out
