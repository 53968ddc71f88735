"""The diff tab: two checkpoints (or two parts of them) compared key by key.

One merged tree (``DiffTreeModel`` over the core's ``DiffRun`` entries, grouped by key path) with a
status per row, a "differences only" filter and the counts of each status; for the selected pair both
histograms overlaid plus the histogram of A − B, with the metrics; a scalar shows old → new; and a
per-layer chart of relative change in key order, where clicking a column selects that key.

Everything slow runs in this tab's :class:`TaskRunner`: "prepare" (open both files, select / strip,
line up the keys, build the tree), "compare" (the tensor pairs, chunk by chunk; rows fill in as the
batches arrive) and "hist" (the selected pair's values). Closing the tab cancels all three.
"""
from __future__ import annotations

import math
import os
from functools import partial
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.diff import COUNT_TEXT, STATUS_TEXT, STATUSES
from ...core.model.tensor import TensorRef
from ...core.model.tree import value_text
from ...core.util.locations import is_url, location_name
from ...core.util.progress import Progress
from ...core.util.textsafe import safe_text
from ...core.util.units import human_bytes, shape_text
from ..widgets.messages import error_text
from ..widgets.settings import Settings
from ..widgets.theme import plain_label
from ..widgets.workers import TaskRunner, WorkerError
from .charts import LayerChart, PairHistogramPanel
from .model import DiffTreeModel, side_text, status_color
from .work import (
    CompareBatch,
    DiffNode,
    DiffSession,
    DiffSetup,
    PairHistograms,
    compare_steps,
    pair_histogram_steps,
    prepare_steps,
)

_plain = partial(plain_label, wrap=False)   # labels here stay on one line unless asked

AUTO_EXPAND_TOP = 12
AUTO_EXPAND_LEAVES = 2_000
FILE_FILTER = "Checkpoints (*.pt *.pth *.tar *.bin *.ckpt *.safetensors *.pkl);;All files (*)"


def ask_compare_paths(parent: QWidget, current: str | None, start: str = "") -> tuple[str, str] | None:
    """Ask for the files of a comparison: B for the current file, or A then B."""
    if current:
        b, _ = QFileDialog.getOpenFileName(parent, f"Compare {location_name(current)} with…",
                                           start or ("" if is_url(current) else os.path.dirname(current)),
                                           FILE_FILTER)
        return (current, b) if b else None
    a, _ = QFileDialog.getOpenFileName(parent, "Compare: choose the first checkpoint (A)", start, FILE_FILTER)
    if not a:
        return None
    b, _ = QFileDialog.getOpenFileName(parent, "Compare: choose the second checkpoint (B)",
                                       os.path.dirname(a), FILE_FILTER)
    return (a, b) if b else None


