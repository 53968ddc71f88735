"""Comparing two checkpoints (or two parts of them), tensor by tensor, in bounded memory.

``DiffRun(a, b)`` lines up the leaves of both trees by key path at once (metadata only): tensors,
and plain values such as ``epoch``, ``loss`` or an optimizer's ``lr``. ``run.compare()`` then streams
the tensors that exist on both sides, one pair and one chunk at a time; each yield reports progress
and is a point where the caller may stop. Chunks whose bytes are equal cost a memory comparison and no
arithmetic; a tensor pair that is one region of one file ("best is last": both keys hold the same
storage) is identical without reading anything.

For tensors that differ: max |a-b|, mean |a-b|, ||a-b|| / ||a||, cosine similarity, and the fraction
of elements that are not close in the sense of ``torch.allclose`` (|a - b| > atol + rtol * |b|). A
single-element tensor (a counter such as ``num_batches_tracked``, a 0-d loss) differs as old -> new.
Optimizer state entries are named by the parameter they belong to, as ``info`` names them.

``align_sides(a, b)`` lines up what a user means to compare: a training checkpoint's one state_dict
against a bare state_dict, and state_dicts whose keys differ only by a wrapper prefix (``module.``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generator, Iterator

import numpy as np

from ..model import keypath
from ..model.dtypes import to_numbers
from ..model.interpret import analyze, detect_prefix, is_state_dict
from ..model.objects import GlobalRef, StandIn, TorchDevice, TorchEnum, TorchSize, Unreadable
from ..model.tensor import CHUNK_BYTES, TensorRef
from ..model.tree import value_text
from ..model.values import small_value
from ..model.values import value_text as small_value_text
from ..model.walk import iter_leaves, module_attrs, unwrap
from ..util.errors import CheckpointError
from ..util.textsafe import path_text, safe_text

STATUSES = ("same", "changed", "dtype", "shape", "only_a", "only_b", "value", "error", "pending")
STATUS_TEXT = {"same": "identical", "changed": "values changed", "dtype": "dtype changed",
               "shape": "shape changed", "only_a": "only in A", "only_b": "only in B",
               "value": "value changed", "error": "unreadable", "pending": "not compared yet"}
# The same statuses as counts in a summary ("3 tensors changed, 2 other values changed").
COUNT_TEXT = {**STATUS_TEXT, "changed": "tensors changed", "value": "other values changed"}


@dataclass
class TensorMetrics:
    numel: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sum_sq_diff: float = 0.0
    sum_sq_a: float = 0.0
    sum_sq_b: float = 0.0
    dot: float = 0.0
    not_close: int = 0
    nan_mismatch: int = 0
    bytes_equal: bool = True

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.numel if self.numel else 0.0

    @property
    def relative_change(self) -> float:
        """||a - b|| / ||a||: how much of A moved (inf when A is all zeros and B is not)."""
        if self.sum_sq_a == 0:
            return 0.0 if self.sum_sq_diff == 0 else math.inf
        return math.sqrt(self.sum_sq_diff / self.sum_sq_a)

    @property
    def cosine(self) -> float:
        denom = math.sqrt(self.sum_sq_a) * math.sqrt(self.sum_sq_b)
        if denom == 0:
            return 1.0 if self.sum_sq_a == self.sum_sq_b == 0 else 0.0
        return max(-1.0, min(1.0, self.dot / denom))

    @property
    def fraction_changed(self) -> float:
        return self.not_close / self.numel if self.numel else 0.0

    def as_dict(self) -> dict:
        return {"max_abs": self.max_abs, "mean_abs": self.mean_abs, "relative_change": self.relative_change,
                "cosine": self.cosine, "fraction_changed": self.fraction_changed, "not_close": self.not_close,
                "numel": self.numel, "bytes_equal": self.bytes_equal}


@dataclass
class DiffEntry:
    path: tuple
    status: str
    a: Any = None
    b: Any = None
    metrics: TensorMetrics | None = None
    error: str = ""
    values: tuple[Any, Any] | None = None    # a single-element tensor pair's two values, once compared

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.a, TensorRef) or isinstance(self.b, TensorRef)

    @property
    def differs(self) -> bool:
        return self.status not in ("same", "pending")

    def describe(self) -> str:
        if self.values is not None and self.status in ("changed", "dtype"):
            old, new = (small_value_text(v) for v in self.values)
            dtypes = f"{self.a.dtype.name} -> {self.b.dtype.name}: " if self.status == "dtype" else ""
            return f"{dtypes}{old} -> {new}"
        if self.status == "changed" and self.metrics is not None:
            m = self.metrics
            return (f"max|a-b| {m.max_abs:.4g}  mean|a-b| {m.mean_abs:.4g}  rel {m.relative_change:.4g}  "
                    f"cos {m.cosine:.6f}  not close {100 * m.fraction_changed:.2f}%")
        if self.status == "dtype":
            text = f"{self.a.dtype.name} -> {self.b.dtype.name}"
            if self.metrics is not None:
                m = self.metrics
                text += f"  max|a-b| {m.max_abs:.4g}  rel {m.relative_change:.4g}"
            return text
        if self.status == "shape":
            return f"{list(self.a.shape)} -> {list(self.b.shape)}"
        if self.status == "value":
            return f"{value_text(self.a, 60)} -> {value_text(self.b, 60)}"
        if self.status == "error":
            return self.error
        if self.status in ("only_a", "only_b"):
            v = self.a if self.status == "only_a" else self.b
            return _leaf_text(v)
        if self.status == "same" and self.device_change:
            return f"saved on {self.device_change}"
        return ""

    @property
    def device_change(self) -> str:
        """"cpu -> cuda:1" when both are tensors saved on different devices (values may still be equal)."""
        if isinstance(self.a, TensorRef) and isinstance(self.b, TensorRef) and self.a.device != self.b.device:
            return f"{self.a.device} -> {self.b.device}"
        return ""


def _leaf_text(v: Any) -> str:
    if isinstance(v, TensorRef):
        return f"{v.dtype.name} {list(v.shape)}"
    return value_text(v, 60)


@dataclass
class DiffOptions:
    atol: float = 1e-8
    rtol: float = 1e-5
    chunk_bytes: int = CHUNK_BYTES


@dataclass
class DiffProgress:
    index: int          # the entry just finished (or -1)
    done: int           # bytes compared so far
    total: int


# -- lining up the leaves ------------------------------------------------------------------------------------
def _values_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        if isinstance(a, np.generic) or isinstance(b, np.generic):
            try:
                return bool(a == b)
            except (TypeError, ValueError):
                return False
        return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, (StandIn, GlobalRef, Unreadable)):
        return getattr(a, "qualname", None) == getattr(b, "qualname", None) and isinstance(a, GlobalRef)
    if isinstance(a, (TorchDevice, TorchEnum, TorchSize)) or isinstance(a, (int, float, str, bytes, bool, complex)) \
            or a is None or isinstance(a, (list, tuple, dict, set, frozenset)):
        try:
            return bool(a == b)
        except (TypeError, ValueError):
            return False
    return a is b


class DiffRun:
    """The comparison of two trees. ``entries`` exist at once; ``compare()`` fills in tensor results."""

    def __init__(self, a: Any, b: Any, options: DiffOptions | None = None):
        self.options = options or DiffOptions()
        leaves_a = dict(iter_leaves(a))
        leaves_b = dict(iter_leaves(b))
        self.entries: list[DiffEntry] = []
        for path, va in leaves_a.items():
            if path not in leaves_b:
                self.entries.append(DiffEntry(path, "only_a", a=va))
            else:
                self.entries.append(self._pair(path, va, leaves_b[path]))
        for path, vb in leaves_b.items():
            if path not in leaves_a:
                self.entries.append(DiffEntry(path, "only_b", b=vb))
        self._index = {e.path: i for i, e in enumerate(self.entries)}
        self.param_names = optimizer_param_names(a)
        for path, name in optimizer_param_names(b).items():
            self.param_names.setdefault(path, name)

    def _param(self, path: tuple) -> tuple[int, str]:
        if self.param_names:
            for k in range(len(path), 1, -1):
                name = self.param_names.get(tuple(path[:k]))
                if name:
                    return k, name
        return 0, ""

    def param_name(self, path: tuple) -> str:
        """The parameter an optimizer state entry at ``path`` belongs to ("" when none): ``info``'s name."""
        return self._param(path)[1]

    def label(self, e: DiffEntry) -> str:
        """The entry's key path as text, the parameter an optimizer state entry belongs to named after its
        id: ``optimizer / state / 0 (conv1.weight, inferred) / momentum_buffer``."""
        k, name = self._param(e.path)
        if not name:
            return path_text(e.path)
        rest = path_text(e.path[k:])
        return f"{path_text(e.path[:k])} ({safe_text(name, 120)})" + (f" / {rest}" if rest else "")

    @staticmethod
    def _pair(path: tuple, va: Any, vb: Any) -> DiffEntry:
        ta, tb = isinstance(va, TensorRef), isinstance(vb, TensorRef)
        if ta and tb:
            if tuple(va.shape) != tuple(vb.shape):
                return DiffEntry(path, "shape", va, vb)
            return DiffEntry(path, "pending", va, vb)
        if ta or tb:
            return DiffEntry(path, "value", va, vb)
        return DiffEntry(path, "same" if _values_equal(va, vb) else "value", va, vb)

    def entry(self, path: tuple) -> DiffEntry | None:
        i = self._index.get(tuple(path))
        return self.entries[i] if i is not None else None

    @property
    def pending(self) -> list[int]:
        return [i for i, e in enumerate(self.entries) if e.status == "pending"]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for e in self.entries:
            out[e.status] += 1
        return out

    @property
    def equal(self) -> bool:
        return all(e.status == "same" for e in self.entries)

    def compare(self) -> Generator[DiffProgress, None, None]:
        """Compare every pending tensor pair; yields after each chunk (progress, and a place to stop)."""
        todo = self.pending
        total = sum(self.entries[i].a.nbytes + self.entries[i].b.nbytes for i in todo)
        done = 0
        for i in todo:
            e = self.entries[i]
            try:
                for n in _compare_pair(e, self.options):
                    done += n
                    yield DiffProgress(-1, done, total)
            except CheckpointError as err:
                e.status, e.error = "error", err.message
            yield DiffProgress(i, done, total)

    def run(self) -> "DiffRun":
        for _ in self.compare():
            pass
        return self

    def layer_changes(self) -> list[tuple[str, float]]:
        """(key, relative change) for compared tensors in key order: the per-layer chart's data."""
        out = []
        for e in self.entries:
            if e.metrics is not None and e.status in ("same", "changed", "dtype"):
                out.append((path_text(e.path), 0.0 if e.status == "same" else e.metrics.relative_change))
        return out


