"""The Values view of the selected tensor: a heatmap of a 2-D plane (or a grid of convolution filters), a line
or bar plot of a vector, the number of a 0-D tensor, and a paged value table.

The panel reads nothing and computes nothing heavy: it says what it wants (:class:`ViewRequest`, through
``request_changed``) and draws what it is given (:class:`ViewResult`, whose heatmap arrives as RGBA bytes
coloured in a worker). A diverging colour map is centred on zero (blue negative, red positive, NaN in
magenta); with ``|x|`` or a log scale a sequential one is used. The value and tensor index under the
cursor are shown below the plot; the mouse wheel zooms and dragging pans. pyqtgraph is imported when the first
plot is made, after the window has been painted.
"""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QSlider,
    QSpinBox,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.planes import FilterGrid, Line, Plane, ViewRequest, ViewResult
from ...core.util.units import shape_text
from ..widgets.plots import pyqtgraph, style_plot
from ..widgets.theme import is_dark, plain_label
from .value_table import ValuesTable, value_text

DIVERGING = "CET-D1A"          # blue - white - red, centred on zero
SEQUENTIAL = "viridis"
BAR_LIMIT = 128                 # vectors up to this long are drawn as bars
SLIDER_DELAY_MS = 40            # slider moves are gathered for this long before a new plane is asked for


