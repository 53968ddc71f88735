"""What the Run tab does off the GUI thread, and the arrays it draws. Qt-free.

* :func:`prepare_steps` opens the run's checkpoints (metadata only), orders them and lines their tensors
  up (``core.analyze.trend.open_run``), in a worker.
* :func:`trend_batches` runs ``core.analyze.trend.trend_steps`` and hands the GUI the entries that
  finished, in batches (one signal per few hundred milliseconds), so the heatmap fills in row by row;
  between batches it yields progress, each yield a point where Stop takes effect.
* :func:`heatmap_matrix`, :func:`metric_values` and :func:`x_axis` turn the numbers into what the charts
  plot.

Thread rules: the worker fills in the core's ``TrendEntry`` lists. The GUI reads an entry's numbers only
after a batch naming it has arrived (``RunView.ready``), so it never sees a half-written entry.
"""
from __future__ import annotations

import math
import os
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
    """Entries finished since the last batch, and how far the reading got (bytes)."""

    finished: list[int]
    done: int
    total: int
    last: bool = False

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

    def __post_init__(self) -> None:
        shape = (len(self.run.entries), len(self.run.files))
        for metric, _ in HEATMAP_METRICS:
            self.cache[metric] = np.full(shape, np.nan)

    def add_ready(self, entries: list[int]) -> None:
        for i in entries:
            self.ready.add(i)
            e = self.run.entries[i]
            for metric, values in self.cache.items():
                values[i] = log_row(metric_values(e, metric))


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


def trend_batches(run: Run, chunk_bytes: int = CHUNK_BYTES, interval: float | None = None
                  ) -> Generator[TrendBatch | Progress, None, TrendBatch]:
    """``trend_steps`` in batches; the return value is the last batch (the rest of the finished)."""
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
                if finished and now - last >= interval:
                    yield TrendBatch(finished, done, total)
                    finished = []
                    last = now
                else:
                    yield Progress(done, total, "Reading the run")
    finally:
        gen.close()
    return TrendBatch(finished, total, total, last=True)


# -- what the charts plot ---------------------------------------------------------------------------------
def visible_entries(view: RunView, model_only: bool = True, text: str = "") -> list[int]:
    """Entries to show: with ``model_only``, the model's floating-point tensors of more than one element
    (no optimizer state, counters or saved losses); with ``text``, those whose key contains it."""
    needle = text.strip().lower()
    out = []
    texts = view.texts
    for i, e in enumerate(view.run.entries):
        if model_only and (e.in_optimizer or not e.is_floating or math.prod(e.shape) <= 1):
            continue
        if needle and needle not in texts[i].lower():
            continue
        out.append(i)
    return out


def metric_values(e: TrendEntry, metric: str) -> list[float | None]:
    if metric == "growth":
        first = next((x for x in e.norm if x), None)
        return [None if x is None or not first else x / first for x in e.norm]
    return list(e.metric(metric))


FROZEN = -12.0


def log_row(values: list[float | None]) -> np.ndarray:
    """log10 of each value (NaN where undefined or negative); zero (a frozen layer's relative change)
    maps to ``FROZEN``, far below anything that moved."""
    out = np.full(len(values), np.nan)
    for c, x in enumerate(values):
        if x is None:
            continue
        if x > 0:
            out[c] = math.log10(x)
        elif x == 0:
            out[c] = FROZEN
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
