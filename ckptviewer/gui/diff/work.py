"""What the diff tab does off the GUI thread, and the merged tree it shows. Qt-free.

* :func:`prepare_steps` opens both files (metadata only), applies the optional select / strip-prefix
  of each side (``core.diff.select_and_strip``), lines the leaves up (``core.diff.DiffRun``) and groups
  the entries by key path into a :class:`DiffNode` tree, all in a worker.
* :func:`compare_steps` runs ``DiffRun.compare()`` and hands the GUI the entries that finished, in
  batches (one signal per few hundred milliseconds, not one per tensor), so rows fill in as the values
  are compared.
* :func:`pair_histogram_steps` reads the two tensors of a selected pair in step, chunk by chunk, and
  returns both histograms over common bins plus the histogram of A - B (bins and counting from
  ``core.stats``).

Thread rules: the worker that compares mutates the core's ``DiffEntry`` objects. The GUI reads an
entry only after the batch naming it has arrived; until then the tree shows the status that
:class:`DiffNode` recorded on the GUI thread (``pending``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np

from ...core.analyze.diff import STATUSES, DiffOptions, DiffRun, align_sides, select_and_strip
from ...core.analyze.stats import (
    SAMPLE_SIZE,
    SAMPLE_THRESHOLD,
    Histogram,
    StatsAccumulator,
    auto_bins,
    histogram_edges,
    numbers_of,
    sample_values,
)
from ...core.edit.ops import SelectModel, apply_steps
from ...core.model.checkpoint import Checkpoint
from ...core.model.tensor import CHUNK_BYTES, TensorRef
from ...core.read.open import open_checkpoint
from ...core.util.locations import location_name
from ...core.util.progress import Progress
from ...core.util.textsafe import MAX_SHOWN, key_text
from ..widgets.gc_pause import gc_paused

# How often the comparing worker reports finished entries (seconds). Tests set 0: every entry.
BATCH_SECONDS = 0.15
STATUS_INDEX = {s: i for i, s in enumerate(STATUSES)}
SAME, PENDING = STATUS_INDEX["same"], STATUS_INDEX["pending"]
DIFFERS = tuple(i for s, i in STATUS_INDEX.items() if s not in ("same", "pending"))


# -- what to compare -----------------------------------------------------------------------------------------
@dataclass
class DiffSetup:
    """The two files and the options of one comparison (the diff tab's option row)."""

    path_a: str
    path_b: str
    select_a: str = ""
    select_b: str = ""
    strip_prefix: bool = False
    model_only: bool = False          # each side reduced to its model weights (the core's SelectModel step)
    atol: float = 1e-8
    rtol: float = 1e-5
    chunk_bytes: int = CHUNK_BYTES

    def options(self) -> DiffOptions:
        return DiffOptions(atol=self.atol, rtol=self.rtol, chunk_bytes=self.chunk_bytes)

    def same_files(self, other: "DiffSetup | None") -> bool:
        return other is not None and (other.path_a, other.path_b) == (self.path_a, self.path_b)


# -- the merged tree -----------------------------------------------------------------------------------------
class DiffNode:
    """One row of the merged tree: a group of keys (a dotted module path, a container) or one entry.

    ``status`` is the GUI's view of a leaf (updated on the GUI thread when its batch arrives);
    ``counts[i]`` counts the leaves below a node per status (``STATUSES`` order), kept up to date on
    the same thread. ``row`` is the position among the parent's children in key order.
    """

    __slots__ = ("parent", "name", "prefix", "children", "row", "entry", "index", "status", "counts",
                 "_groups", "__weakref__")

    def __init__(self, parent: "DiffNode | None", name: str, prefix: str = ""):
        self.parent = parent
        self.name = name                  # shown in the Name column (already made safe)
        self.prefix = prefix              # the key path up to here, for tooltips (safe text)
        self.children: list[DiffNode] = []
        self.row = 0
        self.entry = None                 # the core DiffEntry of a leaf
        self.index = -1                   # its index in DiffRun.entries
        self.status = ""                  # a leaf's status as the GUI knows it
        self.counts = [0] * len(STATUSES)
        self._groups: dict[Any, DiffNode] | None = None

    @property
    def is_leaf(self) -> bool:
        return self.entry is not None

    @property
    def n_differ(self) -> int:
        c = self.counts
        return sum(c[i] for i in DIFFERS)

    @property
    def n_pending(self) -> int:
        return self.counts[PENDING]

    @property
    def n_leaves(self) -> int:
        return sum(self.counts)

    def ancestors(self):
        n = self.parent
        while n is not None:
            yield n
            n = n.parent

    def leaves(self):
        stack = [self]
        while stack:
            n = stack.pop()
            if n.entry is not None:
                yield n
            stack.extend(reversed(n.children))

    def _group(self, key: Any, name: str, prefix: str) -> "DiffNode":
        if self._groups is None:
            self._groups = {}
        g = self._groups.get(key)
        if g is None:
            g = DiffNode(self, name, prefix)
            g.row = len(self.children)
            self.children.append(g)
            self._groups[key] = g
        return g

    def __repr__(self) -> str:
        return f"<DiffNode {self.prefix or self.name} {self.status or 'group'}>"


def _label(x: Any) -> str:
    """``key_text(x)``, with a fast path for the common key (short printable ASCII, which it returns as is)."""
    if isinstance(x, str) and len(x) <= MAX_SHOWN and x.isascii() and x.isprintable():
        return x
    return key_text(x)


def _levels(path: tuple) -> list[tuple[Any, Any, str]]:
    """(group key, raw piece, separator before it) for each level of ``path``. A dotted string key is
    split into its module path, as the checkpoint tree groups ``conv1.weight`` under ``conv1``."""
    out: list[tuple[Any, Any, str]] = []
    for comp in path:
        pieces = comp.split(".") if type(comp) is str and "." in comp else ()
        if pieces and "" not in pieces:
            sep = " / "
            for p in pieces:
                out.append((("module", p), p, sep))
                sep = "."
        else:
            key = comp if isinstance(comp, (str, int)) else _label(comp)
            out.append((("key", type(comp).__name__, key), comp, " / "))
    return out


def build_diff_tree(run: DiffRun) -> tuple[DiffNode, list[DiffNode]]:
    """The merged tree of ``run.entries`` grouped by key path, and the leaf of each entry (by index).
    Labels are made once per group (a model with 100,000 keys has far fewer groups)."""
    root = DiffNode(None, "(root)")
    leaves: list[DiffNode] = []
    for i, e in enumerate(run.entries):
        path = tuple(e.path)
        levels = _levels(path)
        # An optimizer state entry's id is labelled with its parameter's name, as the checkpoint tab does.
        k, param = run._param(path) if run.param_names else (0, "")
        named_level = len(_levels(path[:k])) - 1 if param else -1
        node = root
        for depth, (key, piece, sep) in enumerate(levels[:-1]):
            g = node._groups.get(key) if node._groups is not None else None
            if g is None:
                label = _label(piece)
                if depth == named_level:
                    label = f"{label} ({key_text(param)})"
                g = node._group(key, label, label if node is root else node.prefix + sep + label)
            node = g
        if levels:
            _, piece, sep = levels[-1]
            label = _label(piece)
            prefix = label if node is root else node.prefix + sep + label
        else:
            label = prefix = "(root)"
        leaf = DiffNode(node, label, prefix)
        leaf.row = len(node.children)
        leaf.entry = e
        leaf.index = i
        leaf.status = e.status
        node.children.append(leaf)
        leaves.append(leaf)
        k = STATUS_INDEX[e.status]
        leaf.counts[k] = 1
        n = node
        while n is not None:
            n.counts[k] += 1
            n = n.parent
    for n in _groups_of(root):
        n._groups = None          # only needed while building
    return root, leaves


def _groups_of(root: DiffNode):
    stack = [root]
    while stack:
        n = stack.pop()
        if n.entry is None:
            yield n
            stack.extend(n.children)


def set_leaf_status(leaf: DiffNode, status: str) -> bool:
    """Record a leaf's new status and update the counts above it. True if it changed."""
    if leaf.status == status:
        return False
    old, new = STATUS_INDEX[leaf.status], STATUS_INDEX[status]
    leaf.status = status
    leaf.counts[old] -= 1
    leaf.counts[new] += 1
    for n in leaf.ancestors():
        n.counts[old] -= 1
        n.counts[new] += 1
    return True


# -- preparing -----------------------------------------------------------------------------------------------
@dataclass
class DiffSession:
    """Both open files, the run and its tree. ``close()`` releases the files."""

    setup: DiffSetup
    ckpt_a: Checkpoint
    ckpt_b: Checkpoint
    run: DiffRun
    root: DiffNode
    leaves: list[DiffNode]
    seconds: float = 0.0
    chart_entries: list[int] = field(default_factory=list)   # entry indices of the per-layer chart, key order
    chart_labels: list[str] = field(default_factory=list)    # their keys as text
    notes: list[str] = field(default_factory=list)           # how the sides were lined up (core.diff.align_sides)

    def close(self) -> None:
        for c in {id(self.ckpt_a): self.ckpt_a, id(self.ckpt_b): self.ckpt_b}.values():
            c.close()


def chartable(entry) -> bool:
    """Pairs that get a bar in the per-layer chart: tensors on both sides with one shape (the pairs
    ``DiffRun.layer_changes`` reports once compared)."""
    return (isinstance(entry.a, TensorRef) and isinstance(entry.b, TensorRef)
            and entry.status in ("pending", "same", "changed", "dtype"))


def comparison_side(root: Any, select: str, strip: bool, model_only: bool) -> Any:
    """One side of the comparison: the selected part, then (if asked) its model weights, then stripped."""
    if not model_only:
        return select_and_strip(root, select or None, strip)
    part = select_and_strip(root, select or None, False)
    part = apply_steps(part, [SelectModel()])[0]
    return select_and_strip(part, None, strip)


def prepare_steps(setup: DiffSetup, reuse: tuple[Checkpoint, Checkpoint] | None = None
                  ) -> Generator[Progress, None, DiffSession]:
    """Open (or reuse) both files, select/strip each side, line up the leaves and build the tree,
    with the cyclic collector paused until what was built is frozen (``loading.gc_paused``)."""
    with gc_paused():
        return (yield from _prepare_steps(setup, reuse))


def _prepare_steps(setup: DiffSetup, reuse: tuple[Checkpoint, Checkpoint] | None
                   ) -> Generator[Progress, None, DiffSession]:
    t0 = time.perf_counter()
    name_a, name_b = location_name(setup.path_a), location_name(setup.path_b)
    opened: list[Checkpoint] = []
    try:
        if reuse is not None:
            ckpt_a, ckpt_b = reuse
        else:
            yield Progress(0, 4, f"Reading {name_a}")
            ckpt_a = open_checkpoint(setup.path_a)
            opened.append(ckpt_a)
            yield Progress(1, 4, f"Reading {name_b}")
            ckpt_b = open_checkpoint(setup.path_b)
            opened.append(ckpt_b)
        yield Progress(2, 4, "Lining up the keys")
        side_a = comparison_side(ckpt_a.root, setup.select_a, setup.strip_prefix, setup.model_only)
        side_b = comparison_side(ckpt_b.root, setup.select_b, setup.strip_prefix, setup.model_only)
        side_a, side_b, notes = align_sides(side_a, side_b, strip=not setup.strip_prefix, flags=False)
        run = DiffRun(side_a, side_b, setup.options())
        yield Progress(3, 4, "Building the tree")
        root, leaves = build_diff_tree(run)
        chart = [i for i, e in enumerate(run.entries) if chartable(e)]
        labels = [leaves[i].prefix for i in chart]
        yield Progress(4, 4, "Comparing")
        return DiffSession(setup, ckpt_a, ckpt_b, run, root, leaves, time.perf_counter() - t0, chart, labels, notes)
    except BaseException:
        for c in opened:          # cancelled or failed: nothing of ours stays open
            c.close()
        raise


# -- comparing -----------------------------------------------------------------------------------------------
@dataclass
class CompareBatch:
    """Entries that finished since the last batch (indices into ``run.entries``) and bytes so far.
    The last batch also carries ``run.layer_changes()`` (made in the worker: O(keys) text work)."""

    finished: list[int]
    done: int
    total: int
    layer_changes: list[tuple[str, float]] | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def compare_steps(run: DiffRun, interval: float | None = None) -> Generator[CompareBatch | None, None, CompareBatch]:
    """``run.compare()`` in batches; the return value is the last batch (the rest of the finished).
    The collector is paused meanwhile: its passes over the two open files held the GIL for 0.1-0.7 s."""
    with gc_paused():
        return (yield from _compare_steps(run, interval))


def _compare_steps(run: DiffRun, interval: float | None) -> Generator[CompareBatch | None, None, CompareBatch]:
    interval = BATCH_SECONDS if interval is None else interval
    gen = run.compare()
    finished: list[int] = []
    done = total = 0
    last = time.monotonic()
    try:
        for p in gen:
            done, total = p.done, p.total
            if p.index >= 0:
                finished.append(p.index)
            now = time.monotonic()
            if finished and now - last >= interval:
                yield CompareBatch(finished, done, total)
                finished = []
                last = now
            elif now - last >= max(interval, 0.05):
                yield CompareBatch([], done, total)      # progress (and a cancel point) inside big tensors
                last = now
            else:
                # A cancel point, and one where the worker makes way for a busy window (workers.GuiGate):
                # between batches it would otherwise hold on for 150 ms of comparing at a time.
                yield None
    finally:
        gen.close()
    return CompareBatch(finished, total, total, run.layer_changes())


# -- histograms of a pair ------------------------------------------------------------------------------------
@dataclass
class PairHistograms:
    """Histograms of A and B over common bins, and of A - B (None where there is no such tensor)."""

    a: Histogram | None
    b: Histogram | None
    diff: Histogram | None
    exact: bool = True
    diff_note: str = ""


def _numbers(chunk: np.ndarray, t: TensorRef) -> np.ndarray:
    return numbers_of(chunk, t.dtype.kind)


def _difference(va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """A - B element by element, as float64 (complex: |a - b|)."""
    x, y = va.reshape(-1), vb.reshape(-1)
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        return np.abs(x.astype(np.complex128) - y.astype(np.complex128))
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if y.dtype == np.bool_:
        y = y.view(np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(np.float64) - y.astype(np.float64)


def _finite(v: np.ndarray) -> np.ndarray:
    return v[np.isfinite(v)] if v.dtype.kind == "f" else v


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin of the finite values; the last bin includes its right edge (as core.stats)."""
    v = _finite(values).astype(np.float64, copy=False)
    counts, _ = np.histogram(v, bins=edges)
    return counts.astype(np.int64)


def _integer(t: TensorRef) -> bool:
    return not (t.dtype.is_floating or t.dtype.is_complex)


def _common_edges(stats: list, bins: int, integer: bool) -> tuple[np.ndarray, bool] | None:
    los = [s.min for s in stats if s is not None and s.finite]
    his = [s.max for s in stats if s is not None and s.finite]
    if not los:
        return None
    return histogram_edges(min(los), max(his), bins, integer)


def _hist(counts: np.ndarray, edges: np.ndarray, ints: bool, s, exact: bool = True, scale: float = 1.0,
          total: int = 0) -> Histogram:
    if scale != 1.0:
        return Histogram(edges, counts * scale, round(s.finite * scale), round(s.nan * scale),
                         round(s.posinf * scale), round(s.neginf * scale), exact=False,
                         sample_size=s.numel, total=total, integer_bins=ints)
    return Histogram(edges, counts, s.finite, s.nan, s.posinf, s.neginf, exact=exact,
                     sample_size=s.numel if exact else 0, total=total or s.numel, integer_bins=ints)


def _empty_hist(s, total: int) -> Histogram:
    return Histogram(np.zeros(0), np.zeros(0, dtype=np.int64), 0, s.nan, s.posinf, s.neginf, total=total)


def _sampled_pair(a: TensorRef | None, b: TensorRef | None, bins: int, paired: bool) -> PairHistograms:
    """A quick estimate from evenly spaced elements (the same positions on both sides when paired)."""
    sa = sample_values(a, SAMPLE_SIZE) if a is not None else None
    sb = sample_values(b, SAMPLE_SIZE) if b is not None else None
    accs = []
    for s in (sa, sb):
        if s is None:
            accs.append(None)
            continue
        acc = StatsAccumulator()
        acc.update(s)
        accs.append(acc.result())
    integer = all(_integer(t) for t in (a, b) if t is not None)
    common = _common_edges(accs, bins, integer)
    out = []
    for t, s, st in ((a, sa, accs[0]), (b, sb, accs[1])):
        if t is None:
            out.append(None)
        elif common is None or not st.finite:
            out.append(_empty_hist(st, t.numel))
        else:
            out.append(_hist(_counts(s, common[0]), common[0], common[1], st, scale=t.numel / max(s.size, 1),
                             total=t.numel))
    diff = None
    if paired and sa is not None and sb is not None and sa.size == sb.size:
        d = _difference(sa, sb)
        acc = StatsAccumulator()
        acc.update(d)
        st = acc.result()
        if st.finite:
            edges, ints = histogram_edges(st.min, st.max, bins, integer)
            diff = _hist(_counts(d, edges), edges, ints, st, scale=a.numel / max(d.size, 1), total=a.numel)
        else:
            diff = _empty_hist(st, a.numel)
    return PairHistograms(out[0], out[1], diff, exact=False)


def pair_histogram_steps(a: TensorRef | None, b: TensorRef | None, bins: int | None = None,
                         chunk_bytes: int = CHUNK_BYTES, sample_threshold: int = SAMPLE_THRESHOLD
                         ) -> Generator[Progress | PairHistograms, None, PairHistograms]:
    """Histograms of a pair, in two chunked passes (ranges, then counts); tensors of one shape are
    read in step so A - B is formed chunk by chunk. Big tensors get a sampled preview first."""
    tensors = [t for t in (a, b) if t is not None]
    for t in tensors:
        t.validate()
        if not t.readable:
            raise ValueError(f"values cannot be read: {t.problem or 'no stored values'}")
    paired = a is not None and b is not None and tuple(a.shape) == tuple(b.shape)
    numel = max(t.numel for t in tensors) if tensors else 0
    bins = bins or auto_bins(numel)
    integer = all(_integer(t) for t in tensors)
    if numel >= sample_threshold:
        yield _sampled_pair(a, b, bins, paired)
    total = 2 * sum(t.numel for t in tensors) + (2 * a.numel if paired else 0)
    done = 0
    accs = [StatsAccumulator() if t is not None else None for t in (a, b)]
    acc_d = StatsAccumulator() if paired else None

    def chunks():
        """(values of A or None, values of B or None) per chunk; in step when paired."""
        if paired:
            rows = min(a.rows_per_chunk(chunk_bytes), b.rows_per_chunk(chunk_bytes))
            yield from zip(a.iter_values(chunk_bytes, rows), b.iter_values(chunk_bytes, rows))
            return
        if a is not None:
            for c in a.iter_values(chunk_bytes):
                yield c, None
        if b is not None:
            for c in b.iter_values(chunk_bytes):
                yield None, c

    yield Progress(0, total, "ranges")
    for ca, cb in chunks():
        for t, c, acc in ((a, ca, accs[0]), (b, cb, accs[1])):
            if c is not None:
                acc.update(_numbers(c, t))
                done += c.size
        if acc_d is not None:
            acc_d.update(_difference(ca, cb))
            done += ca.size
        yield Progress(done, total, "ranges")
    stats = [acc.result() if acc is not None else None for acc in accs]
    st_d = acc_d.result() if acc_d is not None else None
    common = _common_edges(stats, bins, integer)
    d_edges = histogram_edges(st_d.min, st_d.max, bins, integer) if st_d is not None and st_d.finite else None
    counts = [np.zeros(len(common[0]) - 1, dtype=np.int64) if common is not None else None for _ in (a, b)]
    counts_d = np.zeros(len(d_edges[0]) - 1, dtype=np.int64) if d_edges is not None else None
    for ca, cb in chunks():
        for i, (t, c) in enumerate(((a, ca), (b, cb))):
            if c is not None:
                if counts[i] is not None:
                    counts[i] += _counts(_numbers(c, t), common[0])
                done += c.size
        if acc_d is not None:
            if counts_d is not None:
                counts_d += _counts(_difference(ca, cb), d_edges[0])
            done += ca.size
        yield Progress(done, total, "histograms")
    hists = []
    for t, st, cnt in ((a, stats[0], counts[0]), (b, stats[1], counts[1])):
        if t is None:
            hists.append(None)
        elif cnt is None or not st.finite:
            hists.append(_empty_hist(st, t.numel))
        else:
            hists.append(_hist(cnt, common[0], common[1], st, total=t.numel))
    diff = None
    note = ""
    if paired:
        diff = (_hist(counts_d, d_edges[0], d_edges[1], st_d, total=a.numel) if counts_d is not None
                else _empty_hist(st_d, a.numel))
    elif a is not None and b is not None:
        note = f"No A − B: the shapes differ ({list(a.shape)} and {list(b.shape)})."
    result = PairHistograms(hists[0], hists[1], diff, True, note)
    yield result
    return result
