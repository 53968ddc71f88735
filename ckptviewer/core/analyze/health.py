"""A checkpoint's health: one streaming pass over every tensor's values, and findings a person should look at.

The pass reads each distinct tensor once, in file order, one chunk at a time (memory: one chunk plus a few
numbers per tensor). What it measures, and how:

* **Exactly**, from the raw bits of the float types people train in (float16, bfloat16, float32, float64,
  float8 e4m3fn/e5m2): a float's bits without the sign order it by magnitude, and two read-only reductions per
  row (the unsigned and the signed maximum of the bits, see :func:`_magnitude_maxima`) give each row's largest
  magnitude without writing or converting anything. From those: whether a chunk holds NaN or infinity (a
  magnitude at or above the format's all-ones exponent), the largest finite magnitude, which rows are all zero
  (and whether the whole tensor is), and whether a float16 export would overflow. Chunks that do hold NaN,
  infinity or overflowing values are converted and counted exactly, with the first index of each. Other types
  (integers, bool, complex, the float8 "fnuz" variants, float8 e8m0, packed 4-bit floats...) go through the
  same measurements on their values widened by ``to_numbers``. Zeros are counted exactly up to
  :data:`SAMPLE` elements and estimated from the sample above (``zeros_exact``).
* **Constant** tensors: an evenly strided sample decides first; only a tensor whose sample is constant is
  compared in full.
* **Mean, std and L2 norm**: over every finite value for tensors up to :data:`SAMPLE` elements, and over an
  evenly strided sample of at least :data:`SAMPLE` elements (a prime stride, so no column pattern is
  favoured) for bigger ones; ``moments_exact`` says which. Widening every float16 value to do the
  arithmetic would cost four times the reading; the outlier rule compares tensors by factors of ten, and an
  estimate from a quarter of a million values is within about half a percent.
* **Duplicates**: a fingerprint of each tensor (dtype, shape, largest magnitude and the CRC-32 of the same
  sample's bytes) finds candidates; candidates are then compared byte for byte, so a duplicate finding is
  exact.

The rules are written not to cry wolf (see :func:`findings_for`): zero or constant biases, norms and buffers
are normal and are at most "info"; NaN and infinity are errors; a weight matrix or convolution kernel that is
all zero or constant is a warning; an outlier must be ten times off the median of at least four peers of
the same role and shape *and* far outside their spread.
"""
from __future__ import annotations

import math
import re
import statistics
import threading
import time
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generator, Iterable

import numpy as np

from ..model.dtypes import to_numbers
from ..model.interpret import BUFFER_NAMES, Analysis, analyze
from ..model.tensor import CHUNK_BYTES, TensorRef
from ..util.errors import CheckpointError
from ..util.progress import Progress
from ..util.textsafe import path_text
from .info import _json_key

SEVERITIES = ("error", "warning", "info")
KINDS = ("unreadable", "nan", "inf", "all_zero", "constant", "dead_rows", "duplicate", "outlier_norm",
         "cast_overflow")
SAMPLE = 1 << 18                 # tensors up to this many elements: moments over every value; bigger ones: over
                                 # an evenly strided sample of at least this many (also their fingerprint)
MIN_PEERS = 4                    # an outlier needs at least this many tensors of its role to compare with
OUTLIER_FACTOR = 10.0            # ... to be this many times off their median
OUTLIER_SPREAD = 5.0             # ... and this many robust standard deviations (of log10) off
DEAD_ROWS_WARN_FRACTION = 0.05   # dead rows are a warning from this share of a weight's rows (and 2 rows)
FLOAT16_MAX = 65504.0
SMALL = 1 << 12                  # tensors up to this many elements are read whole and measured in one go
PIECE_BYTES = 1 << 20            # chunks are measured in pieces of about this size (see _Scan.feed)
FLOAT16_OVERFLOW = 65520.0       # the smallest magnitude a cast to float16 rounds to infinity


# -- the bit-level fast path ---------------------------------------------------------------------------------
def _magnitude_bits(value: float, uint: str, fdt: str) -> int:
    """The bits of ``value`` as the float type ``fdt``, as an int (for comparing magnitudes bitwise)."""
    return int(np.array(value, dtype=fdt).view(uint))


@dataclass(frozen=True)
class _Bits:
    uint: str            # the unsigned type of the raw element
    nonfinite: int       # magnitudes (the bits without the sign) at or above this are NaN or infinite
    overflow16: int      # finite magnitudes at or above this overflow a cast to float16; 0: none

    @property
    def sign(self) -> int:
        return 1 << (8 * np.dtype(self.uint).itemsize - 1)

    @property
    def signed(self) -> str:
        return self.uint.replace("u", "i")


# bfloat16 has no value between 65280 and 65536: the first one a float16 cast overflows on is 65536 (0x4780).
_FAST: dict[str, _Bits] = {
    "float16": _Bits("<u2", 0x7C00, 0),
    "bfloat16": _Bits("<u2", 0x7F80, 0x4780),
    "float32": _Bits("<u4", 0x7F800000, _magnitude_bits(FLOAT16_OVERFLOW, "<u4", "<f4")),
    "float64": _Bits("<u8", 0x7FF0000000000000, _magnitude_bits(FLOAT16_OVERFLOW, "<u8", "<f8")),
    "float8_e5m2": _Bits("u1", 0x7C, 0),
    "float8_e4m3fn": _Bits("u1", 0x7F, 0),      # no infinity: S.1111.111 is NaN
}


