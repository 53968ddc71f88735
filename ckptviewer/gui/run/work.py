"""What the Run tab does off the GUI thread, and the arrays it draws. Qt-free.

* :func:`prepare_steps` opens the run's checkpoints (metadata only), orders them and lines their tensors
  up (``core.analyze.trend.open_run``), in a worker.
* :func:`trend_batches` runs ``core.analyze.trend.trend_steps`` and hands the GUI the entries that
  finished, in batches (one signal per few hundred milliseconds, and never a new one before the GUI has
  applied the last: a run of 100,000 small tensors finishes entries faster than a window could take them
  one by one), each with the heatmap's rows of its entries already computed, so the heatmap fills in row
  by row and the GUI thread only copies arrays; between batches it yields progress, each yield a point
  where Stop takes effect.
* :func:`heatmap_matrix`, :func:`metric_values` and :func:`x_axis` turn the numbers into what the charts
  plot.

Thread rules: the worker fills in the core's ``TrendEntry`` lists. The GUI reads an entry's numbers only
after a batch naming it has arrived (``RunView.ready``), so it never sees a half-written entry.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Generator

import numpy as np

from ...core.analyze.trend import Run, TrendEntry, open_run, trend_steps
from ...core.model.tensor import CHUNK_BYTES
from ...core.util.progress import Progress
from ...core.util.textsafe import safe_text
from ..widgets.gc_pause import gc_paused

# How often the reading worker reports finished entries (seconds). Tests set 0: every entry.
BATCH_SECONDS = 0.15
# What the heatmap and the line chart can show: id -> label. Norms and relative changes span decades, so
# the heatmap colours their log10; "growth" is the norm divided by the first file's norm.
HEATMAP_METRICS = (("rel_change", "Relative change"), ("norm", "Norm"), ("growth", "Norm ÷ first"))
LINE_METRICS = (("rel_change", "Relative change"), ("norm", "Norm"), ("growth", "Norm ÷ first"),
                ("mean", "Mean"), ("std", "Std"))
METRIC_TEXT = dict(HEATMAP_METRICS + LINE_METRICS)


@dataclass
class RunSetup:
    """The files (or folders) of a run and how to order them."""

    paths: list[str]
    order: str = "auto"
    chunk_bytes: int = CHUNK_BYTES

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(os.path.realpath(p) for p in self.paths)


@dataclass
class TrendBatch:
    """Entries finished since the last batch, and how far the reading got (bytes). ``rows``: the heatmap's
    values of those entries per metric (``heatmap_rows``), computed in the worker."""

    finished: list[int]
    done: int
    total: int
    last: bool = False
    rows: dict[str, np.ndarray] | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class RunView:
    """The GUI thread's view of a run: the keys as text (made in the worker), which entries it may read,
    and the heatmap's values of those, per metric (entries x files, log10, NaN until read), filled in
    once per entry as its batch arrives, so a redraw only indexes arrays."""

    run: Run
    texts: list[str] = field(default_factory=list)
    ready: set[int] = field(default_factory=set)      # entries whose numbers arrived in a batch
    cache: dict[str, np.ndarray] = field(default_factory=dict)
    # Per entry: the table's numbers (``entry_numbers``; NaN until read), whether the model-only filter
    # keeps it, its key in lower case (for the text filter). Made where the view is made (the worker).
    numbers: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    model_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    lower_texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.run.entries)
        shape = (n, len(self.run.files))
        for metric, _ in HEATMAP_METRICS:
            self.cache[metric] = np.full(shape, np.nan)
        self.numbers = np.full((n, len(NUMBER_COLUMNS)), np.nan)
        self.model_mask = np.fromiter((is_model_tensor(e) for e in self.run.entries), dtype=bool, count=n)
        self.lower_texts = [t.lower() for t in self.texts]
        self.run.total_bytes            # counted here, in the worker, not in the reading's first step

    def add_ready(self, entries: list[int], rows: dict[str, np.ndarray] | None = None) -> None:
        """Entries whose numbers are final, with their heatmap rows (``heatmap_rows``; computed here when
        not given). A few array copies per batch, whatever its size."""
        if not entries:
            return
        if rows is None:
            rows = heatmap_rows(self.run, entries)
        index = np.asarray(entries, dtype=np.intp)
        for metric, values in self.cache.items():
            values[index] = rows[metric]
        self.numbers[index] = rows[NUMBERS]
        self.ready.update(entries)


def prepare_steps(setup: RunSetup) -> Generator[Progress, None, RunView]:
    """Open and line up the run, with the collector paused while its trees are built, and make the
    keys' texts here rather than on the GUI thread."""
    with gc_paused():
        run = yield from open_run(setup.paths, setup.order)
    try:
        yield Progress(0, 0, "Naming the tensors")
        return RunView(run, [safe_text(e.text, 300) for e in run.entries])
    except BaseException:
        run.close()
        raise