def _num(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return f"{x:.6g}"


class DiffTab(QWidget):
    """A diff of ``setup.path_a`` (A) against ``setup.path_b`` (B)."""

    ready = Signal(object)                  # the tab, once the tree is shown
    compare_finished = Signal(object)       # the tab, when every pair is compared
    compare_progressed = Signal(object)     # a CompareBatch, after its rows were filled in
    failed = Signal(object, object)         # the tab, the WorkerError
    status_message = Signal(str)

    def __init__(self, setup: DiffSetup, settings: Settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setup = setup
        self.settings = settings
        self.session: DiffSession | None = None
        self.model: DiffTreeModel | None = None
        self.error: WorkerError | None = None
        self.comparing = False
        self.compare_done = False
        self.last_pair: PairHistograms | None = None
        self._hist_for: DiffNode | None = None
        self.runner = TaskRunner(self)
        self._build()

    # -- layout ---------------------------------------------------------------------------------
    @property
    def title(self) -> str:
        a, b = location_name(self.setup.path_a), location_name(self.setup.path_b)
        return f"{a} ⇄ {b}"

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        files = QHBoxLayout()
        self.label_a = _plain("", self)
        self.label_b = _plain("", self)
        for lab, which in ((self.label_a, "a"), (self.label_b, "b")):
            from .charts import side_color
            lab.setStyleSheet(f"color: {side_color(which).name()}; font-weight: bold;")
        swap = QToolButton(self)
        swap.setObjectName("swap")
        swap.setText("⇄ Swap")
        swap.setToolTip("Compare B against A instead")
        swap.clicked.connect(self._on_swap_clicked)
        files.addWidget(self.label_a)
        files.addWidget(swap)
        files.addWidget(self.label_b)
        files.addStretch(1)
        lay.addLayout(files)

        opts = QHBoxLayout()
        self.select_a = QLineEdit(self)
        self.select_a.setPlaceholderText("select in A (e.g. model_state_dict)")
        self.select_b = QLineEdit(self)
        self.select_b.setPlaceholderText("select in B")
        self.strip_box = QCheckBox("Strip module. / _orig_mod. prefixes", self)
        self.model_box = QCheckBox("Model weights only", self)
        self.model_box.setToolTip("Compare the model's state_dict of each file (a training checkpoint's "
                                  "model_state_dict against a plain state_dict, say)")
        self.atol_edit = QLineEdit(self)
        self.rtol_edit = QLineEdit(self)
        for edit, tip in ((self.atol_edit, "absolute tolerance, as torch.allclose"),
                          (self.rtol_edit, "relative tolerance, as torch.allclose")):
            edit.setMaximumWidth(80)
            edit.setToolTip(tip)
        self.compare_button = QPushButton("Compare", self)
        self.compare_button.setToolTip("Compare again with these options")
        self.compare_button.clicked.connect(self._on_compare_clicked)
        for w in (self.select_a, self.select_b, self.atol_edit, self.rtol_edit):
            w.returnPressed.connect(self._on_compare_clicked)
        opts.addWidget(self.select_a, 2)
        opts.addWidget(self.select_b, 2)
        opts.addWidget(self.model_box)
        opts.addWidget(self.strip_box)
        opts.addWidget(_plain("atol", self))
        opts.addWidget(self.atol_edit)
        opts.addWidget(_plain("rtol", self))
        opts.addWidget(self.rtol_edit)
        opts.addWidget(self.compare_button)
        lay.addLayout(opts)

        counts = QHBoxLayout()
        self.verdict = _plain("", self)
        f = self.verdict.font()
        f.setBold(True)
        self.verdict.setFont(f)
        counts.addWidget(self.verdict)
        self.count_labels: dict[str, QLabel] = {}
        for status in STATUSES:
            lab = _plain("", self)
            lab.setStyleSheet(f"color: {status_color(status).name()};")
            lab.hide()
            self.count_labels[status] = lab
            counts.addWidget(lab)
        counts.addStretch(1)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(220)
        self.progress.setMaximumHeight(16)
        self.progress.hide()
        self.cancel_button = QToolButton(self)
        self.cancel_button.setText("Stop")
        self.cancel_button.setToolTip("Stop comparing (rows compared so far keep their results)")
        self.cancel_button.clicked.connect(self.cancel_work)
        self.cancel_button.hide()
        counts.addWidget(self.progress)
        counts.addWidget(self.cancel_button)
        lay.addLayout(counts)

        self.hint_label = _plain("", self, wrap=True)
        self.hint_label.hide()
        lay.addWidget(self.hint_label)
        self.error_label = _plain("", self, wrap=True)
        self.error_label.setStyleSheet("color: #d9534f;")
        self.error_label.hide()
        lay.addWidget(self.error_label)

        self.stack = QStackedWidget(self)
        loading = QWidget(self)
        ll = QVBoxLayout(loading)
        ll.addStretch(1)
        self.loading_label = _plain("", loading)
        self.loading_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loading_bar = QProgressBar(loading)
        self.loading_bar.setRange(0, 0)
        self.loading_bar.setMaximumWidth(360)
        ll.addWidget(self.loading_label)
        ll.addWidget(self.loading_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        ll.addStretch(2)
        self.stack.addWidget(loading)

        page = QWidget(self)
        pl = QVBoxLayout(page)
        pl.setContentsMargins(0, 0, 0, 0)
        self.v_split = QSplitter(Qt.Orientation.Vertical, page)
        self.h_split = QSplitter(Qt.Orientation.Horizontal, self.v_split)
        left = QWidget(self.h_split)
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 0, 0)
        self.diff_only_box = QCheckBox("Differences only", left)
        self.diff_only_box.setToolTip("Hide keys whose values are identical")
        self.diff_only_box.toggled.connect(self._on_diff_only_toggled)
        left_lay.addWidget(self.diff_only_box)
        self.view = QTreeView(left)
        self.view.setUniformRowHeights(True)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        left_lay.addWidget(self.view, 1)
        right = QSplitter(Qt.Orientation.Vertical, self.h_split)
        details = QFrame(right)
        dl = QVBoxLayout(details)
        dl.setContentsMargins(4, 0, 0, 0)
        self.headline = _plain("Select a key to see how it changed.", details, wrap=True)
        hf = self.headline.font()
        hf.setPointSizeF(hf.pointSizeF() * 1.25)
        self.headline.setFont(hf)
        self.headline.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QPlainTextEdit(details)
        self.details.setReadOnly(True)
        self.details.setFrameShape(QFrame.Shape.NoFrame)
        dl.addWidget(self.headline)
        dl.addWidget(self.details, 1)
        self.histograms = PairHistogramPanel(right, log_counts=self.settings.log_counts())
        self.histograms.log_toggled.connect(self.settings.set_log_counts)
        self.chart = LayerChart(self.v_split)
        self.chart.entry_clicked.connect(self._on_chart_clicked)
        pl.addWidget(self.v_split)
        self.stack.addWidget(page)
        self._page = page
        lay.addWidget(self.stack, 1)
        for name, splitter, sizes in (("diff-h", self.h_split, [640, 520]), ("diff-v", self.v_split, [560, 190]),
                                      ("diff-r", right, [170, 380])):
            state = self.settings.splitter_state(name)
            if state is None or not splitter.restoreState(state):
                splitter.setSizes(sizes)
        self._right = right
        self._show_setup(self.setup)

    def _show_setup(self, setup: DiffSetup) -> None:
        a, b = location_name(setup.path_a), location_name(setup.path_b)
        self.label_a.setText(f"A: {safe_text(a, 80)}")
        self.label_a.setToolTip(safe_text(setup.path_a, 400))
        self.label_b.setText(f"B: {safe_text(b, 80)}")
        self.label_b.setToolTip(safe_text(setup.path_b, 400))
        self.histograms.set_names(safe_text(a, 40), safe_text(b, 40))
        self.select_a.setText(setup.select_a)
        self.select_b.setText(setup.select_b)
        self.strip_box.setChecked(setup.strip_prefix)
        self.model_box.setChecked(setup.model_only)
        self.atol_edit.setText(f"{setup.atol:g}")
        self.rtol_edit.setText(f"{setup.rtol:g}")

    # -- preparing ------------------------------------------------------------------------------
    @property
    def is_ready(self) -> bool:
        return self.session is not None

    def start(self, setup: DiffSetup | None = None) -> None:
        """(Re)start the comparison; the files stay open when only the options changed."""
        old = self.session
        setup = setup or self.setup
        reuse = (old.ckpt_a, old.ckpt_b) if old is not None and setup.same_files(old.setup) else None
        self.runner.cancel()
        self.setup = setup
        self.error = None
        self.error_label.hide()
        self.comparing = False
        self.compare_done = False
        self._show_setup(setup)
        self.loading_label.setText(f"Opening {safe_text(location_name(setup.path_a))} and "
                                   f"{safe_text(location_name(setup.path_b))}…")
        if self.session is None:
            self.stack.setCurrentIndex(0)
        self.compare_button.setEnabled(False)
        self.runner.submit("prepare", prepare_steps, setup, reuse, on_progress=self._on_prepare_progress,
                           on_result=lambda s, r=reuse: self._on_prepared(s, r),
                           on_error=self._on_prepare_error)

    def _on_prepare_progress(self, p: Progress) -> None:
        self.loading_label.setText(safe_text(p.what, 300) + "…")

    def _on_prepare_error(self, err: WorkerError) -> None:
        self.error = err
        self.compare_button.setEnabled(True)
        self.error_label.setText(f"Could not compare: {error_text(err.exc)}")
        self.error_label.show()
        self.loading_bar.hide()
        self.loading_label.setText("Nothing to show: change the options above and press Compare.")
        self.status_message.emit(self.error_label.text())
        self.failed.emit(self, err)

    def _on_prepared(self, session: DiffSession | None, reused) -> None:
        if session is None:
            return
        old = self.session
        if old is not None and reused is None:
            old.close()
        self.session = session
        self.compare_button.setEnabled(True)
        self._install_model(session)
        self.chart.set_entries(session.chart_entries, session.chart_labels)
        self.stack.setCurrentWidget(self._page)
        self._update_counts()
        self._show_hint(session)
        self.ready.emit(self)
        if session.run.pending:
            self._start_compare()
        else:
            self._on_compare_done(CompareBatch([], 0, 0))

    def _show_hint(self, session: DiffSession) -> None:
        """When no key is on both sides, say how to line the two files up."""
        counts = session.run.counts()
        nothing_shared = session.run.entries and counts["only_a"] + counts["only_b"] == len(session.run.entries)
        if not nothing_shared:
            # How the sides were lined up (a checkpoint's one state_dict against a bare one, a prefix
            # stripped), said in words; nothing when they were compared as they are.
            self.hint_label.setText(safe_text("; ".join(session.notes), 800) if session.notes else "")
            self.hint_label.setVisible(bool(session.notes))
            return
        tips = []
        if not session.setup.model_only:
            tips.append("tick “Model weights only” to compare the model's state_dict of each file")
        if not session.setup.strip_prefix:
            tips.append("strip the module. prefixes of DataParallel")
        tips.append("or name the part of each file to compare (select in A / B)")
        self.hint_label.setText("No key is in both A and B. To line them up, " + ", ".join(tips) + ".")
        self.hint_label.show()

    def _install_model(self, session: DiffSession) -> None:
        old_model = self.model
        old_sel = self.view.selectionModel()
        self.model = DiffTreeModel(session.root, self)
        self.model.set_differences_only(self.diff_only_box.isChecked())
        self.view.setModel(self.model)
        self.view.selectionModel().currentChanged.connect(self._on_current_changed)
        if old_sel is not None:
            old_sel.deleteLater()
        if old_model is not None:
            old_model.deleteLater()
        header = self.view.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((220, 120, 80, 80, 70, 170, 170)):
            self.view.setColumnWidth(col, width)
        self._auto_expand()
        self._show_node(None)

    def _auto_expand(self) -> None:
        model = self.model
        if model is None:
            return
        if model.differences_only and model.root.n_differ <= AUTO_EXPAND_LEAVES:
            self._expand_all_fetched()
            return
        top = model.kids(None)
        if len(top) > AUTO_EXPAND_TOP:
            return
        for row, node in enumerate(top):
            if node.children and node.n_leaves <= AUTO_EXPAND_LEAVES:
                self.view.expand(model.index(row, 0))

    def _expand_all_fetched(self) -> None:
        model = self.model
        model.fetch_all(QModelIndex())
        stack = [model.index(r, 0) for r in range(model.rowCount())]
        while stack:
            idx = stack.pop()
            if model.hasChildren(idx):
                model.fetch_all(idx)
                self.view.expand(idx)
                stack.extend(model.index(r, 0, idx) for r in range(model.rowCount(idx)))

    # -- comparing ------------------------------------------------------------------------------
    def _start_compare(self) -> None:
        self.comparing = True
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("comparing %p%")
        self.progress.show()
        self.cancel_button.show()
        self.runner.submit("compare", compare_steps, self.session.run, on_progress=self._on_compare_batch,
                           on_result=self._on_compare_done, on_error=self._on_compare_error)

    def _apply_batch(self, batch: CompareBatch) -> None:
        s = self.session
        if s is None:
            return
        if batch.finished:
            leaves = [s.leaves[i] for i in batch.finished]
            changed = self.model.apply_finished(leaves)
            self.chart.set_values(self._chart_items(batch.finished))
            current = self.current_node()
            if current is not None and any(leaf is current or current in leaf.ancestors() for leaf in changed):
                self._show_node(current, refresh_histogram=False)
            self._update_counts()
        if batch.total:
            self.progress.setValue(int(1000 * batch.fraction))

    def _chart_items(self, indices) -> list[tuple[int, str, float]]:
        entries = self.session.run.entries
        out = []
        for i in indices:
            e = entries[i]
            if e.status in ("same", "changed", "dtype") and e.metrics is not None:
                out.append((i, e.status, 0.0 if e.status == "same" else e.metrics.relative_change))
            elif e.status == "error":
                out.append((i, "error", math.nan))
        return out

    def _on_compare_batch(self, batch: Any) -> None:
        if isinstance(batch, CompareBatch):
            self._apply_batch(batch)
            self.compare_progressed.emit(batch)

    def _on_compare_done(self, batch: CompareBatch | None) -> None:
        if batch is None:
            return
        self._apply_batch(batch)
        self.comparing = False
        self.compare_done = True
        self.progress.hide()
        self.cancel_button.hide()
        self._finish_chart(batch.layer_changes)
        self._update_counts()
        self.compare_finished.emit(self)

    def _finish_chart(self, changes: list[tuple[str, float]] | None) -> None:
        """The chart's final heights come from the core's ``layer_changes`` (key order; computed by the
        worker with the last batch, or here when nothing had to be compared)."""
        run = self.session.run
        final = [i for i in self.session.chart_entries
                 if run.entries[i].status in ("same", "changed", "dtype") and run.entries[i].metrics is not None]
        if changes is None:
            changes = run.layer_changes()
        if len(changes) == len(final):
            self.chart.set_values([(i, run.entries[i].status, value) for i, (_, value) in zip(final, changes)])
        self.chart.flush()

    def _on_compare_error(self, err: WorkerError) -> None:
        self.comparing = False
        self.progress.hide()
        self.cancel_button.hide()
        self.error_label.setText(f"Comparing stopped: {error_text(err.exc)}")
        self.error_label.show()
        self._update_counts()

    def _update_counts(self) -> None:
        root = self.session.root if self.session is not None else None
        if root is None:
            return
        for i, status in enumerate(STATUSES):
            n = root.counts[i]
            lab = self.count_labels[status]
            lab.setVisible(n > 0)
            lab.setText(f"● {n:,} {COUNT_TEXT[status]}")
        if root.n_differ:
            self.verdict.setText("Different:")
            self.verdict.setStyleSheet(f"color: {status_color('changed').name()};")
        elif root.n_pending:
            self.verdict.setText("Comparing…" if self.comparing else "Not compared:")
            self.verdict.setStyleSheet("")
        else:
            self.verdict.setText("Identical:")
            self.verdict.setStyleSheet(f"color: {status_color('same').name()};")

    # -- work and shutdown ----------------------------------------------------------------------
    def has_pending_work(self) -> bool:
        return self.runner.is_busy()

    def cancel_work(self) -> None:
        """Stop comparing; the rows compared so far keep their results."""
        self.runner.cancel()
        self.comparing = False
        self.progress.hide()
        self.cancel_button.hide()
        self.compare_button.setEnabled(True)
        self._update_counts()
        self.status_message.emit("Comparison stopped")

    def shutdown(self, wait: bool = False) -> None:
        """Cancel every worker of this tab and release both files (without waiting, by default: a
        worker ends at its next chunk, and a read of a closed file raises instead of crashing)."""
        self.runner.shutdown(wait=wait)
        if self.session is not None:
            self.session.close()

    def save_state(self) -> None:
        for name, splitter in (("diff-h", self.h_split), ("diff-v", self.v_split), ("diff-r", self._right)):
            self.settings.set_splitter_state(name, splitter.saveState())

    # -- options --------------------------------------------------------------------------------
    def options_from_widgets(self) -> DiffSetup | None:
        try:
            atol = float(self.atol_edit.text() or "1e-8")
            rtol = float(self.rtol_edit.text() or "1e-5")
        except ValueError:
            self.error_label.setText("atol and rtol must be numbers, e.g. 1e-8 and 1e-5.")
            self.error_label.show()
            return None
        if not (atol >= 0 and rtol >= 0):
            self.error_label.setText("atol and rtol must be zero or positive.")
            self.error_label.show()
            return None
        return DiffSetup(self.setup.path_a, self.setup.path_b, self.select_a.text().strip(),
                         self.select_b.text().strip(), self.strip_box.isChecked(), self.model_box.isChecked(),
                         atol, rtol, self.setup.chunk_bytes)

    def _on_compare_clicked(self) -> None:
        setup = self.options_from_widgets()
        if setup is not None:
            self.start(setup)

    def _on_swap_clicked(self) -> None:
        s = self.options_from_widgets() or self.setup
        self.start(DiffSetup(s.path_b, s.path_a, s.select_b, s.select_a, s.strip_prefix, s.model_only, s.atol,
                             s.rtol, s.chunk_bytes))

    def _on_diff_only_toggled(self, on: bool) -> None:
        if self.model is None:
            return
        current = self.current_node()
        self.model.set_differences_only(on)
        self._auto_expand()
        if current is not None:
            idx = self.model.index_for_node(current)
            if idx.isValid():
                self._select_index(idx)

    # -- selection ------------------------------------------------------------------------------
    def current_node(self) -> DiffNode | None:
        if self.model is None:
            return None
        return self.model.node_from_index(self.view.currentIndex())

    def select_node(self, node: DiffNode) -> bool:
        """Select ``node`` in the tree (showing all keys if the filter hides it)."""
        if self.model is None:
            return False
        idx = self.model.index_for_node(node)
        if not idx.isValid() and self.model.differences_only:
            self.diff_only_box.setChecked(False)
            idx = self.model.index_for_node(node)
        if not idx.isValid():
            return False
        self._select_index(idx)
        return True

    def _select_index(self, idx: QModelIndex) -> None:
        parent = idx.parent()
        while parent.isValid():
            self.view.expand(parent)
            parent = parent.parent()
        self.view.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.view.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)

    def select_entry(self, index: int) -> bool:
        if self.session is None or not 0 <= index < len(self.session.leaves):
            return False
        return self.select_node(self.session.leaves[index])

    def select_path(self, path: tuple) -> bool:
        if self.session is None:
            return False
        for leaf in self.session.leaves:
            if tuple(leaf.entry.path) == tuple(path):
                return self.select_node(leaf)
        return False

    def biggest_change(self) -> int | None:
        """The entry index with the largest finite relative change (or the first difference)."""
        if self.session is None:
            return None
        best, best_value = None, -1.0
        for i, leaf in enumerate(self.session.leaves):
            e = leaf.entry
            if leaf.status in ("changed", "dtype") and e.metrics is not None:
                v = e.metrics.relative_change
                if math.isfinite(v) and v > best_value:
                    best, best_value = i, v
            elif best is None and leaf.status not in ("same", "pending"):
                best = i
        return best

    def _on_chart_clicked(self, entry_index: int) -> None:
        if self.select_entry(entry_index):
            self.view.setFocus(Qt.FocusReason.MouseFocusReason)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._show_node(self.model.node_from_index(current) if self.model is not None else None)

    # -- details --------------------------------------------------------------------------------
    def _show_node(self, node: DiffNode | None, refresh_histogram: bool = True) -> None:
        if refresh_histogram:
            self.runner.cancel("hist")
            self.last_pair = None
            self._hist_for = None
        self.chart.select_entry(node.index if node is not None and node.entry is not None else None)
        if node is None:
            self.headline.setText("Select a key to see how it changed.")
            self.details.setPlainText("")
            if refresh_histogram:
                self.histograms.clear("Select a tensor to compare the distributions of its values.")
            return
        if node.entry is None:
            self.headline.setText(f"{node.prefix or node.name}")
            lines = [f"{node.n_leaves:,} keys below"]
            for i, status in enumerate(STATUSES):
                if node.counts[i]:
                    lines.append(f"  {node.counts[i]:,} {COUNT_TEXT[status]}")
            self.details.setPlainText("\n".join(lines))
            if refresh_histogram:
                self.histograms.clear("Histograms are drawn for tensors.")
            return
        e = node.entry
        status = node.status
        self.headline.setText(self.headline_text(node))
        self.details.setPlainText("\n".join(self.detail_lines(node)))
        if not refresh_histogram:
            return
        a = e.a if isinstance(e.a, TensorRef) and status != "only_b" else None
        b = e.b if isinstance(e.b, TensorRef) and status != "only_a" else None
        if a is None and b is None:
            self.histograms.clear("Histograms are drawn for tensors.")
            return
        for t in (a, b):
            if t is not None and (not t.readable or t.numel == 0):
                self.histograms.clear("No histogram: " + ("the tensor is empty." if t.readable else
                                      f"values cannot be read ({safe_text(t.problem or '', 200)})."))
                return
        self._hist_for = node
        self.histograms.clear("Reading the values…")
        self.runner.submit("hist", pair_histogram_steps, a, b, on_progress=self._on_hist_step,
                           on_result=self._on_hist_done, on_error=self._on_hist_error)

    def headline_text(self, node: DiffNode) -> str:
        e = node.entry
        status = node.status
        if status == "value" or (status == "same" and not e.is_tensor):
            return f"{safe_text(value_text(e.a, 80), 100)} → {safe_text(value_text(e.b, 80), 100)}" \
                if status == "value" else f"{safe_text(value_text(e.a, 80), 100)} (unchanged)"
        if status == "only_a":
            return f"Only in A: {side_text(e.a)}"
        if status == "only_b":
            return f"Only in B: {side_text(e.b)}"
        if status == "shape":
            return f"Shape {shape_text(e.a.shape)} → {shape_text(e.b.shape)}"
        if status == "dtype":
            return f"DType {e.a.dtype.name} → {e.b.dtype.name}"
        if status == "changed":
            return f"Values changed: relative change {_num(e.metrics.relative_change)}"
        if status == "same":
            return "Identical values" + (f" (saved on {safe_text(e.device_change, 40)})" if e.device_change else "")
        if status == "pending":
            return "Not compared yet…"
        return f"Unreadable: {safe_text(e.error, 200)}"

    def detail_lines(self, node: DiffNode) -> list[str]:
        e = node.entry
        lines = [f"Key: {node.prefix}", f"Status: {STATUS_TEXT[node.status]}"]
        for name, v, side in (("A", e.a, node.status != "only_b"), ("B", e.b, node.status != "only_a")):
            if not side:
                continue
            if isinstance(v, TensorRef):
                lines.append(f"{name}: {v.dtype.name} {shape_text(v.shape)} on {safe_text(v.device, 40)}, "
                             f"{human_bytes(v.nbytes)}")
            else:
                lines.append(f"{name}: {safe_text(value_text(v, 400), 400)}")
        m = e.metrics
        if m is not None and node.status in ("changed", "dtype", "same"):
            if node.status == "same":
                lines.append(f"All {m.numel:,} elements identical (same bytes).")
            else:
                lines += [f"max |a − b|: {_num(m.max_abs)}",
                          f"mean |a − b|: {_num(m.mean_abs)}",
                          f"relative change ‖a − b‖ / ‖a‖: {_num(m.relative_change)}",
                          f"cosine similarity: {_num(m.cosine)}",
                          f"not close (atol {self.setup.atol:g}, rtol {self.setup.rtol:g}): "
                          f"{m.not_close:,} of {m.numel:,} ({100 * m.fraction_changed:.4g}%)"]
                if m.nan_mismatch:
                    lines.append(f"NaN in one side only: {m.nan_mismatch:,} elements")
        if e.device_change:
            lines.append(f"Saved on: {safe_text(e.device_change, 60)}")
        if e.error:
            lines.append(f"Error: {safe_text(e.error, 400)}")
        return lines

    def _on_hist_step(self, step: Any) -> None:
        if isinstance(step, PairHistograms):
            node = self._hist_for
            self.last_pair = step
            self.histograms.set_pair(step, node.name if node is not None else "")
        elif isinstance(step, Progress) and step.total:
            self.histograms.note.setText(f"Reading the values… {100 * step.fraction:.0f}%")

    def _on_hist_done(self, result: PairHistograms | None) -> None:
        if result is not None:
            self.last_pair = result

    def _on_hist_error(self, err: WorkerError) -> None:
        self.histograms.clear(f"No histogram: {error_text(err.exc)}")
