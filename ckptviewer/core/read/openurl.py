"""Opening a checkpoint named by a URL: one file, a sharded checkpoint's index, or a folder holding one
(a Hub repository such as ``hf://ORG/REPO``, a bucket prefix).

A folder opens what a loader would: the safetensors shard index, else the ``.bin`` one, else
``model.safetensors``, else ``pytorch_model.bin``, else its only checkpoint file; a folder with several
candidates says which, so the user can pick. An index opens as one tree whose shards are read by range
(their headers and directories only).
"""
from __future__ import annotations

from ..model.checkpoint import Checkpoint
from ..util.errors import CheckpointError, NotACheckpointError
from .detect import read_remote
from .multifile.sharded import INDEX_SUFFIX, MAX_INDEX_BYTES, looks_index, read_sharded

CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".tar", ".pth.tar")
PREFERRED = ("model.safetensors.index.json", "pytorch_model.bin.index.json", "model.safetensors", "pytorch_model.bin")


def open_url(url: str) -> Checkpoint:
    """Open the checkpoint at ``url`` (see the module notes); errors name the redacted URL."""
    from ..source.remote import RemoteFolder, open_remote
    try:
        target = open_remote(url)
    except CheckpointError as e:
        raise e.with_path(url) from None
    if isinstance(target, RemoteFolder):
        return open_url(pick_in_folder(target))
    try:
        head = target.head(64) if target.size != 0 else b""
        if looks_index(head) or (target.name.split("?")[0].endswith(".json") and not target.ranges):
            if target.size_known and target.size > MAX_INDEX_BYTES:
                raise NotACheckpointError(f"this JSON file is {target.size:,} bytes, too big for a shard index")
            data = target.head(target.size) if target.ranges else target.head_bytes
            if target.size_known and len(data) != target.size:
                with open(target.full_copy("the server does not serve byte ranges"), "rb") as f:
                    data = f.read(MAX_INDEX_BYTES + 1)
            target.close()
            return read_sharded(url, index_bytes=data)
    except CheckpointError as e:
        target.close()
        raise e.with_path(target.name) from None
    return read_remote(target)


def pick_in_folder(folder) -> str:
    """The location of what to open in a remote folder (see the module notes)."""
    names = [name for name, _ in folder.files]
    for preferred in PREFERRED:
        if preferred in names:
            return folder.join(preferred)
    indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
    if len(indexes) == 1:
        return folder.join(indexes[0])
    candidates = indexes or [n for n in names if n.lower().endswith(CHECKPOINT_SUFFIXES)]
    if len(candidates) == 1:
        return folder.join(candidates[0])
    if not candidates:
        raise NotACheckpointError("this folder holds no checkpoint file or shard index", path=folder.name,
                                  hint="Open a checkpoint file by its full URL.")
    shown = ", ".join(candidates[:6]) + (", ..." if len(candidates) > 6 else "")
    raise NotACheckpointError(f"this folder holds {len(candidates)} checkpoints ({shown})", path=folder.name,
                              hint=f"Open one of them, e.g. {folder.join(candidates[0])}")
