"""Trends across a training run: how each tensor moved from one checkpoint to the next.

``open_run(paths)`` opens every checkpoint of a run (metadata only), orders them, and lines their
tensors up by key path; ``trend_steps(run)`` then reads the values and fills in, per tensor and per
file, the L2 norm, mean and standard deviation, and the relative change from the file before,
``||x_i - x_{i-1}|| / ||x_{i-1}||``. The CLI's ``trend`` and the window's Run tab both use it.

Reading: each file is read once and memory stays at two tensors. The work goes tensor by tensor
(key-major): for one key, file 0's tensor is read into a buffer, then file 1's into a second buffer while
its difference to the first is accumulated, then file 2's into the first buffer, and so on. So every
tensor byte of every file is read exactly once, and at most the previous file's copy of one tensor and
the current one are held (plus one read chunk). The alternative, file by file, would have to keep the
whole previous checkpoint in memory or read every file twice (once as "current", once as "previous").
The price is that all files of the run are open (memory-mapped, metadata in memory) at the same time.

Conventions (as ``core.analyze.stats``): norm, mean and std (population, ddof=0) are over the finite
values, accumulated in float64 from cache-sized blocks (float32 blocks for float32/float16/bfloat16
data, float64 otherwise); the difference is over the element pairs where both values are finite.
``None`` marks what is undefined: a file without the key, an unreadable tensor, no finite values, a
shape that changed, or a previous norm of zero (the relative change of the first file is always None).
Complex tensors are measured by magnitude, their difference by |z_i - z_{i-1}|; booleans count as 0/1.

Files are ordered by the epoch or step recorded inside when every file has one (``order="auto"``),
otherwise by name in natural order (``epoch_2`` before ``epoch_10``); ``order="given"`` keeps the order of
``paths``. A folder that is not itself a checkpoint (sharded or distributed) stands for the checkpoints
in it. Optimizer state appears under its parameter's name (``optimizer/state/fc.weight/exp_avg``) where
the interpretation maps the ids to names.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generator, Iterable

import numpy as np

from ..model.checkpoint import Checkpoint
from ..model.dtypes import to_numbers
from ..model.interpret import Analysis, analyze
from ..model.tensor import CHUNK_BYTES, TensorRef
from ..model.walk import unwrap
from ..read.open import checkpoints_in_folder, is_checkpoint_folder, open_checkpoint
from ..util.errors import CheckpointError, OperationError
from ..util.progress import Progress
from ..util.textsafe import path_text

ORDERS = ("auto", "name", "given")
# Elements per block of arithmetic: small enough that a block and its temporaries stay in the CPU cache
# (several numpy passes over each block cost little more than one), big enough that Python's per-call
# cost disappears. float32 dot products over blocks this size are accurate to about 1e-7.
BLOCK = 1 << 16
# Tensors up to this size are read in one piece (no chunking generator): a model's many biases and norms.
SMALL_BYTES = 1 << 20
EPOCH_KEYS = ("epoch", "epochs", "n_epoch")
STEP_KEYS = ("global_step", "step", "iteration", "iter", "steps")
LOSS_KEYS = ("loss", "val_loss", "train_loss", "best_loss")
SERIES = ("epoch", "step", "loss", "lr")


# -- the run ---------------------------------------------------------------------------------------------
@dataclass
class RunFile:
    """One checkpoint of the run, with what it records about training (None where it records nothing)."""

    path: str
    label: str = ""
    epoch: float | None = None
    step: float | None = None
    loss: float | None = None
    lr: float | None = None
    ckpt: Checkpoint | None = field(default=None, repr=False)
    # (optimizer path, id -> parameter name) for each optimizer the interpretation found in the file
    optimizers: list[tuple[tuple, dict]] = field(default_factory=list, repr=False)

    def series_value(self, name: str) -> float | None:
        return getattr(self, name)


@dataclass
class TrendEntry:
    """One tensor across the run: per file its key path there (None: absent) and its numbers."""

    key: tuple                                   # display key (optimizer ids shown as parameter names)
    paths: list[tuple | None]
    tensors: list[TensorRef | None] = field(repr=False, default_factory=list)
    dtype: str = ""
    shape: tuple = ()
    norm: list[float | None] = field(default_factory=list)
    mean: list[float | None] = field(default_factory=list)
    std: list[float | None] = field(default_factory=list)
    rel_change: list[float | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)     # "file 3: why" for unreadable tensors
    in_optimizer: bool = False                           # optimizer state (not the model's own tensors)
    done: bool = False

    @cached_property
    def text(self) -> str:
        return path_text(self.key)

    @property
    def is_floating(self) -> bool:
        return any(t is not None and t.dtype.is_floating for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t is not None and t.readable)

    def metric(self, name: str) -> list[float | None]:
        return getattr(self, name)


@dataclass
class TrendProgress:
    """How far the reading got (bytes) and, when an entry was just finished, its index."""

    done: int
    total: int
    entry: int = -1
    stage: str = "reading"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


class Run:
    """The checkpoints of a run, in order, and their tensors lined up by key. Holds the files open until
    :meth:`close` (the tensors are read from them)."""

    def __init__(self, files: list[RunFile], order: str, warnings: list[str] | None = None):
        self.files = files
        self.order = order                 # how the files were ordered: "epoch", "step", "name", "given"
        self.warnings = warnings or []
        self.entries: list[TrendEntry] = []
        self._total_bytes: int | None = None
        self._line_up()

    # -- lining up ---------------------------------------------------------------------------------------
    def _line_up(self) -> None:
        n = len(self.files)
        by_key: dict[tuple, TrendEntry] = {}
        for i, f in enumerate(self.files):
            names = f.optimizers
            for path, t in (f.ckpt.tensor_entries() if f.ckpt is not None else ()):
                path = tuple(path)
                key = _display_key(path, names)
                e = by_key.get(key)
                if e is None:
                    e = TrendEntry(key, [None] * n, [None] * n,
                                   in_optimizer=any(path[:len(p)] == p for p, _ in names))
                    by_key[key] = e
                    self.entries.append(e)
                if e.tensors[i] is None:
                    e.paths[i], e.tensors[i] = path, t
        for e in self.entries:
            first = next(t for t in e.tensors if t is not None)
            e.dtype, e.shape = first.dtype.name, tuple(first.shape)
            e.norm, e.mean, e.std, e.rel_change = ([None] * n for _ in range(4))

    @property
    def total_bytes(self) -> int:
        """The bytes the trend reads (the entries are fixed once lined up; counted once: a few hundred
        milliseconds of Python at 100,000 keys a file)."""
        if self._total_bytes is None:
            self._total_bytes = sum(e.nbytes for e in self.entries)
        return self._total_bytes

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def series(self) -> dict[str, list[float | None]]:
        """epoch / step / loss / lr per file, for those at least one file records."""
        out = {}
        for name in SERIES:
            values = [f.series_value(name) for f in self.files]
            if any(v is not None for v in values):
                out[name] = values
        return out

    def close(self) -> None:
        for f in self.files:
            if f.ckpt is not None:
                f.ckpt.close()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _display_key(path: tuple, names: list[tuple[tuple, dict]]) -> tuple:
    for opt_path, ids in names:
        k = len(opt_path)
        if len(path) > k + 1 and path[:k] == opt_path and path[k] == "state":
            name = ids.get(path[k + 1])
            if name is not None:
                return path[:k + 1] + (name,) + path[k + 2:]
    return path


# -- finding and ordering the files ----------------------------------------------------------------------
def natural_key(text: str) -> tuple:
    """``epoch_2`` before ``epoch_10``: digit runs compare as numbers, the rest case-insensitively."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts if p != "")


