"""The Run tab's plots: the heatmap of tensors x checkpoints, the line chart of the checked tensors, and
the training chart (loss and learning rate per checkpoint).

Thin pyqtgraph views over arrays computed by ``work.py``. The heatmap colours the log10 of the metric
(relative changes and norms span decades); cells without a number (a file without the key, the first
file's relative change, values not read yet) are left transparent, so the background shows through.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QFontMetrics, QPalette, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QVBoxLayout,
    QWidget,
)

from ..widgets.plots import pyqtgraph, style_plot
from ..widgets.theme import plain_label
from .work import LINE_METRICS, METRIC_TEXT

# Colours for the line chart's curves: distinct for the common kinds of colour blindness (Okabe-Ito).
_plain = partial(plain_label, wrap=False)   # labels here stay on one line unless asked

CURVE_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999")
MAX_CURVES = 12


def _short(text: str, n: int = 34) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


class _LabelAxis:
    """Factory for a pyqtgraph AxisItem that labels cells (centred at i + 0.5) with ``labels()[i]``,
    thinned out to what fits: one label per text height on the left axis, per label width at the bottom."""

    def __new__(cls, labels, orientation: str):
        pg = pyqtgraph()

        class LabelAxis(pg.AxisItem):
            def tickValues(self, minVal, maxVal, size):  # noqa: N802,N803 - pyqtgraph override
                names = labels()
                minVal, maxVal = sorted((minVal, maxVal))      # an inverted axis passes them reversed
                lo, hi = max(0, math.ceil(minVal - 0.5)), min(len(names) - 1, math.floor(maxVal - 0.5))
                if hi < lo:
                    return []
                fm = QFontMetrics(self.style.get("tickFont") or self.font())
                if self.orientation in ("left", "right"):
                    per = fm.height() + 2
                else:
                    per = max((fm.horizontalAdvance(_short(n)) for n in names[lo:hi + 1]), default=10) + 12
                room = max(1, int(size // per))
                step = max(1, math.ceil((hi - lo + 1) / room))
                return [(step, [i + 0.5 for i in range(lo, hi + 1, step)])]

            def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph override
                names = labels()
                out = []
                for v in values:
                    i = int(math.floor(v))
                    out.append(_short(names[i]) if 0 <= i < len(names) else "")
                return out

        return LabelAxis(orientation=orientation)


class RunHeatmap(QWidget):
    """Tensors (rows) x checkpoints (columns), coloured by a metric's log10. Clicking a cell selects it;
    double-clicking asks to open that tensor in that checkpoint."""

    cell_clicked = Signal(int, int)           # entry index, file index
    cell_activated = Signal(int, int)         # entry index, file index (double click)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg = pyqtgraph()
        self._pg = pg
        self.rows: list[int] = []
        self.row_labels: list[str] = []
        self.file_labels: list[str] = []
        self.matrix = np.zeros((0, 0))
        self.metric_name = "rel_change"      # not "metric": that would hide QWidget.metric()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.title = _plain("", self)
        self.hover = _plain("", self)
        head.addWidget(self.title)
        head.addStretch(1)
        head.addWidget(self.hover)
        lay.addLayout(head)
        axes = {"left": _LabelAxis(lambda: self.row_labels, "left"),
                "bottom": _LabelAxis(lambda: self.file_labels, "bottom")}
        self.plot = pg.PlotWidget(self, axisItems=axes)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.invertY(True)
        self.plot.setMouseEnabled(x=False, y=True)
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        self.bar = pg.ColorBarItem(values=(-4, 0), colorMap=pg.colormap.get("viridis"), interactive=False,
                                   width=14, colorMapMenu=False)
        self.bar.setImageItem(self.image, insert_in=self.plot.getPlotItem())
        self.marker = QGraphicsRectItem(QRectF(0, 0, 1, 1))
        self.marker.hide()
        self.plot.addItem(self.marker)
        self.empty = pg.TextItem("", anchor=(0.5, 0.5))
        self.plot.addItem(self.empty)
        lay.addWidget(self.plot, 1)
        self.plot.scene().sigMouseClicked.connect(self._on_clicked)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)
        # Double clicks are taken from the viewport's own events: pyqtgraph's scene reports the double click
        # of a press-release-press-doubleclick-release sequence (what QTest sends) as two single clicks.
        self.plot.viewport().installEventFilter(self)
        self._selected: tuple[int, int] | None = None
        self._apply_colors()

    # -- data -----------------------------------------------------------------------------------
    def set_matrix(self, matrix: np.ndarray, rows: list[int], row_labels: list[str], file_labels: list[str],
                   metric: str) -> None:
        """Show ``matrix`` (len(rows) x len(file_labels), log10 values, NaN for none)."""
        first = self.matrix.shape != matrix.shape or self.rows != rows
        self.matrix = matrix
        self.rows = list(rows)
        self.row_labels = row_labels
        self.file_labels = file_labels
        self.metric_name = metric
        self.title.setText(f"log10 {METRIC_TEXT[metric].lower()}: {len(rows):,} tensors × {len(file_labels)} "
                           f"checkpoints (blank: no value)")
        if matrix.size:
            self.image.setImage(matrix.T, autoLevels=False)
            self.image.setRect(QRectF(0, 0, matrix.shape[1], matrix.shape[0]))
            finite = matrix[np.isfinite(matrix) & (matrix > -12)]
            lo, hi = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99))) if finite.size else (-4, 0)
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            self.bar.setLevels((lo, hi))
            self.image.show()
        else:
            self.image.hide()
        self.empty.setText("" if rows else "No tensor to show: change the filter above.")
        self.empty.setPos(max(len(file_labels), 1) / 2, 0.5)
        for ax in ("left", "bottom"):
            self.plot.getAxis(ax).picture = None     # labels may have changed with the same range
            self.plot.getAxis(ax).update()
        if first:
            self.plot.setXRange(0, max(len(file_labels), 1), padding=0)
            self.plot.setYRange(0, max(len(rows), 1), padding=0)
        self._place_marker()

    def value_at(self, row: int, col: int) -> float | None:
        if 0 <= row < self.matrix.shape[0] and 0 <= col < self.matrix.shape[1]:
            v = float(self.matrix[row, col])
            return v if math.isfinite(v) else None
        return None

    def select(self, entry: int | None, file: int | None) -> None:
        self._selected = (entry, file) if entry is not None and file is not None else None
        self._place_marker()

    def _place_marker(self) -> None:
        if self._selected is None or self._selected[0] not in self.rows:
            self.marker.hide()
            return
        row = self.rows.index(self._selected[0])
        self.marker.setRect(QRectF(self._selected[1], row, 1, 1))
        self.marker.show()

    # -- mouse ----------------------------------------------------------------------------------
    def cell_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        """(row, column) under a scene position, or None outside the cells."""
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        p = vb.mapSceneToView(scene_pos)
        row, col = math.floor(p.y()), math.floor(p.x())
        if 0 <= row < len(self.rows) and 0 <= col < len(self.file_labels):
            return row, col
        return None

    def scene_point(self, row: int, col: int) -> QPointF:
        """The scene position of a cell's centre (tests click there)."""
        vb = self.plot.getPlotItem().getViewBox()
        return vb.mapViewToScene(QPointF(col + 0.5, row + 0.5))

    def _on_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or event.double():
            return
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.cell_clicked.emit(self.rows[cell[0]], cell[1])

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt override
        if (watched is self.plot.viewport() and event.type() == QEvent.Type.MouseButtonDblClick
                and event.button() == Qt.MouseButton.LeftButton):
            cell = self.cell_at(self.plot.mapToScene(event.position().toPoint()))
            if cell is not None:
                self.cell_activated.emit(self.rows[cell[0]], cell[1])
                return True
        return super().eventFilter(watched, event)

    def _on_mouse_moved(self, pos: QPointF) -> None:
        cell = self.cell_at(pos)
        if cell is None:
            self.hover.setText("")
            return
        row, col = cell
        v = self.value_at(row, col)
        value = "–" if v is None else ("0 (unchanged)" if v <= -12 else f"{10 ** v:.4g}")
        self.hover.setText(f"{_short(self.row_labels[row], 60)} @ {_short(self.file_labels[col], 30)}: "
                           f"{METRIC_TEXT[self.metric_name].lower()} {value}")

    # -- colours --------------------------------------------------------------------------------
    def _apply_colors(self) -> None:
        style_plot(self.plot, self.palette())
        pen = QPen(self.palette().color(QPalette.ColorRole.Highlight))
        pen.setWidth(2)
        pen.setCosmetic(True)            # two pixels whatever the zoom
        self.marker.setPen(pen)
        self.empty.setColor(self.palette().color(QPalette.ColorRole.Text))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()


