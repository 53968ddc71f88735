"""The histogram panel: one pyqtgraph step plot of a :class:`~ckptviewer.core.analyze.stats.Histogram`.

The bins come from the core (sampled first for big tensors, exact when the worker is done); this
widget only draws them, with a log-count toggle, a note of NaN/Inf counts, and the exact count of
the bin under the mouse. pyqtgraph is imported when the first plot is made, after the window has
been painted, so it never delays the first window.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ...core.analyze.stats import Histogram
from ..widgets.plots import pyqtgraph, style_plot
from ..widgets.theme import is_dark


def _fmt_edge(x: float) -> str:
    return f"{x:.6g}"


class HistogramPanel(QWidget):
    log_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None, log_counts: bool = False):
        super().__init__(parent)
        self._hist: Histogram | None = None
        self._plot = None          # pyqtgraph PlotWidget, made on first use
        self._curve = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.title = QLabel("Histogram", self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.log_box = QCheckBox("Log count", self)
        self.log_box.setChecked(log_counts)
        self.log_box.toggled.connect(self._on_log_toggled)
        head.addWidget(self.title, 1)
        head.addWidget(self.log_box)
        lay.addLayout(head)
        self._plot_holder = QVBoxLayout()
        self._placeholder = QLabel("Select a tensor to see the distribution of its values.", self)
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setTextFormat(Qt.TextFormat.PlainText)
        self._placeholder.setMinimumHeight(140)
        self._plot_holder.addWidget(self._placeholder, 1)
        lay.addLayout(self._plot_holder, 1)
        self.note = QLabel("", self)
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setWordWrap(True)
        self.hover = QLabel("", self)
        self.hover.setTextFormat(Qt.TextFormat.PlainText)
        lay.addWidget(self.note)
        lay.addWidget(self.hover)

    # -- public ---------------------------------------------------------------------------------
    @property
    def histogram(self) -> Histogram | None:
        return self._hist

    def ensure_plot(self) -> None:
        if self._plot is not None:
            return
        pg = pyqtgraph()
        plot = pg.PlotWidget(self)
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=True, y=False)
        plot.showGrid(x=False, y=True, alpha=0.2)
        plot.setLabel("left", "count")
        plot.hideButtons()
        plot.setMinimumHeight(140)
        self._curve = plot.plot([0, 1], [0], stepMode="center", fillLevel=0)
        plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self._plot = plot
        self._apply_colors()
        self._plot_holder.removeWidget(self._placeholder)
        self._placeholder.hide()
        self._plot_holder.addWidget(plot, 1)

    def clear(self, message: str = "") -> None:
        self._hist = None
        self.title.setText("Histogram")
        self.note.setText(message)
        self.hover.setText("")
        if self._curve is not None:
            self._curve.setData([0, 1], [0], stepMode="center", fillLevel=0)

    def set_histogram(self, hist: Histogram, what: str = "") -> None:
        self.ensure_plot()
        self._hist = hist
        self.title.setText(f"Histogram{' of ' + what if what else ''}"
                           f" ({'exact' if hist.exact else 'sampled preview'})")
        self._redraw()
        notes = []
        if not hist.exact:
            notes.append(f"Estimated from {hist.sample_size:,} of {hist.total:,} values; the exact "
                         "histogram follows.")
        if hist.nan or hist.posinf or hist.neginf:
            approx = "" if hist.exact else "≈"
            notes.append(f"Not plotted: {approx}{hist.nan:,} NaN, {approx}{hist.posinf:,} +Inf, "
                         f"{approx}{hist.neginf:,} -Inf.")
        if hist.finite == 0:
            notes.append("No finite values to plot.")
        else:
            notes.append(f"{hist.bins} bins over {hist.finite:,} finite values"
                         f"{' (one bin per integer)' if hist.integer_bins else ''}.")
        self.note.setText(" ".join(notes))
        self.hover.setText("")

    def set_log_counts(self, on: bool) -> None:
        self.log_box.setChecked(on)

    def plotted_counts(self) -> np.ndarray | None:
        return None if self._hist is None else np.asarray(self._hist.counts)

    # -- drawing --------------------------------------------------------------------------------
    def _redraw(self) -> None:
        h = self._hist
        if h is None or self._curve is None:
            return
        if h.counts.size == 0:
            self._curve.setData([0, 1], [0], stepMode="center", fillLevel=0)
            return
        y = np.asarray(h.counts, dtype=np.float64)
        if self.log_box.isChecked():
            y = np.log10(np.maximum(y, 1.0))
        self._plot.getAxis("left").setLogMode(self.log_box.isChecked())
        self._plot.setLabel("left", "count (log)" if self.log_box.isChecked() else "count")
        self._curve.setData(np.asarray(h.edges, dtype=np.float64), y, stepMode="center", fillLevel=0)
        self._plot.enableAutoRange()

    def _apply_colors(self) -> None:
        if self._plot is None:
            return
        dark = is_dark()
        pal = self.palette()
        style_plot(self._plot, pal)
        line = QColor("#5aa2ff" if dark else "#1f6fd1")
        fill = QColor(line)
        fill.setAlpha(90)
        self._curve.setPen(line)
        self._curve.setBrush(fill)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        from PySide6.QtCore import QEvent
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()

    def _on_log_toggled(self, on: bool) -> None:
        self._redraw()
        self.log_toggled.emit(on)

    def hover_text_at(self, x: float) -> str:
        h = self._hist
        if h is None:
            return ""
        i = h.bin_at(x)
        if i is None:
            return ""
        lo, hi = h.edges[i], h.edges[i + 1]
        close = "]" if i == h.bins - 1 else ")"
        count = h.counts[i]
        if h.exact:
            return f"[{_fmt_edge(lo)}, {_fmt_edge(hi)}{close}: {int(count):,} values"
        return f"[{_fmt_edge(lo)}, {_fmt_edge(hi)}{close}: ≈{float(count):,.0f} values (estimate)"

    def _on_mouse_moved(self, pos: QPointF) -> None:
        if self._plot is None or self._hist is None:
            return
        vb = self._plot.getPlotItem().getViewBox()
        if not self._plot.sceneBoundingRect().contains(pos):
            return
        x = vb.mapSceneToView(pos).x()
        self.hover.setText(self.hover_text_at(x))