def expand_run_inputs(paths: Iterable[str]) -> list[str]:
    """The checkpoints ``paths`` name: files and checkpoint folders (sharded, distributed) as they are,
    other folders as the checkpoints in them (``read.open.checkpoint_paths``: files recognised by their
    first bytes, and checkpoint sub-folders such as ``step_1000/``), in natural name order."""
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p) and not is_checkpoint_folder(p):
            found = checkpoints_in_folder(p)
            out.extend(sorted(found, key=lambda f: natural_key(os.path.basename(os.path.normpath(f)))))
        else:
            out.append(p)
    seen, unique = set(), []
    for f in out:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _labels(paths: list[str]) -> list[str]:
    """Base names, or paths relative to the common folder when base names repeat."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    if len(set(names)) == len(names):
        return names
    try:
        common = os.path.commonpath([os.path.abspath(p) for p in paths])
        return [os.path.relpath(os.path.abspath(p), common) for p in paths]
    except ValueError:
        return [os.path.abspath(p) for p in paths]


def _number(v: Any) -> float | None:
    """A plain number from a training value (a Python or numpy scalar, or a one-element tensor)."""
    v = unwrap(v)
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v if math.isfinite(float(v)) else None
    if isinstance(v, np.generic) and v.dtype.kind in "iuf":
        x = v.item()
        return x if math.isfinite(float(x)) else None
    if isinstance(v, TensorRef) and v.numel == 1 and v.readable and (v.dtype.kind in ("float", "int", "uint")):
        try:
            x = float(np.asarray(v.read()).reshape(-1)[0])
        except CheckpointError:
            return None
        return x if math.isfinite(x) else None
    return None


def training_facts(root: Any, an: Analysis | None = None) -> dict[str, float | None]:
    """epoch, step, loss and lr a checkpoint records (lr from the first optimizer's first group when the
    file has no ``lr`` of its own). ``an`` is the file's analysis when the caller has it."""
    an = an or analyze(root)
    facts: dict[str, float | None] = {name: None for name in SERIES}
    top = unwrap(root)
    if isinstance(top, dict):
        for name, keys in (("epoch", EPOCH_KEYS), ("step", STEP_KEYS), ("loss", LOSS_KEYS), ("lr", ("lr",))):
            for k in keys:
                if k in top:
                    x = _number(top[k])
                    if x is not None:
                        facts[name] = x
                        break
    if facts["lr"] is None:
        for opt in an.optimizers:
            if opt.groups:
                facts["lr"] = _number(opt.groups[0].get("lr"))
                break
    return facts