class LineChart(QWidget):
    """A metric of the checked tensors against the checkpoints' step / epoch / position."""

    metric_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg = pyqtgraph()
        self._pg = pg
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.metric_box = QComboBox(self)
        for key, text in LINE_METRICS:
            self.metric_box.addItem(text, key)
        self.metric_box.currentIndexChanged.connect(self._on_metric_changed)
        self.log_box = QCheckBox("Log scale", self)
        self.log_box.setChecked(True)
        self.log_box.toggled.connect(self._on_log_toggled)
        self.note = _plain("", self)
        head.addWidget(_plain("Checked tensors:", self))
        head.addWidget(self.metric_box)
        head.addWidget(self.log_box)
        head.addWidget(self.note, 1)
        lay.addLayout(head)
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMinimumHeight(120)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        lay.addWidget(self.plot, 1)
        self.curves: list = []
        self._apply_colors()

    @property
    def current_metric(self) -> str:            # not "metric": that would hide QWidget.metric()
        return self.metric_box.currentData()

    def set_curves(self, x: list[float], x_label: str, curves: list[tuple[str, list[float | None]]]) -> None:
        """One curve per (label, values); None values leave a gap."""
        pg = self._pg
        for c in self.curves:
            self.plot.removeItem(c)
        self.legend.clear()
        self.curves = []
        log = self.log_box.isChecked()
        hidden = empty = 0
        for k, (label, values) in enumerate(curves[:MAX_CURVES]):
            y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            if log:
                with np.errstate(divide="ignore", invalid="ignore"):
                    hidden += int(np.count_nonzero(np.isfinite(y) & (y <= 0)))
                    y = np.where(y > 0, y, np.nan)
            if not np.isfinite(y).any():
                empty += 1                # nothing to draw yet (pyqtgraph warns on all-NaN data)
                continue
            pen = pg.mkPen(CURVE_COLORS[k % len(CURVE_COLORS)], width=2)
            item = self.plot.plot(np.asarray(x, dtype=np.float64), y, pen=pen, symbol="o", symbolSize=5,
                                  symbolBrush=CURVE_COLORS[k % len(CURVE_COLORS)], name=_short(label, 48),
                                  connect="finite")
            self.curves.append(item)
        self.plot.setLogMode(x=False, y=log)
        self.plot.setLabel("bottom", x_label)
        notes = []
        if not curves:
            notes.append("check tensors in the list (or click the heatmap) to plot them")
        if len(curves) > MAX_CURVES:
            notes.append(f"showing the first {MAX_CURVES} of {len(curves)}")
        if hidden:
            notes.append(f"{hidden} values ≤ 0 not shown on the log scale")
        if empty:
            notes.append(f"{empty} without values (yet)")
        self.note.setText("; ".join(notes))
        self.plot.enableAutoRange()

    def _on_metric_changed(self, _index: int) -> None:
        self.log_box.setChecked(self.current_metric in ("norm", "rel_change", "growth", "std"))
        self.metric_changed.emit(self.current_metric)

    def _on_log_toggled(self, _on: bool) -> None:
        self.metric_changed.emit(self.current_metric)

    def _apply_colors(self) -> None:
        style_plot(self.plot, self.palette())
        self.legend.setLabelTextColor(self.palette().color(QPalette.ColorRole.Text))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()


