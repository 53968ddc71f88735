"""Statistics and histograms of a tensor's values, streamed in bounded memory.

The values come from :meth:`TensorRef.iter_values` in chunks of at most ``chunk_bytes``; nothing here
holds more than one chunk (plus a fixed-size sample). The work is written as generators: every ``yield``
reports what was done so far and is the point where a caller may stop (close the generator). A GUI
worker forwards the yields as progress; a script drains them with :func:`run_steps`.

What is measured and how:

* min, max, mean, std (population, ddof=0), L2 norm: over the finite values only, accumulated in
  float64 with Chan's pairwise merge of per-chunk means, so a billion float16 values do not lose the mean.
* NaN, +Inf and -Inf counts; the fraction of zeros is over all elements (a NaN is not a zero).
* complex values are measured by magnitude ``|z|``, booleans as 0/1, quantized tensors by their stored
  integers (the scale and zero point are not applied); :attr:`TensorStats.note` says so.
* The exact histogram has fixed edges over ``[min, max]`` of the finite values (one bin per integer for
  small integer ranges), so its counts add up to the number of finite values exactly.
* The sampled histogram reads at most ``sample_size`` evenly spaced elements straight from the storage
  (no pass over the data) and scales the counts to estimates of the whole tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np

from ..model.dtypes import to_numbers
from ..model.sparse import SparseTensorRef
from ..model.tensor import CHUNK_BYTES, TensorRef
from ..util.errors import StorageError
from ..util.progress import Progress, run_steps

DEFAULT_BINS = 128
SAMPLE_SIZE = 1 << 16
# A remote tensor bigger than this is sampled in this many runs of consecutive elements (see _sample_runs).
REMOTE_SAMPLE_BYTES = 32 << 20
REMOTE_SAMPLE_RUNS = 16
# Tensors with fewer elements than this get no sampled preview: the exact pass is about as fast.
SAMPLE_THRESHOLD = 1 << 20


@dataclass
class TensorStats:
    """Summary statistics of one tensor's values (see the module docstring for the conventions)."""

    numel: int = 0
    finite: int = 0
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    l2: float | None = None
    note: str = ""

    @property
    def inf(self) -> int:
        return self.posinf + self.neginf

    @property
    def zero_fraction(self) -> float | None:
        return self.zeros / self.numel if self.numel else None


@dataclass
class Histogram:
    """Bin ``edges`` (``len(counts) + 1`` of them) and ``counts`` over the finite values.

    ``exact`` is False for a preview computed from a sample: then ``counts`` are estimates for the whole
    tensor (sample counts scaled by ``total / sample_size``) and NaN/Inf counts are estimates too.
    """

    edges: np.ndarray
    counts: np.ndarray
    finite: int
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    exact: bool = True
    sample_size: int = 0
    total: int = 0
    integer_bins: bool = False

    @property
    def bins(self) -> int:
        return len(self.counts)

    def bin_at(self, x: float) -> int | None:
        """Index of the bin holding ``x`` (the last bin includes its right edge), or None outside."""
        if not len(self.counts) or not (self.edges[0] <= x <= self.edges[-1]):
            return None
        i = int(np.searchsorted(self.edges, x, side="right")) - 1
        return min(max(i, 0), len(self.counts) - 1)


Step = Progress | TensorStats | Histogram


# -- values -----------------------------------------------------------------------------------------
def numbers_of(chunk: np.ndarray, kind: str) -> np.ndarray:
    """A flat array numpy can do arithmetic on: |z| for complex, 0/1 for bool, as is otherwise."""
    flat = chunk.reshape(-1)
    if np.iscomplexobj(flat):
        return np.abs(flat)
    if flat.dtype == np.bool_:
        return flat.view(np.uint8)
    return flat


def value_source(t: TensorRef) -> TensorRef:
    """The tensor whose values statistics and histograms run over: a sparse tensor's stored values, else
    the tensor itself."""
    return t.stored_values() if isinstance(t, SparseTensorRef) else t


def value_count(t: TensorRef) -> int:
    """How many numbers the statistics run over (packed FP4 holds two per element)."""
    t = value_source(t)
    return t.numel * t.dtype.values_per_element