def _same_region(a: TensorRef, b: TensorRef) -> bool:
    """Both handles are one view of one storage of one file (``{"best": sd, "last": sd}``)."""
    return (a.storage is not None and a.storage is b.storage and a.cast_from is None and b.cast_from is None
            and a.offset == b.offset and a.shape == b.shape and a.stride == b.stride and a.dtype == b.dtype)


def _compare_pair(e: DiffEntry, opt: DiffOptions) -> Iterator[int]:
    a, b = e.a, e.b
    for t in (a, b):
        t.validate()
        if t.problem:
            e.status, e.error = "error", t.problem
            return
    m = TensorMetrics()
    e.metrics = m
    if a.numel == 1 and b.numel == 1:
        e.values = (small_value(a), small_value(b))     # a counter or a 0-d value reads as old -> new
        if None in e.values:
            e.values = None
    if _same_region(a, b):
        m.numel = a.numel
        m.sum_sq_a = m.sum_sq_b = m.dot = math.nan       # not computed: nothing to compare
        e.status = "same"
        yield a.nbytes + b.nbytes
        return
    same_type = a.dtype.name == b.dtype.name
    rows = min(a.rows_per_chunk(opt.chunk_bytes), b.rows_per_chunk(opt.chunk_bytes))
    numeric = a.dtype.kind != "bits" and b.dtype.kind != "bits"
    equal_chunks: list[int] = []
    for k, (ra, rb) in enumerate(zip(a.iter_raw(opt.chunk_bytes, rows), b.iter_raw(opt.chunk_bytes, rows))):
        m.numel += ra.size
        if same_type and _bytes_equal(ra, rb):
            equal_chunks.append(k)          # no arithmetic: norms are only needed if another chunk differs
        else:
            m.bytes_equal = False
            if numeric:
                _accumulate(m, to_numbers(ra.reshape(-1), a.dtype), to_numbers(rb.reshape(-1), b.dtype), opt)
            else:
                m.not_close += int(np.count_nonzero(ra.reshape(-1) != rb.reshape(-1)))
        yield ra.nbytes + rb.nbytes
    if not m.bytes_equal and equal_chunks and numeric:
        # Partly changed: the unchanged chunks still count in ||a||, ||b|| and a.b. Read them again.
        wanted = set(equal_chunks)
        for k, ra in enumerate(a.iter_raw(opt.chunk_bytes, rows)):
            if k in wanted:
                _accumulate_equal(m, to_numbers(ra.reshape(-1), a.dtype))
    if not same_type:
        e.status = "dtype"
    elif m.bytes_equal:
        e.status = "same"
    else:
        e.status = "changed"


