"""torch's oldest format (torch < 0.1.10): a tar archive with ``storages``, ``tensors`` and ``pickle``.

Members are located with ``tarfile`` and read as byte ranges of the memory map; nothing is ever
extracted, and links or other special members are ignored.

``storages``: pickle(count), then per storage pickle((key, location, storage_type)), int64 element
count, raw bytes; then pickle([(view_key, root_key, offset, numel), ...]).
``tensors``: pickle(count), then per tensor pickle((key, storage_key, tensor_type)), int32 ndim,
4 pad bytes, ndim int64 sizes, ndim int64 strides, int64 storage offset.
``pickle``: the object, whose persistent ids are tensor/storage keys (strings), or
``(cls, source_file, source)`` tuples for module classes.
"""
from __future__ import annotations

import io
import struct
import tarfile

from ...model.checkpoint import Checkpoint, PickleGlobals
from ...model.objects import Unreadable
from ...model.tensor import StorageRef, TensorRef
from ...source.regions import MappedRegion
from ...util.errors import CorruptFileError, NotACheckpointError, TruncatedFileError
from ..pickle.reconstructors import StorageType
from ..pickle.unpickle import unpickle

MAX_COUNT = 10_000_000


def looks_tar(head: bytes) -> bool:
    """A tar header: the ustar magic, or (old v7 tars, which torch's ``tarfile.open(mode="r:")`` also reads)
    a header whose checksum field matches its bytes."""
    if len(head) >= 262 and head[257:262] == b"ustar":
        return True
    return tar_checksum_ok(head)


def tar_checksum_ok(head: bytes) -> bool:
    """True when ``head`` starts with a tar header (any variant) whose checksum is right."""
    if len(head) < 512 or head[0] == 0:
        return False
    field = head[148:156].replace(b"\0", b" ").strip()
    if not field or any(c not in b"01234567" for c in field):
        return False
    want = int(field, 8)
    unsigned = sum(head[:148]) + 8 * 32 + sum(head[156:512])
    if want == unsigned:
        return True
    return want == unsigned - 256 * sum(1 for b in head[:148] + head[156:512] if b > 127)      # signed bytes


