"""One tab: a checkpoint's summary, tree (with search), details and histogram.

The tab owns a :class:`TaskRunner` for its workers (loading, totals, statistics), so closing the tab
cancels exactly its own work. Statistics run in the "stats" channel: selecting another node cancels
the old computation and drops its late results.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QItemSelectionModel, QModelIndex, QObject, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QMenu,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.integrity import IntegrityReport, verify_steps
from ...core.analyze.snippet import key_path_text, load_snippet
from ...core.analyze.stats import Histogram, TensorStats, tensor_steps
from ...core.model.tensor import TensorRef
from ...core.model.tree import Node
from ...core.model.walk import iter_tensors
from ...core.util.locations import location_name, normalize_location
from ...core.util.progress import Progress
from ...core.util.textsafe import key_text, path_text, safe_text
from ..panels.details import DetailsPanel
from ..panels.health import HealthPanel
from ..panels.histogram import HistogramPanel
from ..panels.safety import SafetyBanner, SafetyPanel
from ..panels.safety_report import CLEAN, INCOMPLETE, SafetyReport
from ..panels.values import ValuesPanel
from ..widgets.drop_zone import CompareZone
from ..widgets.messages import error_text
from ..widgets.settings import Settings
from ..widgets.theme import level_icon
from ..widgets.workers import TaskRunner, WorkerError
from .health_view import HealthController
from .integrity import IntegrityBar
from .loading import LoadedFile, load_steps, totals_steps
from .search import FindBar, SearchIndex, SearchResult, SliceRunner, tree_search_steps
from .small_values import start_value
from .summary import SummaryStrip
from .tab_edits import TabEditsMixin
from .tree_model import CheckpointTreeModel, KeyFilterProxy, compile_matcher, find_node
from .values_view import ValuesController

EXPAND_ALL_LIMIT = 20_000
AUTO_EXPAND_TOP = 12
AUTO_EXPAND_CHILDREN = 300


def safety_tab_text(report: SafetyReport) -> str:
    if report.is_dangerous:
        return f"Safety: {len(report.dangerous)} dangerous"
    return {CLEAN: "Safety: clean", INCOMPLETE: "Safety: incomplete"}.get(report.level, "Safety")


class BuildQueue(QObject):
    """Builds the widgets of loaded tabs one per pass of the event loop.

    When many files finish loading together (a drop of 50 small files), building every tab in one
    delivery of the workers' results kept the window from handling its timers and input for seconds.
    One build per pass of a zero-interval timer (a timer, serviced with the others, not a posted event)
    lets the window react between builds.
    """

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._queue: deque[CheckpointTab] = deque()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._on_timeout)

    def add(self, tab: "CheckpointTab") -> None:
        self._queue.append(tab)
        if not self._timer.isActive():
            self._timer.start()

    def _on_timeout(self) -> None:
        try:
            while self._queue:
                tab = self._queue.popleft()
                if shiboken6.isValid(tab):       # a tab closed while it waited is gone
                    tab.finish_loading()
                    break
        finally:
            if self._queue:
                self._timer.start()


_build_queue: BuildQueue | None = None


def build_queue() -> BuildQueue:
    global _build_queue
    if _build_queue is None or not shiboken6.isValid(_build_queue):
        _build_queue = BuildQueue(QCoreApplication.instance())
    return _build_queue


class CheckpointTab(TabEditsMixin, QWidget):
    values_ctl: ValuesController | None = None      # made with the tab's content, once loaded
    health_ctl: HealthController | None = None
    loaded = Signal(object)              # the tab
    failed = Signal(object, object)      # the tab, the WorkerError
    status_message = Signal(str)
    work_progressed = Signal(object)     # a Progress, or None when idle
    selection_changed = Signal(object)   # the selected Node or None
    compare_requested = Signal(str, str)  # this file, another one: open a diff tab of them

    def __init__(self, path: str, settings: Settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = normalize_location(path)     # a URL stays a URL (its credentials already taken out)
        self.file_key: tuple[int, int] | None = None     # (device, inode), set by the window
        self.settings = settings
        self.file: LoadedFile | None = None
        self.error: WorkerError | None = None
        self.runner = TaskRunner(self)
        self.runner.busy_changed.connect(self._on_busy_changed)
        self.model: CheckpointTreeModel | None = None
        self.proxy: KeyFilterProxy | None = None
        self.search_result: SearchResult | None = None
        self._search_index: SearchIndex | None = None
        self._search = SliceRunner(self)
        self._search.finished.connect(self._on_search_finished)
        self._totals_batches = 0
        self._shared_index: dict[int, list[tuple]] | None = None
        self._stats_for: Node | None = None
        self.last_stats: TensorStats | None = None
        self._safety_auto = False         # the Safety panel was brought forward for a dangerous file
        self._pending_file: LoadedFile | None = None     # loaded, waiting for its turn to be built
        self._shut = False

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.stack = QStackedWidget(self)
        lay.addWidget(self.stack)
        loading = QWidget(self)
        ll = QVBoxLayout(loading)
        ll.addStretch(1)
        self.loading_label = QLabel(f"Opening {safe_text(location_name(self.path))}…", loading)
        self.loading_label.setTextFormat(Qt.TextFormat.PlainText)
        self.loading_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loading_bar = QProgressBar(loading)
        self.loading_bar.setRange(0, 0)
        self.loading_bar.setMaximumWidth(360)
        ll.addWidget(self.loading_label)
        ll.addWidget(self.loading_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        ll.addStretch(2)
        self.stack.addWidget(loading)

    # -- loading --------------------------------------------------------------------------------
    @property
    def title(self) -> str:
        return location_name(self.path)

    @property
    def is_loaded(self) -> bool:
        return self.file is not None

    def start_loading(self) -> None:
        self.runner.submit("load", load_steps, self.path, on_progress=self._on_load_progress,
                           on_result=self._on_load_result, on_error=self._on_load_error)

    def _on_load_progress(self, p: Progress) -> None:
        self.loading_label.setText(safe_text(p.what, 300) + "…")
        self.work_progressed.emit(p)

    def _on_load_error(self, err: WorkerError) -> None:
        self.error = err
        self.failed.emit(self, err)

    def _on_load_result(self, f: LoadedFile | None) -> None:
        if f is None:
            return
        if self._shut:
            f.close()
            return
        self._pending_file = f
        build_queue().add(self)

    def finish_loading(self) -> None:
        """Build the widgets of the file the worker loaded (called by the :class:`BuildQueue`)."""
        f, self._pending_file = self._pending_file, None
        if f is None or self._shut:
            return
        self.file = f
        self._build_content(f)
        self.loaded.emit(self)
        if not self.has_pending_work():
            self.work_progressed.emit(None)      # the loader ended before its tab was built: idle now

    def _build_content(self, f: LoadedFile) -> None:
        page = QWidget(self)
        lay = QVBoxLayout(page)
        lay.setContentsMargins(4, 4, 4, 4)
        self.safety_banner = SafetyBanner(page)
        self.safety_banner.details_requested.connect(self.show_safety_panel)
        lay.addWidget(self.safety_banner)
        self.summary = SummaryStrip(page)
        self.summary.set_file(f)
        lay.addWidget(self.summary)
        self.integrity_bar = IntegrityBar(page)
        lay.addWidget(self.integrity_bar)

        self.h_split = QSplitter(Qt.Orientation.Horizontal, page)
        left = QWidget(self.h_split)
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.find_bar = FindBar(left)
        self.find_bar.query_changed.connect(self._on_query_changed)
        ll.addWidget(self.find_bar)
        self.view = QTreeView(left)
        self.view.setUniformRowHeights(True)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_context_menu)
        self.view.setExpandsOnDoubleClick(True)
        ll.addWidget(self.view)

        self.model = CheckpointTreeModel(f.root, f.warmed, self)
        self.model.totals_wanted.connect(self._on_totals_wanted)
        # The view shows the model itself, and the filter proxy only while a search is active: every
        # cell painted through a proxy costs an extra Python index() call.
        self.proxy = KeyFilterProxy(self)
        self._set_view_model(self.model)
        header = self.view.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((250, 140, 100, 72, 88, 78, 62, 110)):
            self.view.setColumnWidth(col, width)

        # Right of the tree: the selected entry (details over histogram) and the file's Safety panel.
        self.side_tabs = QTabWidget(self.h_split)
        self.side_tabs.setDocumentMode(True)
        self.side_tabs.tabBarClicked.connect(self._on_side_tab_clicked)
        self.v_split = QSplitter(Qt.Orientation.Vertical, self.side_tabs)
        self.side_tabs.addTab(self.v_split, "Details")
        self.safety_panel = SafetyPanel(self.side_tabs)
        self.safety_panel.torch_load.export_requested.connect(lambda: self.export(weights_only_safe=True))
        self.side_tabs.addTab(self.safety_panel, "Safety")
        self.details = DetailsPanel(self.v_split)
        self.details.set_helpers(self.resolve_parameter, self.shared_with)
        self.details.navigate_requested.connect(self._on_navigate_requested)
        self.histogram = HistogramPanel(self.v_split, log_counts=self.settings.log_counts())
        self.histogram.log_toggled.connect(self._on_log_toggled)
        self.h_split.setStretchFactor(0, 3)
        self.h_split.setStretchFactor(1, 2)
        self.v_split.setStretchFactor(0, 3)
        self.v_split.setStretchFactor(1, 2)
        lay.addWidget(self.h_split, 1)
        self.compare_zone = CompareZone(page)
        self.compare_zone.file_chosen.connect(lambda other: self.compare_requested.emit(self.path, other))
        lay.addWidget(self.compare_zone)
        for name, splitter in (("tab-h", self.h_split), ("tab-v", self.v_split)):
            state = self.settings.splitter_state(name)
            if state is not None:
                splitter.restoreState(state)
            else:
                splitter.setSizes([720, 480] if splitter is self.h_split else [330, 250])
        self.stack.addWidget(page)
        self.stack.setCurrentWidget(page)
        self._auto_expand()
        self.details.set_note_provider(self.edit_note)
        self._init_edits(f)
        self._init_values()
        self._show_safety(f.safety)
        if f.safety.is_dangerous:
            self._safety_auto = True
            self.side_tabs.setCurrentWidget(self.safety_panel)

    def _init_values(self) -> None:
        """The Values and Health side tabs (their widgets and workers live in their own modules)."""
        self.values_panel = ValuesPanel(self.side_tabs)
        self.side_tabs.insertTab(1, self.values_panel, "Values")
        self.health_panel = HealthPanel(self.side_tabs)
        self.side_tabs.insertTab(2, self.health_panel, "Health")
        self.values_ctl = ValuesController(self, self.values_panel)
        self.health_ctl = HealthController(self, self.health_panel)
        self.session.state_changed.connect(lambda *_: self.health_ctl.view_changed())
        self.side_tabs.currentChanged.connect(self._on_side_tab_changed)

    def _on_side_tab_changed(self, _index: int) -> None:
        current = self.side_tabs.currentWidget()
        self.values_ctl.set_visible(current is self.values_panel)
        if current is self.health_panel and not self.health_ctl.started:
            self.health_ctl.start()

    def show_values(self, path: str | None = None) -> bool:
        """Bring the Values tab forward, for the entry at key path ``path`` (as `convert --select` takes it)
        when given. Returns False when there is no such entry."""
        if self.file is None:
            return False
        found = self.values_ctl.reveal(path) if path else True
        self.side_tabs.setCurrentWidget(self.values_panel)
        return found

    def export_selected_values(self) -> None:
        node = self.current_node()
        if node is None or node.kind != "tensor":
            self.status_message.emit("Select a tensor to export its values.")
            return
        self.values_ctl.export_values(node)

    def show_health(self) -> None:
        if self.file is not None:
            self.side_tabs.setCurrentWidget(self.health_panel)
            if not self.health_ctl.started:
                self.health_ctl.start()

    # -- safety report --------------------------------------------------------------------------
    @property
    def safety(self) -> SafetyReport | None:
        return self.file.safety if self.file is not None else None

    def _show_safety(self, report: SafetyReport) -> None:
        self.safety_banner.set_report(report)
        self.safety_panel.set_report(report)
        self.summary.set_safety(report)
        index = self.side_tabs.indexOf(self.safety_panel)
        self.side_tabs.setTabText(index, safety_tab_text(report))
        self.side_tabs.setTabIcon(index, level_icon(report.level))

    def show_safety_panel(self) -> None:
        if self.file is not None:
            self._safety_auto = False
            self.side_tabs.setCurrentWidget(self.safety_panel)

    def _on_side_tab_clicked(self, _index: int) -> None:
        self._safety_auto = False

    def _set_view_model(self, model) -> None:
        old = self.view.selectionModel()
        if model is self.proxy:
            self.proxy.setSourceModel(self.model)
        self.view.setModel(model)
        if model is self.model and self.proxy.sourceModel() is not None:
            self.proxy.set_keep(None)
            self.proxy.setSourceModel(None)
        self.view.selectionModel().currentChanged.connect(self._on_current_changed)
        if old is not None:
            old.deleteLater()

    @property
    def filtering(self) -> bool:
        return self.view.model() is self.proxy

    def node_at(self, index: QModelIndex) -> Node | None:
        """The node of an index of the view's current model (the tree model or the filter proxy)."""
        if not index.isValid():
            return None
        if index.model() is self.proxy:
            return self.proxy.node_from_index(index)
        return self.model.node_from_index(index)

    def view_index(self, node: Node) -> QModelIndex:
        """The view's index for ``node`` (invalid when a filter hides it)."""
        src = self.model.index_for_node(node)
        return self.proxy.mapFromSource(src) if self.filtering else src

    def _auto_expand(self) -> None:
        top = self.model.top_nodes()
        if len(top) > AUTO_EXPAND_TOP:
            return
        for row, node in enumerate(top):
            if node.has_children and len(node.children()) <= AUTO_EXPAND_CHILDREN and node.kind != "object":
                self.view.expand(self.model.index(row, 0))

    def save_state(self) -> None:
        if self.file is not None:
            self.settings.set_splitter_state("tab-h", self.h_split.saveState())
            self.settings.set_splitter_state("tab-v", self.v_split.saveState())

    # -- work and shutdown ----------------------------------------------------------------------
    def has_pending_work(self) -> bool:
        return (self.runner.is_busy() or self._search.running or self._pending_file is not None
                or (self.session is not None and self.session.busy))

    def _on_busy_changed(self, busy: bool) -> None:
        if not busy:
            self.work_progressed.emit(None)

    def cancel_work(self) -> None:
        if self.file is not None and self.integrity_bar.isVisible() and self.integrity_bar.report is None:
            self.integrity_bar.set_cancelled()
        self.runner.cancel()
        if self.session is not None:
            self.session.cancel()
        self._search.cancel()
        if self.model is not None:
            self.model.forget_wanted()
        self.work_progressed.emit(None)

    def shutdown(self, wait: bool = True) -> None:
        """Stop every worker of this tab and release the file.

        Without ``wait`` (closing one tab) the window does not block on a worker busy in a long step
        (opening a huge pickle); it ends on its own and its results are dropped. Closing the map under
        a worker is safe: a read of a closed map raises, and a map with live views stays open until
        they are gone (see Checkpoint.close).
        """
        self._shut = True
        self._search.cancel()
        if self.session is not None:
            self.session.shutdown(wait=wait)
        self.runner.shutdown(wait=wait)
        if self._pending_file is not None:
            self._pending_file.close()
            self._pending_file = None
        if self.file is not None:
            self.file.close()

    def _on_totals_wanted(self, nodes: list[Node]) -> None:
        self._totals_batches += 1
        self.runner.submit(f"totals-{self._totals_batches}", totals_steps, nodes,
                           on_result=lambda done, m=self.model: self._on_totals_done(done, m))

    def _on_totals_done(self, nodes: list[Node] | None, model: CheckpointTreeModel | None = None) -> None:
        if nodes and self.model is not None and (model is None or model is self.model):
            self.model.mark_totals_ready(nodes)

    # -- selection ------------------------------------------------------------------------------
    def current_node(self) -> Node | None:
        if self.model is None:
            return None
        return self.node_at(self.view.currentIndex())

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        node = self.node_at(current)
        if node is not None and self._safety_auto:
            # Shown first for a dangerous file; the first entry the user picks brings its details back.
            self._safety_auto = False
            self.side_tabs.setCurrentWidget(self.v_split)
        self.runner.cancel("stats")
        self.runner.cancel("value")
        self.runner.cancel("details-totals")
        self.last_stats = None
        if self.values_ctl is not None:
            self.values_ctl.show_node(node)
        if node is None:
            self.details.show_message("Select an entry in the tree to see its details.")
            self.histogram.clear()
            self.selection_changed.emit(None)
            return
        if not self.model.totals_ready(node):
            # Summing a big container's tensors is metadata work, but not instant: off the GUI thread.
            self.details.show_message(f"Counting the tensors under {path_text(node.path)}…")
            self.runner.submit("details-totals", totals_steps, [node],
                               on_result=lambda nodes, n=node: self._on_details_totals(n, nodes))
        else:
            self.details.show_node(node)
        self.selection_changed.emit(node)
        if node.kind == "tensor":
            self._start_stats(node)
        else:
            self.histogram.clear("Histograms are drawn for tensors.")

    def _on_details_totals(self, node: Node, nodes: list[Node] | None) -> None:
        if nodes:
            self.model.mark_totals_ready(nodes)
        if self.current_node() is node:
            self.details.show_node(node)

    def _start_stats(self, node: Node) -> None:
        t: TensorRef = node.value
        self.histogram.clear()
        if t.readable and start_value(self, node):
            return                      # a single value: shown as such, no statistics or histogram
        if not t.readable:
            self.details.set_stats_error(f"Values cannot be read: {safe_text(t.problem or 'no stored values', 300)}")
            self.histogram.clear("No values to plot.")
            return
        if t.numel == 0:
            self.details.set_stats_error("The tensor is empty.")
            self.histogram.clear("The tensor is empty.")
            return
        self._stats_for = node
        self.runner.submit("stats", tensor_steps, t, on_progress=self._on_stats_step,
                           on_result=self._on_stats_done, on_error=self._on_stats_error)

    def _on_stats_step(self, step: Any) -> None:
        what = path_text(self._stats_for.path) if self._stats_for is not None else ""
        if isinstance(step, Progress):
            self.details.set_stats_progress(step)
            self.work_progressed.emit(Progress(step.done, step.total, f"{step.what} of {what}"))
        elif isinstance(step, TensorStats):
            self.last_stats = step
            self.details.set_stats(step)
        elif isinstance(step, Histogram):
            node = self._stats_for
            what = key_text(node.path[-1]) if node is not None and node.path else (node.name if node else "")
            self.histogram.set_histogram(step, what)

    def _on_stats_done(self, _result: Any) -> None:
        self.work_progressed.emit(None)
        node = self._stats_for
        if node is not None and node.kind == "tensor" and node.value.integrity_error:
            self.details.set_integrity(node.value.integrity_error)   # the read found damaged bytes
            self.model.refresh_tensor_rows()

    # -- integrity ------------------------------------------------------------------------------
    def verify_integrity(self) -> None:
        """Read every zip member of the file once and check its CRC-32, in a worker."""
        if self.file is None:
            return
        self.integrity_bar.set_running()
        self.runner.submit("verify", verify_steps, self.file.checkpoint, on_progress=self.work_progressed.emit,
                           on_result=self._on_verified, on_error=self._on_stats_error)

    def _on_verified(self, report: IntegrityReport | None) -> None:
        self.work_progressed.emit(None)
        if report is None:
            self.integrity_bar.set_cancelled()
            return
        self.integrity_bar.set_report(report)
        self.status_message.emit(report.lines()[0])
        if report.tensors:
            self.model.refresh_tensor_rows()
            node = self.current_node()
            if node is not None and node.kind == "tensor":
                self.details.set_integrity(node.value.integrity_error)

    def _on_stats_error(self, err: WorkerError) -> None:
        msg = error_text(err.exc)
        self.details.set_stats_error(f"Could not read the values: {msg}")
        self.histogram.clear("No histogram: the values could not be read.")
        self.status_message.emit(msg)

    # -- navigation -----------------------------------------------------------------------------
    def select_node(self, node: Node) -> bool:
        """Select ``node`` in the tree (clearing a filter that hides it). Returns False if not found."""
        if self.model is None:
            return False
        src = self.model.index_for_node(node)
        if not src.isValid():
            return False
        idx = self.view_index(node)
        if not idx.isValid():
            self.find_bar.edit.clear()
            self.find_bar.flush()
            self._apply_filter(None)
            idx = self.view_index(node)
        parent = idx.parent()
        while parent.isValid():
            self.view.expand(parent)
            parent = parent.parent()
        self.view.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.view.scrollTo(idx, QAbstractItemView.ScrollHint.PositionAtCenter)
        return True

    def select_path(self, path: tuple, kind: str | None = None) -> bool:
        node = find_node(self.tree_root, tuple(path), kind) if self.file is not None else None
        return node is not None and self.select_node(node)

    def first_tensor(self, limit: int = 20_000) -> Node | None:
        if self.model is None:
            return None
        stack = list(reversed(self.model.top_nodes()))
        seen = 0
        while stack and seen < limit:
            n = stack.pop()
            seen += 1
            if n.kind == "tensor" and n.value.readable and n.value.numel > 1:
                return n
            if n.has_children and n.kind not in ("object",):
                stack.extend(reversed(n.children()[:500]))
        return None

    def resolve_parameter(self, opt_node: Node, name: str) -> Node | None:
        """The tensor node of parameter ``name`` that optimizer ``opt_node``'s ids refer to."""
        if self.file is None or not name:
            return None
        opt = opt_node.info
        paths = []
        if getattr(opt, "names_from", None) is not None:
            paths.append(tuple(opt.names_from))
        paths += [sd.path for sd in self.view_analysis.state_dicts
                  if any(k == name for k, _ in sd.entries) and sd.path not in paths]
        for base in paths:
            node = find_node(self.tree_root, tuple(base) + (name,), "tensor")
            if node is not None:
                return node
        return None

    def shared_with(self, t: TensorRef) -> list[tuple]:
        """Key paths of the other tensors that use ``t``'s storage."""
        if self.file is None or t.storage is None or len(t.storage.users) < 2:
            return []
        if self._shared_index is None:
            # Keyed by the file's tensor, which an edited view's tensor derives from (``origin``).
            index: dict[int, list[tuple]] = {}
            entries = (self.file.checkpoint.tensor_entries() if not self.is_edited
                       else iter_tensors(self.session.state.root))
            for key, ref in entries:
                index.setdefault(id(ref.origin or ref), []).append(tuple(key))
            self._shared_index = index
        out = []
        for user in t.storage.users:
            out.extend(self._shared_index.get(id(user), []))
        return list(dict.fromkeys(out))

    def _on_navigate_requested(self, node: Node) -> None:
        if node is not None and not self.select_node(node):
            self.status_message.emit("That entry is not in the tree.")

    # -- search ---------------------------------------------------------------------------------
    def focus_search(self) -> None:
        if self.file is not None:
            self.find_bar.edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
            self.find_bar.edit.selectAll()

    def _on_query_changed(self, text: str, regex: bool) -> None:
        self._search.cancel()
        if not text:
            self._apply_filter(None)
            self.find_bar.set_count_text("")
            return
        try:
            matcher = compile_matcher(text, regex)
        except Exception as e:  # noqa: BLE001 - re.error and friends: say so, keep the old filter
            self.find_bar.set_count_text(f"bad pattern: {e}", error=True)
            return
        self.find_bar.set_count_text("searching…")
        self._search.start(tree_search_steps(self.model.top_nodes(), matcher, text, self._search_index))

    def finish_search(self) -> None:
        """Run the pending search to its end now (tests, screenshots)."""
        if self.file is not None:
            self.find_bar.flush()
            self._search.run_to_end()

    def _on_search_finished(self, result: tuple[SearchIndex, SearchResult]) -> None:
        self._search_index, res = result
        self.search_result = res
        n = res.n_matches
        text = f"{n:,} match{'es' if n != 1 else ''}" + (" (search stopped early)" if res.truncated else "")
        self.find_bar.set_count_text(text)
        self._apply_filter(res)

    def _apply_filter(self, res: SearchResult | None) -> None:
        if self.model is None:
            return
        if res is None:
            if self.filtering:
                current = self.current_node()
                self._set_view_model(self.model)
                self._auto_expand()
                if current is not None:
                    self.select_node(current)
            return
        keep = res.keep
        # The proxy sees only rows the source has fetched: fetch every kept row first.
        model = self.model
        model.fetch_all(QModelIndex())
        for node in self._kept_in_order(keep):
            if node.has_children:
                idx = model.index_for_node(node)
                if idx.isValid():
                    model.fetch_all(idx)
        self.proxy.set_keep(keep)
        if not self.filtering:
            self._set_view_model(self.proxy)
        if len(keep) <= EXPAND_ALL_LIMIT:
            self.view.expandAll()
        else:
            self.view.expandToDepth(1)
        if res.matches:
            first = self.view_index(res.matches[0])
            if first.isValid():
                self.view.scrollTo(first)

    def _kept_in_order(self, keep: set[int]) -> list[Node]:
        out = []
        stack = [n for n in reversed(self.model.top_nodes()) if id(n) in keep]
        while stack:
            n = stack.pop()
            out.append(n)
            if n.has_children:
                stack.extend(c for c in reversed(n.children()) if id(c) in keep)
        return out

    # -- tree actions ---------------------------------------------------------------------------
    def expand_all(self) -> bool:
        """Expand everything when the tree is small enough; otherwise two levels. True if complete."""
        if self.model is None:
            return False
        count = 0
        stack = list(self.model.top_nodes())
        while stack and count <= EXPAND_ALL_LIMIT:
            n = stack.pop()
            count += 1
            if n.has_children:
                stack.extend(n.children())
        if count > EXPAND_ALL_LIMIT:
            self.view.expandToDepth(1)
            self.status_message.emit(f"More than {EXPAND_ALL_LIMIT:,} entries: expanded two levels only.")
            return False
        self.model.fetch_all(QModelIndex())
        for node in self._all_containers():
            idx = self.model.index_for_node(node)
            if idx.isValid():
                self.model.fetch_all(idx)
        self.view.expandAll()
        return True

    def _all_containers(self) -> list[Node]:
        out, stack = [], list(reversed(self.model.top_nodes()))
        while stack:
            n = stack.pop()
            if n.has_children:
                out.append(n)
                stack.extend(reversed(n.children()))
        return out

    def collapse_all(self) -> None:
        if self.file is not None:
            self.view.collapseAll()

    def copy_key_path(self) -> str | None:
        node = self.current_node()
        if node is None:
            return None
        text = key_path_text(node)
        QGuiApplication.clipboard().setText(text)
        self.status_message.emit(f"Copied {text}")
        return text

    def copy_snippet(self) -> str | None:
        node = self.current_node()
        if node is None:
            return None
        node = self.snippet_node(node)
        if node is None:
            self.status_message.emit("This entry exists only in the edited view: a snippet loads the file on "
                                     "disk. Export the edits first, then open the exported file.")
            return None
        text = load_snippet(node)
        QGuiApplication.clipboard().setText(text)
        self.status_message.emit("Copied a Python snippet that loads this entry")
        return text

    def _on_context_menu(self, pos: QPoint) -> None:
        idx = self.view.indexAt(pos)
        if not idx.isValid():
            return
        menu = QMenu(self)
        a1 = QAction("Copy Key Path", menu)
        a1.triggered.connect(self.copy_key_path)
        a2 = QAction("Copy Load Snippet", menu)
        a2.triggered.connect(self.copy_snippet)
        menu.addAction(a1)
        menu.addAction(a2)
        self._add_edit_actions(menu, self.node_at(idx))
        if self.values_ctl is not None:
            self.values_ctl.add_actions(menu, self.node_at(idx))
        self.context_menu = menu
        menu.popup(self.view.viewport().mapToGlobal(pos))

    def _on_log_toggled(self, on: bool) -> None:
        self.settings.set_log_counts(on)

