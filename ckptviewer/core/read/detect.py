"""Find the reader for a file from its first bytes, never from its suffix.

Readers are tried in order of specificity: the zip signature, torch's legacy magic pickle, the tar
header, then the safetensors header (the weakest signature: eight bytes of length and a brace).
"""
from __future__ import annotations

import gc
import os

from ..model.checkpoint import Checkpoint
from ..source.local import close_quietly, map_file
from ..util.errors import CheckpointError, NotACheckpointError
from ..util.locations import is_url
from .formats.pt2 import pt2_prefix, read_pt2
from .formats.safetensors_format import looks_safetensors, read_safetensors
from .formats.torch_legacy import MAGIC_PREFIX, TEXT_MAGIC_PREFIX, read_torch_legacy
from .formats.torch_tar import looks_tar, read_torch_tar
from .formats.torch_zip import read_torch_zip
from .formats.zipreader import ZipArchive

# Well-known signatures of files people mistake for checkpoints, to say what the file is instead.
_OTHER_FORMATS = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive (decompress it first)"),
    (b"BZh", "a bzip2 archive (decompress it first)"),
    (b"\xfd7zXZ", "an xz archive (decompress it first)"),
    (b"7z\xbc\xaf", "a 7-zip archive"),
    (b"\x7fELF", "an executable"),
    (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"),
    (b"GGUF", "a GGUF file (llama.cpp weights)"),
    (b"\x93NUMPY", "a numpy .npy array"),
    (b"<!DOCTYPE html", "an HTML page (a failed download?)"),
    (b"<html", "an HTML page (a failed download?)"),
    (b"version https://git-lfs", "a Git LFS pointer, not the file itself (run git lfs pull)"),
]


