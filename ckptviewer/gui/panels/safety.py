"""A tab's safety report: the banner above the tree when a file names dangerous globals, and the Safety
panel beside the details that lists every global each pickle names.

Both only draw a :class:`~ckptviewer.gui.panels.safety_report.SafetyReport` made in a worker; every string in
it is already display-safe and is shown as plain text (labels with ``PlainText`` format, table cells,
escaped tooltips).
"""
from __future__ import annotations

from functools import partial
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QEvent, QModelIndex, QPersistentModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..widgets.theme import is_dark, level_color, level_icon, plain_label, plain_tooltip
from .safety_report import BANNER_NAMES, CLEAN, DANGEROUS, INCOMPLETE, NOTHING_RUN, UNKNOWN, SafetyReport, SafetyRow
from .torch_load import TorchLoadSection

_plain_label = partial(plain_label, select=True)   # labels here can be selected and copied

_RANK = {"dangerous": 0, "unknown": 1, "safe": 2}
_CATEGORY_TEXT = {"dangerous": "Dangerous", "unknown": "Unknown", "safe": "Safe"}
Index = QModelIndex | QPersistentModelIndex


def _row_text(r: SafetyRow) -> str:
    """A row in words: what, where it sat (member and view of the archive), who would load it."""
    kind = _CATEGORY_TEXT.get(r.category, r.category).lower()
    if r.code:
        head = f"{r.qualname} ({kind}; TorchScript code in {r.pickle}"
    else:
        head = f"{r.qualname} ({kind}, named {r.count:,} time{'s' if r.count != 1 else ''} in {r.where or r.pickle}"
    return head + (f"; loaded by {r.loader})" if r.loader else ")")