def _note_for(t: TensorRef) -> str:
    if isinstance(t, SparseTensorRef):
        stored = t.values.numel
        inner = _note_for(t.values)
        return (f"{t.layout} tensor: statistics over its {stored:,} stored values, not the "
                f"{t.numel - stored:,} implicit zeros of the dense form" + (f"; {inner}" if inner else ""))
    if t.dtype.name == "float4_e2m1fn_x2":
        return "packed FP4 (E2M1): statistics over both 4-bit values of each byte"
    if t.dtype.per_byte > 1:
        return (f"quantized {t.dtype.name} ({t.dtype.per_byte} values per byte): statistics of the unpacked "
                f"stored integers (scale and zero point not applied)")
    if t.dtype.is_complex:
        return "complex values: statistics of the magnitude |z|"
    if t.dtype.kind == "quantized":
        return "quantized tensor: statistics of the stored integers (scale and zero point not applied)"
    if t.dtype.kind == "bits":
        return "raw bits: statistics of the bytes as unsigned integers"
    if t.dtype.name == "bool":
        return "booleans counted as 0 and 1"
    return ""


def _check(t: TensorRef) -> None:
    if not t.readable:
        raise StorageError(t.problem or "this tensor has no stored values")


def sample_values(t: TensorRef, size: int = SAMPLE_SIZE) -> np.ndarray:
    """At most ``size`` evenly spaced elements of ``t`` (in C order), as numbers, read without a full pass.

    Small tensors are returned whole. Only the sampled elements' pages are touched in a memory-mapped file.
    """
    _check(t)
    t = value_source(t)
    n = t.numel
    if n == 0:
        return np.empty(0, dtype=np.float64)
    if n <= size or t.dtype.per_byte > 1:
        # Packed sub-byte types have no per-element address to sample from: read them whole.
        parts = [numbers_of(c, t.dtype.kind) for c in t.iter_values()]
        values = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if values.size > size:
            values = values[np.linspace(0, values.size - 1, size).round().astype(np.int64)]
        return values
    if getattr(t.storage.source, "remote", False) and t.is_contiguous and n * t.dtype.itemsize > REMOTE_SAMPLE_BYTES:
        return _sample_runs(t, size)
    flat_idx = np.linspace(0, n - 1, size).round().astype(np.int64)
    coords = np.unravel_index(flat_idx, t.shape)
    elem = np.full(size, t.offset, dtype=np.int64)
    for c, st in zip(coords, t.stride):
        elem += c.astype(np.int64) * st
    lo, hi = int(elem.min()), int(elem.max())
    isz = t.dtype.itemsize
    buf = t.storage.source.view(lo * isz, (hi - lo + 1) * isz)
    dt = t.dtype.numpy
    if t.storage.byteorder == "big" and isz > 1:
        dt = dt.newbyteorder(">")
    raw = np.frombuffer(buf, dtype=dt, count=hi - lo + 1)[elem - lo]
    if raw.dtype.byteorder == ">":
        raw = raw.astype(raw.dtype.newbyteorder("<"))
    return numbers_of(to_numbers(np.ascontiguousarray(raw), t.dtype), t.dtype.kind)


