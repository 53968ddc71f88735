"""torch.save's legacy format (torch < 1.6, or ``_use_new_zipfile_serialization=False``).

Layout: five consecutive pickles, then raw storages::

    pickle(MAGIC_NUMBER) pickle(PROTOCOL_VERSION=1001) pickle(sys_info) pickle(obj) pickle(sorted storage keys)
    for each key: int64 element count (little-endian), then count * element size bytes

We walk the eight-byte headers to find each storage's offset without reading any data. Storage
persistent ids are ``('storage', type, key, location, numel, view_metadata)``; ``view_metadata`` is
``(view_key, offset, size)`` for the storage slices old torch versions could save. Classes of pickled
modules come as ``('module', cls, source_file, source)`` ids.
"""
from __future__ import annotations

import struct

from ...model.checkpoint import Checkpoint, PickleGlobals
from ...model.objects import Unreadable
from ...model.tensor import StorageRef
from ...source.regions import MappedRegion
from ...util.errors import CheckpointError, CorruptFileError, NotACheckpointError, UnsupportedFormatError
from ..pickle.unpickle import StorageTable, unpickle

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
# What torch.save writes first: PROTO 2, LONG1 of 10 bytes, the magic number.
MAGIC_PREFIX = b"\x80\x02\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little")
# torch.save(..., pickle_protocol=0 or 1) writes the magic number as a text LONG opcode.
TEXT_MAGIC_PREFIX = b"L%dL\n." % MAGIC_NUMBER


class _LegacyStorages(StorageTable):
    """Storage ids with the legacy sixth field: a view into another storage."""

    def __init__(self, warnings):
        super().__init__(None, warnings, what="storage")
        self.views: dict[str, tuple[str, int, int]] = {}

    def load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and pid[5] is not None:
            root = self.storage(*pid[1:5])
            view = pid[5]
            if (not isinstance(root, StorageRef) or not isinstance(view, tuple) or len(view) != 3
                    or not all(type(v) is int for v in view[1:])):
                self.warnings.append("a storage view with malformed metadata")
                return Unreadable("storage view", "malformed metadata")
            view_key, offset, size = str(view[0]), view[1], view[2]
            if view_key not in self.storages:
                st = StorageRef(view_key, root.dtype, size * root.dtype.itemsize, root.location, typed=True)
                self.storages[view_key] = st
                self.views[view_key] = (root.key, offset, size)
            return self.storages[view_key]
        return super().load(pid)


def read_torch_legacy(buf, path: str, *, resources: list | None = None) -> Checkpoint:
    warnings: list[str] = []
    pickles: list[PickleGlobals] = []
    try:
        magic, pos = unpickle(buf, end=min(len(buf), 64), name="magic number", warnings=warnings, pickles=pickles)
    except CheckpointError:
        magic = None
    if magic != MAGIC_NUMBER:
        raise NotACheckpointError("the file starts with a pickle but not torch's magic number "
                                  "(a plain pickle, not a torch.save file)")
    proto, pos = unpickle(buf, start=pos, name="protocol version", warnings=warnings, pickles=pickles)
    if proto != PROTOCOL_VERSION:
        raise UnsupportedFormatError(f"legacy protocol version {proto!r} is not supported (expected 1001)")
    sys_info, pos = unpickle(buf, start=pos, name="sys_info", warnings=warnings, pickles=pickles)
    meta: dict = {"protocol_version": PROTOCOL_VERSION}
    byteorder = "little"
    if isinstance(sys_info, dict):
        if sys_info.get("little_endian") is False:
            byteorder = "big"
        meta["byteorder"] = byteorder
        if isinstance(sys_info.get("type_sizes"), dict):
            meta["type_sizes"] = dict(sys_info["type_sizes"])
    table = _LegacyStorages(warnings)
    table.byteorder = byteorder
    root, pos = unpickle(buf, start=pos, name="object pickle", warnings=warnings, pickles=pickles,
                         persistent_load=table.load)
    pickles[-1].counts.update(table.text_globals)
    for st in table.storages.values():
        st.byteorder = byteorder
    keys, pos = unpickle(buf, start=pos, name="storage key list", warnings=warnings, pickles=pickles)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CorruptFileError("the storage key list is not a list of strings")
    if table.class_sources:
        meta["class_sources"] = table.class_sources
    size = len(buf)
    for i, key in enumerate(keys):
        st = table.storages.get(key)
        if st is None:
            warnings.append(f"storage {key} is in the file but no tensor uses it; "
                            f"{len(keys) - i} storage record(s) from here on cannot be located")
            break
        if pos + 8 > size:
            _mark_missing(table, keys[i:], warnings, "the file ends before its header")
            meta["cut_short"] = f"storage record {key}"
            break
        (count,) = struct.unpack_from("<q", buf, pos)
        itemsize = st.dtype.itemsize if st.dtype else 1
        nbytes = count * itemsize
        if count < 0 or pos + 8 + nbytes > size:
            st.problem = f"storage record {key} declares {count:,} elements but the file ends first"
            meta["cut_short"] = f"storage record {key}"
            _mark_missing(table, keys[i + 1:], warnings, "an earlier record is truncated")
            warnings.append(st.problem)
            break
        if nbytes != st.nbytes:
            warnings.append(f"storage record {key} holds {nbytes:,} bytes; the pickle declares {st.nbytes:,}")
        st.source = MappedRegion(buf, pos + 8, nbytes)
        pos += 8 + nbytes
    else:
        if pos < size:
            warnings.append(f"{size - pos:,} bytes follow the last storage (a polyglot or appended data)")
    missing = [k for k, st in table.storages.items() if st.source is None and k not in table.views
               and st.problem is None]
    for key in missing:
        table.storages[key].problem = f"storage record {key} is missing from the file"
        warnings.append(f"storage record {key} is missing from the file")
    for view_key, (root_key, offset, count) in table.views.items():
        base = table.storages.get(root_key)
        view = table.storages[view_key]
        isz = view.dtype.itemsize
        if base is None or base.source is None or offset < 0 or (offset + count) * isz > base.source.size:
            view.problem = f"storage view {view_key} lies outside storage {root_key}"
            warnings.append(view.problem)
        else:
            view.source = MappedRegion(buf, base.source.start + offset * isz, count * isz)
    return Checkpoint(path, "torch-legacy", root, storages=table.storages, warnings=warnings, meta=meta,
                      pickles=pickles, file_size=size, resources=resources)


def _mark_missing(table: StorageTable, keys: list[str], warnings: list[str], why: str) -> None:
    for key in keys:
        st = table.storages.get(key)
        if st is not None and st.source is None:
            st.problem = f"storage record {key} is missing ({why})"
    if keys:
        warnings.append(f"{len(keys)} storage record(s) are missing: {why}")


def looks_legacy(head: bytes) -> bool:
    return head.startswith(MAGIC_PREFIX)

