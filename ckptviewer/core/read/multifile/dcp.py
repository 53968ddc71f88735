"""torch.distributed.checkpoint (DCP) folders: ``.metadata`` plus ``*.distcp`` files, read safely.

The format, as torch 2.x writes it (``torch/distributed/checkpoint/filesystem.py`` and ``metadata.py``):

- ``.metadata`` is a pickle of ``Metadata``: ``state_dict_metadata`` maps each flattened key (fqn) to
  ``TensorStorageMetadata(properties=TensorProperties(dtype, ...), size, chunks=[ChunkStorageMetadata
  (offsets, sizes)])`` or ``BytesStorageMetadata()``; ``storage_data`` maps ``MetadataIndex(fqn,
  offset)`` to ``_StorageInfo(relative_path, offset, length[, transform_descriptors])``;
  ``planner_data`` maps each fqn to its path in the original nested state_dict (``("optim", "state",
  "0", "exp_avg")``). torch's own reader calls ``pickle.load`` on this file, so a hostile folder runs
  code there; we read it with our interpreter and report the globals it names like any pickle.
- Each tensor chunk is a whole ``torch.save`` archive of the chunk's tensor, stored at (offset,
  length) of a ``.distcp`` file. We read it in place (a window over the file's memory map), only
  when the tensor's values are asked for.
- Each non-tensor value is a ``torch.save`` archive of the value (torch loads it with
  ``weights_only=False``); we read it at open with the safe reader.

A tensor is one lazy handle of its global shape and dtype whose bytes come from a
:class:`ChunkedSource`: it maps a range of the global C-ordered bytes onto the chunks that hold them
(chunks may split any dimension) and copies only that range. At open we check that each tensor's
chunks tile it exactly, that every chunk has a storage record in a plain file of the folder, and that
the record lies inside that file; a tensor that fails is listed with its problem and is unreadable.
"""
from __future__ import annotations

import bisect
import math
import os
import threading
from typing import Any

from ...model.checkpoint import Checkpoint, PickleGlobals
from ...model.dtypes import DType, by_name
from ...model.objects import StandIn, TorchEnum, Unreadable
from ...model.tensor import StorageRef, TensorRef, contiguous_strides
from ...source.local import close_quietly, map_file
from ...source.regions import ByteSource
from ...util.errors import CheckpointError, CorruptFileError, StorageError
from ...util.lazynp import np
from ...util.units import human_bytes
from ..formats.torch_zip import read_torch_zip
from ..pickle.reconstructors import classify
from ..pickle.unpickle import unpickle
from .sharded import plain_file_in

METADATA_NAME = ".metadata"
MAX_CHUNKS_PER_TENSOR = 1 << 20
MAX_GRID_CELLS = 1 << 22           # tiling check: cells of the grid the chunk edges make
MAX_PAIRWISE = 256                 # ... past the grid cap, pairwise overlap tests up to this many chunks
MAX_DIMS = 64


# -- reading the metadata's stand-ins -------------------------------------------------------------------
def _class_is(x: Any, name: str) -> bool:
    return isinstance(x, StandIn) and x.qualname.rsplit(".", 1)[-1] == name


def _attrs(x: Any) -> dict:
    if isinstance(x, StandIn):
        a = x.attributes
        if a is not None:
            return a
    return {}


def _int(x: Any) -> int | None:
    return x if type(x) is int else None


def _ints(x: Any) -> tuple[int, ...] | None:
    if not isinstance(x, (tuple, list)) or len(x) > MAX_DIMS:
        return None
    if not all(type(v) is int and v >= 0 for v in x):
        return None
    return tuple(x)


