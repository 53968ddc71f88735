"""The Health panel: runs the health check (in a worker its owner starts), lists the findings, and charts
the norms along the model and where its parameters are.

The findings are a :class:`FindingsModel` (a ``QAbstractTableModel``); activating a row emits
``finding_activated(key)`` and the tab selects that tensor. File-provided text (keys) is shown with
``safe_text``; messages are ours but name keys, so they are made safe too.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.health import Finding, HealthReport, ModuleShare, layer_series
from ...core.util.progress import Progress
from ...core.util.textsafe import path_text, safe_text
from ...core.util.units import human_bytes
from ..widgets.theme import level_color, level_icon
from .health_charts import BreakdownChart, LayerChart

AnyIndex = QModelIndex | QPersistentModelIndex
SEVERITY_LEVEL = {"error": "dangerous", "warning": "incomplete"}     # the theme's icons and colours
COLUMNS = ("Severity", "Kind", "Key", "Message")
FILTERS = (("All findings", ("error", "warning", "info")), ("Errors and warnings", ("error", "warning")),
           ("Errors", ("error",)))


class FindingsModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._all: list[Finding] = []
        self._rows: list[Finding] = []
        self._keep: tuple[str, ...] = FILTERS[0][1]

    def set_findings(self, findings: list[Finding]) -> None:
        self.beginResetModel()
        self._all = list(findings)
        self._rows = [f for f in self._all if f.severity in self._keep]
        self.endResetModel()

    def set_filter(self, keep: tuple[str, ...]) -> None:
        self._keep = keep
        self.set_findings(self._all)

    def finding(self, row: int) -> Finding | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < 4:
            return COLUMNS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        f = self.finding(index.row())
        if f is None:
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (f.severity, f.kind, path_text(f.key), safe_text(f.message, 400))[col] if col < 4 else None
        if role == Qt.ItemDataRole.ToolTipRole and col in (2, 3):
            text = f"{path_text(f.key)}\n{safe_text(f.message, 2000)}"
            if f.related:
                text += "\nalso: " + ", ".join(path_text(k) for k in f.related[:20])
            return text
        if role == Qt.ItemDataRole.DecorationRole and col == 0 and f.severity in SEVERITY_LEVEL:
            return level_icon(SEVERITY_LEVEL[f.severity])
        if role == Qt.ItemDataRole.ForegroundRole and col == 0 and f.severity in SEVERITY_LEVEL:
            return level_color(SEVERITY_LEVEL[f.severity])
        return None


class HealthPanel(QWidget):
    """``run_requested()`` when the user asks for a check; ``finding_activated(key)`` and ``tensor_clicked``
    (from the chart) name a tensor to select."""

    run_requested = Signal()
    finding_activated = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.report: HealthReport | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.run_button = QPushButton("Check Values", self)
        self.run_button.setToolTip("Read every tensor once and look for NaN/Inf, zeroed or constant weights, "
                                   "dead rows, duplicates and outliers (the same as `ckptviewer health`)")
        self.run_button.clicked.connect(self.run_requested)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setMaximumHeight(16)
        self.progress.hide()
        self.filter_box = QComboBox(self)
        for text, keep in FILTERS:
            self.filter_box.addItem(text, keep)
        self.filter_box.currentIndexChanged.connect(lambda _i: self.model.set_filter(self.filter_box.currentData()))
        top.addWidget(self.run_button)
        top.addWidget(self.progress, 1)
        top.addStretch(0)
        top.addWidget(self.filter_box)
        lay.addLayout(top)
        self.summary = QLabel("The check reads every tensor's values once; it runs in the background.", self)
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)

        split = QSplitter(Qt.Orientation.Vertical, self)
        self.model = FindingsModel(self)
        self.view = QTableView(split)
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().setVisible(False)
        self.view.setWordWrap(False)
        header = self.view.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((78, 96, 200)):
            self.view.setColumnWidth(col, width)
        self.view.clicked.connect(self._on_clicked)
        self.view.activated.connect(self._on_clicked)
        self.charts = QTabWidget(split)
        self.charts.setDocumentMode(True)
        self.layer_chart = LayerChart(self.charts)
        self.layer_chart.tensor_clicked.connect(self.finding_activated)
        self.breakdown_chart = BreakdownChart(self.charts)
        self.charts.addTab(self.layer_chart, "Norms by layer")
        self.charts.addTab(self.breakdown_chart, "Parameters by module")
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([260, 390])
        lay.addWidget(split, 1)

    # -- updates from the owner -----------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self.progress.setVisible(running)
        self.progress.setValue(0)
        self.run_button.setEnabled(not running)
        if running:
            self.summary.setText("Checking every tensor's values…")

    def set_progress(self, p: Progress) -> None:
        self.progress.setValue(int(1000 * p.fraction))

    def set_report(self, report: HealthReport, by_depth: dict[int, list[ModuleShare]] | None = None) -> None:
        self.report = report
        self.set_running(False)
        self.run_button.setText("Check Again")
        c = report.counts()
        self.summary.setText(f"{len(report.tensors):,} tensors ({human_bytes(report.nbytes)}) checked in "
                             f"{report.seconds:.2f} s: {c['error']} error{'s' * (c['error'] != 1)}, "
                             f"{c['warning']} warning{'s' * (c['warning'] != 1)}, {c['info']} info."
                             + ("" if report.findings else " Nothing looks wrong."))
        self.model.set_findings(report.findings)
        flagged = {tuple(k) for k, found in report.by_key().items() if any(f.severity != "info" for f in found)}
        self.layer_chart.set_series(layer_series(report), flagged)
        self.breakdown_chart.set_breakdowns(by_depth or {1: report.breakdown})

    def set_failed(self, message: str) -> None:
        self.set_running(False)
        self.summary.setText(f"The check stopped: {safe_text(message, 300)}")

    def set_stale(self) -> None:
        if self.report is not None:
            self.summary.setText("The view was edited since the check ran: check again to see the edited values.")

    def _on_clicked(self, index: QModelIndex) -> None:
        f = self.model.finding(index.row())
        if f is not None:
            self.finding_activated.emit(tuple(f.key))