def open_run(paths: Iterable[str], order: str = "auto") -> Generator[Progress, None, Run]:
    """Open the checkpoints of a run (metadata only), order them and line their tensors up.

    A file that cannot be read is left out with a warning; no readable file at all is an error.
    Closing the generator early closes the files opened so far.
    """
    if order not in ORDERS:
        raise OperationError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    files = expand_run_inputs(paths)
    if not files:
        raise OperationError("no checkpoints to read", hint="Name checkpoint files or a folder that holds some.")
    opened: list[RunFile] = []
    warnings: list[str] = []
    ok = False
    try:
        for i, path in enumerate(files):
            yield Progress(i, len(files), f"Opening {os.path.basename(os.path.normpath(path))}")
            try:
                ckpt = open_checkpoint(path)
            except CheckpointError as e:
                warnings.append(f"{path}: left out: {e}")
                continue
            rf = RunFile(path, ckpt=ckpt)
            opened.append(rf)
            an = analyze(ckpt.root)
            rf.optimizers = [(tuple(opt.path), opt.param_names) for opt in an.optimizers]
            try:
                facts = training_facts(ckpt.root, an)
            except CheckpointError:
                facts = {}
            for k, v in facts.items():
                setattr(rf, k, v)
        if not opened:
            raise OperationError("none of the checkpoints could be read: " + "; ".join(warnings[:3]))
        how = order
        if order == "auto":
            how = "name"
            for name in ("step", "epoch"):
                values = [getattr(f, name) for f in opened]
                # Every file records one, and they tell the files apart (not all "step": 0).
                if len(opened) > 1 and all(v is not None for v in values) and len(set(values)) > 1:
                    how = name
                    break
        if how == "name":
            opened.sort(key=lambda f: natural_key(f.path))
        elif how in ("step", "epoch"):
            # Ties (best.pt and last.pt at the same epoch) fall back to name order.
            opened.sort(key=lambda f: (getattr(f, how), natural_key(f.path)))
        for f, label in zip(opened, _labels([f.path for f in opened])):
            f.label = label
        yield Progress(len(files), len(files), "Lining up the tensors")
        run = Run(opened, how, warnings)
        ok = True
        return run
    finally:
        if not ok:
            for f in opened:
                f.ckpt.close()