def _dtype_of(props: Any) -> tuple[DType | None, bool, str | None]:
    """(dtype, requires_grad, problem) from a TensorProperties stand-in (a state tuple or a dict)."""
    if not isinstance(props, StandIn):
        return None, False, "its properties are missing"
    state = props.state
    if isinstance(state, tuple) and state:
        dt, rg = state[0], state[2] if len(state) > 2 else False
    else:
        a = _attrs(props)
        dt, rg = a.get("dtype"), a.get("requires_grad", False)
    if isinstance(dt, TorchEnum) and dt.kind == "dtype":
        found = by_name(dt.name)
        if found is not None:
            return found, rg is True, None
        return None, False, f"unknown dtype {dt.name[:40]}"
    return None, False, "its dtype is missing"


def _storage_info(info: Any) -> tuple[str | None, int, int, str | None]:
    """(relative path, offset, length, problem) of a _StorageInfo stand-in."""
    a = _attrs(info)
    rel, off, length = a.get("relative_path"), _int(a.get("offset")), _int(a.get("length"))
    if not isinstance(rel, str) or off is None or length is None or off < 0 or length < 0:
        return None, 0, 0, "its storage record is malformed"
    transforms = a.get("transform_descriptors")
    if transforms:
        shown = ", ".join(str(t)[:40] for t in transforms) if isinstance(transforms, (list, tuple)) else "?"
        return rel, off, length, f"it is stored through transforms ({shown}), which ckptviewer does not read yet"
    return rel, off, length, None


# -- files -------------------------------------------------------------------------------------------
class _LazyFile:
    """A data file of the folder, memory-mapped on first use and closed with the checkpoint."""

    def __init__(self, name: str, path: str, size: int):
        self.name = name
        self.path = path
        self.size = size
        self._mm = None
        self._lock = threading.Lock()
        self._closed = False

    def map(self):
        with self._lock:
            if self._closed:
                raise StorageError("the checkpoint was closed")
            if self._mm is None:
                try:
                    mm, _ = map_file(self.path)
                except OSError as e:
                    raise StorageError(f"cannot read {self.name} ({e.strerror or e})") from None
                if len(mm) != self.size:
                    close_quietly([mm] if not isinstance(mm, bytes) else [])
                    raise StorageError(f"{self.name} changed size since the checkpoint was opened")
                self._mm = mm
            return self._mm

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._mm is not None and not isinstance(self._mm, bytes):
                mm, self._mm = self._mm, None
                mm.close()


# -- chunks and the assembled byte source ----------------------------------------------------------------
class _Chunk:
    __slots__ = ("offsets", "sizes", "file", "start", "length", "tensor", "error")

    def __init__(self, offsets: tuple[int, ...], sizes: tuple[int, ...], file: _LazyFile | None, start: int,
                 length: int):
        self.offsets = offsets
        self.sizes = sizes
        self.file = file
        self.start = start
        self.length = length
        self.tensor: TensorRef | None = None
        self.error: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)