def _sample_runs(t: TensorRef, size: int) -> np.ndarray:
    """A sample of a remote tensor as a few runs of consecutive elements: evenly spaced single elements
    would touch every block of the tensor, so the sample would cost its whole download."""
    n, isz = t.numel, t.dtype.itemsize
    per = max(1, size // REMOTE_SAMPLE_RUNS)
    dt = t.dtype.numpy
    if t.storage.byteorder == "big" and isz > 1:
        dt = dt.newbyteorder(">")
    parts = []
    for first in np.linspace(0, n - per, REMOTE_SAMPLE_RUNS).round().astype(np.int64):
        raw = np.frombuffer(t.storage.source.view((t.offset + int(first)) * isz, per * isz), dtype=dt, count=per)
        if raw.dtype.byteorder == ">":
            raw = raw.astype(raw.dtype.newbyteorder("<"))
        parts.append(numbers_of(to_numbers(np.ascontiguousarray(raw), t.dtype), t.dtype.kind))
    return np.concatenate(parts)


# -- statistics ---------------------------------------------------------------------------------------
class StatsAccumulator:
    """Streaming min/max/mean/std/L2/zero/NaN/Inf over chunks (Chan et al.'s parallel variance)."""

    def __init__(self) -> None:
        self.s = TensorStats()
        self._n = 0            # finite values merged so far
        self._mean = 0.0
        self._m2 = 0.0
        self._sumsq = 0.0

    def update(self, values: np.ndarray) -> None:
        v = values.reshape(-1)
        s = self.s
        s.numel += v.size
        if v.size == 0:
            return
        s.zeros += int(np.count_nonzero(v == 0))
        if v.dtype.kind == "f":
            finite_mask = np.isfinite(v)
            nfin = int(np.count_nonzero(finite_mask))
            if nfin != v.size:
                bad = v[~finite_mask]
                n_nan = int(np.count_nonzero(np.isnan(bad)))
                n_pos = int(np.count_nonzero(bad > 0))
                s.nan += n_nan
                s.posinf += n_pos
                s.neginf += bad.size - n_nan - n_pos
                v = v[finite_mask]
        if v.size == 0:
            return
        f = v.astype(np.float64, copy=False)
        lo, hi = float(f.min()), float(f.max())
        s.min = lo if s.min is None else min(s.min, lo)
        s.max = hi if s.max is None else max(s.max, hi)
        n_b = f.size
        with np.errstate(over="ignore", invalid="ignore"):
            mean_b = float(f.mean())
            if not math.isfinite(mean_b):      # values near the float64 limit: sum in halves
                mean_b = float((f / 2).mean()) * 2
            m2_b = float(np.square(f - mean_b).sum())
            self._sumsq += float(np.dot(f, f))
        n_a = self._n
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean += delta * n_b / n
        self._m2 += m2_b + delta * delta * n_a * n_b / n
        self._n = n
        s.finite = n

    def result(self) -> TensorStats:
        s = self.s
        if self._n:
            s.mean = self._mean
            s.std = math.sqrt(max(self._m2, 0.0) / self._n)
            s.l2 = math.sqrt(self._sumsq)
        return s


def stats_steps(t: TensorRef, chunk_bytes: int = CHUNK_BYTES) -> Generator[Progress, None, TensorStats]:
    """One pass over ``t``; yields :class:`Progress` after each chunk, returns :class:`TensorStats`."""
    _check(t)
    acc = StatsAccumulator()
    total = value_count(t)
    yield Progress(0, total, "statistics")
    for chunk in value_source(t).iter_values(chunk_bytes):
        acc.update(numbers_of(chunk, t.dtype.kind))
        yield Progress(acc.s.numel, total, "statistics")
    out = acc.result()
    out.numel = total
    out.note = _note_for(t)
    return out


# -- histograms ---------------------------------------------------------------------------------------
def histogram_edges(lo: float, hi: float, bins: int = DEFAULT_BINS, integer: bool = False) -> tuple[np.ndarray, bool]:
    """Edges spanning ``[lo, hi]`` exactly (at least two). Integer data over a small range (up to
    DEFAULT_BINS values, magnitudes below 2**52 so that half-integers are exact) gets one bin per
    integer, whatever ``bins`` asks for."""
    if (integer and max(abs(lo), abs(hi)) < 2.0 ** 52 and hi - lo + 1 <= max(bins, DEFAULT_BINS)):
        return np.arange(lo - 0.5, hi + 1.0, 1.0, dtype=np.float64), True
    if lo == hi:
        pad = 0.5 if lo == 0 else abs(lo) * 1e-6
        lo2, hi2 = lo - pad, hi + pad
        if not (lo2 < lo and hi2 > hi and np.isfinite(lo2) and np.isfinite(hi2)):
            # A value at (or next to) the float64 limit: widen by one ulp, on the side that has room.
            lo2 = float(np.nextafter(lo, -np.inf)) if lo > -np.finfo(np.float64).max else lo
            hi2 = float(np.nextafter(hi, np.inf)) if hi < np.finfo(np.float64).max else hi
        lo, hi = lo2, hi2
    t = np.linspace(0.0, 1.0, max(int(bins), 1) + 1)
    # lo*(1-t) + hi*t never overflows, unlike lo + t*(hi - lo) for values near the float64 limit.
    edges = lo * (1.0 - t) + hi * t
    edges[0], edges[-1] = lo, hi
    edges = np.maximum.accumulate(edges)
    if np.any(np.diff(edges) <= 0):          # a range too narrow for `bins` distinct float64 edges
        edges = np.unique(edges)
    if len(edges) < 2:
        edges = np.array([lo, float(np.nextafter(lo, np.inf))])
    return edges, False


def _count(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of (finite) ``values`` per bin: ``edges[i] <= v < edges[i + 1]``, the last bin closed, values
    outside the edges left out. numpy's histogram with explicit edges does exactly this, searching in
    cache-sized blocks (five times faster than one searchsorted over a 16 MB chunk)."""
    with np.errstate(over="ignore", invalid="ignore"):   # numpy diffs the edges; near ±1e308 that overflows
        return np.histogram(values, bins=edges)[0].astype(np.int64)


def histogram_of(values: np.ndarray, bins: int = DEFAULT_BINS, integer: bool = False) -> Histogram:
    """The exact histogram of an in-memory array (NaN/Inf counted apart)."""
    v = numbers_of(np.asarray(values), "")
    nan = posinf = neginf = 0
    if v.dtype.kind == "f":
        mask = np.isfinite(v)
        bad = v[~mask]
        nan = int(np.count_nonzero(np.isnan(bad)))
        posinf = int(np.count_nonzero(bad > 0))
        neginf = bad.size - nan - posinf
        v = v[mask]
    if v.size == 0:
        return Histogram(np.zeros(0), np.zeros(0, dtype=np.int64), 0, nan, posinf, neginf, total=nan + posinf + neginf)
    f = v.astype(np.float64, copy=False)
    edges, ints = histogram_edges(float(f.min()), float(f.max()), bins, integer or v.dtype.kind in "iub")
    return Histogram(edges, _count(f, edges), int(f.size), nan, posinf, neginf, total=int(np.asarray(values).size),
                     integer_bins=ints)


def sampled_histogram(t: TensorRef, bins: int = DEFAULT_BINS, size: int = SAMPLE_SIZE) -> Histogram:
    """A quick estimate from ``size`` evenly spaced elements; counts scaled to the whole tensor."""
    sample = sample_values(t, size)
    h = histogram_of(sample, bins, integer=not (t.dtype.is_floating or t.dtype.is_complex))
    n = value_count(t)
    if sample.size and sample.size < n:
        scale = n / sample.size
        h.counts = h.counts * scale
        h.finite = round(h.finite * scale)
        h.nan, h.posinf, h.neginf = (round(x * scale) for x in (h.nan, h.posinf, h.neginf))
        h.exact = False
    h.sample_size = int(sample.size)
    h.total = n
    return h


def histogram_steps(t: TensorRef, stats: TensorStats, bins: int = DEFAULT_BINS,
                    chunk_bytes: int = CHUNK_BYTES) -> Generator[Progress, None, Histogram]:
    """The exact histogram over ``[stats.min, stats.max]``: a second pass, yielding :class:`Progress`."""
    _check(t)
    total = value_count(t)
    integer = not (t.dtype.is_floating or t.dtype.is_complex)
    if not stats.finite:
        yield Progress(total, total, "histogram")
        return Histogram(np.zeros(0), np.zeros(0, dtype=np.int64), 0, stats.nan, stats.posinf, stats.neginf,
                         total=total)
    edges, ints = histogram_edges(stats.min, stats.max, bins, integer)
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    done = 0
    yield Progress(0, total, "histogram")
    for chunk in value_source(t).iter_values(chunk_bytes):
        v = numbers_of(chunk, t.dtype.kind)
        done += v.size
        if v.dtype.kind == "f":
            v = v[np.isfinite(v)]
        counts += _count(v.astype(np.float64, copy=False), edges)
        yield Progress(done, total, "histogram")
    return Histogram(edges, counts, stats.finite, stats.nan, stats.posinf, stats.neginf, exact=True,
                     sample_size=total, total=total, integer_bins=ints)


@dataclass
class TensorSummary:
    stats: TensorStats
    histogram: Histogram
    extra: dict[str, Any] = field(default_factory=dict)


def auto_bins(n: int) -> int:
    """A bin count for ``n`` values: about 2*sqrt(n), between 8 and DEFAULT_BINS."""
    return int(min(DEFAULT_BINS, max(8, 2 * math.sqrt(max(n, 1)))))


def tensor_steps(t: TensorRef, bins: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                 sample_threshold: int = SAMPLE_THRESHOLD) -> Generator[Step, None, TensorSummary]:
    """Everything the details panel shows, in the order it becomes available.

    Yields a sampled :class:`Histogram` first for big tensors, then :class:`Progress` of the statistics
    pass, the :class:`TensorStats`, :class:`Progress` of the histogram pass, and the exact
    :class:`Histogram`; returns both in a :class:`TensorSummary`.
    """
    _check(t)
    bins = bins or auto_bins(value_count(t))
    if value_count(t) >= sample_threshold:
        yield sampled_histogram(t, bins)
    stats = yield from stats_steps(t, chunk_bytes)
    yield stats
    hist = yield from histogram_steps(t, stats, bins, chunk_bytes)
    yield hist
    return TensorSummary(stats, hist)


def compute_stats(t: TensorRef, **kw) -> TensorStats:
    return run_steps(stats_steps(t), **kw)


def exact_histogram(t: TensorRef, bins: int = DEFAULT_BINS, **kw) -> Histogram:
    stats = compute_stats(t, **kw)
    return run_steps(histogram_steps(t, stats, bins), **kw)