class TrainingChart(QWidget):
    """Loss and learning rate per checkpoint (two plots sharing the x axis), as the files record them."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg = pyqtgraph()
        self._pg = pg
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.note = _plain("", self)
        lay.addWidget(self.note)
        self.plots = {}
        for name, label in (("loss", "loss"), ("lr", "learning rate")):
            p = pg.PlotWidget(self)
            p.setMenuEnabled(False)
            p.hideButtons()
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setLabel("left", label)
            p.setMinimumHeight(80)
            lay.addWidget(p, 1)
            self.plots[name] = p
        self.plots["lr"].setXLink(self.plots["loss"])
        self._apply_colors()

    def set_series(self, x: list[float], x_label: str, series: dict[str, list[float | None]]) -> None:
        pg = self._pg
        shown = []
        for k, (name, p) in enumerate(self.plots.items()):
            p.clear()
            values = series.get(name)
            p.setVisible(values is not None)
            if values is None:
                continue
            shown.append(name)
            y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            color = CURVE_COLORS[k]
            p.plot(np.asarray(x, dtype=np.float64), y, pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5,
                   symbolBrush=color, connect="finite")
            p.setLabel("bottom", x_label)
        other = [n for n in ("epoch", "step") if n in series]
        if shown:
            self.note.setText("As recorded in each checkpoint" + (f" (also: {', '.join(other)})" if other else "")
                              + ".")
        else:
            self.note.setText("The checkpoints record no loss or learning rate"
                              + (f" ({', '.join(other)} only)." if other else "."))

    def _apply_colors(self) -> None:
        for p in self.plots.values():
            style_plot(p, self.palette())

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()