def _flat_boxes(a: int, b: int, shape: tuple[int, ...]):
    """Cover the C-order element range [a, b) of ``shape`` with at most 2*ndim-1 boxes, in order.

    Yields (first index, box shape); each box is itself a contiguous run of the flat range."""
    if a >= b:
        return
    if not shape:
        yield (), ()
        return
    inner = math.prod(shape[1:])
    r0, rem0 = divmod(a, inner)
    r1, rem1 = divmod(b, inner)
    if r0 == r1:
        for idx, box in _flat_boxes(rem0, rem1, shape[1:]):
            yield (r0,) + idx, (1,) + box
        return
    if rem0:
        for idx, box in _flat_boxes(rem0, inner, shape[1:]):
            yield (r0,) + idx, (1,) + box
        r0 += 1
    if r1 > r0:
        yield (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + tuple(shape[1:])
    if rem1:
        for idx, box in _flat_boxes(0, rem1, shape[1:]):
            yield (r1,) + idx, (1,) + box


def _flat_index(idx: tuple[int, ...], shape: tuple[int, ...]) -> int:
    pos = 0
    for i, n in zip(idx, shape):
        pos = pos * n + i
    return pos


class ChunkedSource(ByteSource):
    """The C-ordered little-endian bytes of a tensor whose values are split into DCP chunks.

    ``view`` returns the bytes of any range: straight from the memory map when one contiguous chunk
    holds them in that order (a whole tensor saved as one chunk, or a range inside one row-split
    chunk), otherwise assembled into a new buffer from the parts of each chunk it overlaps.
    """

    def __init__(self, label: str, dtype: DType, shape: tuple[int, ...], chunks: list[_Chunk],
                 pickles: list[PickleGlobals]):
        self.label = label
        self.dtype = dtype
        self.shape = shape
        self.chunks = chunks
        self.size = math.prod(shape) * dtype.itemsize
        self._inner = math.prod(shape[1:]) if shape else 1
        self._pickles = pickles
        self._lock = threading.Lock()

    @property
    def files(self) -> list[str]:
        return sorted({c.file.path for c in self.chunks if c.file is not None})

    def describe(self) -> str:
        names = sorted({c.file.name for c in self.chunks if c.file is not None})
        return f"{len(self.chunks)} DCP chunk{'s' if len(self.chunks) != 1 else ''} in {', '.join(names[:4])}"

    # -- chunks on demand ------------------------------------------------------------------------
    def _chunk_tensor(self, c: _Chunk) -> TensorRef:
        with self._lock:
            if c.tensor is None and c.error is None:
                try:
                    c.tensor = self._open_chunk(c)
                except CheckpointError as e:
                    c.error = e.message
            if c.error is not None:
                raise StorageError(f"{self.label}: chunk at {list(c.offsets)}: {c.error}")
            return c.tensor

    def _open_chunk(self, c: _Chunk) -> TensorRef:
        if c.file is None:
            raise StorageError("its file is missing")
        mm = c.file.map()
        where = f"{c.file.name}@{c.start}"
        ck = read_torch_zip(mm, where, start=c.start, end=c.start + c.length)
        odd = {f"{m}.{n}" for p in ck.pickles for (m, n) in p.counts if classify(m, n) != "safe"}
        if odd:
            self._pickles.extend(PickleGlobals(f"{where}/{p.pickle}", p.counts) for p in ck.pickles)
            raise StorageError(f"the chunk's pickle names {', '.join(sorted(odd)[:4])}; not read")
        t = ck.root
        if not isinstance(t, TensorRef):
            raise StorageError(f"the chunk holds a {type(t).__name__}, not a tensor")
        if t.dtype.name != self.dtype.name or t.cast_from is not None:
            raise StorageError(f"the chunk holds {t.dtype.name}, the metadata says {self.dtype.name}")
        if tuple(t.shape) != c.sizes:
            raise StorageError(f"the chunk holds shape {list(t.shape)}, the metadata says {list(c.sizes)}")
        if t.kind not in ("tensor", "parameter"):
            raise StorageError(f"the chunk holds a {t.kind} tensor")
        t.validate()
        if t.problem:
            raise StorageError(t.problem)
        return t

    @staticmethod
    def _direct(t: TensorRef) -> bool:
        """The chunk's bytes lie in its storage in C order and little-endian: views need no copy."""
        return t.is_contiguous and (t.storage.byteorder == "little" or t.dtype.itemsize == 1)

    def _row_chunk_for(self, e0: int, e1: int) -> _Chunk | None:
        """A chunk that splits only dim 0 (or the whole tensor) and holds elements [e0, e1)."""
        inner = self._inner
        for c in self.chunks:
            if self.shape and tuple(c.sizes[1:]) != tuple(self.shape[1:]):
                continue
            lo = c.offsets[0] * inner if self.shape else 0
            hi = lo + c.numel
            if lo <= e0 and e1 <= hi:
                return c
        return None

    # -- ByteSource -----------------------------------------------------------------------------
    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise StorageError(f"read of bytes {offset}..{offset + length} outside a tensor of {self.size} bytes")
        if length == 0:
            return memoryview(b"")
        if not self.chunks:
            raise StorageError(f"{self.label}: no chunks to read")
        isz = self.dtype.itemsize
        e0, e1 = offset // isz, -(-(offset + length) // isz)
        c = self._row_chunk_for(e0, e1)
        if c is not None:
            t = self._chunk_tensor(c)
            if self._direct(t):
                lo = c.offsets[0] * self._inner if self.shape else 0
                return t.storage.source.view(t.offset * isz + offset - lo * isz, length)
        out = np.empty(e1 - e0, dtype=self.dtype.numpy)
        for first, box in _flat_boxes(e0, e1, self.shape):
            at = _flat_index(first, self.shape) - e0
            out_box = out[at:at + math.prod(box)].reshape(box)
            for c in self.chunks:
                lo = [max(f, o) for f, o in zip(first, c.offsets)]
                hi = [min(f + n, o + s) for f, n, o, s in zip(first, box, c.offsets, c.sizes)]
                if any(a >= b for a, b in zip(lo, hi)):
                    continue
                src = _raw_array(self._chunk_tensor(c))
                out_box[tuple(slice(a - f, b - f) for a, b, f in zip(lo, hi, first))] = \
                    src[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, c.offsets))]
        skip = offset - e0 * isz
        return memoryview(out.view(np.uint8))[skip:skip + length]

    def release(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        isz = self.dtype.itemsize
        e0, e1 = offset // isz, -(-(offset + length) // isz)
        inner = self._inner or 1
        r0, r1 = e0 // inner, -(-e1 // inner)
        for c in self.chunks:
            t = c.tensor
            if t is None or t.storage is None or t.storage.source is None:
                continue
            if not self.shape:
                t.storage.source.release(t.offset * isz, isz)
                continue
            a, b = max(r0, c.offsets[0]), min(r1, c.offsets[0] + c.sizes[0])
            if a < b and t.stride and t.stride[0] > 0:
                t.storage.source.release((t.offset + (a - c.offsets[0]) * t.stride[0]) * isz,
                                         (b - a) * t.stride[0] * isz)

    def file_location(self, offset: int) -> tuple[str, int] | None:
        # Only for a tensor saved as one contiguous chunk: any piece of it then lies in the file as is.
        # (A caller copies a whole piece from the place we name, and we are not told its length.)
        if len(self.chunks) != 1 or self.size == 0:
            return None
        try:
            t = self._chunk_tensor(self.chunks[0])
        except CheckpointError:
            return None
        if not self._direct(t):
            return None
        return t.storage.source.file_location(t.offset * self.dtype.itemsize + offset)


def _raw_array(t: TensorRef) -> np.ndarray:
    """A chunk tensor's raw elements as a (strided) numpy view of its bytes, in its shape."""
    stored = t.stored_dtype
    isz = stored.itemsize
    if t.numel == 0:
        return np.empty(t.shape, dtype=stored.numpy)
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
    base = np.frombuffer(t.storage.source.view(t.offset * isz, span * isz), dtype=stored.numpy, count=span)
    if t.storage.byteorder == "big" and isz > 1:
        base = base.view(base.dtype.newbyteorder(">"))
    return np.lib.stride_tricks.as_strided(base, shape=t.shape, strides=[s * isz for s in t.stride],
                                           writeable=False)


def check_tiling(shape: tuple[int, ...], chunks: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> str | None:
    """None when the chunk boxes cover ``shape`` exactly once; otherwise what is wrong."""
    ndim = len(shape)
    for offsets, sizes in chunks:
        if len(offsets) != ndim or len(sizes) != ndim:
            return f"a chunk has {len(offsets)} offsets and {len(sizes)} sizes for a {ndim}-d tensor"
        if any(o + s > n for o, s, n in zip(offsets, sizes, shape)):
            return f"the chunk at {list(offsets)} of size {list(sizes)} reaches outside the shape {list(shape)}"
    numel = math.prod(shape)
    if numel == 0:
        return None
    covered = sum(math.prod(s) for _, s in chunks)
    if covered != numel:
        return (f"its chunks hold {covered:,} elements of {numel:,} "
                f"({'some values are missing' if covered < numel else 'chunks overlap'})")
    if len(chunks) == 1:
        return None
    cuts = [sorted({0, shape[d]} | {o[d] for o, _ in chunks} | {o[d] + s[d] for o, s in chunks})
            for d in range(ndim)]
    cells = math.prod(len(c) - 1 for c in cuts)
    # Chunks written by DCP form a grid (as many cells as chunks); the bound keeps a hostile layout from
    # costing more than a small multiple of what its metadata takes to read.
    if cells <= min(MAX_GRID_CELLS, 64 * len(chunks) + 4096):
        grid = np.zeros([len(c) - 1 for c in cuts], dtype=np.int32)
        for offsets, sizes in chunks:
            grid[tuple(slice(bisect.bisect_left(cuts[d], offsets[d]),
                             bisect.bisect_left(cuts[d], offsets[d] + sizes[d])) for d in range(ndim))] += 1
        return None if bool((grid == 1).all()) else "its chunks overlap (and leave other values missing)"
    if len(chunks) > MAX_PAIRWISE:
        return f"its {len(chunks):,} chunks form a layout too irregular to check"
    for i, (oa, sa) in enumerate(chunks):
        for ob, sb in chunks[i + 1:]:
            if all(a < b + m and b < a + n for a, n, b, m in zip(oa, sa, ob, sb)):
                return "its chunks overlap (and leave other values missing)"
    return None


# -- the folder --------------------------------------------------------------------------------------------
def read_dcp(folder: str) -> Checkpoint:
    """Open a torch.distributed.checkpoint folder (see the module notes)."""
    folder = os.path.abspath(folder)
    md_path, why = plain_file_in(folder, METADATA_NAME)
    if md_path is None:
        raise CorruptFileError(f".metadata is refused: {why}", path=folder, hint="")
    if not os.path.isfile(md_path):
        raise CorruptFileError(".metadata is not a regular file", path=folder, hint="")
    try:
        buf, md_resources = map_file(md_path)
    except OSError as e:
        raise CheckpointError(f"cannot read .metadata ({e.strerror or e})", path=folder) from None
    warnings: list[str] = []
    pickles: list[PickleGlobals] = []
    try:
        if len(buf) == 0:
            raise CorruptFileError(".metadata is empty")
        head = bytes(buf[:2])
        if head[:1] != b"\x80":
            raise CorruptFileError(".metadata is not a pickle")
        md, end = unpickle(buf, name=METADATA_NAME, warnings=warnings, pickles=pickles)
        if end != len(buf):
            warnings.append(f".metadata has {len(buf) - end} bytes after its pickle")
        md_size = len(buf)
    finally:
        close_quietly(md_resources)
    a = _attrs(md)
    sdm = a.get("state_dict_metadata")
    if not _class_is(md, "Metadata") or not isinstance(sdm, dict):
        what = md.qualname if isinstance(md, StandIn) else type(md).__name__
        raise CorruptFileError(f".metadata holds a {what[:80]}, not a torch.distributed.checkpoint Metadata",
                               hint="Nothing in it was run.")
    reader = _Reader(folder, warnings, pickles)
    try:
        return reader.build(a, sdm, md_size)
    except BaseException:
        close_quietly(list(reader.files.values()))
        raise


class _Reader:
    def __init__(self, folder: str, warnings: list[str], pickles: list[PickleGlobals]):
        self.folder = folder
        self.warnings = warnings
        self.pickles = pickles
        self.files: dict[str, _LazyFile] = {}
        self.file_problems: dict[str, str] = {}
        self.storages: dict[str, StorageRef] = {}
        self.chunk_count: dict[str, int] = {}

    def file(self, name: str) -> tuple[_LazyFile | None, str | None]:
        if name in self.files:
            return self.files[name], None
        if name in self.file_problems:
            return None, self.file_problems[name]
        path, why = plain_file_in(self.folder, name)
        if path is None:
            problem = f"its data file is refused: {why}"
        elif not os.path.isfile(path):
            problem = f"its data file {name} is missing"
        else:
            try:
                size = os.path.getsize(path)
            except OSError as e:
                problem = f"its data file {name} cannot be read ({e.strerror or e})"
            else:
                f = self.files[name] = _LazyFile(name, path, size)
                return f, None
        self.file_problems[name] = problem
        self.warnings.append(f".metadata names a data file {problem.split(' ', 3)[-1]}; what it holds is unreadable"
                             if path is not None else f".metadata names a data file that is refused: {why}")
        return None, problem

    def record(self, info: Any) -> tuple[_LazyFile | None, int, int, str | None]:
        rel, off, length, problem = _storage_info(info)
        if rel is None:
            return None, 0, 0, problem
        f, why = self.file(rel)
        if f is None:
            return None, 0, 0, why
        if problem:
            return f, off, length, problem
        if off + length > f.size:
            return f, off, length, (f"its record at bytes {off:,}..{off + length:,} of {rel} lies past the "
                                    f"file's end ({f.size:,} bytes)")
        self.chunk_count[rel] = self.chunk_count.get(rel, 0) + 1
        return f, off, length, None

    def build(self, a: dict, sdm: dict, md_size: int) -> Checkpoint:
        storage_data = a.get("storage_data")
        chunk_info: dict[tuple[str, tuple[int, ...]], Any] = {}
        bytes_info: dict[str, Any] = {}
        if isinstance(storage_data, dict):
            for key, info in storage_data.items():
                ka = _attrs(key)
                fqn = ka.get("fqn")
                if not isinstance(fqn, str):
                    continue
                offsets = ka.get("offset")
                if offsets is None:
                    bytes_info.setdefault(fqn, info)
                else:
                    o = _ints(offsets)
                    if o is not None:
                        chunk_info.setdefault((fqn, o), info)
        else:
            self.warnings.append(".metadata has no storage records; no values can be read")
        values: dict[str, Any] = {}
        split: list[tuple[str, TensorRef, list[_Chunk]]] = []
        n_tensors = n_values = 0
        for fqn, entry in sdm.items():
            if not isinstance(fqn, str):
                self.warnings.append(f"a key of type {type(fqn).__name__} in .metadata was skipped")
                continue
            if _class_is(entry, "BytesStorageMetadata"):
                values[fqn] = self.value(fqn, bytes_info.get(fqn))
                n_values += 1
            elif _class_is(entry, "TensorStorageMetadata"):
                t, chunks = self.tensor(fqn, _attrs(entry), chunk_info)
                values[fqn] = t
                n_tensors += 1
                if isinstance(t, TensorRef) and len(chunks) > 1:
                    split.append((fqn, t, chunks))
            else:
                what = entry.qualname if isinstance(entry, StandIn) else type(entry).__name__
                self.warnings.append(f"{fqn[:120]}: unknown storage metadata {what[:80]}; shown as unreadable")
                values[fqn] = Unreadable("entry", f"unknown storage metadata {what[:80]}")
        root = self.nest(values, a.get("planner_data"))
        meta = self.meta(a, split, n_tensors, n_values)
        # The metadata's own dataclasses: interpreted here, so not worth a "not imported" warning.
        meta["record_classes"] = sorted(f"{m}.{n}" for p in self.pickles if p.pickle == ".metadata"
                                        for (m, n) in p.counts if m.startswith("torch.distributed.checkpoint.")
                                        or (m, n) in (("pathlib", "PosixPath"), ("pathlib", "WindowsPath")))
        sizes = sum(f.size for f in self.files.values())
        return Checkpoint(self.folder, "torch-dcp", root, storages=self.storages, warnings=self.warnings, meta=meta,
                          pickles=self.pickles, file_size=md_size + sizes, resources=list(self.files.values()))

    # -- entries ---------------------------------------------------------------------------------
    def tensor(self, fqn: str, a: dict, chunk_info: dict) -> tuple[Any, list[_Chunk]]:
        dtype, requires_grad, problem = _dtype_of(a.get("properties"))
        shape = _ints(a.get("size"))
        if dtype is None or shape is None:
            why = problem or "its size is malformed"
            self.warnings.append(f"tensor {fqn[:120]}: {why}; shown as unreadable")
            return Unreadable("tensor", why), []
        raw_chunks = a.get("chunks")
        boxes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        if not isinstance(raw_chunks, list) or len(raw_chunks) > MAX_CHUNKS_PER_TENSOR:
            problem = "its chunk list is malformed or too long"
        else:
            for c in raw_chunks:
                ca = _attrs(c)
                o, s = _ints(ca.get("offsets")), _ints(ca.get("sizes"))
                if o is None or s is None:
                    problem = "a chunk's offsets or sizes are malformed"
                    break
                boxes.append((o, s))
            else:
                problem = check_tiling(shape, boxes)
        chunks: list[_Chunk] = []
        files: list[str] = []
        if problem is None:
            for o, s in boxes:
                info = chunk_info.get((fqn, o))
                if info is None:
                    problem = f"the chunk at {list(o)} has no storage record"
                    break
                f, start, length, why = self.record(info)
                if why:
                    problem = f"the chunk at {list(o)}: {why}"
                    break
                chunks.append(_Chunk(o, s, f, start, length))
                if f.name not in files:
                    files.append(f.name)
        if len(chunks) == 1:
            key = f"{files[0]}:{fqn}"
        elif chunks:
            key = f"{len(chunks)} chunks in {', '.join(files[:2])}{', ...' if len(files) > 2 else ''}:{fqn}"
        else:
            key = f"(no data):{fqn}"
        source = ChunkedSource(fqn, dtype, shape, chunks if problem is None else [], self.pickles)
        st = StorageRef(key, dtype, source.size, "cpu", typed=True, source=source)
        if problem:
            st.problem = problem        # listed per tensor wherever unreadable tensors are reported
        self.storages[key] = st
        t = TensorRef(st, 0, shape, contiguous_strides(shape), dtype, requires_grad=requires_grad)
        return t, chunks

    def value(self, fqn: str, info: Any) -> Any:
        if info is None:
            self.warnings.append(f"value {fqn[:120]}: no storage record; shown as unreadable")
            return Unreadable("value", "no storage record")
        f, start, length, why = self.record(info)
        if why:
            self.warnings.append(f"value {fqn[:120]}: {why}")
            return Unreadable("value", why)
        where = f"{f.name}@{start}"
        try:
            ck = read_torch_zip(f.map(), where, start=start, end=start + length)
        except CheckpointError as e:
            self.warnings.append(f"value {fqn[:120]} ({where}): {e.message}")
            return Unreadable("value", e.message)
        self.warnings.extend(f"value {fqn[:120]}: {w}" for w in ck.warnings)
        self.pickles.extend(PickleGlobals(f"{fqn[:120]} ({where})", p.counts) for p in ck.pickles)
        for key, st in ck.storages.items():
            st.key = f"{where}:{key}"
            self.storages[st.key] = st
        return ck.root

    # -- the original nesting --------------------------------------------------------------------
    def nest(self, values: dict[str, Any], planner_data: Any) -> Any:
        """The nested state_dict torch saved (``planner_data`` maps each key to its path), or the flat
        mapping when the paths are absent or do not fit together."""
        if not isinstance(planner_data, dict) or not values:
            return values
        root: dict = {}
        limit = len(values)
        try:
            for fqn, value in values.items():
                path = planner_data.get(fqn)
                if (not isinstance(path, tuple) or not path or len(path) > 200
                        or not all(type(p) in (str, int) for p in path) or type(path[0]) is not str):
                    raise ValueError(f"no usable path for {fqn[:80]!r}")
                _set_element(root, path, value, limit)
        except ValueError as e:
            self.warnings.append(f"the saved nesting of the state_dict does not fit together ({e}); "
                                 f"entries are shown by their flattened keys")
            return values
        return root

    # -- meta ------------------------------------------------------------------------------------
    def meta(self, a: dict, split: list, n_tensors: int, n_values: int) -> dict:
        meta: dict = {}
        if isinstance(a.get("version"), str):
            meta["dcp_version"] = a["version"][:40]
        sm = _attrs(a.get("storage_meta"))
        if isinstance(sm.get("save_id"), str):
            meta["save_id"] = sm["save_id"][:80]
        meta["files"] = ([{"file": f.name, "bytes": f.size, "records": self.chunk_count.get(f.name, 0)}
                          for f in self.files.values()]
                         + [{"file": n, "problem": p} for n, p in self.file_problems.items()])
        meta["chunks"] = {fqn: [{"offsets": list(c.offsets), "sizes": list(c.sizes), "file": c.file.name,
                                 "offset": c.start, "length": c.length} for c in chunks]
                          for fqn, _, chunks in split}
        total = sum(f.size for f in self.files.values())
        layout = [f"{n_tensors:,} tensors ({len(split):,} split into chunks), {n_values:,} other values, in "
                  f"{len(self.files)} data file{'s' if len(self.files) != 1 else ''} ({human_bytes(total)})"
                  + (f"; {len(self.file_problems)} missing or refused" if self.file_problems else "")]
        for fqn, t, chunks in split[:12]:
            dims = sorted({d for c in chunks for d, (o, s) in enumerate(zip(c.offsets, c.sizes)) if s != t.shape[d]})
            names = list(dict.fromkeys(c.file.name for c in chunks))
            layout.append(f"{fqn}: {list(t.shape)} in {len(chunks)} chunks split along dim "
                          f"{', '.join(map(str, dims))} across {', '.join(names[:4])}"
                          + (f" and {len(names) - 4} more" if len(names) > 4 else ""))
        if len(split) > 12:
            layout.append(f"... and {len(split) - 12} more split tensors")
        meta["layout"] = layout
        return meta


def _set_element(root: dict, path: tuple, value: Any, limit: int) -> None:
    """torch's ``_traverse.set_element`` on our data: a str key makes a dict level, an int a list level.

    Refuses what would clash (a value where a container is, a list index past ``limit``)."""
    cur: Any = root
    for i in range(1, len(path)):
        key, nxt = path[i - 1], path[i]
        new = {} if type(nxt) is str else []
        cur = _child(cur, key, new, limit)
    _put(cur, path[-1], value, limit)


def _child(cur: Any, key: Any, new: Any, limit: int) -> Any:
    if isinstance(cur, dict):
        if type(key) is not str:
            raise ValueError("an int key in a mapping level")
        if key not in cur:
            cur[key] = new
        found = cur[key]
    else:
        if type(key) is not int or key > limit:
            raise ValueError("a list index out of range")
        cur.extend([None] * (key + 1 - len(cur)))
        if cur[key] is None:
            cur[key] = new
        found = cur[key]
    if type(found) is not type(new):
        raise ValueError("a value and a container at the same place")
    return found


def _put(cur: Any, key: Any, value: Any, limit: int) -> None:
    if isinstance(cur, dict):
        if type(key) is not str or key in cur:
            raise ValueError("two entries at the same place")
        cur[key] = value
    else:
        if type(key) is not int or key > limit:
            raise ValueError("a list index out of range")
        cur.extend([None] * (key + 1 - len(cur)))
        if cur[key] is not None:
            raise ValueError("two entries at the same place")
        cur[key] = value