def _bytes_equal(ra: np.ndarray, rb: np.ndarray) -> bool:
    if ra.nbytes != rb.nbytes:
        return False
    return np.array_equal(ra.reshape(-1).view(np.uint8), rb.reshape(-1).view(np.uint8))


def _as_math(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        return x.astype(np.complex128, copy=False)
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    return x.astype(np.float64 if x.dtype.itemsize > 4 or x.dtype.kind in "iub" else np.float32)


def _accumulate_equal(m: TensorMetrics, va: np.ndarray) -> None:
    x = _as_math(va)
    if x.dtype.kind == "c":
        sq = float(np.sum(np.abs(x) ** 2))
    else:
        finite = np.isfinite(x) if x.dtype.kind == "f" else None
        xf = x if finite is None or finite.all() else np.where(finite, x, 0)
        sq = float(np.dot(xf.astype(np.float64, copy=False), xf.astype(np.float64, copy=False)))
    m.sum_sq_a += sq
    m.sum_sq_b += sq
    m.dot += sq


def _accumulate(m: TensorMetrics, va: np.ndarray, vb: np.ndarray, opt: DiffOptions) -> None:
    x, y = _as_math(va), _as_math(vb)
    if x.dtype != y.dtype:
        x, y = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(x - y)
        nan_a, nan_b = np.isnan(x), np.isnan(y)
        both_nan = nan_a & nan_b
        d_fin = np.where(np.isfinite(d), d, 0)
        mx = float(d_fin.max()) if d_fin.size else 0.0
        m.max_abs = max(m.max_abs, mx, math.inf if (np.isinf(d) & ~both_nan).any() else 0.0)
        m.sum_abs += float(np.sum(d_fin, dtype=np.float64))
        d64 = d_fin.astype(np.float64, copy=False)
        m.sum_sq_diff += float(np.dot(d64, d64))
        xa = np.where(np.isfinite(x), x, 0).astype(np.float64 if x.dtype.kind != "c" else np.complex128, copy=False)
        yb = np.where(np.isfinite(y), y, 0).astype(np.float64 if y.dtype.kind != "c" else np.complex128, copy=False)
        if xa.dtype.kind == "c":
            m.sum_sq_a += float(np.sum(np.abs(xa) ** 2))
            m.sum_sq_b += float(np.sum(np.abs(yb) ** 2))
            m.dot += float(np.real(np.vdot(xa, yb)))
        else:
            m.sum_sq_a += float(np.dot(xa, xa))
            m.sum_sq_b += float(np.dot(yb, yb))
            m.dot += float(np.dot(xa, yb))
        # torch.allclose: |a - b| <= atol + rtol * |b|; NaN is never close (unless both NaN: same bytes class)
        close = d <= opt.atol + opt.rtol * np.abs(y)
        close |= both_nan
        m.not_close += int(close.size - np.count_nonzero(close))
        m.nan_mismatch += int(np.count_nonzero(nan_a ^ nan_b))


def select_and_strip(root: Any, select: str | None, strip: bool) -> Any:
    """The side of a comparison: an optional subtree, with wrapper prefixes stripped if asked."""
    from ..edit.ops import Select, StripPrefix, apply_steps
    steps = []
    if select:
        steps.append(Select(select))
    if strip:
        steps.append(StripPrefix())
    return apply_steps(root, steps)[0] if steps else root


def diff_report(run: DiffRun, *, show_same: bool = False) -> list[str]:
    """Lines like ``diff``: ``-`` only in A, ``+`` only in B, ``!`` changed, with metrics."""
    lines = []
    marks = {"only_a": "-", "only_b": "+", "changed": "!", "dtype": "!", "shape": "!", "value": "!",
             "error": "?", "same": " ", "pending": "?"}
    for e in run.entries:
        if e.status == "same" and not show_same and not e.device_change:
            continue
        lines.append(f"{marks[e.status]} {run.label(e)}  [{STATUS_TEXT[e.status]}]  {e.describe()}".rstrip())
    return lines


def diff_json(run: DiffRun) -> dict:
    def side(v, value=None):
        if isinstance(v, TensorRef):
            out = {"dtype": v.dtype.name, "shape": list(v.shape), "device": v.device}
            if value is not None:
                out["value"] = value
            return out
        return value_text(v, 200) if v is not None else None

    def values(e, i):
        return e.values[i] if e.values is not None else None
    return {
        "equal": run.equal,
        "counts": {k: v for k, v in run.counts().items() if v},
        "entries": [{"key": [k if isinstance(k, (str, int)) else repr(k) for k in e.path], "status": e.status,
                     "a": side(e.a, values(e, 0)) if e.status != "only_b" else None,
                     "b": side(e.b, values(e, 1)) if e.status != "only_a" else None,
                     **({"parameter": run.param_name(e.path)} if run.param_name(e.path) else {}),
                     **({"metrics": _json_metrics(e.metrics)} if e.metrics is not None else {}),
                     **({"error": e.error} if e.error else {})}
                    for e in run.entries],
    }


def _json_metrics(m: TensorMetrics) -> dict:
    out = {}
    for k, v in m.as_dict().items():
        out[k] = None if isinstance(v, float) and (math.isnan(v) or math.isinf(v)) else v
    return out


def optimizer_param_names(root: Any) -> dict[tuple, str]:
    """(path of an optimizer state entry, ``("optimizer", "state", 3)``) -> the parameter's name, as
    ``info`` shows it (``conv1.weight, inferred`` when the ids were matched to a model's parameters)."""
    out: dict[tuple, str] = {}
    for opt in analyze(unwrap(root)).optimizers:
        for pid, name in opt.param_names.items():
            out[tuple(opt.path) + ("state", pid)] = name + (", inferred" if opt.names_inferred else "")
    return out


# -- lining the sides up -----------------------------------------------------------------------------------
def _is_bare(v: Any) -> bool:
    v = unwrap(v)
    return is_state_dict(v) or module_attrs(v) is not None


def _models(root: Any) -> list:
    return [sd for sd in analyze(unwrap(root)).state_dicts if sd.kind in ("state_dict", "module")]


def align_sides(a: Any, b: Any, *, strip: bool = True, flags: bool = True) -> tuple[Any, Any, list[str]]:
    """What a user comparing these two means, and what was done to get there, in words.

    * One side a bare state_dict (or pickled module), the other a file holding exactly one (a training
      checkpoint): compare the two state_dicts. Holding several, say how to name one.
    * State_dicts at the same place whose keys differ by a wrapper prefix (``module.`` of DataParallel,
      ``_orig_mod.`` of torch.compile): strip it where that lines more keys up (``strip``), or say how.

    ``flags``: the notes name the command line's options (``--select-b``, ``--keep-prefixes``).
    """
    from ..edit.ops import Select, StripPrefix, apply_steps
    notes: list[str] = []
    if _is_bare(a) != _is_bare(b):
        bare_side, other_side = ("A", "B") if _is_bare(a) else ("B", "A")
        other = b if other_side == "B" else a
        models = _models(other)
        if len(models) == 1 and models[0].path:
            where = keypath.format_path(models[0].path)
            picked = apply_steps(other, [Select(where)])[0]
            a, b = (a, picked) if other_side == "B" else (picked, b)
            notes.append(f"{bare_side} is a state_dict and {other_side} holds exactly one ({where}): comparing those"
                         + (f" (--select-{other_side.lower()} names another part)" if flags else ""))
        elif len(models) > 1:
            listed = ", ".join(keypath.format_path(m.path) or "the root" for m in models[:6])
            how = f" with --select-{other_side.lower()} PATH" if flags else f" in {other_side}"
            notes.append(f"{bare_side} is a state_dict and {other_side} holds {len(models)} ({listed}): name the one "
                         f"to compare{how}")
    pairs = _same_place_state_dicts(a, b)
    for path, keys_a, keys_b in pairs:
        pa, pb = detect_prefix(keys_a)[0], detect_prefix(keys_b)[0]
        if (pa and pa[0]) == (pb and pb[0]):
            continue
        where = keypath.format_path(path) or "the root"
        before = len(set(keys_a) & set(keys_b))
        strip_a = [k[len(pa[0]):] for k in keys_a] if pa else keys_a
        strip_b = [k[len(pb[0]):] for k in keys_b] if pb else keys_b
        if len(set(strip_a) & set(strip_b)) <= before:
            continue
        said = " and ".join(f"'{p[0]}' ({p[1]}) from {side}'s keys" for p, side in ((pa, "A"), (pb, "B")) if p)
        if not strip:
            notes.append(f"the keys of {where} differ by a wrapper prefix ({said.replace(' from', ' in')}): "
                         f"pass --strip-prefix to line them up")
            continue
        at = keypath.format_path(path) if path else None
        if pa:
            a = apply_steps(a, [StripPrefix(pa[0], at)])[0]
        if pb:
            b = apply_steps(b, [StripPrefix(pb[0], at)])[0]
        notes.append(f"stripped {said}{' at ' + where if path else ''} so that the keys line up"
                     + (" (--keep-prefixes compares them as they are)" if flags else ""))
    return a, b, notes


def _same_place_state_dicts(a: Any, b: Any) -> list[tuple[tuple, list[str], list[str]]]:
    """(path, keys in A, keys in B) for each state_dict found at the same key path on both sides."""
    from ..edit.ops import find_state_dicts
    found_b = {tuple(p): sd for p, sd in find_state_dicts(unwrap(b))}
    out = []
    for path, sd_a in find_state_dicts(unwrap(a)):
        sd_b = found_b.get(tuple(path))
        if sd_b is not None:
            out.append((tuple(path), [k for k in sd_a if isinstance(k, str)], [k for k in sd_b if isinstance(k, str)]))
    return out