def sniff(head: bytes, size: int) -> str | None:
    """The format name for a file starting with ``head`` (at least 512 bytes when the file has them)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(MAGIC_PREFIX) or head.startswith(TEXT_MAGIC_PREFIX):
        return "torch-legacy"
    if looks_tar(head):
        return "tar"
    if looks_safetensors(head, size):
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    return None


def describe_other(head: bytes) -> str:
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return what
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]):
        return "a text file"
    return "not a format ckptviewer knows"


def open_file(path: str | os.PathLike) -> Checkpoint:
    """Open one checkpoint file, sniffed by its first bytes (never a folder or an index). ``path`` may be a
    URL (``https://``, ``hf://``, ``s3://``, ...): see :func:`open_url_file`."""
    path = os.fspath(path)
    if is_url(path):
        return open_url_file(path)
    try:
        if os.path.isdir(path):
            raise NotACheckpointError("this is a folder, not a checkpoint file", hint="")
        buf, resources = map_file(path)
    except FileNotFoundError:
        raise CheckpointError("no such file", path=path, hint="Check the path.") from None
    except PermissionError:
        raise CheckpointError("permission denied", path=path, hint="Check the file's permissions.") from None
    except IsADirectoryError:
        raise NotACheckpointError("this is a folder, not a checkpoint file", path=path, hint="") from None
    except OSError as e:
        raise CheckpointError(f"cannot read the file ({e.strerror or e})", path=path) from None
    except CheckpointError as e:
        raise e.with_path(path)
    try:
        return read_buffer(buf, path, resources=resources)
    except CheckpointError as e:
        close_quietly(resources)
        raise e.with_path(path) from None
    except BaseException:
        close_quietly(resources)
        raise


def open_url_file(url: str) -> Checkpoint:
    """Open one checkpoint file at a URL. Zip archives and safetensors files are read by range (the
    directory, the pickle, the header; tensors when their values are read); formats that need a full read
    (the legacy torch.save format, tar, plain pickles), and any file on a server that ignores ``Range``,
    are downloaded into the cache first, their size said before (``source.remote.RemoteFile.full_copy``)."""
    from ..source.remote import RemoteFolder, open_remote
    try:
        target = open_remote(url)
    except CheckpointError as e:
        raise e.with_path(url) from None
    if isinstance(target, RemoteFolder):
        raise NotACheckpointError("this is a folder, not a checkpoint file", path=target.name,
                                  hint="Open a checkpoint file in it, or its shard index (*.index.json).")
    return read_remote(target)


def read_remote(rf) -> Checkpoint:
    """Read the checkpoint in an open ``source.remote.RemoteFile`` (which the checkpoint then owns)."""
    resources: list = [rf]
    try:
        if rf.size == 0:
            raise NotACheckpointError("the file is empty", hint="Check the URL; the upload may have failed.")
        head = rf.head(512)
        kind = sniff(head, rf.size if rf.size_known else 1 << 62) if head else None
        if rf.ranges and kind in ("zip", "safetensors"):
            ckpt = read_source(rf, rf.name, resources=resources)
        elif kind is None and head:
            raise NotACheckpointError(f"this is {describe_other(head)}, not a checkpoint")
        else:
            why = (f"{_FULL_READ.get(kind, 'this format')} cannot be read in parts" if rf.ranges
                   else "the server does not serve byte ranges")
            buf, mapped = map_file(rf.full_copy(why))
            resources = mapped + resources
            ckpt = read_buffer(buf, rf.name, resources=resources)
        ckpt.warnings.extend(rf.warnings)
        return ckpt
    except CheckpointError as e:
        close_quietly(resources)
        raise e.with_path(rf.name) from None
    except BaseException:
        close_quietly(resources)
        raise
    finally:
        rf.reporting = False


# Formats read only from a local copy of the whole file, as the download notice names them.
_FULL_READ = {"torch-legacy": "the legacy torch.save format", "tar": "torch's oldest (tar) format",
              "pickle": "a plain pickle"}


def read_source(src, path: str, *, resources: list | None = None) -> Checkpoint:
    """Read a zip archive or a safetensors file through a ``FileBytes`` (a remote file, read by range)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        head = bytes(src.view(0, min(512, src.size)))
        kind = sniff(head, src.size)
        if kind == "zip":
            return _read_zip(src, path, resources)
        if kind == "safetensors":
            return read_safetensors(src, path, resources=resources)
        if src.is_remote:
            raise NotACheckpointError(f"this is {describe_other(head)}, not a checkpoint")
        return _read_buffer(src.buffer, path, resources=resources)
    finally:
        if was_enabled:
            gc.enable()


def _read_zip(buf, path: str, resources: list | None) -> Checkpoint:
    """A zip: a torch.export / AOTInductor ``.pt2`` archive when its members say so, else torch.save's (or
    TorchScript's) archive. A directory that does not parse goes to the torch reader, which says why or
    recovers the members of a file cut short."""
    try:
        archive = ZipArchive(buf, name=path)
    except CheckpointError:
        return read_torch_zip(buf, path, resources=resources)
    if pt2_prefix(archive) is not None:
        return read_pt2(archive, path, resources=resources)
    return read_torch_zip(buf, path, resources=resources, archive=archive)


def read_buffer(buf, path: str, *, resources: list | None = None) -> Checkpoint:
    """Read a checkpoint held in ``buf`` (an mmap or bytes). ``path`` names it in messages."""
    # Unpickling allocates millions of small acyclic objects; the cyclic collector would walk them
    # again and again (a third of the opening time of a 100,000-tensor file). Pause it meanwhile.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _read_buffer(buf, path, resources=resources)
    finally:
        if was_enabled:
            gc.enable()


def _read_buffer(buf, path: str, *, resources: list | None = None) -> Checkpoint:
    size = len(buf)
    if size == 0:
        raise NotACheckpointError("the file is empty", hint="It may still be downloading, or the copy failed.")
    head = bytes(buf[:512])
    kind = sniff(head, size)
    if kind == "zip":
        return _read_zip(buf, path, resources)
    if kind == "torch-legacy":
        return read_torch_legacy(buf, path, resources=resources)
    if kind == "tar":
        return read_torch_tar(buf, path, resources=resources)
    if kind == "safetensors":
        return read_safetensors(buf, path, resources=resources)
    if kind == "pickle":
        # torch.save with another pickle protocol still starts with the magic number; try that.
        return read_torch_legacy(buf, path, resources=resources)
    raise NotACheckpointError(f"this is {describe_other(head)}, not a checkpoint")