def read_torch_tar(buf, path: str, *, resources: list | None = None) -> Checkpoint:
    members = {}
    duplicates: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(buf) if isinstance(buf, bytes) else _MapFile(buf), mode="r:") as tar:
            for info in tar:
                if info.isreg() and info.name in ("storages", "tensors", "pickle"):
                    if info.name in members:      # tarfile's getmember, which torch uses, returns the last
                        duplicates.append(info.name)
                    if info.offset_data + info.size > len(buf):
                        raise TruncatedFileError(f"tar member {info.name!r} ends past the end of the file")
                    members[info.name] = (info.offset_data, info.size)
    except tarfile.TarError as e:
        raise CorruptFileError(f"the tar archive is unreadable ({e})") from None
    if set(members) != {"storages", "tensors", "pickle"}:
        raise NotACheckpointError("a tar archive without torch's storages/tensors/pickle members")
    warnings: list[str] = [f"the tar archive holds more than one member named {n!r}; torch.load reads the last "
                           f"(shown here)" for n in dict.fromkeys(duplicates)]
    pickles: list[PickleGlobals] = []
    objects: dict[str, object] = {}
    storages: dict[str, StorageRef] = {}

    start, length = members["storages"]
    end = start + length
    count, pos = unpickle(buf, start=start, end=end, name="storages count", warnings=warnings, pickles=pickles)
    if type(count) is not int or not 0 <= count <= MAX_COUNT:
        raise CorruptFileError("the storage count is invalid")
    for i in range(count):
        args, pos = unpickle(buf, start=pos, end=end, name=f"storage {i} header", warnings=warnings,
                             pickles=pickles)
        if not isinstance(args, tuple) or len(args) != 3 or not isinstance(args[2], StorageType) \
                or args[2].dtype is None:
            raise CorruptFileError(f"storage {i} has a malformed header")
        key, location, stype = args
        if pos + 8 > end:
            raise TruncatedFileError(f"storage {key} is cut off")
        (numel,) = struct.unpack_from("<q", buf, pos)
        nbytes = numel * stype.dtype.itemsize
        if numel < 0 or pos + 8 + nbytes > end:
            raise TruncatedFileError(f"storage {key} declares {numel:,} elements but the member ends first")
        st = StorageRef(str(key), stype.dtype, nbytes, str(location), typed=True,
                        source=MappedRegion(buf, pos + 8, nbytes))
        storages[st.key] = objects[st.key] = st
        pos += 8 + nbytes
    views, pos = unpickle(buf, start=pos, end=end, name="storage views", warnings=warnings, pickles=pickles)
    for view in views if isinstance(views, list) else []:
        if not (isinstance(view, tuple) and len(view) == 4 and str(view[1]) in storages):
            warnings.append("a malformed storage view was skipped")
            continue
        view_key, root_key, offset, numel = str(view[0]), str(view[1]), view[2], view[3]
        root = storages[root_key]
        isz = root.dtype.itemsize
        st = StorageRef(view_key, root.dtype, numel * isz, root.location, typed=True)
        if 0 <= offset and (offset + numel) * isz <= root.nbytes:
            st.source = MappedRegion(buf, root.source.start + offset * isz, numel * isz)
        else:
            st.problem = f"storage view {view_key} lies outside storage {root_key}"
            warnings.append(st.problem)
        storages[view_key] = objects[view_key] = st

    start, length = members["tensors"]
    end = start + length
    count, pos = unpickle(buf, start=start, end=end, name="tensors count", warnings=warnings, pickles=pickles)
    if type(count) is not int or not 0 <= count <= MAX_COUNT:
        raise CorruptFileError("the tensor count is invalid")
    for i in range(count):
        args, pos = unpickle(buf, start=pos, end=end, name=f"tensor {i} header", warnings=warnings, pickles=pickles)
        if not isinstance(args, tuple) or len(args) != 3:
            raise CorruptFileError(f"tensor {i} has a malformed header")
        key, storage_key, _ttype = args
        if pos + 8 > end:
            raise TruncatedFileError(f"tensor {key} is cut off")
        (ndim,) = struct.unpack_from("<i", buf, pos)
        if not 0 <= ndim <= 64 or pos + 8 + 16 * ndim + 8 > end:
            raise CorruptFileError(f"tensor {key} has an invalid rank {ndim}")
        sizes = struct.unpack_from(f"<{ndim}q", buf, pos + 8)
        strides = struct.unpack_from(f"<{ndim}q", buf, pos + 8 + 8 * ndim)
        (offset,) = struct.unpack_from("<q", buf, pos + 8 + 16 * ndim)
        pos += 8 + 16 * ndim + 8
        st = storages.get(str(storage_key))
        if st is None:
            warnings.append(f"tensor {key} refers to a missing storage {storage_key}")
            objects[str(key)] = Unreadable("tensor", f"missing storage {storage_key}")
            continue
        objects[str(key)] = TensorRef(st, offset, tuple(sizes), tuple(strides), st.dtype)

    def persistent_load(pid):
        if isinstance(pid, tuple) and pid:
            return pid[0]            # (cls, source_file, source): the class itself
        found = objects.get(str(pid))
        if found is None:
            warnings.append(f"the pickle refers to an unknown tensor or storage {str(pid)[:40]}")
            return Unreadable("tensor", f"unknown key {str(pid)[:40]}")
        return found

    start, length = members["pickle"]
    root, _ = unpickle(buf, start=start, end=start + length, name="pickle", warnings=warnings, pickles=pickles,
                       persistent_load=persistent_load)
    return Checkpoint(path, "torch-tar", root, storages=storages, warnings=warnings, meta={"format": "tar (torch < 0.1.10)"},
                      pickles=pickles, file_size=len(buf), resources=resources)


class _MapFile(io.RawIOBase):
    """A read-only file object over an mmap, so tarfile can walk headers without copying the file."""

    def __init__(self, mm):
        self.mm = mm
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset, whence=0):
        self.pos = {0: offset, 1: self.pos + offset, 2: len(self.mm) + offset}[whence]
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, b):
        data = self.mm[self.pos:self.pos + len(b)]
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)