# -- reading ---------------------------------------------------------------------------------------------
class _Acc:
    """Streaming norm / mean / std of one tensor (Chan's merge of per-block means) and the squared norm
    of its difference to the previous file's tensor."""

    __slots__ = ("n", "mean", "m2", "sumsq", "dsq", "pairs")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.sumsq = 0.0
        self.dsq = 0.0
        self.pairs = 0

    # Callers hold np.errstate(over="ignore", invalid="ignore") around these (once per chunk, not per block).
    def add(self, f: np.ndarray) -> None:
        if f.dtype.kind == "f":
            finite = np.isfinite(f)
            if not finite.all():
                f = f[finite]
        n_b = f.size
        if not n_b:
            return
        mean_b = float(np.add.reduce(f, dtype=np.float64)) / n_b
        if not math.isfinite(mean_b):          # values near the float64 limit: sum in halves
            mean_b = float(np.add.reduce(f / 2, dtype=np.float64)) / n_b * 2
        d = f - f.dtype.type(mean_b)
        m2_b = float(np.dot(d, d))
        sq = float(np.dot(f, f))
        if not (math.isfinite(m2_b) and math.isfinite(sq)) and f.dtype != np.float64:
            f = f.astype(np.float64)           # float32 squares overflow past 1.8e19
            d = f - mean_b
            m2_b, sq = float(np.dot(d, d)), float(np.dot(f, f))
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.sumsq += sq
        self.n = n

    def add_diff(self, cur: np.ndarray, prev: np.ndarray) -> None:
        if cur.dtype != prev.dtype or cur.dtype.kind not in "fc":
            kind = np.complex128 if "c" in (cur.dtype.kind, prev.dtype.kind) else np.float64
            cur, prev = cur.astype(kind), prev.astype(kind)
        d = cur - prev
        if d.dtype.kind == "c":
            d = np.abs(d)
        if not np.isfinite(d).all():
            both = np.isfinite(cur) & np.isfinite(prev)
            big = np.float64 if cur.dtype.kind == "f" else np.complex128
            d = np.abs(cur[both].astype(big) - prev[both].astype(big))
        self.pairs += int(d.size)
        sq = float(np.dot(d, d))
        if not math.isfinite(sq) and d.dtype != np.float64:
            d = d.astype(np.float64)
            sq = float(np.dot(d, d))
        self.dsq += sq

    @property
    def norm(self) -> float | None:
        return math.sqrt(self.sumsq) if self.n else None

    def results(self) -> tuple[float | None, float | None, float | None]:
        if not self.n:
            return None, None, None
        return _finite(math.sqrt(self.sumsq)), _finite(self.mean), _finite(math.sqrt(max(self.m2, 0.0) / self.n))


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _stat_numbers(values: np.ndarray) -> np.ndarray:
    """A block as numbers for the statistics: float32 / float64, |z| for complex, 0/1 for booleans."""
    if values.dtype.kind == "c":
        values = np.abs(values)
    if values.dtype == np.float32 or values.dtype == np.float64:
        return values
    if values.dtype == np.float16:
        return values.astype(np.float32)
    return values.astype(np.float64)


