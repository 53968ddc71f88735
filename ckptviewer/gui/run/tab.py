"""The Run tab: the checkpoints of a training run side by side, to see how each tensor moved.

A heatmap of tensors x checkpoints (relative change from the checkpoint before, the norm, or the norm
relative to the first), the list of tensors (sortable: which moved most, which froze; checkable to plot
them), a line chart of the checked tensors and of the selected one, the loss and learning rate the files
record, and the checkpoints themselves. Double-clicking a cell (or "Open in Checkpoint") opens that
checkpoint in its own tab with the tensor selected; "Merge…" averages the run's checkpoints.

Everything slow runs in this tab's :class:`TaskRunner`: "prepare" (open the files, order them, line the
keys up) and "trend" (read every tensor of every file once, in batches: the heatmap fills in row by row).
Stop keeps what was read; closing the tab cancels both and releases the files.
"""
from __future__ import annotations

import os
import threading
from functools import partial
from typing import Any

import numpy as np

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.trend import ORDER_TEXT, Run
from ...core.util.progress import Progress
from ...core.util.textsafe import safe_text
from ..widgets.messages import error_text
from ..widgets.settings import Settings
from ..widgets.theme import plain_label
from ..widgets.workers import TaskRunner, WorkerError
from .charts import LineChart, RunHeatmap, TrainingChart
from .model import RunFilesModel, RunLayersModel, entry_summary
from .work import (
    HEATMAP_METRICS,
    NUMBER_COLUMNS,
    RunSetup,
    RunView,
    TrendBatch,
    heatmap_matrix,
    metric_values,
    prepare_steps,
    trend_batches,
    visible_entries,
    x_axis,
)

_plain = partial(plain_label, wrap=False)   # labels here stay on one line unless asked

REDRAW_MS = 250
AUTO_CHECK = 3
# The page of charts is built this long after the tab is shown (a timer, not a posted call: the loading page's
# paint and the building then fall in different passes of the event loop, with input handled in between).
PAGE_DELAY_MS = 15


def run_title(paths: list[str]) -> str:
    if len(paths) == 1:
        return f"Run: {os.path.basename(os.path.normpath(paths[0]))}"
    return f"Run: {len(paths)} checkpoints"


