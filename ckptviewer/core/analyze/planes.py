"""Looking at values: 2-D planes of N-D tensors, filter grids, long vectors, value pages and text previews.

Everything here reads only the elements it shows, through :meth:`TensorRef.read_view` (a strided view of the
storage's bytes): the plane ``t[3, :, 7, :]`` of a 6 GB tensor touches the pages of that plane's elements and
nothing else. Values are widened for display with :func:`~ckptviewer.core.model.dtypes.to_numbers` (bfloat16,
float8 and the other types numpy lacks become float32; the dtype is carried along so the view can say so).

Big planes and vectors come in two steps, as generators: a first view picked from evenly spaced rows and
columns (a few hundred thousand elements at most, so it appears at once), then the sharp one, read in row
bands with :class:`Progress` between bands (each ``yield`` is a cancel point). A plane up to
:data:`EXACT_PLANE` elements is then shown whole; a larger one is pooled to at most :data:`POOLED_SIDE`
pixels a side, each pixel holding the value of largest magnitude in its block, so that a single exploded
weight or NaN stays visible instead of being averaged away.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Generator, Sequence

import numpy as np

from ..model.dtypes import to_numbers
from ..model.tensor import CHUNK_BYTES, TensorRef
from ..util.errors import OperationError, StorageError
from ..util.progress import Progress

PREVIEW_SIDE = 512            # the first view: at most this many rows and columns, picked evenly
EXACT_PLANE = 1 << 22         # planes up to this many elements are read whole (16 MiB as float32)
POOLED_SIDE = 2048            # larger planes: at most this many pixels a side
LINE_POINTS = 4096            # a long vector is drawn as the min/max envelope of this many buckets
EXACT_LINE = 1 << 16          # vectors up to this many elements are drawn point by point
MAX_FILTERS = 1024            # a filter grid shows at most this many output channels
MAX_GRID_KERNEL = 15          # 4-D tensors whose last two sides are at most this are shown as filter grids


def _check(t: TensorRef) -> None:
    if not t.readable:
        raise StorageError(t.problem or "this tensor has no stored values")


def widened_note(t: TensorRef) -> str:
    """What the display did to the values ("" when numpy holds the dtype as it is)."""
    name = t.dtype.name
    if t.dtype.kind == "quantized":
        return f"{name}: the stored integers (scale and zero point not applied)"
    if t.dtype.kind == "bits":
        return f"{name}: raw bits shown as unsigned integers"
    if t.dtype.is_complex:
        return f"{name}: shown as the magnitude |z|"
    if not t.dtype.numpy_native:
        return f"{name} widened to float32 for display (exact: every {name} value is a float32 value)"
    if name == "bool":
        return "bool shown as 0 and 1"
    return ""


def numbers(raw: np.ndarray, t: TensorRef) -> np.ndarray:
    """Raw elements (any shape) as numbers a plot can draw, in the same shape.

    float16/32/64 and integers stay as they are; the types numpy lacks are widened (packed types that hold
    several values per element grow along their last axis); complex values become their magnitude; bool 0/1.
    """
    shape = raw.shape
    vals = to_numbers(raw.reshape(-1), t.dtype)
    if np.iscomplexobj(vals):
        vals = np.abs(vals)
    elif vals.dtype == np.bool_:
        vals = vals.view(np.uint8)
    if vals.size == raw.size:
        return vals.reshape(shape)
    if not shape:
        return vals
    return vals.reshape(shape[:-1] + (-1,))


def as_float(values: np.ndarray) -> np.ndarray:
    """A float array for drawing: float16/32/64 as they are (float16 widened), integers as float64."""
    if values.dtype.kind == "f":
        return values.astype(np.float32) if values.dtype.itemsize < 4 else values
    return values.astype(np.float64)


# -- planes -------------------------------------------------------------------------------------------------
def default_axes(t: TensorRef) -> tuple[int, int]:
    """The plane shown first: the last two dimensions."""
    if len(t.shape) < 2:
        raise OperationError("a plane needs a tensor of two or more dimensions")
    return len(t.shape) - 2, len(t.shape) - 1


def is_filter_bank(t: TensorRef) -> bool:
    """A 4-D tensor shaped like a convolution's weight (small square or 1 x k kernels), best seen as a grid of
    filters."""
    if len(t.shape) != 4 or min(t.shape) <= 0:
        return False
    kh, kw = t.shape[2], t.shape[3]
    return kh <= MAX_GRID_KERNEL and kw <= MAX_GRID_KERNEL and (kh == kw or min(kh, kw) == 1)


@dataclass
class Plane:
    """A 2-D slice ``t[index with the two shown axes free]`` as displayed.

    ``values`` has ``ceil(rows / step[0])`` x ``ceil(cols / step[1])`` entries; with ``pooled`` each entry is
    the value of largest magnitude in a ``step`` block, otherwise the element at ``(i * step[0], j * step[1])``.
    """

    values: np.ndarray
    axes: tuple[int, int]
    index: tuple[int, ...]          # one entry per dimension; those of the two shown axes are ignored
    full_shape: tuple[int, int]     # rows and columns of the whole plane
    step: tuple[int, int] = (1, 1)
    pooled: bool = False
    dtype: str = ""
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.step == (1, 1)

    def describe(self) -> str:
        """One line on how the plane was reduced (empty for an exact one)."""
        if self.exact:
            return ""
        r, c = self.full_shape
        if self.pooled:
            return (f"downsampled: {r:,} x {c:,} shown as {self.values.shape[0]:,} x {self.values.shape[1]:,}, "
                    f"each pixel the value of largest magnitude in a {self.step[0]} x {self.step[1]} block")
        return (f"preview: every {_nth(self.step[0])} row and {_nth(self.step[1])} column of {r:,} x {c:,}; "
                f"the full plane follows")

    def element_index(self, row: int, col: int) -> tuple[int, ...] | None:
        """The tensor index of displayed entry ``(row, col)`` (its block's first element when pooled)."""
        if not (0 <= row < self.values.shape[0] and 0 <= col < self.values.shape[1]):
            return None
        idx = list(self.index)
        idx[self.axes[0]] = row * self.step[0]
        idx[self.axes[1]] = col * self.step[1]
        return tuple(idx)


def _nth(n: int) -> str:
    if n == 1:
        return "every"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _normalize(t: TensorRef, axes: Sequence[int], index: Sequence[int] | None) -> tuple[tuple[int, int], tuple]:
    nd = len(t.shape)
    a, b = (int(x) for x in axes)
    if nd < 2 or not (0 <= a < nd and 0 <= b < nd) or a == b:
        raise OperationError(f"axes {list(axes)} do not name two dimensions of a tensor shaped {list(t.shape)}")
    idx = list(index) if index is not None else [0] * nd
    if len(idx) != nd:
        raise OperationError(f"an index needs {nd} entries for a tensor shaped {list(t.shape)}")
    for d in range(nd):
        if d in (a, b):
            idx[d] = 0
            continue
        if not 0 <= int(idx[d]) < t.shape[d]:
            raise OperationError(f"index {idx[d]} is outside dimension {d} of size {t.shape[d]}")
        idx[d] = int(idx[d])
    return (a, b), tuple(idx)


def _plane_raw(t: TensorRef, axes: tuple[int, int], index: tuple, rows: range, cols: range) -> np.ndarray:
    """Raw elements of the sub-rectangle ``rows`` x ``cols`` (ranges with steps) of a plane."""
    a, b = axes
    base = t.offset + sum(i * s for d, (i, s) in enumerate(zip(index, t.stride)) if d not in axes)
    offset = base + rows.start * t.stride[a] + cols.start * t.stride[b]
    return t.read_view(offset, (len(rows), len(cols)), (rows.step * t.stride[a], cols.step * t.stride[b]))


def read_plane(t: TensorRef, axes: Sequence[int], index: Sequence[int] | None = None, *,
               max_side: int | None = None) -> Plane:
    """A plane in one read: whole, or picked from evenly spaced rows and columns to at most ``max_side``."""
    _check(t)
    axes, index = _normalize(t, axes, index)
    r, c = t.shape[axes[0]], t.shape[axes[1]]
    sr = max(1, math.ceil(r / max_side)) if max_side else 1
    sc = max(1, math.ceil(c / max_side)) if max_side else 1
    raw = _plane_raw(t, axes, index, range(0, r, sr), range(0, c, sc))
    return Plane(numbers(raw, t), axes, index, (r, c), (sr, sc), False, t.dtype.name, widened_note(t))


def plane_steps(t: TensorRef, axes: Sequence[int], index: Sequence[int] | None = None, *,
                preview_side: int = PREVIEW_SIDE, exact_limit: int = EXACT_PLANE, pooled_side: int = POOLED_SIDE,
                chunk_bytes: int = CHUNK_BYTES) -> Generator[Plane | Progress, None, Plane]:
    """A plane for display: a picked preview first when it is big (yielded), then the sharp plane (returned).

    Yields the preview :class:`Plane` and :class:`Progress` while the sharp one is read in row bands.
    """
    _check(t)
    axes, index = _normalize(t, axes, index)
    r, c = t.shape[axes[0]], t.shape[axes[1]]
    if r * c <= preview_side * preview_side:
        return read_plane(t, axes, index)
    yield read_plane(t, axes, index, max_side=preview_side)
    itemsize = max(4, t.dtype.itemsize)
    if r * c <= exact_limit:
        band = max(1, chunk_bytes // max(1, c * itemsize))
        parts = []
        yield Progress(0, r, "plane")
        for r0 in range(0, r, band):
            raw = _plane_raw(t, axes, index, range(r0, min(r, r0 + band)), range(0, c))
            parts.append(numbers(raw, t))
            yield Progress(min(r, r0 + band), r, "plane")
        return Plane(np.concatenate(parts, axis=0), axes, index, (r, c), (1, 1), False, t.dtype.name,
                     widened_note(t))
    sr, sc = max(1, math.ceil(r / pooled_side)), max(1, math.ceil(c / pooled_side))
    out_r, out_c = math.ceil(r / sr), math.ceil(c / sc)
    out = None
    blocks_per_band = max(1, chunk_bytes // max(1, sr * c * itemsize))
    yield Progress(0, r, "plane")
    for br in range(0, out_r, blocks_per_band):
        r0, r1 = br * sr, min(r, (br + blocks_per_band) * sr)
        vals = as_float(numbers(_plane_raw(t, axes, index, range(r0, r1), range(0, c)), t))
        pooled = pool_max_abs(vals, sr, sc)
        if out is None:
            out = np.empty((out_r, out_c), dtype=pooled.dtype)
        out[br:br + pooled.shape[0]] = pooled
        yield Progress(r1, r, "plane")
    return Plane(out, axes, index, (r, c), (sr, sc), True, t.dtype.name, widened_note(t))


def pool_max_abs(values: np.ndarray, sr: int, sc: int) -> np.ndarray:
    """Each ``sr`` x ``sc`` block (ragged at the edges) replaced by its value of largest magnitude (NaN wins)."""
    r, c = values.shape
    nr, nc = math.ceil(r / sr), math.ceil(c / sc)
    padded = np.full((nr * sr, nc * sc), 0, dtype=values.dtype)
    padded[:r, :c] = values
    blocks = padded.reshape(nr, sr, nc, sc).transpose(0, 2, 1, 3).reshape(nr, nc, sr * sc)
    with np.errstate(invalid="ignore"):
        pick = np.abs(blocks).argmax(axis=-1)          # argmax returns the first NaN when there is one
    return np.take_along_axis(blocks, pick[..., None], axis=-1)[..., 0]


# -- filter grids -------------------------------------------------------------------------------------------
@dataclass
class FilterGrid:
    """The filters ``t[o, in_channel]`` of a convolution weight ``[O, I, kh, kw]`` side by side.

    ``values`` is a mosaic with one NaN gutter between cells; ``cell_at`` maps a mosaic pixel back to
    (output channel, kernel row, kernel column).
    """

    values: np.ndarray
    in_channel: int
    count: int                       # filters shown (at most MAX_FILTERS of ``total``)
    total: int
    kh: int
    kw: int
    columns: int
    dtype: str = ""
    note: str = ""
    mask: np.ndarray | None = None      # True where a filter's value sits (False in the gutters)

    def cell_at(self, row: int, col: int) -> tuple[int, int, int] | None:
        if row < 0 or col < 0:
            return None
        gr, i = divmod(row, self.kh + 1)
        gc, j = divmod(col, self.kw + 1)
        if i == self.kh or j == self.kw or gc >= self.columns:
            return None
        o = gr * self.columns + gc
        return (o, i, j) if o < self.count else None


def filter_grid(t: TensorRef, in_channel: int = 0, max_filters: int = MAX_FILTERS) -> FilterGrid:
    """One small image per output channel of a 4-D convolution weight, at input channel ``in_channel``."""
    _check(t)
    if len(t.shape) != 4:
        raise OperationError(f"a filter grid needs a 4-D weight [out, in, kh, kw]; this one is {list(t.shape)}")
    o_total, n_in, kh, kw = t.shape
    if not 0 <= in_channel < n_in:
        raise OperationError(f"input channel {in_channel} is outside 0..{n_in - 1}")
    count = min(o_total, max_filters)
    raw = t.read_view(t.offset + in_channel * t.stride[1], (count, kh, kw), (t.stride[0], t.stride[2], t.stride[3]))
    vals = as_float(numbers(raw, t))
    kw = vals.shape[2]                  # packed types grow along the last axis
    columns = max(1, math.ceil(math.sqrt(count * (kh + 1) / (kw + 1))))
    rows = math.ceil(count / columns)
    mosaic = np.full((rows * (kh + 1) - 1, columns * (kw + 1) - 1), np.nan, dtype=vals.dtype)
    mask = np.zeros(mosaic.shape, dtype=bool)
    for o in range(count):
        gr, gc = divmod(o, columns)
        cell = (slice(gr * (kh + 1), gr * (kh + 1) + kh), slice(gc * (kw + 1), gc * (kw + 1) + kw))
        mosaic[cell] = vals[o]
        mask[cell] = True
    return FilterGrid(mosaic, in_channel, count, o_total, kh, kw, columns, t.dtype.name, widened_note(t), mask)


# -- vectors ------------------------------------------------------------------------------------------------
@dataclass
class Line:
    """A 1-D tensor for plotting: every value (``bucket == 1``), or per bucket of ``bucket`` elements its
    ``low`` and ``high`` (the min/max envelope, NaN where a bucket holds no finite value)."""

    x: np.ndarray                   # the first element index of each point or bucket
    low: np.ndarray
    high: np.ndarray
    length: int
    bucket: int = 1
    exact: bool = True
    dtype: str = ""
    note: str = ""

    def describe(self) -> str:
        if self.bucket == 1:
            return ""
        if not self.exact:
            return f"preview: every {_nth(self.bucket)} of {self.length:,} values; the full envelope follows"
        return f"{self.length:,} values drawn as the min/max of {len(self.x):,} buckets of {self.bucket:,}"


def _envelope(vals: np.ndarray, bucket: int) -> tuple[np.ndarray, np.ndarray]:
    n = vals.size
    nb = math.ceil(n / bucket)
    padded = np.full(nb * bucket, np.nan, dtype=np.float64)
    padded[:n] = vals
    blocks = padded.reshape(nb, bucket)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # an all-NaN bucket is a gap in the line, as it should be
        return np.nanmin(blocks, axis=1), np.nanmax(blocks, axis=1)


def line_steps(t: TensorRef, max_points: int = LINE_POINTS, exact_limit: int = EXACT_LINE,
               chunk_bytes: int = CHUNK_BYTES) -> Generator[Line | Progress, None, Line]:
    """A 1-D tensor as a line: all values when short, else a picked preview (yielded) then the envelope."""
    _check(t)
    if len(t.shape) != 1:
        raise OperationError(f"a line plot needs a 1-D tensor; this one is {list(t.shape)}")
    n = t.shape[0]
    note = widened_note(t)
    if n <= exact_limit:
        vals = as_float(numbers(t.read_view(t.offset, (n,), t.stride), t)).astype(np.float64)
        x = np.arange(vals.size)
        return Line(x, vals, vals, vals.size, 1, True, t.dtype.name, note)
    bucket = math.ceil(n / max_points)
    picked = numbers(t.read_view(t.offset, (math.ceil(n / bucket),), (bucket * t.stride[0],)), t)
    picked = as_float(picked).astype(np.float64)
    yield Line(np.arange(picked.size) * bucket, picked, picked, n, bucket, False, t.dtype.name, note)
    lows, highs = [], []
    carry = np.empty(0, dtype=np.float64)
    done = 0
    yield Progress(0, n, "values")
    for chunk in t.iter_raw(chunk_bytes):
        vals = np.concatenate([carry, as_float(numbers(chunk, t)).astype(np.float64).reshape(-1)])
        done += chunk.size
        full = vals.size // bucket * bucket if done < n else vals.size
        if full:
            lo, hi = _envelope(vals[:full], bucket)
            lows.append(lo)
            highs.append(hi)
        carry = vals[full:]
        yield Progress(done, n, "values")
    low, high = np.concatenate(lows), np.concatenate(highs)
    return Line(np.arange(low.size) * bucket, low, high, n, bucket, True, t.dtype.name, note)


# -- flat reads, pages and previews -------------------------------------------------------------------------
def element_offsets(t: TensorRef, flat: np.ndarray) -> np.ndarray:
    """Storage element offsets of C-order flat indices ``flat``."""
    coords = np.unravel_index(flat, t.shape) if t.shape else ()
    off = np.full(flat.shape, t.offset, dtype=np.int64)
    for c, st in zip(coords, t.stride):
        off += c.astype(np.int64) * st
    return off


def read_flat(t: TensorRef, start: int, count: int) -> np.ndarray:
    """Raw elements ``start .. start + count`` in C order (a page of a value table), without reading the rest."""
    _check(t)
    start, count = max(0, int(start)), max(0, int(count))
    count = min(count, t.numel - start) if start < t.numel else 0
    if count == 0:
        return t.read_view(t.offset, (0,), (1,))
    if not t.shape:
        return t.read_view(t.offset, (1,), (1,))
    if t.is_contiguous:
        return t.read_view(t.offset + start, (count,), (1,))
    return t.take(element_offsets(t, np.arange(start, start + count, dtype=np.int64)))


def read_values(t: TensorRef, start: int, count: int) -> np.ndarray:
    """Like :func:`read_flat`, widened to numbers (1-D)."""
    return numbers(read_flat(t, start, count), t).reshape(-1)


@dataclass
class TableLayout:
    """A tensor as a table: one row per index of all dimensions but the last, one column per last index."""

    shape: tuple[int, ...]
    rows: int
    columns: int
    per_element: int = 1            # values per stored element (2 for packed 4-bit types)

    def row_index(self, row: int) -> tuple[int, ...]:
        """The leading indices of table row ``row`` (empty for 0-D and 1-D tensors)."""
        if len(self.shape) < 2:
            return ()
        return tuple(int(i) for i in np.unravel_index(row, self.shape[:-1]))

    def row_label(self, row: int) -> str:
        if len(self.shape) == 0:
            return ""
        if len(self.shape) == 1:
            return str(row)
        return "[" + ", ".join(str(i) for i in self.row_index(row)) + ", :]"


def table_layout(t: TensorRef) -> TableLayout:
    per = numbers(np.zeros(1, dtype=t.stored_dtype.numpy if t.cast_from is None else t.dtype.numpy), t).size
    if not t.shape:
        return TableLayout((), 1, 1, per)
    if len(t.shape) == 1:
        return TableLayout(t.shape, t.shape[0] * per, 1, per)
    cols = t.shape[-1]
    return TableLayout(t.shape, t.numel // cols if cols else 0, cols * per, per)


def read_table_rows(t: TensorRef, layout: TableLayout, first: int, count: int) -> np.ndarray:
    """Values of table rows ``first .. first + count`` as a ``count x columns`` array (widened)."""
    if len(t.shape) == 1:
        per = layout.per_element
        e0, e1 = first // per, math.ceil((first + count) / per)
        vals = read_values(t, e0, e1 - e0)[first - e0 * per:first - e0 * per + count]
        return vals.reshape(-1, 1)
    if not t.shape:
        return read_values(t, 0, 1).reshape(1, -1)
    cols = t.shape[-1]
    vals = read_values(t, first * cols, count * cols)
    return vals.reshape(-1, layout.columns)


def preview_text(t: TensorRef, edge: int = 3) -> str:
    """The tensor's values in numpy's summarised style: all of a small tensor, the ``edge`` first and last
    entries of each long dimension (with ``...``) of a big one. Reads only the elements it prints."""
    _check(t)
    shape = t.shape
    if len(shape) > 6:
        edge = 1
    picks = [list(range(n)) if n <= 2 * edge else list(range(edge)) + list(range(n - edge, n)) for n in shape]
    if t.numel == 0:
        return "[]"
    if shape:
        grids = np.meshgrid(*[np.asarray(p, dtype=np.int64) for p in picks], indexing="ij")
        off = np.full(grids[0].shape, t.offset, dtype=np.int64)
        for g, st in zip(grids, t.stride):
            off += g * st
        vals = numbers(t.take(off), t)
    else:
        vals = numbers(t.read_view(t.offset, (), ()), t)
    texts = _format_numbers(np.asarray(vals))
    cut = [len(p) < n for p, n in zip(picks, shape)]
    return _nest(texts, cut, edge, 0)


def _format_numbers(vals: np.ndarray) -> np.ndarray:
    flat = vals.reshape(-1)
    if flat.dtype.kind == "f":
        out = np.array([_fmt_float(float(v)) for v in flat], dtype=object)
    else:
        out = np.array([str(v) for v in flat.tolist()], dtype=object)
    wide = max((len(s) for s in out), default=0)
    return np.array([s.rjust(wide) for s in out], dtype=object).reshape(vals.shape)


def _fmt_float(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.6g}"


def _nest(texts, cut: list[bool], edge: int, depth: int) -> str:
    if not isinstance(texts, np.ndarray):
        return str(texts)
    if texts.ndim == 0:
        return str(texts[()])
    items = [_nest(texts[i], cut[1:], edge, depth + 1) for i in range(texts.shape[0])]
    if cut and cut[0]:
        items = items[:edge] + ["..."] + items[edge:]
    if texts.ndim == 1:
        return "[" + ", ".join(items) + "]"
    sep = ",\n" + "\n" * (texts.ndim - 2) + " " * (depth + 1)
    return "[" + sep.join(items) + "]"


# -- display transforms -------------------------------------------------------------------------------------
@dataclass
class Shown:
    """Values after the display transform, with how to colour them."""

    values: np.ndarray
    diverging: bool                 # centred on zero (a diverging colour map) or not
    levels: tuple[float, float]
    label: str = "value"
    finite: int = 0
    extra: dict = field(default_factory=dict)


def transform(values: np.ndarray, *, absolute: bool = False, log: bool = False) -> Shown:
    """The values a heatmap colours: as they are (diverging around zero), ``|x|``, ``log10 |x|`` (zeros at the
    lowest colour), or with ``log`` alone a symmetric log ``sign(x) log10(1 + |x| / c)`` with ``c`` a
    thousandth of the largest magnitude, so that both signs and four decades stay readable."""
    v = as_float(np.asarray(values))
    finite = np.isfinite(v)
    nfin = int(np.count_nonzero(finite))
    if nfin == 0:
        return Shown(v, not absolute, (-1.0, 1.0) if not absolute else (0.0, 1.0), "value", 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if absolute and log:
            a = np.abs(v)
            out = np.log10(a)
            pos = finite & (a > 0)
            floor = float(out[pos].min()) if pos.any() else 0.0
            out = np.where(finite & (a == 0), floor, out)
            top = float(out[pos].max()) if pos.any() else floor + 1
            return Shown(out, False, (floor, top if top > floor else floor + 1), "log10 |value|", nfin)
        if absolute:
            out = np.abs(v)
            top = float(out[finite].max())
            return Shown(out, False, (0.0, top if top > 0 else 1.0), "|value|", nfin)
        m = float(np.abs(v[finite]).max())
        if log:
            c = m * 1e-3 if m > 0 else 1.0
            out = np.sign(v) * np.log10(1 + np.abs(v) / c)
            top = float(np.log10(1 + m / c)) if m > 0 else 1.0
            return Shown(out, True, (-top, top), f"sign · log10(1 + |value| / {c:.3g})", nfin, {"c": c})
        return Shown(v, True, (-m, m) if m > 0 else (-1.0, 1.0), "value", nfin)


NAN_RGBA = (255, 0, 255, 255)       # magenta: in neither colour map, so a NaN never passes for a value


def colorize(shown: Shown, lut: np.ndarray, blank: np.ndarray | None = None) -> np.ndarray:
    """RGBA bytes of a heatmap: each value placed between ``shown.levels`` on the ``lut`` (n x 4 uint8), NaN
    in :data:`NAN_RGBA`, infinities at the ends of the scale, ``blank`` pixels (a filter grid's gutters)
    transparent. Done here, off the GUI thread, so the view only hands bytes to Qt."""
    v = shown.values
    lo, hi = shown.levels
    n = len(lut)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        pos = (v - lo) * ((n - 1) / (hi - lo if hi > lo else 1.0))
        idx = np.clip(np.nan_to_num(pos, nan=0.0, posinf=n - 1, neginf=0.0), 0, n - 1).astype(np.intp)
    rgba = np.ascontiguousarray(lut[idx])
    rgba[np.isnan(v)] = NAN_RGBA
    if blank is not None:
        rgba[blank] = 0
    return rgba


@dataclass
class ViewRequest:
    """What the Values view asks for: a ``mode`` ("plane", "grid", "line" or "scalar") and its settings."""

    mode: str
    axes: tuple[int, int] | None = None
    index: tuple[int, ...] | None = None
    in_channel: int = 0
    absolute: bool = False
    log: bool = False


@dataclass
class ViewResult:
    """One answer to a :class:`ViewRequest`: the data (a :class:`Plane`, :class:`FilterGrid`, :class:`Line` or
    a 0-D array), the values as coloured (``shown``; for lines, the transformed low/high), the heatmap's
    RGBA bytes, and whether a sharper answer follows (``final`` False)."""

    request: ViewRequest
    data: object
    shown: Shown | None = None
    shown_high: np.ndarray | None = None
    rgba: np.ndarray | None = None
    final: bool = True


def default_request(t: TensorRef) -> ViewRequest:
    if not t.shape:
        return ViewRequest("scalar")
    if len(t.shape) == 1:
        return ViewRequest("line")
    if is_filter_bank(t):
        return ViewRequest("grid", in_channel=0)
    return ViewRequest("plane", default_axes(t), tuple(0 for _ in t.shape))


def _answer(req: ViewRequest, data, luts: dict | None, final: bool) -> ViewResult:
    if isinstance(data, Line):
        both = transform(np.stack([data.low, data.high]), absolute=req.absolute, log=req.log)
        low = Shown(both.values[0], both.diverging, both.levels, both.label, both.finite, both.extra)
        return ViewResult(req, data, low, both.values[1], None, final)
    if isinstance(data, (Plane, FilterGrid)):
        shown = transform(data.values, absolute=req.absolute, log=req.log)
        rgba = None
        if luts is not None:
            blank = ~data.mask if isinstance(data, FilterGrid) else None
            rgba = colorize(shown, luts["diverging" if shown.diverging else "sequential"], blank)
        return ViewResult(req, data, shown, None, rgba, final)
    return ViewResult(req, data, None, None, None, final)


def view_steps(t: TensorRef, req: ViewRequest, luts: dict | None = None,
               ) -> Generator[ViewResult | Progress, None, ViewResult]:
    """Everything the Values view draws for ``req``, as it becomes available (a preview, then the sharp view)."""
    _check(t)
    if t.numel == 0:
        raise OperationError("the tensor is empty")
    if req.mode == "scalar":
        return ViewResult(req, read_values(t, 0, t.numel if t.numel <= 16 else 16))
    if req.mode == "grid":
        return _answer(req, filter_grid(t, req.in_channel), luts, True)
    steps = line_steps(t) if req.mode == "line" else plane_steps(t, req.axes or default_axes(t), req.index)
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return _answer(req, stop.value, luts, True)
        if isinstance(step, Progress):
            yield step
        else:
            yield _answer(req, step, luts, False)


def retransform(result: ViewResult, absolute: bool, log: bool, luts: dict | None = None) -> ViewResult:
    """The same data under other display options (no read)."""
    req = ViewRequest(result.request.mode, result.request.axes, result.request.index, result.request.in_channel,
                      absolute, log)
    return _answer(req, result.data, luts, result.final)