def _diff_numbers(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.float16:
        return values.astype(np.float32)
    if values.dtype.kind == "b":
        return values.astype(np.float64)
    return values


def _kept_whole(t: TensorRef) -> bool:
    """Whether the previous file's copy of ``t`` is held in a buffer. A view that presents more elements
    than its storage holds (stride 0, overlapping strides: up to 2**27 elements from a few bytes of a
    hostile file) is not copied: its few stored bytes are read again instead."""
    return t.storage is not None and t.numel * t.dtype.itemsize <= t.storage.nbytes


def _read_tensor(t: TensorRef, buf: np.ndarray | None, prev: tuple[Any, Any] | None, acc: _Acc,
                 chunk_bytes: int) -> Generator[int, None, None]:
    """Read ``t`` once, chunk by chunk, into ``buf`` (its raw elements, flat; None: not kept) while
    accumulating its statistics and, with ``prev`` (the previous file's raw elements, or its tensor when
    those were not kept, and its dtype), the difference to it. Yields the bytes read after each chunk."""
    if t.nbytes <= SMALL_BYTES:
        # Small tensors (most keys of a big model): one read, no generator machinery per chunk.
        chunks: Iterable[np.ndarray] = (t.read_flat(0, t.numel, through=True),)
    else:
        chunks = t.iter_raw(chunk_bytes)
    pos = 0
    for chunk in chunks:
        flat = chunk.reshape(-1)
        k = flat.size
        if buf is not None:
            buf[pos:pos + k] = flat
        with np.errstate(over="ignore", invalid="ignore"):
            for o in range(0, k, BLOCK):
                raw = flat[o:o + BLOCK]
                values = to_numbers(raw, t.dtype)
                acc.add(_stat_numbers(values))
                if prev is not None:
                    p_src, p_dtype = prev
                    start, stop = pos + o, pos + o + raw.size
                    p_raw = p_src.read_flat(start, stop) if isinstance(p_src, TensorRef) else p_src[start:stop]
                    acc.add_diff(_diff_numbers(values), _diff_numbers(to_numbers(p_raw, p_dtype)))
        pos += k
        yield chunk.nbytes


def trend_steps(run: Run, chunk_bytes: int = CHUNK_BYTES) -> Generator[TrendProgress, None, Run]:
    """Fill in every entry's numbers, tensor by tensor; yields progress after each chunk and once per
    finished entry (``TrendProgress.entry``). Closing the generator stops it; finished entries keep their
    numbers."""
    total = run.total_bytes
    done = 0
    finished: dict[tuple, int] = {}          # ids of an entry's tensors -> the entry that has its numbers
    # Two raw buffers, swapped from file to file: the previous file's copy of a tensor and the current one.
    # They grow to the largest tensor read so far and are reused from key to key.
    buffers = [np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint8)]
    yield TrendProgress(0, total)
    for index, e in enumerate(run.entries):
        ident = tuple(id(t) if t is not None else 0 for t in e.tensors)
        twin = finished.get(ident)
        if twin is not None:                 # the same tensors under another key ("best" and "last")
            src = run.entries[twin]
            e.norm, e.mean, e.std, e.rel_change = list(src.norm), list(src.mean), list(src.std), list(src.rel_change)
            e.errors = list(src.errors)
            e.done = True
            yield TrendProgress(done, total, index)
            continue
        size = max((t.numel * t.dtype.itemsize for t in e.tensors if t is not None and t.readable
                    and _kept_whole(t)), default=0)
        if size > buffers[0].size:
            buffers = []                       # let the old ones go before the new ones are made
            buffers = [np.empty(size, dtype=np.uint8), np.empty(size, dtype=np.uint8)]
        prev: tuple[Any, Any] | None = None
        prev_t: TensorRef | None = None
        prev_norm: float | None = None
        for i, t in enumerate(e.tensors):
            if t is None:
                prev = prev_t = prev_norm = None
                continue
            if not t.readable:
                e.errors.append(f"{run.files[i].label}: {t.problem or 'no stored values'}")
                prev = prev_t = prev_norm = None
                continue
            keep = size > 0 and _kept_whole(t)
            buf = buffers[i % 2][:t.numel * t.dtype.itemsize].view(t.dtype.numpy) if keep else None
            comparable = prev is not None and tuple(prev_t.shape) == tuple(t.shape) and t.numel > 0
            acc = _Acc()
            try:
                if t.numel:
                    for n in _read_tensor(t, buf, prev if comparable else None, acc, chunk_bytes):
                        done += n
                        yield TrendProgress(done, total)
            except CheckpointError as err:
                e.errors.append(f"{run.files[i].label}: {err.message}")
                prev = prev_t = prev_norm = None
                continue
            damaged = t.check_integrity()       # free when the reads went through the record in order
            if damaged:                         # numbers from damaged bytes would mislead: none at all
                e.errors.append(f"{run.files[i].label}: {damaged}")
                prev = prev_t = prev_norm = None
                continue
            e.norm[i], e.mean[i], e.std[i] = acc.results()
            if comparable and prev_norm:
                e.rel_change[i] = _finite(math.sqrt(acc.dsq) / prev_norm) if acc.pairs else None
            prev, prev_t, prev_norm = (buf if keep else t, t.dtype), t, acc.norm
        prev = None
        e.done = True
        finished[ident] = index
        yield TrendProgress(done, total, index)
    return run


