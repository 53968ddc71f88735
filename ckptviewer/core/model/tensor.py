"""Lazy tensors: handles that know their layout and where their bytes are, and read them on demand.

A :class:`StorageRef` is one storage record of a file (``data/3`` in a zip, the fourth storage of a
legacy file, a safetensors byte range): its element type, declared size, saved location and a
:class:`ByteSource` that can hand out its bytes. A :class:`TensorRef` is a view of a storage (offset,
shape, stride), exactly what ``torch._utils._rebuild_tensor_v2`` would build, without building it.

Opening a file creates these objects only; no tensor byte is read until ``read()``, ``iter_raw()``
or ``sha256()`` is called.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Iterator

from ..source.regions import ByteSource
from ..util.errors import LimitExceededError, StorageError
from ..util.lazynp import np
from .dtypes import DType, to_numbers, unpack_sub_byte

# A view may declare more elements than it stores (stride 0). Past this many we refuse to read values:
# hashing or plotting 10**15 repeats of one number is a denial of service, not information.
MAX_VIEW_ELEMENTS = 1 << 36
# A view that presents more elements than its storage holds (stride 0, overlapping strides) costs time in
# proportion to what it presents, not to the file: a 4-byte storage seen as 2**36 elements would take
# minutes to hash. Such views are readable up to this many elements (0.5 GiB of float32).
MAX_EXPANDED_ELEMENTS = 1 << 27
# Reads and hashes go in pieces of about this many bytes, so memory stays bounded for huge tensors.
CHUNK_BYTES = 16 << 20


class StorageRef:
    """One storage record. ``nbytes`` is what the pickle declares; ``source`` what the file holds."""

    __slots__ = ("key", "dtype", "nbytes", "location", "source", "byteorder", "typed", "problem", "users")

    def __init__(self, key: str, dtype: DType | None, nbytes: int, location: str, *, typed: bool,
                 source: ByteSource | None = None, byteorder: str = "little"):
        self.key = key
        self.dtype = dtype          # None for an untyped storage until a tensor says what it holds
        self.nbytes = nbytes
        self.location = location
        self.source = source
        self.byteorder = byteorder
        self.typed = typed
        self.problem: str | None = None
        self.users: list[TensorRef] = []

    def __repr__(self) -> str:
        return f"<storage {self.key} {self.dtype} {self.nbytes} bytes on {self.location}>"


def _span(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements from the first to one past the last element a view touches (0 for an empty view)."""
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((n - 1) * st for n, st in zip(shape, stride))


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))


def tensor_from_numpy(arr, label: str) -> TensorRef | None:
    """A CPU tensor handle holding a numeric numpy array's values (bytes in memory, little-endian), or None
    for an array no torch dtype can hold. ``label`` names its storage in messages."""
    from ..source.regions import BytesRegion
    from .dtypes import from_numpy
    if arr.dtype.kind not in "biufc":
        return None
    dt = from_numpy(arr.dtype)
    if dt is None:
        return None
    raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)
    st = StorageRef(f"<numpy {label}>", dt, raw.nbytes, "cpu", typed=True, source=BytesRegion(raw.tobytes()))
    return TensorRef(st, 0, tuple(raw.shape), contiguous_strides(tuple(raw.shape)), dt)


