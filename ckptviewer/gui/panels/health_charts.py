"""The Health panel's two charts: norms and standard deviations along the model's order, and where the
parameters and bytes are (a bar per module). Both draw what a :class:`HealthReport` measured; clicking a point
of the first selects its tensor. pyqtgraph is imported when a chart is first drawn.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QVBoxLayout, QWidget

from ...core.analyze.health import ModuleShare, TensorHealth
from ...core.util.textsafe import path_text, safe_text
from ...core.util.units import human_bytes
from ..widgets.plots import pyqtgraph, style_plot
from ..widgets.theme import is_dark, plain_label

_plain = partial(plain_label, wrap=False)   # labels here stay on one line unless asked

MAX_BARS = 16


class LayerChart(QWidget):
    """Norm and std of each floating parameter in model order (log scale). ``tensor_clicked(key)``."""

    tensor_clicked = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._series: list[TensorHealth] = []
        self._flagged: set[tuple] = set()
        self._plot = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self._holder = QVBoxLayout()
        self.placeholder = _plain("Run the check to chart the norms of the model's layers.", self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._holder.addWidget(self.placeholder, 1)
        lay.addLayout(self._holder, 1)
        self.hover = _plain("", self)
        lay.addWidget(self.hover)

    def _ensure(self) -> None:
        if self._plot is not None:
            return
        pg = pyqtgraph()
        plot = pg.PlotWidget(self)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setLogMode(x=False, y=True)
        plot.showGrid(x=False, y=True, alpha=0.2)
        plot.setLabel("bottom", "tensor, in model order")
        plot.addLegend(offset=(-6, 6))
        dark = is_dark()
        self._norm = plot.plot([], [], pen=QColor("#5aa2ff" if dark else "#1f6fd1"), symbol="o", symbolSize=4,
                               symbolBrush=QColor("#5aa2ff" if dark else "#1f6fd1"), name="L2 norm")
        self._std = plot.plot([], [], pen=QColor("#f0a04b" if dark else "#c26a00"), symbol="t", symbolSize=4,
                              symbolBrush=QColor("#f0a04b" if dark else "#c26a00"), name="std")
        self._marks = pg.ScatterPlotItem(size=9, brush=QColor(220, 50, 40, 200), pen=None, name="has findings")
        plot.addItem(self._marks)
        plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        plot.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self._plot = plot
        self._holder.removeWidget(self.placeholder)
        self.placeholder.hide()
        self._holder.addWidget(plot, 1)
        style_plot(plot, self.palette())

    def set_series(self, series: list[TensorHealth], flagged: set[tuple]) -> None:
        self._series = series
        self._flagged = flagged
        if not series:
            if self._plot is not None:
                self._norm.setData([], [])
                self._std.setData([], [])
                self._marks.setData([], [])
            self.placeholder.setText("No floating-point parameters to chart.")
            return
        self._ensure()
        x = np.arange(len(series), dtype=np.float64)
        # Log axes need positive values: a zero norm or std (an all-zero bias) sits a decade below the
        # smallest positive one, so that it shows at the bottom without stretching the axis to 1e-30.
        positive = [v for th in series for v in (th.norm, th.std) if v and v > 0]
        floor = min(positive) / 10 if positive else 1.0
        norm = np.array([max(th.norm or 0.0, floor) for th in series])
        std = np.array([max(th.std or 0.0, floor) for th in series])
        self._norm.setData(x, norm)
        self._std.setData(x, std)
        hit = [i for i, th in enumerate(series) if any(tuple(k) in flagged for k in th.keys)]
        self._marks.setData(x[hit], np.log10(norm[hit]) if hit else [])
        self._plot.enableAutoRange()

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([th.norm or 0.0 for th in self._series]), np.array([th.std or 0.0 for th in self._series]))

    def _index_at(self, pos: QPointF) -> int | None:
        if self._plot is None or not self._series or not self._plot.sceneBoundingRect().contains(pos):
            return None
        x = self._plot.getPlotItem().getViewBox().mapSceneToView(pos).x()
        i = int(round(x))
        return i if 0 <= i < len(self._series) else None

    def _on_mouse_moved(self, pos: QPointF) -> None:
        i = self._index_at(pos)
        if i is None:
            return
        th = self._series[i]
        est = "" if th.moments_exact else " (estimated)"
        self.hover.setText(f"{path_text(th.key)}  {list(th.shape)}: norm {th.norm:.4g}, std {th.std:.4g}{est}")

    def _on_mouse_clicked(self, event) -> None:
        i = self._index_at(event.scenePos())
        if i is not None:
            self.tensor_clicked.emit(tuple(self._series[i].key))


class BreakdownChart(QWidget):
    """Horizontal bars: the modules (or optimizer states) holding the most bytes, at a chosen depth."""

    depth_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._by_depth: dict[int, list[ModuleShare]] = {}
        self._plot = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(_plain("Group by module depth", self))
        self.depth_box = QComboBox(self)
        for d in (1, 2, 3):
            self.depth_box.addItem(str(d), d)
        self.depth_box.currentIndexChanged.connect(lambda _i: self._redraw())
        top.addWidget(self.depth_box)
        top.addStretch(1)
        lay.addLayout(top)
        self._holder = QVBoxLayout()
        self.placeholder = _plain("Run the check to see which modules hold the parameters.", self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._holder.addWidget(self.placeholder, 1)
        lay.addLayout(self._holder, 1)
        self.caption = _plain("", self)
        self.caption.setWordWrap(True)
        lay.addWidget(self.caption)

    def set_breakdowns(self, by_depth: dict[int, list[ModuleShare]]) -> None:
        self._by_depth = by_depth
        self._redraw()

    def shown(self) -> list[ModuleShare]:
        return self._by_depth.get(self.depth_box.currentData() or 1, [])[:MAX_BARS]

    def _ensure(self) -> None:
        if self._plot is not None:
            return
        pg = pyqtgraph()
        plot = pg.PlotWidget(self)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setMouseEnabled(x=False, y=False)
        plot.setLabel("bottom", "MiB")
        plot.getViewBox().invertY(True)
        self._bars = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[])
        plot.addItem(self._bars)
        self._plot = plot
        self._holder.removeWidget(self.placeholder)
        self.placeholder.hide()
        self._holder.addWidget(plot, 1)
        style_plot(plot, self.palette())

    def _redraw(self) -> None:
        shares = self.shown()
        if not shares:
            return
        self._ensure()
        dark = is_dark()
        colors = {"module": QColor("#5aa2ff" if dark else "#1f6fd1"),
                  "optimizer": QColor("#f0a04b" if dark else "#c26a00"), "other": QColor("#9a9a9a")}
        mib = np.array([s.nbytes / 2**20 for s in shares])
        y = np.arange(len(shares), dtype=np.float64)
        self._bars.setOpts(x0=np.zeros(len(shares)), y=y, width=mib, height=0.7,
                           brushes=[colors.get(s.kind, colors["other"]) for s in shares])
        ticks = [(float(i), safe_text(s.name, 40)) for i, s in enumerate(shares)]
        self._plot.getAxis("left").setTicks([ticks])
        self._plot.enableAutoRange()
        total = sum(s.nbytes for s in self._by_depth.get(self.depth_box.currentData() or 1, []))
        top = shares[0]
        self.caption.setText(f"{len(self._by_depth.get(self.depth_box.currentData() or 1, [])):,} groups, "
                             f"{human_bytes(total)} in all; the largest, {safe_text(top.name, 80)}, holds "
                             f"{top.numel:,} elements ({human_bytes(top.nbytes)}, "
                             f"{100 * top.nbytes / total if total else 0:.1f}%)." if total else "")