class ValuesPanel(QWidget):
    """``request_changed(ViewRequest)`` when the user picks another plane, axis, channel or mode;
    ``display_changed(bool, bool)`` when ``|x|`` or log is toggled (the same data, coloured again)."""

    request_changed = Signal(object)
    display_changed = Signal(bool, bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._shape: tuple[int, ...] | None = None
        self._dtype = ""
        self._filter_bank = False
        self._result: ViewResult | None = None
        self._building = False
        self._plot = None               # pyqtgraph objects, made on first use
        self._luts: dict | None = None
        self._cmaps: dict = {}

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.title = plain_label("Values", self)
        f = self.title.font()
        f.setBold(True)
        self.title.setFont(f)
        lay.addWidget(self.title)

        row = QHBoxLayout()
        self.rows_box = QComboBox(self)
        self.cols_box = QComboBox(self)
        self.rows_label = plain_label("Rows", self, wrap=False)
        self.cols_label = plain_label("Columns", self, wrap=False)
        self.filters_box = QCheckBox("Filters", self)
        self.filters_box.setToolTip("Show a convolution weight as a grid of its filters, one per output channel")
        self.abs_box = QCheckBox("|x|", self)
        self.abs_box.setToolTip("Colour by magnitude")
        self.log_box = QCheckBox("Log", self)
        self.log_box.setToolTip("Logarithmic colours: log10 |x| with |x|, else sign(x)·log10(1 + |x|/c)")
        for w in (self.rows_label, self.rows_box, self.cols_label, self.cols_box, self.filters_box):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(self.abs_box)
        row.addWidget(self.log_box)
        lay.addLayout(row)
        self.sliders_host = QWidget(self)
        self.sliders = QGridLayout(self.sliders_host)
        self.sliders.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.sliders_host)
        self._slider_widgets: dict[int, tuple[QSlider, QSpinBox]] = {}

        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.plot_stack = QStackedWidget(self.tabs)
        self.placeholder = plain_label("Select a tensor to see its values.", self.plot_stack)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setMinimumHeight(160)
        self.plot_stack.addWidget(self.placeholder)
        self.number = plain_label("", self.plot_stack)
        self.number.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.number.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        nf = self.number.font()
        nf.setPointSizeF(nf.pointSizeF() * 1.8)
        self.number.setFont(nf)
        self.plot_stack.addWidget(self.number)
        self.tabs.addTab(self.plot_stack, "Plot")
        self.table = ValuesTable(self.tabs)
        self.tabs.addTab(self.table, "Table")
        lay.addWidget(self.tabs, 1)
        self.note = plain_label("", self)
        self.hover = plain_label("", self, wrap=False)
        self.hover.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.note)
        lay.addWidget(self.hover)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SLIDER_DELAY_MS)
        self._timer.timeout.connect(self._emit_request)
        self.rows_box.currentIndexChanged.connect(lambda _i: self._on_axis_changed(self.rows_box))
        self.cols_box.currentIndexChanged.connect(lambda _i: self._on_axis_changed(self.cols_box))
        self.filters_box.toggled.connect(self._on_filters_toggled)
        self.abs_box.toggled.connect(self._on_display_toggled)
        self.log_box.toggled.connect(self._on_display_toggled)
        self._show_controls(False)

    # -- state ----------------------------------------------------------------------------------
    @property
    def result(self) -> ViewResult | None:
        return self._result

    def clear(self, message: str = "Select a tensor to see its values.") -> None:
        self._shape = None
        self._result = None
        self.title.setText("Values")
        self.placeholder.setText(message)
        self.plot_stack.setCurrentWidget(self.placeholder)
        self.note.setText("")
        self.hover.setText("")
        self._show_controls(False)
        self.table.set_layout(None)

    def set_tensor(self, title: str, shape: tuple[int, ...], dtype: str, request: ViewRequest,
                   filter_bank: bool, note: str = "") -> None:
        """A new tensor: rebuild the controls for its shape and show ``request``'s settings (nothing drawn yet)."""
        self._building = True
        try:
            self._shape = tuple(shape)
            self._dtype = dtype
            self._filter_bank = filter_bank
            self._result = None
            self.title.setText(f"{title}  {shape_text(shape)}  {dtype}")
            self.placeholder.setText("Reading values…")
            self.plot_stack.setCurrentWidget(self.placeholder)
            self.hover.setText("")
            self.note.setText(note)
            nd = len(shape)
            for box in (self.rows_box, self.cols_box):
                box.clear()
                for d, n in enumerate(shape):
                    box.addItem(f"dim {d} ({n:,})", d)
            if request.axes is not None:
                self.rows_box.setCurrentIndex(request.axes[0])
                self.cols_box.setCurrentIndex(request.axes[1])
            elif nd >= 2:
                self.rows_box.setCurrentIndex(nd - 2)
                self.cols_box.setCurrentIndex(nd - 1)
            self.filters_box.setVisible(filter_bank)
            self.filters_box.setChecked(request.mode == "grid")
            self.abs_box.setChecked(request.absolute)
            self.log_box.setChecked(request.log)
            self._rebuild_sliders(request)
            self._show_controls(nd >= 1)
        finally:
            self._building = False

    def _show_controls(self, on: bool) -> None:
        nd = len(self._shape) if self._shape is not None else 0
        plane = on and nd >= 2 and not (self._filter_bank and self.filters_box.isChecked())
        for w in (self.rows_label, self.rows_box, self.cols_label, self.cols_box):
            w.setVisible(plane)
        self.filters_box.setVisible(on and self._filter_bank)
        self.abs_box.setVisible(on)
        self.log_box.setVisible(on)
        self.sliders_host.setVisible(on and nd >= 2)

    def _rebuild_sliders(self, request: ViewRequest) -> None:
        while self.sliders.count():
            item = self.sliders.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self._slider_widgets = {}
        shape = self._shape or ()
        if len(shape) < 2:
            return
        grid = request.mode == "grid"
        if grid:
            dims = [1]
        else:
            shown = (self.rows_box.currentData(), self.cols_box.currentData())
            dims = [d for d in range(len(shape)) if d not in shown]
        for row, d in enumerate(dims):
            label = plain_label("input channel" if grid else f"dim {d}", self.sliders_host, wrap=False)
            slider = QSlider(Qt.Orientation.Horizontal, self.sliders_host)
            slider.setRange(0, max(0, shape[d] - 1))
            spin = QSpinBox(self.sliders_host)
            spin.setRange(0, max(0, shape[d] - 1))
            value = request.in_channel if grid else (request.index[d] if request.index and d < len(request.index)
                                                     else 0)
            slider.setValue(value)
            spin.setValue(value)
            slider.valueChanged.connect(spin.setValue)
            spin.valueChanged.connect(slider.setValue)
            spin.valueChanged.connect(self._on_slider_moved)
            self.sliders.addWidget(label, row, 0)
            self.sliders.addWidget(slider, row, 1)
            self.sliders.addWidget(spin, row, 2)
            self._slider_widgets[d] = (slider, spin)

    def current_request(self) -> ViewRequest | None:
        shape = self._shape
        if shape is None:
            return None
        absolute, log = self.abs_box.isChecked(), self.log_box.isChecked()
        if not shape:
            return ViewRequest("scalar", absolute=absolute, log=log)
        if len(shape) == 1:
            return ViewRequest("line", absolute=absolute, log=log)
        if self._filter_bank and self.filters_box.isChecked():
            channel = self._slider_widgets[1][1].value() if 1 in self._slider_widgets else 0
            return ViewRequest("grid", in_channel=channel, absolute=absolute, log=log)
        axes = (self.rows_box.currentData(), self.cols_box.currentData())
        index = tuple(self._slider_widgets[d][1].value() if d in self._slider_widgets else 0
                      for d in range(len(shape)))
        return ViewRequest("plane", axes, index, absolute=absolute, log=log)

    def slider(self, dim: int) -> QSlider | None:
        pair = self._slider_widgets.get(dim)
        return pair[0] if pair else None

    # -- user changes ---------------------------------------------------------------------------
    def _on_axis_changed(self, box: QComboBox) -> None:
        if self._building:
            return
        other = self.cols_box if box is self.rows_box else self.rows_box
        if box.currentData() == other.currentData():
            # The same axis twice: give the other box the axis this one had (the first free one).
            used = box.currentData()
            free = next(d for d in range(len(self._shape or ())) if d != used)
            self._building = True
            other.setCurrentIndex(free)
            self._building = False
        req = self.current_request()
        self._building = True
        try:
            self._rebuild_sliders(req)
        finally:
            self._building = False
        self._emit_request()

    def _on_filters_toggled(self, _on: bool) -> None:
        if self._building:
            return
        self._building = True
        try:
            req = self.current_request()
            self._rebuild_sliders(req)
            self._show_controls(True)
        finally:
            self._building = False
        self._emit_request()

    def _on_slider_moved(self, _value: int) -> None:
        if not self._building:
            self._timer.start()

    def _emit_request(self) -> None:
        self._timer.stop()
        req = self.current_request()
        if req is not None:
            self.hover.setText("")
            self.request_changed.emit(req)

    def _on_display_toggled(self, _on: bool) -> None:
        if not self._building:
            self.display_changed.emit(self.abs_box.isChecked(), self.log_box.isChecked())

    # -- drawing --------------------------------------------------------------------------------
    def luts(self) -> dict:
        """The colour maps as 256-entry RGBA tables (for the worker that colours heatmaps)."""
        if self._luts is None:
            pg = pyqtgraph()
            self._cmaps = {"diverging": pg.colormap.get(DIVERGING), "sequential": pg.colormap.get(SEQUENTIAL)}
            self._luts = {k: np.ascontiguousarray(m.getLookupTable(nPts=256, alpha=True), dtype=np.uint8)
                          for k, m in self._cmaps.items()}
        return self._luts

    def _ensure_plot(self) -> None:
        if self._plot is not None:
            return
        pg = pyqtgraph()
        self.luts()
        widget = pg.GraphicsLayoutWidget(self.plot_stack)
        widget.setMinimumHeight(160)
        plot = widget.addPlot(row=0, col=0)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.showGrid(x=False, y=False)
        image = pg.ImageItem(axisOrder="row-major")
        plot.addItem(image)
        bar = pg.ColorBarItem(values=(-1, 1), colorMap=self._cmaps["diverging"], interactive=False, width=14,
                              colorMapMenu=False)
        widget.addItem(bar, row=0, col=1)
        curve_low = plot.plot([], [])
        curve_high = plot.plot([], [])
        fill = pg.FillBetweenItem(curve_low, curve_high)
        plot.addItem(fill)
        bars = pg.BarGraphItem(x=[], height=[], width=0.8)
        plot.addItem(bars)
        widget.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self._plot = {"widget": widget, "plot": plot, "image": image, "bar": bar, "low": curve_low,
                      "high": curve_high, "fill": fill, "bars": bars}
        self.plot_stack.addWidget(widget)
        self._apply_colors()

    def _apply_colors(self) -> None:
        if self._plot is None:
            return
        pal = self.palette()
        style_plot(self._plot["widget"], pal, axes=self._plot["plot"])
        line = QColor("#5aa2ff" if is_dark() else "#1f6fd1")
        fill = QColor(line)
        fill.setAlpha(80)
        for key in ("low", "high"):
            self._plot[key].setPen(line)
        self._plot["fill"].setBrush(fill)
        self._plot["bars"].setOpts(brush=fill, pen=line)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        from PySide6.QtCore import QEvent
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()

    def show_error(self, message: str) -> None:
        self._result = None
        self.placeholder.setText(message)
        self.plot_stack.setCurrentWidget(self.placeholder)

    def set_result(self, result: ViewResult) -> None:
        """Draw a worker's answer (a preview, then the sharp view)."""
        self._result = result
        data = result.data
        notes = []
        if isinstance(data, (Plane, FilterGrid, Line)) and data.note:
            notes.append(data.note)
        if isinstance(data, Plane) or isinstance(data, Line):
            text = data.describe()
            if text:
                notes.append(text[0].upper() + text[1:] + ".")
        if isinstance(data, FilterGrid):
            more = f" (the first {data.count:,} of {data.total:,})" if data.count < data.total else ""
            notes.append(f"{data.count:,} filters{more} of {data.kh} x {data.kw} at input channel {data.in_channel}.")
        if result.shown is not None and isinstance(data, (Plane, FilterGrid)):
            shown_values = data.values if not isinstance(data, FilterGrid) else data.values[data.mask]
            bad = int(np.count_nonzero(~np.isfinite(shown_values)))
            if bad:
                notes.append(f"{bad:,} NaN or infinite value{'s' if bad != 1 else ''} shown: NaN in magenta, "
                             f"infinities at the ends of the scale.")
        self.note.setText(" ".join(notes))
        if result.request.mode == "scalar":
            vals = np.asarray(data).reshape(-1)
            self.number.setText("\n".join(value_text(v, full=True) for v in vals) + f"\n({self._dtype})")
            self.plot_stack.setCurrentWidget(self.number)
            return
        self._ensure_plot()
        p = self._plot
        self.plot_stack.setCurrentWidget(p["widget"])
        if isinstance(data, Line):
            self._draw_line(result, data)
        else:
            self._draw_image(result, data)

    def _draw_image(self, result: ViewResult, data) -> None:
        p = self._plot
        for key in ("low", "high"):
            p[key].setData([], [])
        p["fill"].hide()
        p["bars"].setOpts(x=[], height=[])
        p["image"].show()
        p["image"].setImage(result.rgba, autoLevels=False)
        grid = isinstance(data, FilterGrid)
        for ax in ("left", "bottom"):
            p["plot"].showAxis(ax, not grid)          # a mosaic's pixel numbers mean nothing
        if isinstance(data, Plane):
            rows, cols = data.full_shape
            a, b = data.axes
            p["plot"].setLabel("left", f"dim {a}")
            p["plot"].setLabel("bottom", f"dim {b}")
        else:
            rows, cols = data.values.shape
        p["image"].setRect(QRectF(0, 0, cols, rows))
        vb = p["plot"].getViewBox()
        vb.invertY(True)
        vb.setAspectLocked(isinstance(data, FilterGrid))
        vb.setLimits(xMin=-0.05 * cols, xMax=1.05 * cols, yMin=-0.05 * rows, yMax=1.05 * rows)
        vb.autoRange(padding=0)
        shown = result.shown
        bar = p["bar"]
        bar.show()
        bar.setColorMap(self._cmaps["diverging" if shown.diverging else "sequential"])
        bar.setLevels(shown.levels)
        bar.axis.setLabel(shown.label)

    def _draw_line(self, result: ViewResult, data: Line) -> None:
        p = self._plot
        p["image"].hide()
        p["bar"].hide()
        for ax in ("left", "bottom"):
            p["plot"].showAxis(ax, True)
        vb = p["plot"].getViewBox()
        vb.invertY(False)
        vb.setAspectLocked(False)
        vb.setLimits(xMin=None, xMax=None, yMin=None, yMax=None)
        low, high = result.shown.values, result.shown_high
        x = data.x.astype(np.float64)
        p["plot"].setLabel("left", result.shown.label)
        p["plot"].setLabel("bottom", "index")
        if data.bucket == 1 and data.length <= BAR_LIMIT:
            p["low"].setData([], [])
            p["high"].setData([], [])
            p["fill"].hide()
            p["bars"].setOpts(x=x, height=np.nan_to_num(low), width=0.8)
        else:
            p["bars"].setOpts(x=[], height=[])
            p["low"].setData(x, low, connect="finite")
            p["high"].setData(x, high, connect="finite")
            p["fill"].setVisible(data.bucket > 1)
        vb.enableAutoRange()
        vb.autoRange()

    # -- hover ----------------------------------------------------------------------------------
    def hover_text(self, x: float, y: float) -> str:
        """What is under view coordinates (x, y): the tensor index and its value."""
        result = self._result
        if result is None:
            return ""
        data = result.data
        if isinstance(data, Plane):
            col, row = int(math.floor(x)), int(math.floor(y))
            r, c = data.full_shape
            if not (0 <= row < r and 0 <= col < c):
                return ""
            pr, pc = row // data.step[0], col // data.step[1]
            idx = data.element_index(pr, pc) if not data.pooled else None
            v = data.values[pr, pc]
            if data.pooled:
                r0, c0 = pr * data.step[0], pc * data.step[1]
                return (f"block rows {r0}–{min(r, r0 + data.step[0]) - 1}, columns {c0}–{min(c, c0 + data.step[1]) - 1}"
                        f": largest magnitude {value_text(v, full=True)}")
            return f"[{', '.join(str(i) for i in idx)}] = {value_text(v, full=True)}  ({self._dtype})"
        if isinstance(data, FilterGrid):
            cell = data.cell_at(int(math.floor(y)), int(math.floor(x)))
            if cell is None:
                return ""
            o, i, j = cell
            v = data.values[int(math.floor(y)), int(math.floor(x))]
            return f"[{o}, {data.in_channel}, {i}, {j}] = {value_text(v, full=True)}  (filter {o})"
        if isinstance(data, Line):
            if data.length == 0:
                return ""
            k = int(round(x / data.bucket)) if data.bucket > 1 else int(round(x))
            if not 0 <= k < len(data.x):
                return ""
            if data.bucket == 1:
                return f"[{k}] = {value_text(data.low[k], full=True)}  ({self._dtype})"
            first = int(data.x[k])
            last = min(data.length, first + data.bucket) - 1
            return f"[{first}–{last}]: {value_text(data.low[k])} to {value_text(data.high[k])}"
        return ""

    def _on_mouse_moved(self, pos: QPointF) -> None:
        if self._plot is None:
            return
        plot = self._plot["plot"]
        if not plot.sceneBoundingRect().contains(pos):
            return
        pt = plot.getViewBox().mapSceneToView(pos)
        self.hover.setText(self.hover_text(pt.x(), pt.y()))
