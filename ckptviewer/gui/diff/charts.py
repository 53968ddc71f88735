"""The diff tab's plots: A and B histograms overlaid with the histogram of A − B, and the per-layer
chart of relative change in key order.

Both are thin pyqtgraph views over data computed elsewhere (``diff_work.pair_histogram_steps`` and the
core's metrics). pyqtgraph is imported when a diff tab is first built, after the window was painted.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QVBoxLayout, QWidget

from ...core.analyze.stats import Histogram
from ..widgets.plots import pyqtgraph, style_plot
from ..widgets.theme import is_dark, plain_label
from .model import status_color
from .work import PairHistograms

# A and B in two colours that stay apart for the common kinds of colour blindness (blue / orange).
_plain = partial(plain_label, wrap=False)   # labels here stay on one line unless asked

COLORS = {"a": ("#1f6fd1", "#5aa2ff"), "b": ("#d9730d", "#ffa94d"), "diff": ("#7b3fb5", "#b48cff")}


def side_color(which: str) -> QColor:
    light, dark = COLORS[which]
    return QColor(dark if is_dark() else light)


class PairHistogramPanel(QWidget):
    """Histograms of A and B (one plot, two colours, common bins) and of A − B (a second plot)."""

    log_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None, log_counts: bool = False):
        super().__init__(parent)
        self._pair: PairHistograms | None = None
        pg = pyqtgraph()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.title = _plain("Histograms", self)
        self.legend_a = _plain("■ A", self)
        self.legend_b = _plain("■ B", self)
        self.log_box = QCheckBox("Log count", self)
        self.log_box.setChecked(log_counts)
        self.log_box.toggled.connect(self._on_log_toggled)
        head.addWidget(self.title, 1)
        head.addWidget(self.legend_a)
        head.addWidget(self.legend_b)
        head.addWidget(self.log_box)
        lay.addLayout(head)
        self.plot = pg.PlotWidget(self)
        self.diff_plot = pg.PlotWidget(self)
        for p, label in ((self.plot, "count"), (self.diff_plot, "count")):
            p.setMenuEnabled(False)
            p.setMouseEnabled(x=True, y=False)
            p.showGrid(x=False, y=True, alpha=0.2)
            p.setLabel("left", label)
            p.hideButtons()
            p.setMinimumHeight(110)
        self.diff_plot.setLabel("bottom", "A − B")
        # No "(x0.001)" rescaling of the differences: ticks show the values themselves.
        self.diff_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.curve_a = self.plot.plot([0, 1], [0], stepMode="center", fillLevel=0)
        self.curve_b = self.plot.plot([0, 1], [0], stepMode="center", fillLevel=0)
        self.curve_d = self.diff_plot.plot([0, 1], [0], stepMode="center", fillLevel=0)
        lay.addWidget(self.plot, 3)
        self.diff_title = _plain("A − B", self)
        lay.addWidget(self.diff_title)
        lay.addWidget(self.diff_plot, 2)
        self.note = _plain("", self)
        self.note.setWordWrap(True)
        self.hover = _plain("", self)
        lay.addWidget(self.note)
        lay.addWidget(self.hover)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self._apply_colors()
        self.clear("Select a tensor to compare the distributions of its values.")

    # -- public ---------------------------------------------------------------------------------
    @property
    def pair(self) -> PairHistograms | None:
        return self._pair

    def set_names(self, a: str, b: str) -> None:
        self.legend_a.setText(f"■ A: {a}")
        self.legend_b.setText(f"■ B: {b}")

    def clear(self, message: str = "") -> None:
        self._pair = None
        self.title.setText("Histograms")
        self.note.setText(message)
        self.hover.setText("")
        for c in (self.curve_a, self.curve_b, self.curve_d):
            c.setData([0, 1], [0], stepMode="center", fillLevel=0)

    def set_pair(self, pair: PairHistograms, what: str = "") -> None:
        self._pair = pair
        self.title.setText(f"Histograms{' of ' + what if what else ''} "
                           f"({'exact' if pair.exact else 'sampled preview'})")
        self._redraw()
        notes = []
        if not pair.exact:
            notes.append("Estimated from a sample of evenly spaced elements; the exact histograms follow.")
        for name, h in (("A", pair.a), ("B", pair.b), ("A − B", pair.diff)):
            if h is not None and (h.nan or h.posinf or h.neginf):
                notes.append(f"{name}: not plotted {h.nan:,} NaN, {h.posinf:,} +Inf, {h.neginf:,} -Inf.")
        if pair.diff_note:
            notes.append(pair.diff_note)
        if pair.diff is not None and pair.diff.finite and pair.diff.edges[0] == -pair.diff.edges[-1] and \
                int(np.count_nonzero(pair.diff.counts)) == 1 and pair.exact:
            notes.append("A − B is zero everywhere.")
        self.note.setText(" ".join(notes))

    def plotted_counts(self) -> dict[str, np.ndarray | None]:
        p = self._pair
        if p is None:
            return {"a": None, "b": None, "diff": None}
        return {k: (None if h is None else np.asarray(h.counts)) for k, h in (("a", p.a), ("b", p.b), ("diff", p.diff))}

    # -- drawing --------------------------------------------------------------------------------
    def _y(self, h: Histogram) -> np.ndarray:
        y = np.asarray(h.counts, dtype=np.float64)
        return np.log10(np.maximum(y, 1.0)) if self.log_box.isChecked() else y

    def _redraw(self) -> None:
        p = self._pair
        if p is None:
            return
        log = self.log_box.isChecked()
        for plot in (self.plot, self.diff_plot):
            plot.getAxis("left").setLogMode(log)
            plot.setLabel("left", "count (log)" if log else "count")
        for curve, h in ((self.curve_a, p.a), (self.curve_b, p.b), (self.curve_d, p.diff)):
            if h is None or h.counts.size == 0:
                curve.setData([0, 1], [0], stepMode="center", fillLevel=0)
                curve.setVisible(False)         # a side without values draws nothing, not a line at 0
            else:
                curve.setData(np.asarray(h.edges, dtype=np.float64), self._y(h), stepMode="center", fillLevel=0)
                curve.setVisible(True)
        self.diff_plot.setVisible(p.diff is not None)
        self.diff_title.setVisible(p.diff is not None)
        self.plot.enableAutoRange()
        self.diff_plot.enableAutoRange()

    def _apply_colors(self) -> None:
        for curve, which in ((self.curve_a, "a"), (self.curve_b, "b"), (self.curve_d, "diff")):
            line = side_color(which)
            fill = QColor(line)
            fill.setAlpha(70)
            curve.setPen(line, width=1.5)
            curve.setBrush(fill)
        for lab, which in ((self.legend_a, "a"), (self.legend_b, "b")):
            lab.setStyleSheet(f"color: {side_color(which).name()}; font-weight: bold;")
        style_plot(self.plot, self.palette())
        style_plot(self.diff_plot, self.palette())

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()

    def _on_log_toggled(self, on: bool) -> None:
        self._redraw()
        self.log_toggled.emit(on)

    def hover_text_at(self, x: float) -> str:
        p = self._pair
        if p is None:
            return ""
        parts = []
        for name, h in (("A", p.a), ("B", p.b)):
            if h is None:
                continue
            i = h.bin_at(x)
            if i is not None:
                count = h.counts[i]
                parts.append(f"{name}: {int(count):,}" if h.exact else f"{name}: ≈{float(count):,.0f}")
                lo, hi = h.edges[i], h.edges[i + 1]
        if not parts:
            return ""
        return f"[{lo:.6g}, {hi:.6g}): " + ", ".join(parts)

    def _on_mouse_moved(self, pos: QPointF) -> None:
        if self._pair is None or not self.plot.sceneBoundingRect().contains(pos):
            return
        x = self.plot.getPlotItem().getViewBox().mapSceneToView(pos).x()
        self.hover.setText(self.hover_text_at(x))


class LayerChart(QWidget):
    """Relative change ‖a − b‖ / ‖a‖ per tensor pair, in key order: a bar per tensor that changed, a grey
    mark on the axis for one that did not (a frozen layer). Clicking a column selects that key.

    Values arrive in batches while comparing; the plot is redrawn at most every ``REDRAW_MS`` (a model
    with 100,000 tensors must not redraw 100,000 bars per batch), with numpy masks and one bar item
    per colour, which pyqtgraph draws in one call.
    """

    entry_clicked = Signal(int)            # index into DiffRun.entries
    REDRAW_MS = 300
    PENDING, SAME, CHANGED, DTYPE, ERROR = range(5)
    _CODES = {"pending": 0, "same": 1, "changed": 2, "dtype": 3, "error": 4}

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg = pyqtgraph()
        self._pg = pg
        self._entries: list[int] = []       # entry index per x position
        self._pos: dict[int, int] = {}       # entry index -> x position
        self._labels: list[str] = []
        self._heights = np.zeros(0)
        self._codes = np.zeros(0, dtype=np.int8)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.title = _plain("Relative change per tensor, in key order (‖a − b‖ / ‖a‖)", self)
        self.legend = _plain("grey marks on the axis: identical (frozen); light red: A was all zeros (change ∞)", self)
        self.hover = _plain("", self)
        head.addWidget(self.title)
        head.addWidget(self.legend)
        head.addStretch(1)
        head.addWidget(self.hover)
        lay.addLayout(head)
        axis = _KeyAxis(self, orientation="bottom")
        self.plot = pg.PlotWidget(self, axisItems={"bottom": axis})
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.showGrid(x=False, y=True, alpha=0.2)
        self.plot.hideButtons()
        self.plot.setMinimumHeight(120)
        self.plot.setLabel("left", "rel. change")
        # one item per colour: pyqtgraph draws a single-colour BarGraphItem with one drawRects call
        # (identical pairs get a short grey bar on the axis: a scatter plot of 100,000 marks is slow to set)
        self.bars = {kind: pg.BarGraphItem(x=[], height=[], width=0.8)
                     for kind in ("same", "changed", "dtype", "inf")}
        for item in self.bars.values():
            self.plot.addItem(item)
        self.empty = pg.TextItem("No tensor is in both A and B under the same key: nothing to chart.",
                                 anchor=(0.5, 0.5))
        self.empty.setPos(0, 0.5)
        self.empty.hide()
        self.plot.addItem(self.empty)
        self.cursor = pg.InfiniteLine(angle=90, movable=False)
        self.cursor.hide()
        self.plot.addItem(self.cursor)
        lay.addWidget(self.plot, 1)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self.plot.scene().sigMouseClicked.connect(self._on_clicked)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self._apply_colors()

    # -- data -----------------------------------------------------------------------------------
    def set_entries(self, entries: list[int], labels: list[str]) -> None:
        """The tensor pairs to chart (entry indices in key order) and their labels; heights unknown."""
        self._entries = list(entries)
        self._pos = {e: i for i, e in enumerate(self._entries)}
        self._labels = list(labels)
        self._heights = np.full(len(entries), np.nan)
        self._codes = np.zeros(len(entries), dtype=np.int8)
        self.plot.setXRange(-0.5, max(len(entries), 1) - 0.5, padding=0.01)
        self.empty.setVisible(not entries)
        self.flush()

    def set_values(self, items: list[tuple[int, str, float]]) -> None:
        """(entry index, status, relative change) for pairs that have been compared; drawn soon."""
        for idx, status, value in items:
            x = self._pos.get(idx)
            if x is not None:
                self._codes[x] = self._CODES.get(status, self.ERROR)
                self._heights[x] = value
        if items and not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Draw now what has arrived."""
        self._timer.stop()
        self._redraw()

    def heights(self) -> np.ndarray:
        return self._heights.copy()

    def keys(self) -> list[str]:
        return list(self._labels)

    def x_of(self, entry_index: int) -> int | None:
        return self._pos.get(entry_index)

    def entry_at(self, x: float) -> int | None:
        i = int(math.floor(x + 0.5))
        return self._entries[i] if 0 <= i < len(self._entries) else None

    def label_at(self, x: int) -> str:
        return self._labels[x] if 0 <= x < len(self._labels) else ""

    def select_entry(self, entry_index: int | None) -> None:
        x = self._pos.get(entry_index) if entry_index is not None else None
        if x is None:
            self.cursor.hide()
            return
        self.cursor.setValue(x)
        self.cursor.show()

    # -- drawing --------------------------------------------------------------------------------
    def _redraw(self) -> None:
        h, codes = self._heights, self._codes
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(h)
            same = (codes == self.SAME) | ((codes == self.CHANGED) & finite & (h == 0))
            changed = (codes == self.CHANGED) & finite & (h > 0)
            dtype = (codes == self.DTYPE) & finite
            inf = np.isinf(h) & ((codes == self.CHANGED) | (codes == self.DTYPE))
        shown = h[changed | dtype]
        top = float(shown.max()) if shown.size and shown.max() > 0 else 1.0
        for kind, mask in (("same", same), ("changed", changed), ("dtype", dtype), ("inf", inf)):
            xs = np.nonzero(mask)[0].astype(float)
            if kind == "same":
                ys = np.full(xs.size, 0.015 * top)       # a mark on the axis, not a change
            elif kind == "inf":
                ys = np.full(xs.size, top)
            else:
                ys = h[mask]
            self.bars[kind].setOpts(x=xs, height=ys, width=0.8)

    def _apply_colors(self) -> None:
        style_plot(self.plot, self.palette())
        grey = status_color("same")
        for kind, status in (("same", "same"), ("changed", "changed"), ("dtype", "dtype"), ("inf", "shape")):
            color = status_color(status)
            if kind == "inf":
                color.setAlpha(110)      # not a measured height: drawn lighter than the real bars
            self.bars[kind].setOpts(brush=color, pen=self._pg.mkPen(None))
        self.cursor.setPen(self._pg.mkPen(self.palette().color(QPalette.ColorRole.Highlight), width=2))
        self.legend.setStyleSheet(f"color: {grey.name()};")
        self.empty.setColor(self.palette().color(QPalette.ColorRole.Text))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()

    # -- mouse ----------------------------------------------------------------------------------
    def _view_x(self, scene_pos: QPointF) -> float | None:
        if not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        return vb.mapSceneToView(scene_pos).x()

    def _on_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        x = self._view_x(event.scenePos())
        idx = self.entry_at(x) if x is not None else None
        if idx is not None:
            self.entry_clicked.emit(idx)

    def _on_mouse_moved(self, pos: QPointF) -> None:
        x = self._view_x(pos)
        idx = self.entry_at(x) if x is not None else None
        if idx is None:
            self.hover.setText("")
            return
        i = self._pos[idx]
        v, code = self._heights[i], self._codes[i]
        if code == self.PENDING:
            value = "not compared yet"
        elif code == self.SAME:
            value = "identical"
        elif code == self.ERROR:
            value = "unreadable"
        else:
            value = f"{v:.4g}" + (" (A is all zeros)" if np.isinf(v) else "")
        self.hover.setText(f"{self._labels[i]}: {value}")

    def view_point(self, x: float, y: float = 0.0) -> QPoint:
        """Where data point (x, y) lies in the plot's viewport coordinates (tests click there)."""
        vb = self.plot.getPlotItem().getViewBox()
        return self.plot.mapFromScene(vb.mapViewToScene(QPointF(x, y)))


class _KeyAxis:
    """Factory for a pyqtgraph AxisItem that labels integer positions with the chart's keys."""

    def __new__(cls, chart: LayerChart, orientation: str):
        pg = pyqtgraph()

        class KeyAxis(pg.AxisItem):
            def tickValues(self, minVal, maxVal, size):  # noqa: N802,N803 - pyqtgraph override
                lo, hi = max(0, math.ceil(minVal)), min(len(chart._labels) - 1, math.floor(maxVal))
                if hi < lo:
                    return []
                room = max(1, int(size // 140))
                step = max(1, math.ceil((hi - lo + 1) / room))
                return [(step, list(range(lo, hi + 1, step)))]

            def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph override
                out = []
                for v in values:
                    text = chart.label_at(int(round(v)))
                    out.append(text if len(text) <= 22 else "…" + text[-21:])
                return out

        return KeyAxis(orientation=orientation)