# -- per-tensor results -----------------------------------------------------------------------------------
@dataclass
class TensorHealth:
    """What the pass measured on one distinct tensor (``keys``: every key path that names it)."""

    keys: list[tuple]
    dtype: str
    shape: tuple[int, ...]
    numel: int
    nbytes: int
    role: str = "parameter"          # "parameter", "buffer", "optimizer" (state), "other" (outside any model)
    floating: bool = True
    problem: str | None = None
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    first_nan: int | None = None     # flat (C-order) indices
    first_inf: int | None = None
    zeros: int = 0
    zeros_exact: bool = True         # False: estimated from the sample (big float tensors)
    absmax: float | None = None      # largest finite magnitude
    rows: int = 0                    # rows checked for dead_rows (dimension 0 of a 2-D or bigger floating tensor)
    dead_rows: int = 0
    dead_first: list[int] = field(default_factory=list)
    constant: bool = False
    constant_value: float | None = None
    overflow16: int = 0
    mean: float | None = None
    std: float | None = None
    norm: float | None = None
    moments_from: int = 0            # finite values the moments were computed over
    fingerprint: tuple | None = None

    @property
    def key(self) -> tuple:
        return self.keys[0]

    @property
    def all_zero(self) -> bool:
        """Every value is zero (exact whatever the size: the largest magnitude is zero and nothing is NaN/Inf)."""
        return (self.numel > 0 and self.problem is None and self.absmax == 0 and not self.nan
                and not self.posinf and not self.neginf)

    @property
    def moments_exact(self) -> bool:
        return self.moments_from >= self.numel - self.nan - self.posinf - self.neginf

    @property
    def rms(self) -> float | None:
        finite = self.numel - self.nan - self.posinf - self.neginf
        if self.norm is None or finite <= 0:
            return None
        return self.norm / math.sqrt(finite)

    def index_of(self, flat: int | None) -> list[int] | None:
        if flat is None:
            return None
        if not self.shape:
            return []
        return [int(i) for i in np.unravel_index(flat, self.shape)]

    def to_json(self) -> dict:
        return {"key": [_json_key(k) for k in self.key], "dtype": self.dtype, "shape": list(self.shape),
                "numel": self.numel, "role": self.role, "nan": self.nan, "posinf": self.posinf,
                "neginf": self.neginf, "zeros": self.zeros, "zeros_exact": self.zeros_exact, "absmax": self.absmax, "mean": self.mean,
                "std": self.std, "norm": self.norm, "moments_exact": self.moments_exact,
                "dead_rows": self.dead_rows, "constant": self.constant, "problem": self.problem}


@dataclass
class Finding:
    key: tuple
    kind: str
    severity: str
    message: str
    count: int | None = None
    index: list[int] | None = None
    related: list[tuple] = field(default_factory=list)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"key": [_json_key(k) for k in self.key], "kind": self.kind,
                               "severity": self.severity, "message": self.message}
        if self.count is not None:
            out["count"] = self.count
        if self.index is not None:
            out["index"] = self.index
        if self.related:
            out["related"] = [[_json_key(k) for k in r] for r in self.related]
        return out

    def text(self) -> str:
        return f"{self.severity:<7}  {self.kind:<13}  {path_text(self.key)}: {self.message}"


@dataclass
class HealthReport:
    tensors: list[TensorHealth]
    findings: list[Finding]
    nbytes: int = 0
    seconds: float = 0.0
    breakdown: list["ModuleShare"] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in SEVERITIES}
        for f in self.findings:
            out[f.severity] += 1
        return out

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def by_key(self) -> dict[tuple, list[Finding]]:
        """Findings per key path (a duplicate finding under each key it names)."""
        out: dict[tuple, list[Finding]] = defaultdict(list)
        for f in self.findings:
            out[tuple(f.key)].append(f)
            for r in f.related:
                out[tuple(r)].append(f)
        return out

    def to_json(self) -> dict:
        return {"tensors": len(self.tensors), "nbytes": self.nbytes, "seconds": round(self.seconds, 3),
                "counts": self.counts(), "findings": [f.to_json() for f in self.findings],
                "breakdown": [m.to_json() for m in self.breakdown]}


# -- roles ------------------------------------------------------------------------------------------------
def _leaf_name(key: tuple) -> str:
    last = key[-1] if key else ""
    return str(last).rsplit(".", 1)[-1]


def role_of(key: tuple, t: TensorRef, optimizer_paths: list[tuple], model_paths: list[tuple]) -> str:
    key = tuple(key)
    for p in optimizer_paths:
        if key[:len(p)] == p:
            return "optimizer"
    if _leaf_name(key) in BUFFER_NAMES or not (t.dtype.is_floating or t.dtype.is_complex):
        return "buffer"
    if model_paths and not any(key[:len(p)] == p for p in model_paths):
        return "other"
    return "parameter"