def compute_trend(paths: Iterable[str], order: str = "auto") -> Run:
    """Open and read a run in one go (tests and scripts; the CLI drains the generators with progress)."""
    from ..util.progress import run_steps
    run = run_steps(open_run(paths, order))
    run_steps(trend_steps(run))
    return run


# -- reporting -------------------------------------------------------------------------------------------
def _json_key(k: Any) -> Any:
    if type(k) is str or type(k) is int:
        return k
    if isinstance(k, (str, int, float, bool)) or k is None:
        return k
    return repr(k)


def trend_json(run: Run) -> dict:
    """The ``--json`` object: files, entries (key, norm, mean, std, rel_change per file), plus the run's
    order, its epoch/step/loss/lr series and warnings."""
    return {
        "files": run.paths,
        "entries": [{"key": [_json_key(k) for k in e.key], "norm": e.norm, "mean": e.mean, "std": e.std,
                     "rel_change": e.rel_change} for e in run.entries],
        "order": run.order,
        "series": run.series(),
        "warnings": run.warnings + [f"{e.text}: {err}" for e in run.entries for err in e.errors],
    }


ORDER_TEXT = {"epoch": "by the epoch recorded in each", "step": "by the step recorded in each",
              "name": "by name", "given": "as given"}


def _g(x: float | None, width: int = 0) -> str:
    text = "-" if x is None else f"{x:.4g}"
    return text.rjust(width) if width else text


def trend_report(run: Run, limit: int | None = None) -> list[str]:
    """Readable lines: the files with what they record, then one line per tensor (norm first -> last
    and the relative change at each step), then which tensors never moved and which moved most."""
    lines = [f"files ({len(run.files)}, ordered {ORDER_TEXT.get(run.order, run.order)}):"]
    series = run.series()
    width = max(len(f.label) for f in run.files)
    head = f"  {'#':>3}  {'file'.ljust(width)}" + "".join(f"  {name:>10}" for name in series)
    lines.append(head)
    for i, f in enumerate(run.files):
        lines.append(f"  {i:>3}  {f.label.ljust(width)}" + "".join(f"  {_g(series[s][i], 10)}" for s in series))
    lines.append("")
    lines.append(f"tensors ({len(run.entries)}): norm first -> last; rel = ||x_i - x_(i-1)|| / ||x_(i-1)|| "
                 f"for files 1..{len(run.files) - 1}")
    entries = run.entries if limit is None else run.entries[:limit]
    kw = min(60, max((len(e.text) for e in entries), default=10))
    for e in entries:
        norms = [x for x in e.norm if x is not None]
        span = f"{_g(norms[0])} -> {_g(norms[-1])}" if norms else "-"
        rel = " ".join(_g(x) for x in e.rel_change[1:])
        lines.append(f"  {e.text[:kw].ljust(kw)}  {span:<22} rel {rel}")
    if limit is not None and len(run.entries) > limit:
        lines.append(f"  ... and {len(run.entries) - limit} more")
    # The model's own tensors: not optimizer state, not one-element values such as a saved loss.
    model = [e for e in run.entries if e.is_floating and not e.in_optimizer and math.prod(e.shape) > 1]
    frozen = [e for e in model if len(run.files) > 1 and all(x == 0.0 for x in e.rel_change[1:])]
    moved = sorted((e for e in model if any(x is not None for x in e.rel_change)),
                   key=lambda e: -sum(x for x in e.rel_change if x is not None))
    lines.append("")
    if frozen:
        shown = ", ".join(e.text for e in frozen[:8]) + (f", and {len(frozen) - 8} more" if len(frozen) > 8 else "")
        lines.append(f"unchanged through the run: {len(frozen)} floating-point tensor{'s' if len(frozen) != 1 else ''}"
                     f" ({shown})")
    if moved:
        lines.append("moved most (sum of relative changes; optimizer state left out): " + ", ".join(
            f"{e.text} {_g(sum(x for x in e.rel_change if x is not None))}" for e in moved[:5]))
    return lines