class TensorRef:
    """A tensor as a file describes it. ``problem`` is set when its values cannot be read."""

    __slots__ = ("storage", "offset", "shape", "stride", "dtype", "requires_grad", "kind", "subclass",
                 "extra", "device_override", "problem", "_checked", "numel", "cast_from", "origin", "__weakref__")

    def __init__(self, storage: StorageRef | None, offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
                 dtype: DType, *, requires_grad: bool = False, kind: str = "tensor"):
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride
        self.numel = math.prod(shape)   # shapes never change after construction
        self.dtype = dtype
        self.requires_grad = requires_grad
        self.kind = kind            # "tensor", "parameter", "quantized", "sparse", "meta", ...
        self.subclass: str | None = None    # a tensor subclass the file names (rebuilt as a plain tensor)
        self.extra: dict | None = None      # quantizer parameters, sparse components, ...
        self.device_override: str | None = None
        self.problem: str | None = None
        self._checked = False
        self.cast_from: DType | None = None     # set on edited views: the stored type, read then converted
        self.origin: TensorRef | None = None    # the file's tensor an edited view derives from
        if storage is not None:
            storage.users.append(self)

    def derive(self, *, device: str | None = None, dtype: DType | None = None) -> "TensorRef":
        """An edited view of this tensor: same bytes, another recorded device and/or a cast dtype.

        Not registered as a user of the storage (it is not in the file); ``origin`` points back.
        """
        t = TensorRef(None, self.offset, self.shape, self.stride, self.dtype, requires_grad=self.requires_grad,
                      kind=self.kind)
        t.storage = self.storage
        t.subclass, t.extra, t.problem, t._checked = self.subclass, self.extra, self.problem, self._checked
        t.device_override = self.device_override
        t.cast_from = self.cast_from
        t.origin = self.origin or self
        if device is not None:
            t.device_override = device
        if dtype is not None and dtype.name != self.dtype.name:
            t.cast_from = self.stored_dtype
            t.dtype = dtype
            if t.cast_from.name == dtype.name:
                t.cast_from = None
        return t

    @property
    def stored_dtype(self) -> DType:
        """The element type of the bytes in the storage (differs from ``dtype`` for a cast view)."""
        return self.cast_from or self.dtype

    # -- layout ---------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return self.dtype.storage_bytes(self.numel)

    @property
    def device(self) -> str:
        if self.device_override:
            return self.device_override
        return self.storage.location if self.storage is not None else "meta"

    @property
    def is_contiguous(self) -> bool:
        expected = 1
        for n, st in zip(reversed(self.shape), reversed(self.stride)):
            if n != 1 and st != expected:
                return False
            expected *= n
        return True

    @property
    def has_zero_stride(self) -> bool:
        return any(st == 0 and n > 1 for n, st in zip(self.shape, self.stride))

    @property
    def storage_key(self) -> str | None:
        return self.storage.key if self.storage is not None else None

    def validate(self) -> None:
        """Check the view against its storage; sets ``problem`` instead of raising. Runs once."""
        if self.problem or self._checked:
            return
        self._checked = True
        if self.storage is None:
            if self.kind not in ("meta",):
                self.problem = "the file holds no storage for this tensor"
            return
        shape, stride = self.shape, self.stride
        # One pass over the dimensions (this runs for every tensor of a file when it opens).
        negative = self.offset < 0
        span, empty = 1, False
        for n, st in zip(shape, stride):
            if n < 0 or st < 0:
                negative = True
            elif n == 0:
                empty = True
            else:
                span += (n - 1) * st
        if empty:
            span = 0
        if len(shape) != len(stride):
            self.problem = f"shape {list(shape)} and stride {list(stride)} differ in length"
        elif negative:
            self.problem = (f"negative offset, size or stride (offset {self.offset}, shape {list(shape)}, "
                            f"stride {list(stride)})")
        elif self.numel > MAX_VIEW_ELEMENTS:
            self.problem = f"declares {self.numel:,} elements; values not read"
        elif self.storage.problem:
            self.problem = self.storage.problem
        elif self.stored_dtype.per_byte > 1 and self.numel > 1 and not self.is_contiguous:
            self.problem = (f"a non-contiguous view of the packed type {self.stored_dtype.name}; values not read")
        else:
            itemsize = self.stored_dtype.itemsize
            per_byte = self.stored_dtype.per_byte
            if span:
                have = self.storage.nbytes // itemsize * per_byte
                if self.offset + span > have:
                    self.problem = (f"needs elements {self.offset}..{self.offset + span} of storage "
                                    f"{self.storage.key}, which holds {have}")
                elif self.numel > have and self.numel > MAX_EXPANDED_ELEMENTS:
                    self.problem = (f"a stride-0 or overlapping view presenting {self.numel:,} elements of a "
                                    f"storage of {have:,}; values not read")
                elif self.storage.source is None:
                    self.problem = f"storage record {self.storage.key} is missing from the file"
                elif self.storage.source.size < self.stored_dtype.storage_bytes(self.offset + span):
                    self.problem = (f"storage record {self.storage.key} has {self.storage.source.size} bytes, "
                                    f"the tensor needs {self.stored_dtype.storage_bytes(self.offset + span)}")

    @property
    def integrity_error(self) -> str | None:
        """What contradicts the stored checksum of this tensor's bytes (a zip member's CRC-32), once they
        were read; None while nothing does (or nothing was read yet: see ``integrity_checked``)."""
        src = self.storage.source if self.storage is not None else None
        return src.crc_error if src is not None else None

    @property
    def integrity_checked(self) -> bool:
        src = self.storage.source if self.storage is not None else None
        return src is None or src.verified

    def check_integrity(self) -> str | None:
        """Finish checking the storage record's checksum (reading what in-order reads have not covered)."""
        src = self.storage.source if self.storage is not None else None
        return src.verify() if src is not None else None

    @property
    def readable(self) -> bool:
        self.validate()
        return self.problem is None and (self.storage is not None or self.numel == 0)

    # -- values ---------------------------------------------------------------------------------
    def _check_readable(self) -> None:
        self.validate()
        if self.problem:
            raise StorageError(self.problem)
        if self.storage is None and self.numel:
            raise StorageError(f"a {self.kind} tensor has no stored values")

    def _raw_view(self, first: int = 0, count: int | None = None, through: bool = False) -> np.ndarray:
        """Raw elements of rows ``first:first+count`` along dim 0, as a (possibly strided) numpy view."""
        shape = list(self.shape)
        offset = self.offset
        if shape:
            count = shape[0] - first if count is None else count
            offset += first * self.stride[0]
            shape[0] = count
        span = _span(tuple(shape), self.stride)
        stored = self.stored_dtype
        raw = stored.numpy
        if span == 0:
            return np.empty(shape, dtype=raw)
        if stored.per_byte > 1:         # contiguous (validate), so the elements are one run
            pb = stored.per_byte
            lo, hi = offset // pb, -(-(offset + span) // pb)
            source = self.storage.source
            packed = np.frombuffer(source.read_through(lo, hi - lo) if through else source.view(lo, hi - lo),
                                   dtype=np.uint8)
            return unpack_sub_byte(packed, pb, offset - lo * pb, span).reshape(shape)
        isz = stored.itemsize
        source = self.storage.source
        buf = source.read_through(offset * isz, span * isz) if through else source.view(offset * isz, span * isz)
        base = np.frombuffer(buf, dtype=raw, count=span)
        if self.storage.byteorder == "big" and isz > 1:
            base = base.view(base.dtype.newbyteorder(">"))
        return np.lib.stride_tricks.as_strided(base, shape=shape, strides=[st * isz for st in self.stride],
                                               writeable=False)

    def read_view(self, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
        """Raw elements of a sub-view of this tensor's storage (``offset``, ``shape`` and ``stride`` in elements,
        as for the tensor itself), C-contiguous and little-endian, a cast view's conversion applied.

        Only the bytes between the first and the last element touched are mapped, and only the pages of the
        elements themselves are read: a plane of a huge tensor, or every 100th row of it, costs what it shows.
        """
        self._check_readable()
        shape, stride = tuple(int(n) for n in shape), tuple(int(s) for s in stride)
        if offset < 0 or any(n < 0 or s < 0 for n, s in zip(shape, stride)) or len(shape) != len(stride):
            raise StorageError(f"a read of elements at {offset} shaped {list(shape)} is not a view of this tensor")
        span = _span(shape, stride)
        stored = self.stored_dtype
        if span == 0:
            return self._little(np.empty(shape, dtype=stored.numpy))
        isz = stored.itemsize
        buf = self.storage.source.view(offset * isz, span * isz)
        base = np.frombuffer(buf, dtype=stored.numpy, count=span)
        if self.storage.byteorder == "big" and isz > 1:
            base = base.view(base.dtype.newbyteorder(">"))
        view = np.lib.stride_tricks.as_strided(base, shape=shape, strides=[s * isz for s in stride], writeable=False)
        # A copy, always: the result outlives the call (a table page, a plot) and must not pin the file's map.
        return self._little(np.array(view, order="C"))

    def take(self, offsets: np.ndarray) -> np.ndarray:
        """Raw elements at storage element ``offsets`` (an int array of any shape), little-endian, a cast view's
        conversion applied. Neighbours are read in runs of at most a chunk's bytes, so scattered elements (a
        sample, a column of a huge matrix, a page of a transposed tensor) cost their own pages only."""
        self._check_readable()
        offsets = np.asarray(offsets, dtype=np.int64)
        flat = offsets.reshape(-1)
        stored = self.stored_dtype
        isz = stored.itemsize
        out = np.empty(flat.size, dtype=stored.numpy)
        if flat.size:
            order = np.argsort(flat, kind="stable")
            ordered = flat[order]
            if ordered[0] < 0:
                raise StorageError(f"a read of element {int(ordered[0])} is outside the storage")
            limit = max(1, CHUNK_BYTES // isz)
            source = self.storage.source
            i = 0
            while i < ordered.size:
                j = max(i + 1, int(np.searchsorted(ordered, ordered[i] + limit, side="left")))
                base = int(ordered[i])
                span = int(ordered[j - 1]) - base + 1
                run = np.frombuffer(source.view(base * isz, span * isz), dtype=stored.numpy, count=span)
                if self.storage.byteorder == "big" and isz > 1:
                    run = run.view(run.dtype.newbyteorder(">"))
                out[order[i:j]] = run[ordered[i:j] - base]      # copies (and swaps bytes when big-endian)
                i = j
        return self._little(out.reshape(offsets.shape))

    def rows_per_chunk(self, max_bytes: int) -> int:
        """How many rows (along dim 0) fit in about ``max_bytes``."""
        rows = self.shape[0] if self.shape else 1
        row_bytes = max(1, self.numel * max(self.dtype.itemsize, self.stored_dtype.itemsize) // max(rows, 1))
        return max(1, max_bytes // row_bytes)

    def _row_chunks(self, max_bytes: int, step: int | None = None) -> Iterator[tuple[int, int]]:
        if not self.shape:
            yield 0, 1
            return
        rows = self.shape[0]
        step = step or self.rows_per_chunk(max_bytes)
        for first in range(0, rows, step):
            yield first, min(step, rows - first)

    def iter_raw(self, max_bytes: int = CHUNK_BYTES, rows: int | None = None) -> Iterator[np.ndarray]:
        """C-ordered, little-endian raw elements in pieces along dim 0 (bounded memory).

        ``rows`` fixes the rows per piece, so two tensors of one shape can be walked in step."""
        self._check_readable()
        if self.numel == 0:
            return
        if not self.shape:
            yield self._little(np.ascontiguousarray(self._raw_view(through=True)).reshape(1))
            self.storage.source.verify()
            return
        isz = self.stored_dtype.itemsize
        source = self.storage.source
        for first, count in self._row_chunks(max_bytes, rows):
            try:
                yield self._little(np.ascontiguousarray(self._raw_view(first, count, through=True)))
            finally:   # also when the consumer stops early (zip() of two iterators does)
                if self.stored_dtype.per_byte == 1:
                    shape = (count,) + tuple(self.shape[1:])
                    source.release((self.offset + first * self.stride[0]) * isz, _span(shape, self.stride) * isz)
        # Every value was read: settle the record's checksum (free when the reads covered it in order).
        source.verify()

    def _little(self, arr: np.ndarray) -> np.ndarray:
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if self.cast_from is not None:
            from .cast import cast_raw
            arr = cast_raw(arr, self.cast_from, self.dtype)
        return arr

    def read_flat(self, start: int, stop: int, through: bool = False) -> np.ndarray:
        """Raw elements ``start:stop`` of the C-ordered flattening, little-endian (cast views converted), as
        a fresh array. Reads only those bytes of a contiguous tensor, and only the rows along dim 0 that
        hold them otherwise (a computed tensor, such as a merge, pulls its inputs' values this way).
        ``through``: the caller reads the tensor in order, so the record's checksum is checked on the way
        (see ``ByteSource.read_through``; ``check_integrity()`` settles it)."""
        self._check_readable()
        start, stop = max(0, start), min(self.numel, stop)
        if stop <= start:
            return np.empty(0, dtype=self.dtype.numpy)
        stored = self.stored_dtype
        isz = stored.itemsize
        source = self.storage.source
        if self.is_contiguous and stored.per_byte == 1:
            first_byte, nbytes = (self.offset + start) * isz, (stop - start) * isz
            try:
                buf = source.read_through(first_byte, nbytes) if through else source.view(first_byte, nbytes)
                raw = np.frombuffer(buf, dtype=stored.numpy, count=stop - start)
                if self.storage.byteorder == "big" and isz > 1:
                    raw = raw.view(raw.dtype.newbyteorder(">"))
                out = self._little(np.array(raw))       # a copy: the pages are released below
            finally:
                source.release(first_byte, nbytes)
            return out
        if not self.shape:
            return self._little(np.ascontiguousarray(self._raw_view(through=through)).reshape(1))
        row = self.numel // self.shape[0]
        first, last = start // row, -(-stop // row)
        rows = np.ascontiguousarray(self._raw_view(first, last - first, through=through)).reshape(-1)
        return self._little(rows[start - first * row:stop - first * row].copy())

    def iter_values(self, max_bytes: int = CHUNK_BYTES, rows: int | None = None) -> Iterator[np.ndarray]:
        """Like ``iter_raw`` but as numbers numpy can do math on (bf16/fp8 widened to float32)."""
        for chunk in self.iter_raw(max_bytes, rows):
            yield to_numbers(chunk, self.dtype)

    def read_raw(self) -> np.ndarray:
        """All raw elements, C-contiguous, little-endian, in this tensor's shape."""
        self._check_readable()
        out = self._little(np.ascontiguousarray(self._raw_view(through=True))).reshape(self.shape)
        if self.storage is not None and self.storage.source is not None:
            self.storage.source.verify()
        return out

    def read(self) -> np.ndarray:
        """All values as a numpy array (bf16/fp8 as float32, complex32 as complex64; packed FP4 as
        float32 with the last dimension doubled, its logical shape)."""
        values = to_numbers(self.read_raw().reshape(-1), self.dtype)
        return values.reshape(self.logical_shape)

    @property
    def logical_shape(self) -> tuple[int, ...]:
        """The shape of the values people mean: packed FP4 has two per element along the last dimension."""
        lanes = self.dtype.values_per_element
        if lanes == 1:
            return self.shape
        return (self.shape[:-1] + (self.shape[-1] * lanes,)) if self.shape else (lanes,)

    def iter_bytes(self, max_bytes: int = CHUNK_BYTES) -> Iterator[memoryview | bytes]:
        """The C-contiguous little-endian bytes, in pieces, without copying when the layout allows."""
        self._check_readable()
        if self.numel == 0:
            return
        isz = self.dtype.itemsize
        pb = self.dtype.per_byte
        if pb > 1 and self.cast_from is None:
            # Packed sub-byte elements hash as torch stores them (int_repr gives these bytes): whole bytes
            # when the view starts on a byte boundary, else repacked from the unpacked values.
            if self.offset % pb == 0:
                start, total = self.offset // pb, self.nbytes
                yield from _pieces(self.storage.source, start, total, max_bytes)
                self.storage.source.verify()
                return
            values = np.concatenate(list(self.iter_raw(max_bytes))).astype(np.uint8)
            values = np.concatenate([values, np.zeros(-len(values) % pb, dtype=np.uint8)]).reshape(-1, pb)
            packed = np.zeros(len(values), dtype=np.uint8)
            for i in range(pb):
                packed |= values[:, i] << np.uint8(i * (8 // pb))
            yield packed.tobytes()
            return
        if self.is_contiguous and self.cast_from is None and (self.storage.byteorder == "little" or isz == 1):
            start, total = self.offset * isz, self.nbytes
            yield from _pieces(self.storage.source, start, total, max_bytes)
            self.storage.source.verify()
            return
        for chunk in self.iter_raw(max_bytes):
            yield chunk.view(np.uint8).reshape(-1).data

    def sha256(self, progress: Callable[[int], None] | None = None) -> str:
        """Hex sha256 of the values laid out C-contiguous, little-endian (the conformance contract)."""
        h = hashlib.sha256()
        for piece in self.iter_bytes():
            h.update(piece)
            if progress:
                progress(len(piece))
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"<tensor {self.dtype} {list(self.shape)} on {self.device}>"


def _pieces(source: ByteSource, start: int, total: int, max_bytes: int) -> Iterator[memoryview]:
    for pos in range(0, total, max_bytes):
        n = min(max_bytes, total - pos)
        try:
            yield source.read_through(start + pos, n)
        finally:
            source.release(start + pos, n)


def guard_declared_bytes(nbytes: int, available: int, what: str) -> None:
    """Refuse a declared size that cannot be backed by the bytes left in the file."""
    if nbytes < 0:
        raise LimitExceededError(f"{what} declares a negative size ({nbytes})")
    if nbytes > available:
        raise LimitExceededError(f"{what} declares {nbytes:,} bytes but only {available:,} remain in the file")