# -- the imports table ------------------------------------------------------------------------------
class SafetyTableModel(QAbstractTableModel):
    """The rows of a report: category, global, pickle, count, reason. Sorted in Python (``sort``), so
    that sorting 10^5 rows costs one list sort, not a C++ comparison calling back per pair."""

    COLUMNS = ("Category", "Global", "Pickle", "Loaded by", "Count", "Reason")
    CATEGORY, GLOBAL, PICKLE, LOADER, COUNT, REASON = range(6)
    RowRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._rows: list[SafetyRow] = []
        self._colors: dict[str, QColor] = {}
        self._bold = QFont()
        self._bold.setBold(True)
        self._sort: tuple[int, Qt.SortOrder] = (self.CATEGORY, Qt.SortOrder.AscendingOrder)
        self.refresh_colors()

    def refresh_colors(self) -> None:
        dark = is_dark()
        colors = {}
        for category, alpha in (("dangerous", 95 if dark else 70), ("unknown", 40 if dark else 28)):
            c = QColor(level_color(category, dark))
            c.setAlpha(alpha)
            colors[category] = c
        colors["dangerous-text"] = QColor("#ffb3ab" if dark else "#8e1b10")
        self._colors = colors
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(self.COLUMNS) - 1))

    def set_rows(self, rows: list[SafetyRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self._apply_sort()
        self.endResetModel()

    def row_at(self, row: int) -> SafetyRow:
        return self._rows[row]

    def rows(self) -> list[SafetyRow]:
        return list(self._rows)

    # -- Qt model interface -----------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt override
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(self.COLUMNS):
            return self.COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        r = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == self.CATEGORY:
                return "Runs at load" if r.code and r.category != "dangerous" else _CATEGORY_TEXT.get(r.category,
                                                                                                    r.category)
            if col == self.GLOBAL:
                return r.qualname
            if col == self.PICKLE:
                return r.pickle
            if col == self.LOADER:
                return r.loader
            if col == self.COUNT:
                return f"{r.count:,}"
            if col == self.REASON:
                return r.reason
            return None
        if role == Qt.ItemDataRole.DecorationRole and col == self.CATEGORY:
            return level_icon(r.category)
        if role == Qt.ItemDataRole.BackgroundRole:
            return self._colors.get(r.category)
        if role == Qt.ItemDataRole.ForegroundRole and r.category == "dangerous":
            return self._colors["dangerous-text"]
        if role == Qt.ItemDataRole.FontRole and r.category == "dangerous":
            return self._bold
        if role == Qt.ItemDataRole.ToolTipRole:
            return plain_tooltip(f"{_row_text(r)}\n{_CATEGORY_TEXT.get(r.category, r.category)}: {r.reason}")
        if role == Qt.ItemDataRole.TextAlignmentRole and col == self.COUNT:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == self.RowRole:
            return r
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if not 0 <= column < len(self.COLUMNS):
            return
        self._sort = (column, order)
        self.layoutAboutToBeChanged.emit()
        before = list(self._rows)
        self._apply_sort()
        # Keep selections and the current cell on the same rows (persistent indexes follow the sort).
        where = {id(r): i for i, r in enumerate(self._rows)}
        old = self.persistentIndexList()
        new = [self.index(where[id(before[i.row()])], i.column()) if 0 <= i.row() < len(before) else QModelIndex()
               for i in old]
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def _apply_sort(self) -> None:
        column, order = self._sort
        def tie(r: SafetyRow) -> tuple:
            return _RANK.get(r.category, 3), r.qualname.casefold(), r.pickle

        keys = {
            self.CATEGORY: tie,
            self.GLOBAL: lambda r: (r.qualname.casefold(), tie(r)),
            self.PICKLE: lambda r: (r.pickle.casefold(), tie(r)),
            self.LOADER: lambda r: (r.loader.casefold(), tie(r)),
            self.COUNT: lambda r: (r.count, tie(r)),
            self.REASON: lambda r: (r.reason.casefold(), tie(r)),
        }
        self._rows.sort(key=keys[column], reverse=order == Qt.SortOrder.DescendingOrder)


# -- the panel ------------------------------------------------------------------------------------
_TINTS = {DANGEROUS: 60, INCOMPLETE: 50, UNKNOWN: 36, CLEAN: 40}
MAX_ISSUES = 8             # problems and notes listed under the table


class SafetyPanel(QWidget):
    """The Safety tab: a one-line verdict, counts, the sortable imports table, problems and notes."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.report: SafetyReport | None = None
        self._dark = is_dark()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)

        self.verdict_box = QFrame(self)
        self.verdict_box.setObjectName("safety-verdict")
        row = QHBoxLayout(self.verdict_box)
        row.setContentsMargins(6, 4, 6, 4)
        self.verdict_icon = QLabel(self.verdict_box)
        self.verdict_icon.setFixedSize(20, 20)
        row.addWidget(self.verdict_icon, 0, Qt.AlignmentFlag.AlignTop)
        texts = QVBoxLayout()
        texts.setSpacing(2)
        self.verdict = _plain_label("", self.verdict_box)
        f = self.verdict.font()
        f.setBold(True)
        self.verdict.setFont(f)
        texts.addWidget(self.verdict)
        self.verdict_note = _plain_label(NOTHING_RUN, self.verdict_box)
        self.verdict_note.hide()
        texts.addWidget(self.verdict_note)
        row.addLayout(texts, 1)
        lay.addWidget(self.verdict_box)
        # "Loading in PyTorch" above the imports table, the split between them adjustable.
        self.split = QSplitter(Qt.Orientation.Vertical, self)
        self.split.setChildrenCollapsible(False)
        self.torch_load = TorchLoadSection(self.split)
        imports = QWidget(self.split)
        il = QVBoxLayout(imports)
        il.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.split, 1)

        head = QHBoxLayout()
        self.summary = _plain_label("", self)
        head.addWidget(self.summary, 1)
        self.copy_button = QPushButton("Copy Report", self)
        self.copy_button.setToolTip("Copy the report as text (what `ckptviewer scan` prints)")
        self.copy_button.clicked.connect(self._on_copy_clicked)
        head.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)
        il.addLayout(head)

        self.model = SafetyTableModel(self)
        self.table = QTableView(imports)
        self.table.setObjectName("safety-table")
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(SafetyTableModel.CATEGORY, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setIconSize(QSize(14, 14))
        vh = self.table.verticalHeader()
        vh.hide()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(self.fontMetrics().height() + 6)
        hh = self.table.horizontalHeader()
        hh.setStretchLastSection(True)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        il.addWidget(self.table, 1)
        self.table.setMinimumHeight(vh.defaultSectionSize() * 4)
        self._split_moved = False
        self.split.splitterMoved.connect(self._on_split_moved)
        self.table.selectionModel().currentChanged.connect(self._on_current_row_changed)
        self.model.modelReset.connect(self._show_row_detail)
        self.model.layoutChanged.connect(self._show_row_detail)

        # The current row in full (the table elides long names and reasons).
        self.row_detail = _plain_label("", self)
        self.row_detail.setObjectName("safety-row-detail")
        lay.addWidget(self.row_detail)
        self.issues = _plain_label("", self)
        self.issues.setObjectName("safety-issues")
        self.issues.hide()
        lay.addWidget(self.issues)

    def set_report(self, report: SafetyReport) -> None:
        self.report = report
        self.verdict.setText(report.verdict)
        self.verdict.setToolTip(plain_tooltip(report.full_verdict))
        self.summary.setText(report.summary)
        self.verdict_note.setVisible(report.is_dangerous)
        self.torch_load.set_report(report.torch_load)
        self._fit_split()
        self.model.set_rows(report.rows)
        self._fit_columns(report.rows, len(report.scan.pickles) if report.scan is not None else 0)
        lines = ([f"Anomaly: {a}" for a in report.anomalies] + [f"Broken: {p}" for p in report.problems]
                 + [f"Note: {n}" for n in report.notes])
        if len(lines) > MAX_ISSUES:
            lines = lines[:MAX_ISSUES] + [f"…and {len(lines) - MAX_ISSUES} more (Copy Report has them all)"]
        self.issues.setText("\n".join(lines))
        self.issues.setVisible(bool(lines))
        self._restyle()

    def _fit_split(self) -> None:
        """The PyTorch section as tall as its contents, the table the rest, until the user moves the split."""
        if self._split_moved:
            return
        total = sum(self.split.sizes())
        if total <= 0:
            return
        section = self.torch_load
        hint = section.heightForWidth(self.split.width()) if section.hasHeightForWidth() else -1
        want = min(hint if hint > 0 else section.sizeHint().height(), total - self.table.minimumHeight())
        self.split.setSizes([max(want, 0), total - max(want, 0)])

    def _on_split_moved(self, _pos: int, _index: int) -> None:
        self._split_moved = True

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        # After the layout has given the split its new size (it has not yet, during this event).
        QTimer.singleShot(0, self, self._fit_split)

    def _fit_columns(self, rows: list[SafetyRow], n_pickles: int) -> None:
        """Widths from the first rows' texts (never a pass over all rows: a file may name 10^5 globals)."""
        fm = self.table.fontMetrics()
        sample = rows[:300]
        bold = QFont(self.table.font())
        bold.setBold(True)
        bfm = QFontMetrics(bold)

        def width(texts: list[str], lo: int, hi: int, pad: int = 18) -> int:
            widest = max((bfm.horizontalAdvance(t) for t in texts), default=0)
            return max(lo, min(hi, widest + pad))

        self.table.setColumnWidth(SafetyTableModel.CATEGORY,
                                  width(["Dangerous", "Category"], 90, 130, 36))
        self.table.setColumnWidth(SafetyTableModel.GLOBAL, width([r.qualname for r in sample] + ["Global"], 120, 280))
        self.table.setColumnWidth(SafetyTableModel.PICKLE, width([r.pickle for r in sample] + ["Pickle"], 60, 160))
        # One pickle (most files): the summary line names it, and the reasons get the room. The loader
        # column only when the pickles are not all reached the same way (an archive's stray members).
        self.table.setColumnHidden(SafetyTableModel.PICKLE, n_pickles <= 1 and not any(r.code for r in rows))
        loaders = len({r.loader for r in rows if r.loader})
        self.table.setColumnHidden(SafetyTableModel.LOADER, loaders <= 1)
        self.table.setColumnWidth(SafetyTableModel.LOADER, width([r.loader for r in sample] + ["Loaded by"], 80, 170))
        self.table.setColumnWidth(SafetyTableModel.COUNT, width([f"{r.count:,}" for r in sample] + ["Count"],
                                                                44, 90, 22 + fm.horizontalAdvance(" ")))

    def _on_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._show_row_detail()

    def _show_row_detail(self) -> None:
        """The current row (or the first, the worst) in full below the table."""
        n = self.model.rowCount()
        if not n:
            self.row_detail.setText("The file's pickles name no globals." if self.report is not None
                                    and not self.report.problems else "")
            self.row_detail.setVisible(bool(self.row_detail.text()))
            return
        current = self.table.currentIndex()
        r = self.model.row_at(current.row() if current.isValid() else 0)
        self.row_detail.setText(f"{_row_text(r)}: {r.reason}")
        self.row_detail.show()

    def _restyle(self) -> None:
        self._dark = is_dark()
        level = self.report.level if self.report is not None else CLEAN
        c = QColor(level_color(level, self._dark))
        self.verdict_box.setStyleSheet(f"#safety-verdict {{ background: rgba({c.red()}, {c.green()}, {c.blue()}, "
                                       f"{_TINTS.get(level, 40)}); border-left: 4px solid {c.name()}; "
                                       f"border-radius: 3px; }}")
        self.verdict_icon.setPixmap(level_icon(level, 20).pixmap(20, 20))
        self.model.refresh_colors()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and is_dark() != self._dark and self.report is not None:
            self._restyle()

    def _on_copy_clicked(self) -> None:
        if self.report is not None:
            QGuiApplication.clipboard().setText(self.report.text())


# -- the banner -------------------------------------------------------------------------------------
class SafetyBanner(QFrame):
    """A strong red strip above the tree, shown only when the file names dangerous globals.

    ``details_requested`` when its button asks for the Safety panel."""

    details_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("safety-banner")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._dark = is_dark()
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 8, 10, 8)
        row.setSpacing(10)
        self.icon = QLabel(self)
        self.icon.setFixedSize(36, 36)
        row.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        col = QVBoxLayout()
        col.setSpacing(3)
        self.title = _plain_label("", self)
        f = self.title.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.title.setFont(f)
        self.names = _plain_label("", self)
        self.footer = _plain_label(NOTHING_RUN + " Do not load this file with torch.load(weights_only=False) "
                                   "or pickle unless you trust where it came from.", self)
        col.addWidget(self.title)
        col.addWidget(self.names)
        col.addWidget(self.footer)
        row.addLayout(col, 1)
        self.button = QPushButton("Show All Imports", self)
        self.button.setObjectName("safety-banner-button")
        self.button.setToolTip("Show the Safety panel: every global each pickle of the file names")
        self.button.clicked.connect(self.details_requested)
        row.addWidget(self.button, 0, Qt.AlignmentFlag.AlignTop)
        self._restyle()
        self.hide()

    def set_report(self, report: SafetyReport) -> None:
        if not report.is_dangerous:
            self.hide()
            return
        n = len(report.dangerous)
        self.title.setText(report.banner_title())
        lines = [f"•  {name} — {reason}" for name, reason in report.dangerous[:BANNER_NAMES]]
        if n > BANNER_NAMES:
            lines.append(f"…and {n - BANNER_NAMES} more: see the Safety panel")
        self.names.setText("\n".join(lines))
        self.setToolTip(plain_tooltip(report.full_verdict))
        self.show()

    def texts(self) -> dict[str, str]:
        """What the banner says (tests, screenshot checks)."""
        return {"title": self.title.text(), "names": self.names.text(), "footer": self.footer.text()}

    def _restyle(self) -> None:
        self._dark = is_dark()
        # Strong in both schemes: white text on red (contrast above 5:1), a lighter edge in the dark.
        bg, edge = ("#a61b1b", "#ff6b5b") if self._dark else ("#c0392b", "#8e1b10")
        self.setStyleSheet(
            f"#safety-banner {{ background: {bg}; border: 2px solid {edge}; border-radius: 4px; }}"
            f"#safety-banner QLabel {{ color: #ffffff; background: transparent; }}"
            f"#safety-banner-button {{ background: #ffffff; color: #8e1b10; border: 1px solid #ffffff; "
            f"border-radius: 3px; padding: 4px 10px; font-weight: bold; }}"
            f"#safety-banner-button:hover {{ background: #fde8e6; }}")
        self.icon.setPixmap(level_icon(DANGEROUS, 36, on_color=True).pixmap(36, 36))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and is_dark() != self._dark:
            self._restyle()
