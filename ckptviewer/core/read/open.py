"""Opening a checkpoint by path: the top of the read path.

A path is one file (sniffed and read by ``detect.open_file``), a sharded checkpoint's index, or a folder
holding a torch.distributed.checkpoint or one shard index (``multifile``). Everything below this module
reads; nothing below it chooses among these.
"""
from __future__ import annotations

import contextlib
import gc
import os

from ..model.checkpoint import Checkpoint
from ..util.errors import CheckpointError, NotACheckpointError, UnsupportedFormatError
from ..util.locations import is_url
from .detect import open_file
from .multifile.dcp import METADATA_NAME, read_dcp
from .multifile.sharded import find_index, looks_index, read_sharded
from .openurl import open_url


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a checkpoint: read its directory and pickles, not its tensor bytes.

    ``path`` is a checkpoint file, a sharded checkpoint's index (``*.index.json``, recognised by its
    content), or a folder holding a torch.distributed.checkpoint (``.metadata``) or one shard index; or a
    URL of any of these (``https://``, ``hf://ORG/REPO[@REV]/PATH``, ``s3://``, ``gs://``: ``openurl``).
    Raises a :class:`CheckpointError` (with the file named) when it cannot be read at all.
    """
    path = os.fspath(path)
    if is_url(path):
        with _no_cyclic_gc():
            return open_url(path)
    if os.path.isdir(path):
        with _no_cyclic_gc():
            return _open_folder(path)
    if _is_json_text(path):
        try:
            with _no_cyclic_gc():
                return read_sharded(path)
        except CheckpointError as e:
            raise e.with_path(path) from None
    return open_file(path)


@contextlib.contextmanager
def _no_cyclic_gc():
    """Pause the cyclic collector while many acyclic objects are built (see ``detect.read_buffer``)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_json_text(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return looks_index(f.read(64))
    except OSError:
        return False        # open_file says what is wrong


def _open_folder(path: str) -> Checkpoint:
    try:
        if os.path.isfile(os.path.join(path, METADATA_NAME)):
            return read_dcp(path)
        index = find_index(path)
        if index is not None:
            return read_sharded(index)
    except CheckpointError as e:
        raise e.with_path(path) from None
    if any(n.startswith("__") and n.endswith(".metadata") for n in os.listdir(path)):
        raise UnsupportedFormatError("this torch.distributed.checkpoint folder has per-rank metadata files "
                                     "(saved without collectives) and no .metadata; ckptviewer does not read "
                                     "that layout yet", path=path)
    raise NotACheckpointError("this folder holds neither a sharded checkpoint index (*.index.json) nor a "
                              "torch.distributed.checkpoint (.metadata)", path=path,
                              hint="Open a checkpoint file in it, or the folder of a sharded or distributed "
                                   "checkpoint.")