def trend_batches(run: Run, chunk_bytes: int = CHUNK_BYTES, interval: float | None = None,
                  applied: threading.Event | None = None) -> Generator[TrendBatch | Progress, None, TrendBatch]:
    """``trend_steps`` in batches; the return value is the last batch (the rest of the finished).

    With ``applied`` (set by the GUI when it has applied a batch; set to begin with), a batch is sent only
    once the previous one was applied: entries finished meanwhile join the next batch, so a slow window
    gets fewer, larger batches instead of a queue of them that would keep it from repainting."""
    interval = BATCH_SECONDS if interval is None else interval
    finished: list[int] = []
    done = total = 0
    last = time.monotonic()
    gen = trend_steps(run, chunk_bytes)
    try:
        with gc_paused():
            for p in gen:
                done, total = p.done, p.total
                if p.entry >= 0:
                    finished.append(p.entry)
                now = time.monotonic()
                if finished and now - last >= interval and (applied is None or applied.is_set()):
                    if applied is not None:
                        applied.clear()
                    yield TrendBatch(finished, done, total, rows=heatmap_rows(run, finished))
                    finished = []
                    last = now
                else:
                    yield Progress(done, total, "Reading the run")
    finally:
        gen.close()
    return TrendBatch(finished, total, total, last=True, rows=heatmap_rows(run, finished))


# -- what the charts plot ---------------------------------------------------------------------------------
def visible_entries(view: RunView, model_only: bool = True, text: str = "") -> list[int]:
    """Entries to show: with ``model_only``, the model's floating-point tensors of more than one element
    (no optimizer state, counters or saved losses); with ``text``, those whose key contains it."""
    needle = text.strip().lower()
    if not needle:
        return np.flatnonzero(view.model_mask).tolist() if model_only else list(range(len(view.run.entries)))
    mask = view.model_mask
    return [i for i, t in enumerate(view.lower_texts) if needle in t and (mask[i] or not model_only)]


def is_model_tensor(e: TrendEntry) -> bool:
    """What the model-only filter keeps: a floating-point tensor of more than one element, not optimizer
    state."""
    return not (e.in_optimizer or not e.is_floating or math.prod(e.shape) <= 1)


# The Run table's number columns, by their column in the table: last norm, max and last relative change.
NUMBER_COLUMNS = (3, 4, 5)
NUMBERS = "numbers"         # the key of those in heatmap_rows' result


def entry_numbers(e: TrendEntry) -> tuple[float | None, float | None, float | None]:
    """The last norm, the largest relative change and the last relative change of an entry (None where
    there is none)."""
    rel = [x for x in e.rel_change if x is not None]
    return (next((x for x in reversed(e.norm) if x is not None), None), max(rel) if rel else None,
            e.rel_change[-1] if e.rel_change else None)


def metric_values(e: TrendEntry, metric: str) -> list[float | None]:
    if metric == "growth":
        first = next((x for x in e.norm if x), None)
        return [None if x is None or not first else x / first for x in e.norm]
    return list(e.metric(metric))


FROZEN = -12.0


def log_rows(values: np.ndarray) -> np.ndarray:
    """log10 of each value (NaN where undefined (NaN) or negative); zero (a frozen layer's relative
    change) maps to ``FROZEN``, far below anything that moved."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    with np.errstate(invalid="ignore"):
        positive = values > 0
        out[positive] = np.log10(values[positive])
        out[values == 0] = FROZEN
    return out


def log_row(values: list[float | None]) -> np.ndarray:
    """``log_rows`` of one row of values (None where undefined)."""
    return log_rows(np.array([math.nan if x is None else x for x in values], dtype=np.float64))


def heatmap_rows(run: Run, entries: list[int]) -> dict[str, np.ndarray]:
    """The heatmap's values of ``entries`` (finished: their numbers no longer change): metric ->
    (len(entries) x files) of ``log_rows``; and under ``NUMBERS`` their ``entry_numbers`` (NaN for None).
    Runs in the reading worker."""
    n_files = len(run.files)
    out = {}
    for metric, _ in HEATMAP_METRICS:
        block = np.full((len(entries), n_files), np.nan)
        for r, i in enumerate(entries):
            row = metric_values(run.entries[i], metric)
            block[r, :len(row)] = [math.nan if x is None else x for x in row]
        out[metric] = log_rows(block)
    out[NUMBERS] = np.array([[math.nan if x is None else x for x in entry_numbers(run.entries[i])] for i in entries],
                            dtype=np.float64).reshape(len(entries), len(NUMBER_COLUMNS))
    return out


def heatmap_matrix(view: RunView, rows: list[int], metric: str) -> np.ndarray:
    """(rows x files) of the metric's log10, NaN where undefined or not read yet."""
    return view.cache[metric][np.asarray(rows, dtype=np.intp)] if rows else np.zeros((0, len(view.run.files)))


def x_axis(run: Run) -> tuple[list[float], str]:
    """The x values of the line charts: the recorded step or epoch when every file has one, else the
    checkpoint's position in the run."""
    for name in ("step", "epoch"):
        values = [getattr(f, name) for f in run.files]
        if all(v is not None for v in values) and len(set(values)) == len(values):
            return [float(v) for v in values], name
    return [float(i) for i in range(len(run.files))], "checkpoint"
