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
from .detect import open_file, sniff
from .multifile.dcp import METADATA_NAME, read_dcp
from .multifile.sharded import INDEX_SUFFIX, find_index, looks_index, read_index, read_sharded
from .openurl import open_url

# torch.save with a pickle protocol other than 2 starts with a plain pickle; such a file in a folder is
# taken for a checkpoint only under one of these names.
_TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt", ".pkl")


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
    raise NotACheckpointError("this folder holds no checkpoint: no checkpoint file, no sharded checkpoint index "
                              "(*.index.json) and no torch.distributed.checkpoint (.metadata)", path=path,
                              hint="Open a folder that holds checkpoints, or a checkpoint file.")


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    """A folder that opens as one checkpoint: a torch.distributed.checkpoint (``.metadata``) or a sharded
    checkpoint (exactly one ``*.index.json``). Costs a stat and a listing; reads no file."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, METADATA_NAME)):
        return True
    try:
        indexes = [n for n in os.listdir(path) if n.endswith(INDEX_SUFFIX)]
    except OSError:
        return False
    return len(indexes) == 1


def looks_checkpoint_file(path: str) -> bool:
    """Whether a file's first bytes are a checkpoint format (or a shard index); the suffix alone never is."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if looks_index(head[:64]):
        return os.path.basename(path).endswith(INDEX_SUFFIX)
    kind = sniff(head, size)
    if kind == "pickle":
        return path.lower().endswith(_TORCH_SUFFIXES)
    return kind is not None


def checkpoints_in_folder(path: str | os.PathLike) -> list[str]:
    """The checkpoints directly in a folder that is not itself one checkpoint, in name order: each
    checkpoint file (sniffed by its first bytes), each sharded or distributed sub-folder, and each shard
    index (the shards an index names are not listed again)."""
    path = os.fspath(path)
    try:
        names = sorted(n for n in os.listdir(path) if not n.startswith("."))
    except OSError as e:
        raise CheckpointError(f"cannot list the folder ({e.strerror or e})", path=path) from None
    named_by_index: set[str] = set()
    for n in names:
        if n.endswith(INDEX_SUFFIX) and os.path.isfile(os.path.join(path, n)):
            try:
                weight_map, _ = read_index(os.path.join(path, n))
            except (CheckpointError, OSError):
                continue
            named_by_index.update(weight_map.values())
    out = []
    for n in names:
        full = os.path.join(path, n)
        if os.path.isdir(full):
            if is_checkpoint_folder(full):
                out.append(full)
        elif n not in named_by_index and os.path.isfile(full) and looks_checkpoint_file(full):
            out.append(full)
    return out


def checkpoint_paths(path: str | os.PathLike) -> list[str]:
    """What opening ``path`` means: the path itself (a file, an index, a sharded or distributed folder),
    or, for any other folder, each checkpoint in it. A folder with none gives ``[path]``, so that opening
    it says why it is not a checkpoint."""
    path = os.fspath(path)
    if not os.path.isdir(path) or is_checkpoint_folder(path):
        return [path]
    return checkpoints_in_folder(path) or [path]