class RunTab(QWidget):
    """The run made of ``setup.paths`` (files, or folders of checkpoints)."""

    ready = Signal(object)                      # the tab, once the files are open and lined up
    trend_finished = Signal(object)             # the tab, when every tensor was read
    trend_progressed = Signal(object)           # a TrendBatch, after its rows were shown
    failed = Signal(object, object)             # the tab, the WorkerError
    status_message = Signal(str)
    open_tensor_requested = Signal(str, object)  # checkpoint path, key path in it
    merge_requested = Signal(object)            # the run's checkpoint paths, in order

    def __init__(self, setup: RunSetup, settings: Settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setup = setup
        self.settings = settings
        self.view: RunView | None = None
        self.layers: RunLayersModel | None = None
        self.files_model: RunFilesModel | None = None
        self.error: WorkerError | None = None
        self.reading = False
        self.read_done = False
        self.current_entry: int | None = None
        self.current_file: int | None = None
        self.rows: list[int] = []                # the entries shown (filter applied), in key order
        self._row_labels: list[str] = []         # their keys' texts (the heatmap's row labels)
        self.runner = TaskRunner(self)
        self._batch_applied = threading.Event()     # replaced by each reading (see _start_reading)
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self.redraw)
        self._page: QWidget | None = None
        self._build()
        self._starting = False

    @property
    def title(self) -> str:
        return run_title(self.setup.paths)

    @property
    def run(self) -> Run | None:
        return self.view.run if self.view is not None else None

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.summary = _plain("", self)
        f = self.summary.font()
        f.setBold(True)
        self.summary.setFont(f)
        self.metric_box = QComboBox(self)
        for key, text in HEATMAP_METRICS:
            self.metric_box.addItem(text, key)
        self.metric_box.setToolTip("What the heatmap colours: ‖x_i − x_(i−1)‖ / ‖x_(i−1)‖, the L2 norm, or the "
                                   "norm divided by the first checkpoint's (log10 scale)")
        self.metric_box.currentIndexChanged.connect(lambda _i: self.redraw())
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("filter keys (e.g. encoder.layers.3)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(lambda _t: self._apply_filter())
        self.model_box = QCheckBox("Model tensors only", self)
        self.model_box.setChecked(True)
        self.model_box.setToolTip("Leave out optimizer state, integer tensors, counters and one-element values "
                                  "(a saved loss)")
        self.model_box.toggled.connect(lambda _on: self._apply_filter())
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(220)
        self.progress.setMaximumHeight(16)
        self.progress.setRange(0, 1000)
        self.progress.hide()
        self.stop_button = QToolButton(self)
        self.stop_button.setText("Stop")
        self.stop_button.setToolTip("Stop reading (the tensors read so far keep their numbers)")
        self.stop_button.clicked.connect(self.cancel_work)
        self.stop_button.hide()
        self.merge_button = QPushButton("Merge…", self)
        self.merge_button.setToolTip("Average the run's checkpoints (or some of them) into a new file")
        self.merge_button.clicked.connect(lambda: self.merge_requested.emit(self.checkpoint_paths()))
        self.merge_button.setEnabled(False)
        top.addWidget(self.summary)
        top.addStretch(1)
        top.addWidget(_plain("Heatmap:", self))
        top.addWidget(self.metric_box)
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.model_box)
        top.addWidget(self.progress)
        top.addWidget(self.stop_button)
        top.addWidget(self.merge_button)
        lay.addLayout(top)
        self.error_label = _plain("", self, wrap=True)
        self.error_label.setStyleSheet("color: #d9534f;")
        self.error_label.hide()
        lay.addWidget(self.error_label)

        self.stack = QStackedWidget(self)
        loading = QWidget(self)
        ll = QVBoxLayout(loading)
        ll.addStretch(1)
        self.loading_label = _plain(f"Opening the checkpoints of {safe_text(self.title, 120)}…", loading)
        self.loading_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loading_bar = QProgressBar(loading)
        self.loading_bar.setMaximumWidth(360)
        self.loading_bar.setRange(0, 0)
        ll.addWidget(self.loading_label)
        ll.addWidget(self.loading_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        ll.addStretch(2)
        self.stack.addWidget(loading)
        lay.addWidget(self.stack, 1)

    def _ensure_page(self) -> None:
        """Build the page the run is shown on (heatmap, tables, charts), once."""
        if self._page is not None:
            return
        page = QWidget(self)
        pl = QVBoxLayout(page)
        pl.setContentsMargins(0, 0, 0, 0)
        self.h_split = QSplitter(Qt.Orientation.Horizontal, page)
        self.heatmap = RunHeatmap(self.h_split)
        self.heatmap.cell_clicked.connect(self._on_cell_clicked)
        self.heatmap.cell_activated.connect(self._on_cell_activated)
        self.v_split = QSplitter(Qt.Orientation.Vertical, self.h_split)
        self.table = QTableView(self.v_split)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setSortingEnabled(True)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideLeft)       # the end of a key names the tensor
        self.table.doubleClicked.connect(self._on_table_double_clicked)
        lower = QWidget(self.v_split)
        low = QVBoxLayout(lower)
        low.setContentsMargins(0, 0, 0, 0)
        self.side_tabs = QTabWidget(lower)
        self.line_chart = LineChart(self.side_tabs)
        self.line_chart.metric_changed.connect(lambda _m: self._draw_lines())
        self.training_chart = TrainingChart(self.side_tabs)
        self.files_view = QTableView(self.side_tabs)
        self.files_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.files_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.files_view.verticalHeader().hide()
        self.side_tabs.addTab(self.line_chart, "Tensors")
        self.side_tabs.addTab(self.training_chart, "Training")
        self.side_tabs.addTab(self.files_view, "Checkpoints")
        low.addWidget(self.side_tabs, 1)
        row = QHBoxLayout()
        self.details = _plain("Click a cell of the heatmap or a tensor in the list.", lower, wrap=True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open in Checkpoint", lower)
        self.open_button.setToolTip("Open the selected checkpoint in a tab, with this tensor selected "
                                    "(or double-click a heatmap cell)")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_current)
        row.addWidget(self.details, 1)
        row.addWidget(self.open_button)
        low.addLayout(row)
        pl.addWidget(self.h_split)
        self.stack.addWidget(page)
        self._page = page
        for name, splitter, sizes in (("run-h", self.h_split, [700, 560]), ("run-v", self.v_split, [330, 420])):
            state = self.settings.splitter_state(name)
            if state is None or not splitter.restoreState(state):
                splitter.setSizes(sizes)

    # -- preparing ------------------------------------------------------------------------------
    def start(self) -> None:
        """Show the loading page and start opening the run. The page of charts and tables (five pyqtgraph
        plots) is built first, in the next pass of the event loop: not with the tab (the tab and its loading
        page paint first, two short pauses of the window instead of one long one), and before the worker
        starts (whose pure-Python reading would make every Qt call of the building wait for the GIL)."""
        self.error = None
        self.error_label.hide()
        self.stack.setCurrentIndex(0)
        if not self._starting:
            self._starting = True
            QTimer.singleShot(PAGE_DELAY_MS, self, self._start_preparing)

    def _start_preparing(self) -> None:
        self._starting = False
        self._ensure_page()
        self.runner.submit("prepare", prepare_steps, self.setup, on_progress=self._on_prepare_progress,
                           on_result=self._on_prepared, on_error=self._on_prepare_error)

    def _on_prepare_progress(self, p: Progress) -> None:
        if isinstance(p, Progress):
            self.loading_label.setText(safe_text(p.what, 300) + "…")
            if p.total:
                self.loading_bar.setRange(0, p.total)
                self.loading_bar.setValue(p.done)

    def _on_prepare_error(self, err: WorkerError) -> None:
        self.error = err
        self.error_label.setText(f"Could not open the run: {error_text(err.exc)}")
        self.error_label.show()
        self.loading_bar.hide()
        self.loading_label.setText("Nothing to show.")
        self.status_message.emit(self.error_label.text())
        self.failed.emit(self, err)

    def _on_prepared(self, view: RunView | None) -> None:
        if view is None:
            return
        self._ensure_page()
        run = view.run
        self.view = view
        self.layers = RunLayersModel(view, self)
        self.layers.checked_changed.connect(self._draw_lines)
        self.table.setModel(self.layers)
        self.table.selectionModel().currentRowChanged.connect(self._on_table_current_changed)
        # Fixed widths from the header texts: ResizeToContents would measure every row again on each
        # batch of numbers (a 100,000-key run froze the window for tens of seconds).
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        fm = self.table.fontMetrics()
        samples = {1: "[1024, 1024]", 2: "bfloat16"}
        for c in range(1, len(RunLayersModel.COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Interactive)
            text = RunLayersModel.COLUMNS[c]
            header.resizeSection(c, max(fm.horizontalAdvance(text), fm.horizontalAdvance(samples.get(c, "0.0001234")))
                                 + 20)
        self.files_model = RunFilesModel(view, self)
        self.files_view.setModel(self.files_model)
        self.files_view.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.files_view.selectionModel().currentRowChanged.connect(self._on_file_changed)
        self.current_file = len(run.files) - 1
        n_files = len(run.files)
        self.summary.setText(f"{n_files} checkpoint{'s' if n_files != 1 else ''}, ordered "
                             f"{ORDER_TEXT.get(run.order, run.order)}; {len(run.entries):,} tensors")
        if run.warnings:
            shown = "; ".join(safe_text(w, 200) for w in run.warnings[:3])
            self.error_label.setText(f"Left out: {shown}" + (f"; and {len(run.warnings) - 3} more"
                                                            if len(run.warnings) > 3 else ""))
            self.error_label.show()
        x, label = x_axis(run)
        self.training_chart.set_series(x, label, run.series())
        self.merge_button.setEnabled(n_files >= 2)
        self._apply_filter()
        self.stack.setCurrentWidget(self._page)
        self.ready.emit(self)
        self._start_reading()

    # -- reading --------------------------------------------------------------------------------
    def _start_reading(self) -> None:
        self.reading = True
        self.read_done = False
        self.progress.setValue(0)
        self.progress.show()
        self.stop_button.show()
        # The worker sends a batch only after the last one was applied here (see trend_batches).
        self._batch_applied = threading.Event()
        self._batch_applied.set()
        self.runner.submit("trend", trend_batches, self.view.run, self.setup.chunk_bytes, None,
                           self._batch_applied, on_progress=self._on_trend_step, on_result=self._on_trend_done,
                           on_error=self._on_trend_error)

    def _apply_batch(self, batch: TrendBatch) -> None:
        if self.view is None:
            return
        if batch.finished:
            self.view.add_ready(batch.finished, batch.rows)
            self.layers.refresh(batch.finished)
            self._redraw.start()
            shown = set(self.layers.checked) | ({self.current_entry} if self.current_entry is not None else set())
            if shown & set(batch.finished):
                self._draw_lines()
                self._show_details()
        if batch.total:
            self.progress.setValue(int(1000 * batch.fraction))

    def _on_trend_step(self, step: Any) -> None:
        if isinstance(step, TrendBatch):
            try:
                self._apply_batch(step)
                self.trend_progressed.emit(step)
            finally:
                self._batch_applied.set()
        elif isinstance(step, Progress) and step.total:
            self.progress.setValue(int(1000 * step.fraction))

    def _on_trend_done(self, batch: TrendBatch | None) -> None:
        if batch is None:
            return
        self._apply_batch(batch)
        self.reading = False
        self.read_done = True
        self.progress.hide()
        self.stop_button.hide()
        self._redraw.stop()
        self.redraw()
        if not self.layers.checked:
            self._auto_check()
        self.trend_finished.emit(self)
        self.status_message.emit(f"Read {len(self.view.run.files)} checkpoints of {safe_text(self.title, 80)}")

    def _on_trend_error(self, err: WorkerError) -> None:
        self.reading = False
        self.progress.hide()
        self.stop_button.hide()
        self.error_label.setText(f"Reading stopped: {error_text(err.exc)}")
        self.error_label.show()
        self.redraw()

    def _auto_check(self) -> None:
        """Plot the tensors that moved most, so the chart starts with something to look at."""
        rows = np.asarray(self.layers.rows, dtype=np.intp)
        if not rows.size:
            return
        moved = self.view.numbers[rows, NUMBER_COLUMNS.index(4)]     # NaN until read
        with np.errstate(invalid="ignore"):
            keep = moved > 0
        ranked = rows[keep][np.argsort(-moved[keep], kind="stable")]
        for i in ranked[:AUTO_CHECK].tolist():
            self.layers.set_checked(i, True)

    # -- drawing --------------------------------------------------------------------------------
    @property
    def heatmap_metric(self) -> str:
        return self.metric_box.currentData()

    def _apply_filter(self) -> None:
        if self.view is None:
            return
        self.rows = visible_entries(self.view, self.model_box.isChecked(), self.filter_edit.text())
        texts = self.view.texts
        self._row_labels = [texts[i] for i in self.rows]
        self.layers.set_rows(self.rows)
        self.redraw()
        if self.current_entry is not None:
            self._select_row(self.current_entry)

    def redraw(self) -> None:
        """Draw the heatmap from the numbers that have arrived."""
        if self.view is None:
            return
        run = self.view.run
        matrix = heatmap_matrix(self.view, self.rows, self.heatmap_metric)
        self.heatmap.set_matrix(matrix, self.rows, self._row_labels,
                                [safe_text(f.label, 80) for f in run.files], self.heatmap_metric)

    def _draw_lines(self) -> None:
        if self.view is None:
            return
        run = self.view.run
        entries = list(self.layers.checked)
        if self.current_entry is not None and self.current_entry not in entries:
            entries.append(self.current_entry)
        metric = self.line_chart.current_metric
        curves = [(self.view.texts[i], metric_values(run.entries[i], metric)
                   if i in self.view.ready else [None] * len(run.files)) for i in entries]
        x, label = x_axis(run)
        self.line_chart.set_curves(x, label, curves)

    # -- selection and click-through ------------------------------------------------------------
    def select(self, entry: int | None, file: int | None = None) -> None:
        """Make ``entry`` (at checkpoint ``file``) the current tensor: details, heatmap marker, chart."""
        self.current_entry = entry
        if file is not None:
            self.current_file = file
        self.heatmap.select(entry, self.current_file)
        self._show_details()
        self._draw_lines()
        if entry is not None:
            self._select_row(entry)

    def _show_details(self) -> None:
        if self.view is None or self.current_entry is None:
            self.details.setText("Click a cell of the heatmap or a tensor in the list.")
            self.open_button.setEnabled(False)
            return
        self.details.setText("\n".join(entry_summary(self.view, self.current_entry, self.current_file)))
        self.open_button.setEnabled(self.target() is not None)

    def _select_row(self, entry: int) -> None:
        row = self.layers.row_of(entry)
        if row is None:
            return
        idx = self.layers.index(row, 0)
        sel = self.table.selectionModel()
        if sel.currentIndex().row() != row:
            sel.setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(idx)

    def target(self) -> tuple[str, tuple] | None:
        """(checkpoint path, key path there) of the current tensor at the current checkpoint."""
        if self.view is None or self.current_entry is None or self.current_file is None:
            return None
        e = self.view.run.entries[self.current_entry]
        path = e.paths[self.current_file] if 0 <= self.current_file < len(e.paths) else None
        if path is None:
            return None
        return self.view.run.files[self.current_file].path, path

    def open_current(self) -> bool:
        t = self.target()
        if t is None:
            self.status_message.emit("That checkpoint has no such tensor.")
            return False
        self.open_tensor_requested.emit(t[0], t[1])
        return True

    def checkpoint_paths(self) -> list[str]:
        return [f.path for f in self.view.run.files] if self.view is not None else list(self.setup.paths)

    def _on_cell_clicked(self, entry: int, file: int) -> None:
        self.select(entry, file)

    def _on_cell_activated(self, entry: int, file: int) -> None:
        self.select(entry, file)
        self.open_current()

    def _on_table_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        entry = self.layers.entry_at(current.row()) if current.isValid() else None
        if entry is not None and entry != self.current_entry:
            self.select(entry)

    def _on_table_double_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.select(self.layers.entry_at(index.row()))
            self.open_current()

    def _on_file_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.select(self.current_entry, current.row())

    # -- work and shutdown ----------------------------------------------------------------------
    def has_pending_work(self) -> bool:
        return self._starting or self.runner.is_busy()

    def cancel_work(self) -> None:
        """Stop reading; the tensors read so far keep their numbers."""
        self.runner.cancel()
        if self.reading:
            self.reading = False
            self.progress.hide()
            self.stop_button.hide()
            self.redraw()
            self.status_message.emit("Reading stopped; the tensors read so far are shown")

    def shutdown(self, wait: bool = False) -> None:
        """Cancel the workers and release the files (a worker ends at its next chunk)."""
        self._redraw.stop()
        self.runner.shutdown(wait=wait)
        if self.view is not None:
            self.view.run.close()

    def save_state(self) -> None:
        if self._page is None:
            return
        for name, splitter in (("run-h", self.h_split), ("run-v", self.v_split)):
            self.settings.set_splitter_state(name, splitter.saveState())
