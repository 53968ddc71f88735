"""safetensors files, read from their documented header.

Layout (https://github.com/huggingface/safetensors#format): an unsigned little-endian 64-bit header
length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``, then the data area; offsets are relative to its start. We parse the header ourselves
so tensors stay lazy handles into the memory map (the library would give arrays), and we check what
the format promises: a bounded header, known dtypes, sizes that match shapes, offsets in order and
inside the data area, no duplicate names. The safetensors package writes our exports and checks them.
"""
from __future__ import annotations

import json
import math
import struct

from ...model.checkpoint import Checkpoint
from ...model.dtypes import BY_SAFETENSORS
from ...model.objects import Unreadable
from ...model.tensor import StorageRef, TensorRef, contiguous_strides
from ...source.filebytes import file_bytes
from ...util.errors import CorruptFileError, LimitExceededError, TruncatedFileError

MAX_HEADER = 100 * 1000 * 1000


def looks_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9 or size < 10:
        return False
    (n,) = struct.unpack_from("<Q", head, 0)
    # A header longer than the file (a cut download) or than the limit is still this format: the reader
    # then says so, rather than "not a format ckptviewer knows".
    return 2 <= n < (1 << 40) and head[8:9] == b"{"


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise CorruptFileError(f"the safetensors header names {k!r} twice")
        out[k] = v
    return out


def read_safetensors(buf, path: str, *, resources: list | None = None) -> Checkpoint:
    """Read a safetensors file held in ``buf`` (a buffer, or a FileBytes such as a remote file: only the
    header is read now, each tensor's bytes when its values are)."""
    src = file_bytes(buf, path)
    size = src.size
    if size < 8:
        raise TruncatedFileError("the safetensors header length is cut off")
    (n,) = struct.unpack("<Q", src.view(0, 8))
    if n > MAX_HEADER:
        raise LimitExceededError(f"the safetensors header declares {n:,} bytes (the limit is {MAX_HEADER:,})")
    if 8 + n > size:
        raise TruncatedFileError(f"the safetensors header declares {n:,} bytes but the file has {size - 8:,}")
    try:
        # Decoded straight from the map: a copy of the bytes first would double a 100 MB header's cost.
        header = json.loads(str(src.view(8, n), "utf-8"), object_pairs_hook=_no_duplicates)
    except CorruptFileError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CorruptFileError(f"the safetensors header is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise CorruptFileError("the safetensors header is not a JSON object")
    data_start = 8 + n
    data_size = size - data_start
    warnings: list[str] = []
    meta: dict = {"header_bytes": n}
    md = header.pop("__metadata__", None)
    if md is not None:
        if isinstance(md, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in md.items()):
            meta["metadata"] = md
        else:
            warnings.append("__metadata__ is not a mapping of strings to strings")
    root: dict = {}
    storages: dict[str, StorageRef] = {}
    spans: list[tuple[int, int, str]] = []
    # One shape tuple and one stride tuple per distinct shape (a model repeats a few dozen shapes in every
    # layer): 100 bytes less per tensor of a 300,000-entry header.
    layouts: dict[tuple, tuple[tuple, tuple]] = {}
    # Each entry's decoded JSON is dropped as soon as its handles are made: the header's dicts and lists cost
    # ~450 bytes an entry, a third of the peak of a 300,000-entry file if kept until the end.
    for name in list(header):
        info = header.pop(name)
        if not isinstance(info, dict):
            raise CorruptFileError(f"header entry {name!r} is not an object")
        dtype_code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if (not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise CorruptFileError(f"header entry {name!r} has an invalid shape or data_offsets")
        begin, end = offsets
        if end > data_size:
            raise CorruptFileError(f"tensor {name!r} ends at byte {end:,} of a data area of {data_size:,}")
        dt = BY_SAFETENSORS.get(dtype_code) if isinstance(dtype_code, str) else None
        spans.append((begin, end, name))
        if dt is None:
            reason = f"unknown dtype {str(dtype_code)[:20]!r}"
            warnings.append(f"tensor {name!r} has an {reason}; its values are unreadable")
            root[name] = Unreadable("tensor", reason)
            continue
        shape_t = tuple(shape)
        if dt.lanes > 1 and dt.values_per_element > 1:
            # F4: the header states the logical shape (two FP4 values per byte); torch's shape counts bytes.
            if not shape_t or shape_t[-1] % dt.lanes:
                raise CorruptFileError(f"tensor {name!r}: {dtype_code} needs an even last dimension, "
                                       f"the header gives {list(shape_t)}")
            shape_t = shape_t[:-1] + (shape_t[-1] // dt.lanes,)
        expected = math.prod(shape_t) * dt.itemsize
        if expected != end - begin:
            raise CorruptFileError(f"tensor {name!r}: {dt.name} {list(shape_t)} needs {expected:,} bytes, "
                                   f"data_offsets give {end - begin:,}")
        st = StorageRef(name, dt, end - begin, "cpu", typed=True,
                        source=src.region(data_start + begin, end - begin))
        storages[name] = st
        layout = layouts.get(shape_t)
        if layout is None:
            layout = layouts[shape_t] = (shape_t, contiguous_strides(shape_t))
        root[name] = TensorRef(st, 0, layout[0], layout[1], dt)
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            raise CorruptFileError(f"tensor {name!r} overlaps the tensor before it")
        if begin > pos:
            warnings.append(f"{begin - pos:,} unused bytes before tensor {name!r}")
        pos = end
    if pos < data_size:
        warnings.append(f"{data_size - pos:,} bytes follow the last tensor (a polyglot or appended data)")
    return Checkpoint(path, "safetensors", root, storages=storages, warnings=warnings, meta=meta,
                      file_size=size, resources=resources)