_DIGITS = re.compile(r"^\d+$")


def role_pattern(key: tuple) -> str:
    """The key with block numbers made wildcards: ``layers.11.attn.q.weight`` -> ``layers.#.attn.q.weight``."""
    parts = []
    for comp in key:
        if isinstance(comp, int):
            parts.append("#")
        else:
            parts.append(".".join("#" if _DIGITS.match(seg) else seg for seg in str(comp).split(".")))
    return "/".join(parts)


# -- the pass ----------------------------------------------------------------------------------------------
def _ident(t: TensorRef) -> Any:
    if t.storage is None:
        return id(t)
    return (id(t.storage), t.offset, t.shape, t.stride, t.dtype.name, t.cast_from.name if t.cast_from else None)


def _file_order(t: TensorRef) -> tuple[str, int]:
    try:
        loc = t.storage.source.file_location(t.offset * t.stored_dtype.itemsize) if t.storage is not None \
            and t.storage.source is not None else None
    except (CheckpointError, OSError, ValueError):
        loc = None
    return (loc[0], loc[1]) if loc else ("", 0)


def _prime_at_most(n: int) -> int:
    n = max(2, int(n))
    while n > 2 and not all(n % d for d in range(2, int(n ** 0.5) + 1)):
        n -= 1
    return n


