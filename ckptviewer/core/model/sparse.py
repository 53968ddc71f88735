"""Sparse, nested and quantized tensors: what their components mean, read on demand.

A sparse tensor (COO, CSR, CSC, BSR, BSC) is stored as index and value tensors. :class:`SparseTensorRef`
keeps those components as ordinary :class:`TensorRef` handles and presents the tensor's dense values in C
order, chunk by chunk along dim 0, without ever holding the dense array: the checksum the conformance
contract defines (sha256 of the dense values) streams like any other tensor's. Statistics and histograms
run over the stored values instead (``stored_values``), which is what a person means by "the values of a
sparse tensor"; the statistics say so.

Reading the dense values needs the index components in memory (8 bytes per stored value and index, the
size of what the file holds, never the dense size) and checks every index against the shape.

Nested tensors keep their values in one buffer; ``nested_shapes`` reads the per-component sizes (a small
int64 tensor) on demand. Quantized tensors carry their quantizer (scale and zero point, per tensor or per
channel) in ``extra["quantizer"]``; ``quantizer_summary`` says it in a line.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from ..util.errors import StorageError
from ..util.lazynp import np
from .tensor import CHUNK_BYTES, TensorRef, contiguous_strides

SPARSE_LAYOUTS = ("sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc")
# The dense form of a sparse tensor is hashed element by element; past this many elements the checksum
# would take minutes (2**33 float32 elements are 32 GB of zeros to hash), so it is refused.
MAX_DENSE_ELEMENTS = 1 << 33
# Component values read for display (nested sizes, per-channel scales) are capped: a few KB at most.
MAX_SHOWN_BYTES = 1 << 16


class SparseTensorRef(TensorRef):
    """A sparse tensor: ``parts`` maps component names (``indices``, ``crow_indices``, ``values``...) to
    tensors. ``nbytes`` is what the components store; ``dense_nbytes`` what the dense form would take."""

    __slots__ = ("layout", "parts", "coalesced", "_entries")

    def __init__(self, layout: str, shape: tuple[int, ...], parts: dict[str, TensorRef], *,
                 coalesced: bool | None = None):
        values = parts["values"]
        super().__init__(None, 0, shape, contiguous_strides(shape), values.dtype, kind=layout)
        self.layout = layout
        self.parts = parts
        self.coalesced = coalesced
        self.device_override = values.device
        self.extra = {"components": parts}
        self._entries = None

    # -- layout ---------------------------------------------------------------------------------
    @property
    def values(self) -> TensorRef:
        return self.parts["values"]

    @property
    def nnz(self) -> int:
        """Stored entries (blocks for BSR/BSC)."""
        if self.layout == "sparse_coo":
            idx = self.parts["indices"]
            return idx.shape[1] if len(idx.shape) == 2 else 0
        plain = self.parts["plain_indices"]
        return plain.shape[-1] if plain.shape else 0

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts.values())

    @property
    def dense_nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def is_contiguous(self) -> bool:
        return True

    @property
    def storage_key(self) -> str | None:
        return None

    def derive(self, *, device: str | None = None, dtype=None) -> "SparseTensorRef":
        if dtype is not None and dtype.name != self.dtype.name:
            raise StorageError(f"a {self.layout} tensor cannot be cast")
        t = SparseTensorRef(self.layout, self.shape, self.parts, coalesced=self.coalesced)
        t.device_override = device or self.device_override
        t.problem, t._checked = self.problem, self._checked
        t.origin = self.origin or self
        return t

    def validate(self) -> None:
        """Check the components' kinds and shapes against the layout (metadata only)."""
        if self._checked:
            return
        self._checked = True
        try:
            self._check_layout()
        except ValueError as e:
            self.problem = f"{self.layout} tensor: {e}"
            return
        for name, p in self.parts.items():
            p.validate()
            if p.problem:
                self.problem = f"{self.layout} component {name}: {p.problem}"
                return

    def _check_layout(self) -> None:
        shape, parts = self.shape, self.parts
        for name, p in parts.items():
            if name != "values" and p.dtype.name not in ("int64", "int32"):
                raise ValueError(f"{name} are {p.dtype.name}, not integers")
        values = parts["values"]
        if self.layout == "sparse_coo":
            idx = parts["indices"]
            if len(idx.shape) != 2:
                raise ValueError(f"indices have shape {list(idx.shape)}, not (sparse dims, nnz)")
            sd, nnz = idx.shape
            if sd > len(shape) or values.shape[:1] != (nnz,) or tuple(values.shape[1:]) != tuple(shape[sd:]):
                raise ValueError(f"indices {list(idx.shape)} and values {list(values.shape)} do not fit "
                                 f"shape {list(shape)}")
            return
        comp, plain = parts["compressed_indices"], parts["plain_indices"]
        nb = len(comp.shape) - 1
        blocked = self.layout in ("sparse_bsr", "sparse_bsc")
        if nb < 0 or len(plain.shape) != nb + 1 or len(shape) < nb + 2:
            raise ValueError(f"index shapes {list(comp.shape)} and {list(plain.shape)} do not fit shape {list(shape)}")
        batch = tuple(shape[:nb])
        if tuple(comp.shape[:nb]) != batch or tuple(plain.shape[:nb]) != batch:
            raise ValueError("batch dimensions of the indices differ from the shape's")
        rows, cols = shape[nb], shape[nb + 1]
        nnz = plain.shape[nb]
        block = tuple(values.shape[nb + 1:nb + 3]) if blocked else (1, 1)
        if blocked and (len(block) != 2 or 0 in block or rows % block[0] or cols % block[1]):
            raise ValueError(f"blocks {list(block)} do not tile {rows} x {cols}")
        major = (rows // block[0]) if self.layout in ("sparse_csr", "sparse_bsr") else (cols // block[1])
        if comp.shape[nb] != major + 1:
            raise ValueError(f"compressed indices have {comp.shape[nb]} entries per batch, expected {major + 1}")
        dense_dims = tuple(shape[nb + 2:])
        want = batch + (nnz,) + (block if blocked else ()) + dense_dims
        if tuple(values.shape) != want:
            raise ValueError(f"values have shape {list(values.shape)}, expected {list(want)}")

    @property
    def readable(self) -> bool:
        self.validate()
        return self.problem is None

    @property
    def integrity_error(self) -> str | None:
        return next((p.integrity_error for p in self.parts.values() if p.integrity_error), None)

    @property
    def integrity_checked(self) -> bool:
        return all(p.integrity_checked for p in self.parts.values())

    def check_integrity(self) -> str | None:
        for p in self.parts.values():
            p.check_integrity()
        return self.integrity_error

    # -- values ---------------------------------------------------------------------------------
    def stored_values(self) -> TensorRef:
        """The tensor of stored values (what statistics and histograms run over)."""
        return self.values

    def _check_readable(self) -> None:
        self.validate()
        if self.problem:
            raise StorageError(self.problem)
        if self.numel > MAX_DENSE_ELEMENTS:
            raise StorageError(f"the dense form has {self.numel:,} elements; its values are not read "
                               f"(statistics of the {self.values.numel:,} stored values still are)")

    def _sparse_space(self) -> tuple[tuple[int, ...], int]:
        """(shape of the indexed dimensions, elements per stored entry) for the dense layout."""
        if self.layout == "sparse_coo":
            sd = self.parts["indices"].shape[0]
            return tuple(self.shape[:sd]), math.prod(self.shape[sd:])
        nb = len(self.parts["compressed_indices"].shape) - 1
        return tuple(self.shape[:nb + 2]), math.prod(self.shape[nb + 2:])

    def entries(self) -> tuple[Any, Any, bool]:
        """(sorted linear index of each stored element in the indexed dimensions, its raw values as a
        (count, dense elements) array in the same order, whether some index repeats)."""
        if self._entries is None:
            self._check_readable()
            lin, vals = self._unsorted_entries()
            order = np.argsort(lin, kind="stable")
            lin, vals = lin[order], vals[order]
            dups = bool(lin.size > 1 and np.any(lin[1:] == lin[:-1]))
            self._entries = (lin, vals, dups)
        return self._entries

    def _unsorted_entries(self):
        space, dense = self._sparse_space()
        values = self.values.read_raw()
        if self.layout == "sparse_coo":
            idx = self.parts["indices"].read_raw().astype(np.int64, copy=False)
            nnz = idx.shape[1]
            if nnz and (np.any(idx < 0) or np.any(idx >= np.array(space, dtype=np.int64)[:, None])):
                raise StorageError(f"{self.layout} tensor: an index lies outside shape {list(self.shape)}")
            lin = (np.ravel_multi_index(tuple(idx), space) if space else np.zeros(nnz, dtype=np.int64))
            return np.asarray(lin, dtype=np.int64).reshape(-1), values.reshape(nnz, dense)
        comp = self.parts["compressed_indices"].read_raw().astype(np.int64, copy=False)
        plain = self.parts["plain_indices"].read_raw().astype(np.int64, copy=False)
        nb = comp.ndim - 1
        rows, cols = self.shape[nb], self.shape[nb + 1]
        blocked = self.layout in ("sparse_bsr", "sparse_bsc")
        bh, bw = (values.shape[nb + 1], values.shape[nb + 2]) if blocked else (1, 1)
        row_major = self.layout in ("sparse_csr", "sparse_bsr")
        nbatch = math.prod(self.shape[:nb])
        comp = comp.reshape(nbatch, -1)
        plain = plain.reshape(nbatch, -1)
        nnz = plain.shape[1]
        out = []
        minor_limit = (cols // bw) if row_major else (rows // bh)
        for b in range(nbatch):
            ptr = comp[b]
            counts = np.diff(ptr)
            if ptr[0] != 0 or ptr[-1] != nnz or np.any(counts < 0):
                raise StorageError(f"{self.layout} tensor: compressed indices are not a valid running count")
            if nnz and (plain[b].min() < 0 or plain[b].max() >= minor_limit):
                raise StorageError(f"{self.layout} tensor: an index lies outside shape {list(self.shape)}")
            major = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
            brow, bcol = (major, plain[b]) if row_major else (plain[b], major)
            # Each stored block covers bh x bw elements, in row-major order within the block.
            i = np.arange(bh, dtype=np.int64)[:, None]
            j = np.arange(bw, dtype=np.int64)[None, :]
            r = brow[:, None, None] * bh + i[None]
            c = bcol[:, None, None] * bw + j[None]
            out.append(((b * rows + r) * cols + c).reshape(-1))
        lin = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        return lin, values.reshape(lin.size, dense)

    def iter_raw(self, max_bytes: int = CHUNK_BYTES, rows: int | None = None) -> Iterator[np.ndarray]:
        """The dense values, C order, raw little-endian elements, in pieces along dim 0."""
        self._check_readable()
        if self.numel == 0:
            return
        lin, vals, dups = self.entries()
        raw = self.dtype.numpy
        _space, dense = self._sparse_space()
        if dups and not self.dtype.numpy_native:
            raise StorageError(f"an uncoalesced {self.dtype.name} tensor repeats indices; its dense values "
                               f"(the sums) cannot be formed exactly here")
        if not self.shape or not _space or (math.prod(self.shape[1:]) % dense):
            # No indexed dimension leads: the dense form is one piece (the sum of the stored blocks).
            out = np.zeros(self.numel, dtype=raw)
            if len(lin):
                out[:] = np.add.reduce(vals, axis=0) if dups or len(lin) > 1 else vals[0]
            yield out.reshape(self.shape)
            return
        row_elems = math.prod(self.shape[1:])
        step = rows or self.rows_per_chunk(max_bytes)
        for first in range(0, self.shape[0], step):
            count = min(step, self.shape[0] - first)
            lo, hi = first * row_elems // dense, (first + count) * row_elems // dense
            a, b = np.searchsorted(lin, lo), np.searchsorted(lin, hi)
            out = np.zeros((hi - lo, dense), dtype=raw)
            if b > a:
                where = lin[a:b] - lo
                if dups:
                    np.add.at(out, where, vals[a:b])
                else:
                    out[where] = vals[a:b]
            yield out.reshape((count,) + tuple(self.shape[1:]))

    def read_raw(self) -> np.ndarray:
        parts = list(self.iter_raw())
        if not parts:
            return np.zeros(self.shape, dtype=self.dtype.numpy)
        return np.concatenate(parts).reshape(self.shape) if len(parts) > 1 else parts[0].reshape(self.shape)

    def iter_bytes(self, max_bytes: int = CHUNK_BYTES) -> Iterator[memoryview | bytes]:
        for chunk in self.iter_raw(max_bytes):
            yield np.ascontiguousarray(chunk).view(np.uint8).reshape(-1).data

    def __repr__(self) -> str:
        return f"<{self.layout} tensor {self.dtype} {list(self.shape)}, {self.nnz} stored>"


def is_sparse(t: Any) -> bool:
    return isinstance(t, SparseTensorRef)


def sparse_summary(t: SparseTensorRef) -> str:
    """One line: layout, stored entries, components with their shapes."""
    parts = ", ".join(f"{name} {p.dtype.name} {list(p.shape)}" for name, p in t.parts.items())
    what = "blocks" if t.layout in ("sparse_bsr", "sparse_bsc") else "entries"
    density = f"; {t.values.numel / t.numel:.3g} of the dense elements stored" if t.numel else ""
    return f"{t.layout}: {t.nnz:,} stored {what} ({parts}){density}"


def _small_values(t: Any) -> list | None:
    """The values of a small tensor as a list (None when it is not a readable tensor or too big)."""
    if not isinstance(t, TensorRef) or not t.readable or t.nbytes > MAX_SHOWN_BYTES:
        return None
    try:
        return t.read().reshape(-1).tolist()
    except (StorageError, ValueError):
        return None


def nested_shapes(t: TensorRef) -> list[tuple[int, ...]] | None:
    """The shapes of a nested tensor's components (strided: its sizes tensor; jagged: its offsets), or
    None when they cannot be read (cached in ``extra``)."""
    extra = t.extra or {}
    if "nested_shape_list" in extra:
        return extra["nested_shape_list"]
    shapes = None
    sizes = extra.get("nested_sizes")
    if isinstance(sizes, TensorRef) and len(sizes.shape) == 2:
        flat = _small_values(sizes)
        if flat is not None:
            width = sizes.shape[1]
            shapes = [tuple(int(x) for x in flat[i * width:(i + 1) * width]) for i in range(sizes.shape[0])]
    offsets = extra.get("nested_offsets_jagged")
    if isinstance(offsets, TensorRef) and len(offsets.shape) == 1:
        flat = _small_values(offsets)
        if flat is not None:
            rest = tuple(t.shape[1:])
            shapes = [(int(b) - int(a),) + rest for a, b in zip(flat[:-1], flat[1:])]
    if t.extra is not None:
        t.extra["nested_shape_list"] = shapes
    return shapes


def nested_summary(t: TensorRef) -> str:
    shapes = nested_shapes(t)
    layout = (t.extra or {}).get("nested_layout", "strided")
    if shapes is None:
        return f"nested ({layout}): component shapes not read; values buffer {list(t.shape)}"
    shown = ", ".join(str(list(s)) for s in shapes[:8]) + (f", … {len(shapes):,} in all" if len(shapes) > 8 else "")
    return f"nested ({layout}): {len(shapes):,} component{'s' if len(shapes) != 1 else ''} {shown}"


def quantizer_info(t: TensorRef) -> dict | None:
    """The quantizer as plain data: scheme, scale and zero point (per tensor), or axis and the per-channel
    scales and zero points (their values when small)."""
    q = (t.extra or {}).get("quantizer")
    if not isinstance(q, dict):
        return None
    out: dict[str, Any] = {"qscheme": q.get("qscheme")}
    if "scale" in q:
        out["scale"] = q["scale"]
        out["zero_point"] = q.get("zero_point")
    if "axis" in q:
        out["axis"] = q["axis"]
        for key in ("scales", "zero_points"):
            v = q.get(key)
            if isinstance(v, TensorRef):
                out[key + "_dtype"] = v.dtype.name
                out[key + "_shape"] = list(v.shape)
                values = _small_values(v)
                if values is not None:
                    out[key] = values
    return out


def quantizer_summary(t: TensorRef) -> str:
    q = quantizer_info(t)
    if q is None:
        return ""
    if "scale" in q:
        return f"{q['qscheme']}: scale {q['scale']:.6g}, zero point {q['zero_point']}"
    n = (q.get("scales_shape") or ["?"])[0]

    def show(key):
        v = q.get(key)
        if v is None:
            return "(not read)"
        return "[" + ", ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v[:6]) + \
            (", …]" if len(v) > 6 else "]")
    return f"{q['qscheme']} along axis {q.get('axis')}: {n} scales {show('scales')}, zero points {show('zero_points')}"



def special_facts(t: TensorRef) -> list[tuple[str, str]]:
    """(label, text) rows for what is unusual about a tensor's layout or type, for the details panel and
    ``info``: sparse components, nested component shapes, quantizer parameters, packed types."""
    rows: list[tuple[str, str]] = []
    if isinstance(t, SparseTensorRef):
        rows.append(("Sparse", sparse_summary(t)))
        rows.append(("Dense size", f"{t.dense_nbytes:,} bytes if densified (the checksum covers the dense values)"))
    elif t.kind == "nested":
        rows.append(("Nested", nested_summary(t)))
    q = quantizer_summary(t)
    if q:
        rows.append(("Quantizer", q))
    if t.dtype.meaning:
        logical = ""
        if t.logical_shape != t.shape:
            logical = f"; logical shape {list(t.logical_shape)}"
        rows.append(("Type", f"{t.dtype.name}: {t.dtype.meaning}{logical}"))
    return rows