class _Scan:
    """The running measurements of one tensor, fed chunk by chunk (rows along dimension 0)."""

    def __init__(self, t: TensorRef, th: TensorHealth):
        self.t = t
        self.th = th
        bits = _FAST.get(t.dtype.name)
        self.bits = bits if bits is not None and np.dtype(bits.uint).itemsize == t.dtype.itemsize else None
        n = t.numel
        self.row_wise = th.floating and len(t.shape) >= 2 and t.shape[0] > 0
        # A prime stride: no column of a matrix whose sides are powers of two is favoured or missed.
        self.stride = 1 if n < 2 * SAMPLE else _prime_at_most(n // SAMPLE)
        self.moments = th.floating or t.dtype.is_complex
        self._sample: np.ndarray | None = None
        self.zero_sample = 0
        self.sample_size = 0
        self.crc = 0
        self.start = 0                  # flat index of the current chunk's first element
        self.row = 0
        self.top_bits = 0
        self.top_value: float | None = None
        self.const_ref: np.ndarray | None = None     # the first element (raw), while the tensor may be constant
        self.const_possible = n >= 2
        self.count = 0                  # moments of the sampled finite values (Chan et al.'s parallel merge)
        self.mean = 0.0
        self.m2 = 0.0
        self.sumsq = 0.0

    # -- per chunk ----------------------------------------------------------------------------------
    def feed(self, chunk: np.ndarray, pool=None) -> None:
        raw = chunk.reshape(-1)
        rows = chunk.shape[0] if chunk.ndim else 1
        if raw.size == 0:
            return
        if self.const_possible and self.const_ref is None:
            self.const_ref = raw[:1].copy()
        if self.bits is not None:
            self._feed_bits(raw, rows, pool)
        else:
            self._feed_values(raw, rows)
        self._feed_sample(raw)
        self.start += raw.size
        self.row += rows

    def _feed_bits(self, raw: np.ndarray, rows: int, pool) -> None:
        b, th = self.bits, self.th
        u = raw.view(b.uint)
        piece = PIECE_BYTES // u.itemsize
        row_len = u.size // rows if self.row_wise else min(u.size, piece)
        stride, start = self.stride, self.start
        if row_len > piece:
            # Rows longer than a piece (a [2, 10**8] tensor): each row in pieces, then its maximum.
            parts = [_magnitude_maxima((u[r * row_len:(r + 1) * row_len], piece, stride, start + r * row_len, b))
                     for r in range(rows)]
            row_max = np.array([p[0].max() for p in parts], dtype=u.dtype)
        else:
            if pool is not None and u.nbytes >= 2 * PIECE_BYTES:
                # Two halves at once (numpy releases the GIL); the halves split at a row boundary.
                cut = (u.size // row_len) // 2 * row_len
                parts = list(pool.map(_magnitude_maxima, [(u[:cut], row_len, stride, start, b),
                                                          (u[cut:], row_len, stride, start + cut, b)]))
            else:
                parts = [_magnitude_maxima((u, row_len, stride, start, b))]
            row_max = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        if stride > 1:
            samples = [p[1] for p in parts]
            self._sample = (np.concatenate(samples) if len(samples) > 1 else samples[0]).view(raw.dtype)
        else:
            th.zeros += u.size - int(np.count_nonzero(u & np.array(b.sign - 1, dtype=u.dtype)))
        top = int(row_max.max())
        if self.row_wise:
            dead = row_max == 0
            k = int(np.count_nonzero(dead))
            if k:
                th.dead_rows += k
                if len(th.dead_first) < 8:
                    th.dead_first.extend(int(i) + self.row for i in np.flatnonzero(dead)[:8 - len(th.dead_first)])
        if top >= b.nonfinite or (b.overflow16 and top >= b.overflow16):
            # Rare: NaN, infinity or float16 overflow somewhere in this chunk; count them exactly.
            mag = u & np.array(b.sign - 1, dtype=u.dtype)
            if top >= b.nonfinite:
                self._nonfinite(raw)
                finite = mag[mag < b.nonfinite]
                top = int(finite.max()) if finite.size else 0
            if b.overflow16 and top >= b.overflow16:
                th.overflow16 += int(np.count_nonzero((mag >= b.overflow16) & (mag < b.nonfinite)))
        self.top_bits = max(self.top_bits, top)

    def _feed_values(self, raw: np.ndarray, rows: int) -> None:
        th = self.th
        vals = _numbers(raw, self.t)
        fin = vals
        if vals.dtype.kind == "f":
            finite_mask = np.isfinite(vals)
            if not finite_mask.all():
                self._nonfinite(raw, vals)
                fin = vals[finite_mask]
        nz = vals != 0
        th.zeros += vals.size - int(np.count_nonzero(nz))
        if self.row_wise and rows and vals.size % rows == 0:
            dead = ~nz.reshape(rows, -1).any(axis=1)
            k = int(np.count_nonzero(dead))
            if k:
                th.dead_rows += k
                if len(th.dead_first) < 8:
                    th.dead_first.extend(int(i) + self.row for i in np.flatnonzero(dead)[:8 - len(th.dead_first)])
        if fin.size:
            mags = np.abs(fin)
            top = float(mags.max())
            self.top_value = top if self.top_value is None else max(self.top_value, top)
            if th.floating and self.t.dtype.name != "float16" and top >= FLOAT16_OVERFLOW:
                th.overflow16 += int(np.count_nonzero(mags >= FLOAT16_OVERFLOW))

    def _nonfinite(self, raw: np.ndarray, vals: np.ndarray | None = None) -> None:
        th = self.th
        if vals is None:
            vals = _numbers(raw, self.t)
        if vals.dtype.kind != "f":
            return
        per = max(1, vals.size // max(1, raw.size))          # packed types: several values per stored element
        nan = np.isnan(vals)
        inf = np.isinf(vals)
        k_nan, k_inf = int(np.count_nonzero(nan)), int(np.count_nonzero(inf))
        if k_nan:
            th.nan += k_nan
            if th.first_nan is None:
                th.first_nan = self.start + int(np.flatnonzero(nan)[0]) // per
        if k_inf:
            pos = int(np.count_nonzero(vals[inf] > 0))
            th.posinf += pos
            th.neginf += k_inf - pos
            if th.first_inf is None:
                th.first_inf = self.start + int(np.flatnonzero(inf)[0]) // per

    def _feed_sample(self, raw: np.ndarray) -> None:
        """One evenly strided sample (every element of a small tensor) serves three purposes: the fingerprint,
        the constant check (only a tensor whose sample is constant is compared whole) and the moments."""
        stride = self.stride
        if stride == 1:
            sample = raw
        elif self._sample is not None:
            sample, self._sample = self._sample, None             # gathered by the fast path while hot
        else:
            sample = np.ascontiguousarray(raw[(-self.start) % stride::stride])
        if sample.size == 0:
            return
        self.crc = zlib.crc32(sample.view(np.uint8), self.crc)
        if self.bits is not None and stride > 1:
            # Zeros of a big tensor, estimated from the sample (the finding that matters, all zero, is exact).
            mag = sample.view(self.bits.uint) & np.array(self.bits.sign - 1, dtype=self.bits.uint)
            self.zero_sample += sample.size - int(np.count_nonzero(mag))
            self.sample_size += sample.size
        if self.const_possible:
            ref = _as_uint(self.const_ref)[0]
            self.const_possible = bool(np.all(_as_uint(sample) == ref)
                                       and (stride == 1 or np.all(_as_uint(raw) == ref)))
        if not self.moments:
            return
        v = _numbers(sample, self.t).astype(np.float64)
        th = self.th
        if th.nan or th.posinf or th.neginf:
            v = v[np.isfinite(v)]
        if not v.size:
            return
        total = float(v.sum())
        sumsq = float(np.einsum("i,i->", v, v))          # one pass, and no BLAS threads
        nb = v.size
        mean_b = total / nb
        m2_b = max(sumsq - total * mean_b, 0.0)
        na = self.count
        tot = na + nb
        delta = mean_b - self.mean
        self.mean += delta * nb / tot
        self.m2 += m2_b + delta * delta * na * nb / tot
        self.sumsq += sumsq
        self.count = tot

    # -- end ----------------------------------------------------------------------------------------
    def finish(self) -> None:
        th = self.th
        finite = th.numel - th.nan - th.posinf - th.neginf
        if self.bits is not None:
            if finite > 0:
                raw = np.array([self.top_bits], dtype=self.bits.uint).view(self.t.dtype.numpy)
                th.absmax = abs(float(to_numbers(raw, self.t.dtype)[0]))
        else:
            th.absmax = self.top_value
        if self.count:
            th.mean = self.mean
            th.std = math.sqrt(max(self.m2, 0.0) / self.count)
            th.norm = math.sqrt(self.sumsq * (finite / self.count)) if finite else 0.0
            th.moments_from = self.count
        if self.sample_size:
            if finite == th.numel and self.top_bits == 0:
                th.zeros = th.numel
            else:
                th.zeros = min(round(self.zero_sample * th.numel / self.sample_size), th.numel - 1)
            th.zeros_exact = False
        th.constant = self.const_possible and th.numel >= 2 and th.nan == 0
        if th.constant and self.const_ref is not None:
            v = _numbers(self.const_ref, self.t).reshape(-1)
            th.constant_value = float(v[0]) if v.size else None
        th.fingerprint = (self.t.dtype.name, tuple(self.t.shape), self.crc)


_LOCAL = threading.local()


def _scratch(dtype: np.dtype, size: int) -> np.ndarray:
    """A reusable buffer of this thread (fresh arrays per piece would each be zero-filled by the kernel)."""
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None:
        bufs = _LOCAL.bufs = {}
    buf = bufs.get(dtype.str)
    if buf is None or buf.size < size:
        buf = bufs[dtype.str] = np.empty(size, dtype=dtype)
    return buf[:size]


def _magnitude_maxima(job: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    """(per-row largest magnitude, strided sample) of raw float bits ``u`` in rows of ``row_len`` (a last,
    shorter row when ``row_len`` does not divide the size).

    The magnitude is the bits without the sign, and it orders values by size. It is found with two read-only
    reductions and no arithmetic on the data: the unsigned maximum of a row is its largest negative magnitude
    plus the sign bit when the row holds a negative value (else its largest positive one), and the signed
    maximum is its largest positive magnitude (negative when the row holds no positive value). The work goes a
    piece of about PIECE_BYTES at a time, so that the second reduction and the sample (every ``stride``-th
    element of the tensor, ``u[0]`` being element ``start``) find the piece in the CPU's cache."""
    u, row_len, stride, start, bits = job
    n = u.size
    signed = u.view(bits.signed)
    full = n // row_len
    count = full + (1 if n % row_len else 0)
    umax = np.empty(count, dtype=u.dtype)
    smax = np.empty(count, dtype=signed.dtype)
    step = max(1, PIECE_BYTES // (row_len * u.itemsize))
    samples = [] if stride > 1 else None
    for r0 in range(0, full, step):
        r1 = min(full, r0 + step)
        lo, hi = r0 * row_len, r1 * row_len
        np.max(u[lo:hi].reshape(r1 - r0, row_len), axis=1, out=umax[r0:r1])
        np.max(signed[lo:hi].reshape(r1 - r0, row_len), axis=1, out=smax[r0:r1])
        if samples is not None:
            samples.append(u[lo + (-(start + lo)) % stride:hi:stride].copy())      # a copy now, while hot
    if n % row_len:
        lo = full * row_len
        umax[-1] = u[lo:].max()
        smax[-1] = signed[lo:].max()
        if samples is not None:
            samples.append(u[lo + (-(start + lo)) % stride::stride])
    sign = u.dtype.type(bits.sign)
    negative = umax >= sign
    mags = np.where(negative, umax - np.where(negative, sign, 0).astype(u.dtype), 0).astype(u.dtype)
    positive = np.maximum(smax, 0).astype(u.dtype)
    rows = np.maximum(mags, positive)
    sample = None if samples is None else (np.concatenate(samples) if samples else u[:0].copy())
    return rows, sample


def _as_uint(raw: np.ndarray) -> np.ndarray:
    """Raw elements (contiguous, 1-D) as unsigned integers of their size for bitwise equality; wider elements
    (complex128) as rows of 8-byte words."""
    size = raw.dtype.itemsize
    if size in (1, 2, 4, 8):
        return raw.view(f"<u{size}" if size > 1 else "u1")
    return np.ascontiguousarray(raw).view("<u8").reshape(-1, size // 8)


def _numbers(raw: np.ndarray, t: TensorRef) -> np.ndarray:
    vals = to_numbers(raw.reshape(-1), t.dtype)
    if np.iscomplexobj(vals):
        return np.abs(vals)
    if vals.dtype == np.bool_:
        return vals.view(np.uint8)
    return vals


def _scan_small(t: TensorRef, th: TensorHealth) -> None:
    """The same measurements for a small tensor, read whole, in a dozen numpy calls: a file of 100,000 biases
    and scalars spends its time per tensor, not per byte."""
    raw = t.read_raw().reshape(-1)
    vals = _numbers(raw, t)
    fin = vals
    if vals.dtype.kind == "f":
        finite = np.isfinite(vals)
        if not finite.all():
            scan = _Scan(t, th)
            scan._nonfinite(raw, vals)
            fin = vals[finite]
    nz = vals != 0
    th.zeros = vals.size - int(np.count_nonzero(nz))
    rows = t.shape[0] if t.shape else 1
    if th.floating and len(t.shape) >= 2 and rows and vals.size % rows == 0:
        dead = ~nz.reshape(rows, -1).any(axis=1)
        th.dead_rows = int(np.count_nonzero(dead))
        th.dead_first = [int(i) for i in np.flatnonzero(dead)[:8]]
    if fin.size:
        mags = np.abs(fin)
        th.absmax = float(mags.max())
        if th.floating and t.dtype.name != "float16" and th.absmax >= FLOAT16_OVERFLOW:
            th.overflow16 = int(np.count_nonzero(mags >= FLOAT16_OVERFLOW))
        if th.floating or t.dtype.is_complex:
            v = fin.astype(np.float64)
            total = float(v.sum())
            sumsq = float(np.einsum("i,i->", v, v))
            th.mean = total / v.size
            th.std = math.sqrt(max(sumsq - total * th.mean, 0.0) / v.size)
            th.norm = math.sqrt(sumsq)
            th.moments_from = v.size
    u = _as_uint(raw)
    if t.numel >= 2 and not th.nan and bool(np.all(u == u[0])):
        th.constant = True
        th.constant_value = float(vals.reshape(-1)[0])
    th.fingerprint = (t.dtype.name, tuple(t.shape), zlib.crc32(np.ascontiguousarray(raw).view(np.uint8)))


def scan_tensor(t: TensorRef, th: TensorHealth, pool=None,
                chunk_bytes: int = CHUNK_BYTES) -> Generator[int, None, None]:
    """Measure one tensor into ``th``; yields the bytes read after each chunk. With a thread ``pool``, big
    chunks are measured in two halves at once (numpy releases the GIL)."""
    if not t.readable:
        th.problem = t.problem or "this tensor has no stored values"
        return
    try:
        if t.numel <= SMALL:
            _scan_small(t, th)
            yield t.nbytes
            return
        scan = _Scan(t, th)
        for chunk in t.iter_raw(chunk_bytes):
            scan.feed(chunk, pool)
            yield chunk.nbytes
    except CheckpointError as e:
        th.problem = e.message
        return
    scan.finish()


def health_steps(entries: Iterable[tuple[Any, TensorRef]], analysis: Analysis | None = None, *,
                 chunk_bytes: int = CHUNK_BYTES) -> Generator[Progress, None, HealthReport]:
    """The pass over ``entries`` ((key path, tensor) pairs, as ``Checkpoint.tensor_entries`` lists them) and the
    findings. Yields :class:`Progress` in bytes; returns a :class:`HealthReport`."""
    started = time.perf_counter()
    opt_paths = [tuple(o.path) for o in analysis.optimizers] if analysis is not None else []
    model_paths = [tuple(sd.path) for sd in analysis.state_dicts] if analysis is not None else []
    by_ident: dict[Any, TensorHealth] = {}
    order: list[tuple[TensorRef, TensorHealth]] = []
    for key, t in entries:
        key = tuple(key)
        ident = _ident(t)
        th = by_ident.get(ident)
        if th is not None:
            th.keys.append(key)
            continue
        th = TensorHealth([key], t.dtype.name, tuple(t.shape), t.numel, t.nbytes,
                          role=role_of(key, t, opt_paths, model_paths),
                          floating=t.dtype.is_floating)
        by_ident[ident] = th
        order.append((t, th))
    total = sum(t.nbytes for t, _ in order)
    # Sequential reading: a cold file is read in order, not in the pickle's order of keys.
    reading = sorted(range(len(order)), key=lambda i: _file_order(order[i][0]))
    done = 0
    yield Progress(0, total, "checking values")
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ckptviewer-health") as pool:
        for i in reading:
            t, th = order[i]
            for nbytes in scan_tensor(t, th, pool, chunk_bytes):
                done += nbytes
                yield Progress(done, total, "checking values")
    tensors = [th for _, th in order]
    duplicates = yield from _duplicate_groups(order)
    report = HealthReport(tensors, findings_for(tensors, duplicates), total)
    report.breakdown = parameter_breakdown(tensors, analysis)
    report.seconds = time.perf_counter() - started
    yield Progress(total, total, "checking values")
    return report


def check_steps(ckpt) -> Generator[Progress, None, HealthReport]:
    """The health pass over every tensor of an opened :class:`~ckptviewer.core.model.checkpoint.Checkpoint`."""
    return health_steps(ckpt.tensor_entries(), analyze(ckpt.root))


# -- duplicates ---------------------------------------------------------------------------------------------
def _duplicate_candidate(th: TensorHealth) -> bool:
    return (th.floating and th.problem is None and th.numel >= 2 and not th.constant
            and not th.all_zero and th.fingerprint is not None)


def _duplicate_groups(order: list[tuple[TensorRef, TensorHealth]]) -> Generator[Progress, None, list[list[int]]]:
    """Groups (indices into ``order``) of tensors whose values are byte for byte identical."""
    buckets: dict[Any, list[int]] = defaultdict(list)
    for i, (_t, th) in enumerate(order):
        if _duplicate_candidate(th):
            buckets[(th.fingerprint, th.absmax)].append(i)
    groups: list[list[int]] = []
    pending = [b for b in buckets.values() if len(b) > 1]
    total = sum(order[b[0]][1].nbytes * len(b) for b in pending)
    done = 0
    for bucket in pending:
        rest = list(bucket)
        while len(rest) > 1:
            first, same, other = rest[0], [rest[0]], []
            for j in rest[1:]:
                if _same_bytes(order[first][0], order[j][0]):
                    same.append(j)
                else:
                    other.append(j)
                done += order[j][1].nbytes
                yield Progress(done, max(total, 1), "comparing duplicates")
            if len(same) > 1:
                groups.append(same)
            rest = other
    return groups


def _same_bytes(a: TensorRef, b: TensorRef) -> bool:
    if a.dtype.name != b.dtype.name or a.shape != b.shape:
        return False
    if a.storage is not None and b.storage is not None and a.storage is b.storage:
        return False       # one storage under two views: sharing, not duplication
    rows = a.rows_per_chunk(CHUNK_BYTES)
    try:
        for ca, cb in zip(a.iter_raw(rows=rows), b.iter_raw(rows=rows)):
            if not np.array_equal(_as_uint(ca.reshape(-1)), _as_uint(cb.reshape(-1))):
                return False
    except CheckpointError:
        return False
    return True


# -- the rules ------------------------------------------------------------------------------------------------
def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _index_text(th: TensorHealth, flat: int | None) -> str:
    idx = th.index_of(flat)
    if idx is None:
        return ""
    return f"[{', '.join(str(i) for i in idx)}]" if idx else "the only element"


def _row_word(th: TensorHealth) -> str:
    return "filter" if len(th.shape) in (3, 4, 5) else "row"


def findings_for(tensors: list[TensorHealth], duplicates: list[list[int]] | None = None) -> list[Finding]:
    """Findings from the measurements (see the module docstring for the rules and why)."""
    out: list[Finding] = []
    for th in tensors:
        out.extend(_tensor_findings(th))
    for group in duplicates or []:
        out.append(_duplicate_finding([tensors[i] for i in group]))
    out.extend(_outliers(tensors))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    kind_rank = {k: i for i, k in enumerate(KINDS)}
    position = {id(th): i for i, th in enumerate(tensors)}
    key_pos = {k: position[id(th)] for th in tensors for k in th.keys}
    out.sort(key=lambda f: (rank[f.severity], kind_rank.get(f.kind, 99), key_pos.get(tuple(f.key), 0)))
    return out


def _tensor_findings(th: TensorHealth) -> list[Finding]:
    out: list[Finding] = []
    if th.problem:
        return [Finding(k, "unreadable", "error", f"its values cannot be read: {th.problem}") for k in th.keys]
    if th.numel == 0:
        return out
    weight = th.role == "parameter" and len(th.shape) >= 2
    for key in th.keys:
        if th.nan:
            out.append(Finding(key, "nan", "error",
                               f"{_n(th.nan, 'NaN value')} of {th.numel:,}; the first at {_index_text(th, th.first_nan)}",
                               th.nan, th.index_of(th.first_nan)))
        if th.posinf or th.neginf:
            k = th.posinf + th.neginf
            out.append(Finding(key, "inf", "error",
                               f"{_n(k, 'infinite value')} of {th.numel:,} ({th.posinf:,} +inf, {th.neginf:,} -inf); "
                               f"the first at {_index_text(th, th.first_inf)}", k, th.index_of(th.first_inf)))
        if not th.floating:
            continue
        if th.all_zero and th.numel >= 2:
            if weight:
                what = "convolution kernel" if len(th.shape) >= 3 else "weight matrix"
                out.append(Finding(key, "all_zero", "warning",
                                   f"all {th.numel:,} values of this {what} are zero: its layer outputs nothing "
                                   f"(never trained, zeroed, or not loaded)", th.numel))
            elif th.role == "optimizer" and len(th.shape) >= 2:
                out.append(Finding(key, "all_zero", "info",
                                   f"this optimizer state is all zero ({th.numel:,} values): its parameter has "
                                   f"not been updated", th.numel))
            continue
        if th.constant and th.constant_value is not None and th.nan == 0:
            sev = "warning" if weight else "info"
            note = (": every output of its layer gets the same weights" if weight
                    else " (normal for a freshly initialised norm scale or running statistic)")
            out.append(Finding(key, "constant", sev, f"all {th.numel:,} values equal {th.constant_value:.6g}{note}",
                               th.numel))
        if th.dead_rows and th.role in ("parameter", "other") and len(th.shape) >= 2:
            word = _row_word(th)
            rows = th.shape[0]
            warn = th.dead_rows >= 2 and th.dead_rows >= DEAD_ROWS_WARN_FRACTION * rows
            shown = ", ".join(str(r) for r in th.dead_first) + (", ..." if th.dead_rows > len(th.dead_first) else "")
            out.append(Finding(key, "dead_rows", "warning" if warn else "info",
                               f"{th.dead_rows:,} of {rows:,} {word}s are all zero ({word}s {shown})"
                               + ("" if warn else " (a few zero rows can be intended: a padding embedding, a fixed "
                                                   "basis)"),
                               th.dead_rows, [th.dead_first[0]] if th.dead_first else None))
        if th.overflow16 and th.dtype != "float16":
            out.append(Finding(key, "cast_overflow", "info",
                               f"{_n(th.overflow16, 'value')} beyond float16's range (largest |x| = {th.absmax:.6g}, "
                               f"float16 holds up to {FLOAT16_MAX:g}): a float16 export (convert --dtype float16) "
                               f"would make {'it' if th.overflow16 == 1 else 'them'} infinite", th.overflow16))
    return out


def _duplicate_finding(group: list[TensorHealth]) -> Finding:
    first, others = group[0], group[1:]
    keys = [k for th in others for k in th.keys]
    weight = all(len(th.shape) >= 2 and th.numel >= 256 and th.role == "parameter" for th in group)
    names = ", ".join(path_text(k) for k in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    return Finding(first.key, "duplicate", "warning" if weight else "info",
                   f"the same {first.numel:,} values as {names}, stored separately (not one shared storage)",
                   first.numel, related=keys)


def _outliers(tensors: list[TensorHealth]) -> list[Finding]:
    groups: dict[tuple, list[TensorHealth]] = defaultdict(list)
    for th in tensors:
        if (th.role == "parameter" and th.floating and th.problem is None and th.numel >= 2 and th.norm
                and not th.nan and not (th.posinf or th.neginf)):
            groups[(role_pattern(th.key), th.shape)].append(th)
    out: list[Finding] = []
    for (pattern, _shape), members in groups.items():
        if len(members) < MIN_PEERS:
            continue
        for metric in ("rms", "std"):
            vals = [(th, getattr(th, metric)) for th in members]
            vals = [(th, v) for th, v in vals if v is not None and v > 0]
            if len(vals) < MIN_PEERS:
                continue
            logs = [math.log10(v) for _, v in vals]
            med = statistics.median(logs)
            mad = statistics.median(abs(x - med) for x in logs)
            spread = 1.4826 * mad + 0.02
            for (th, v), lg in zip(vals, logs):
                off = lg - med
                if abs(off) >= math.log10(OUTLIER_FACTOR) and abs(off) >= OUTLIER_SPREAD * spread:
                    if any(f.key == th.key for f in out):
                        continue
                    ratio = 10 ** off
                    what = "RMS (norm per element)" if metric == "rms" else "standard deviation"
                    rel = f"{ratio:.3g} times" if ratio >= 1 else f"1/{1 / ratio:.3g} of"
                    out.append(Finding(th.key, "outlier_norm", "warning",
                                       f"its {what} {v:.4g} is {rel} the median {10 ** med:.4g} of the "
                                       f"{len(vals)} tensors shaped {list(th.shape)} in the same role ({pattern})"))
    return out


# -- where the parameters are ---------------------------------------------------------------------------------
@dataclass
class ModuleShare:
    """Tensors, elements and bytes under one module (or optimizer state, or other entry)."""

    name: str
    tensors: int = 0
    numel: int = 0
    nbytes: int = 0
    kind: str = "module"             # "module", "optimizer", "other"

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "tensors": self.tensors, "numel": self.numel,
                "nbytes": self.nbytes}


def module_of(key: tuple, depth: int = 1) -> str:
    """The module a key belongs to, ``depth`` levels deep: ``(sd, "layers.3.attn.q.weight")`` -> ``sd/layers``
    at depth 1, ``sd/layers.3`` at depth 2; a tensor outside any module (``(sd, "scale")``) is its own group."""
    key = tuple(key)
    if not key:
        return "(root)"
    head = [str(k) for k in key[:-1]]
    segs = str(key[-1]).split(".")
    mod = segs[:-1][:depth] or segs[-1:]
    return "/".join(head + [".".join(mod)])


def parameter_breakdown(tensors: list[TensorHealth], analysis: Analysis | None = None,
                        depth: int = 1) -> list[ModuleShare]:
    """Which modules hold the elements and bytes (each distinct tensor counted once), biggest first."""
    opt_paths = [tuple(o.path) for o in analysis.optimizers] if analysis is not None else []
    shares: dict[str, ModuleShare] = {}
    for th in tensors:
        key = th.key
        opt = next((p for p in opt_paths if key[:len(p)] == p), None)
        if opt is not None:
            name, kind = (path_text(opt) if opt else "optimizer") + " (optimizer state)", "optimizer"
        else:
            name, kind = module_of(key, depth), ("module" if th.role in ("parameter", "buffer") else "other")
        share = shares.get(name)
        if share is None:
            share = shares[name] = ModuleShare(name, kind=kind)
        share.tensors += 1
        share.numel += th.numel
        share.nbytes += th.nbytes
    return sorted(shares.values(), key=lambda s: (-s.nbytes, s.name))


def layer_series(report: HealthReport) -> list[TensorHealth]:
    """The model's floating parameters in model order (what a per-layer chart of norms plots)."""
    return [th for th in report.tensors if th.role == "parameter" and th.floating and th.problem is None
            and th.numel >= 2 and th.norm is not None]


def check_file(path: str) -> HealthReport:
    """Open ``path`` and run the pass (for scripts and tests)."""
    from ..read.open import open_checkpoint
    from ..util.progress import run_steps
    with open_checkpoint(path) as ckpt:
        return run_steps(check_steps(ckpt))


__all__ = ["Finding", "HealthReport", "ModuleShare", "TensorHealth", "check_file", "check_steps", "findings_for",
           "health_steps", "layer_series", "module_of", "parameter_breakdown", "role_pattern", "scan_tensor"]
