"""The Run tab's tables: the tensors of the run (one row per key, checkable for the line chart) and the
checkpoints (one row per file, with what each records about training).

Both are ``QAbstractTableModel`` views over the core's ``Run``. The layers model shows an entry's numbers
only once its batch has arrived (``RunView.ready``); until then its number columns say "…". Text that
comes from files (keys, file names) is shown through ``safe_text``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    Signal,
)

from ...core.util.textsafe import safe_text
from ...core.util.units import shape_text
from ..widgets.theme import plain_tooltip
from .work import METRIC_TEXT, NUMBER_COLUMNS, RunView, entry_numbers, metric_values

_Index = QModelIndex | QPersistentModelIndex
PENDING_TEXT = "…"


def number_text(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.4g}"


class RunLayersModel(QAbstractTableModel):
    """The run's tensors (the visible ones, in key order or sorted), checkable to plot them."""

    checked_changed = Signal()
    COLUMNS = ("Key", "Shape", "DType", "Last norm", "Max rel. change", "Last rel. change")

    def __init__(self, view: RunView, parent=None):
        super().__init__(parent)
        self.view = view
        self.rows: list[int] = []            # entry indices, in display order
        self._row_of = np.full(len(view.run.entries), -1, dtype=np.intp)   # entry -> row, -1 when hidden
        self.checked: list[int] = []         # entry indices, in the order they were checked
        self._texts = view.texts
        self._sort: tuple[int, Qt.SortOrder] | None = None

    # -- rows -----------------------------------------------------------------------------------
    def set_rows(self, rows: list[int]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self._apply_sort()
        self._index_rows()
        self.endResetModel()

    def row_of(self, entry: int) -> int | None:
        r = int(self._row_of[entry]) if 0 <= entry < len(self._row_of) else -1
        return r if r >= 0 else None

    def _index_rows(self) -> None:
        self._row_of.fill(-1)
        self._row_of[np.asarray(self.rows, dtype=np.intp)] = np.arange(len(self.rows), dtype=np.intp)

    def entry_at(self, row: int) -> int | None:
        return self.rows[row] if 0 <= row < len(self.rows) else None

    def refresh(self, entries: list[int]) -> None:
        """Numbers arrived for ``entries``: repaint their rows (one signal over the span they cover)."""
        rows = self._row_of[np.asarray(entries, dtype=np.intp)] if entries else np.zeros(0, dtype=np.intp)
        rows = rows[rows >= 0]
        if rows.size:
            self.dataChanged.emit(self.index(int(rows.min()), 1), self.index(int(rows.max()), len(self.COLUMNS) - 1),
                                  [Qt.ItemDataRole.DisplayRole])

    def set_checked(self, entry: int, on: bool) -> None:
        if on == (entry in self.checked):
            return
        if on:
            self.checked.append(entry)
        else:
            self.checked.remove(entry)
        r = self.row_of(entry)
        if r is not None:
            idx = self.index(r, 0)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.CheckStateRole])
        self.checked_changed.emit()

    # -- Qt model -------------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt override
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(self.COLUMNS):
            return self.COLUMNS[section]
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        f = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 0:
            f |= Qt.ItemFlag.ItemIsUserCheckable
        return f

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        i = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.CheckStateRole and col == 0:
            return Qt.CheckState.Checked if i in self.checked else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.ToolTipRole and col == 0:
            return plain_tooltip(self._texts[i])
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        e = self.view.run.entries[i]
        if col == 0:
            return self._texts[i]
        if col == 1:
            return shape_text(e.shape)
        if col == 2:
            return e.dtype
        if i not in self.view.ready:
            return PENDING_TEXT
        return number_text(self.sort_value(i, col))

    def setData(self, index: _Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        if not index.isValid() or index.column() != 0 or role != Qt.ItemDataRole.CheckStateRole:
            return False
        entry = self.rows[index.row()]
        self.set_checked(entry, Qt.CheckState(value) == Qt.CheckState.Checked)
        return True

    # -- sorting --------------------------------------------------------------------------------
    def sort_value(self, entry: int, column: int) -> float | None:
        if column not in NUMBER_COLUMNS:
            return None
        return entry_numbers(self.view.run.entries[entry])[NUMBER_COLUMNS.index(column)]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        before = [self.rows[p.row()] if 0 <= p.row() < len(self.rows) else None for p in persistent]
        self._sort = (column, order)
        self._apply_sort()
        self._index_rows()
        self.changePersistentIndexList(persistent, [
            self.index(int(self._row_of[e]), p.column()) if e is not None else QModelIndex()
            for e, p in zip(before, persistent)])
        self.layoutChanged.emit()

    def _apply_sort(self) -> None:
        if self._sort is None:
            return
        column, order = self._sort
        reverse = order == Qt.SortOrder.DescendingOrder
        entries = self.view.run.entries
        if column == 0:
            self.rows.sort(reverse=reverse)                   # the run's key order
        elif column == 1:
            self.rows.sort(key=lambda i: math.prod(entries[i].shape), reverse=reverse)
        elif column == 2:
            self.rows.sort(key=lambda i: entries[i].dtype, reverse=reverse)
        elif column in NUMBER_COLUMNS:
            # Rows without a number (not read yet, undefined) go last, whatever the order; ties keep key order.
            rows = np.asarray(self.rows, dtype=np.intp)
            values = self.view.numbers[rows, NUMBER_COLUMNS.index(column)] if rows.size else np.zeros(0)
            missing = np.isnan(values)
            keys = np.where(missing, 0.0, -values if reverse else values)
            self.rows = rows[np.lexsort((keys, missing))].tolist()


class RunFilesModel(QAbstractTableModel):
    """The run's checkpoints, in order, with the epoch / step / loss / lr each records."""

    COLUMNS = ("#", "Checkpoint", "Epoch", "Step", "Loss", "LR")
    _SERIES = ("epoch", "step", "loss", "lr")

    def __init__(self, view: RunView, parent=None):
        super().__init__(parent)
        self.view = view
        self._labels = [safe_text(f.label, 200) for f in view.run.files]
        self._paths = [safe_text(f.path, 400) for f in view.run.files]

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.view.run.files)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt override
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(self.COLUMNS):
            return self.COLUMNS[section]
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.view.run.files):
            return None
        r, col = index.row(), index.column()
        if role == Qt.ItemDataRole.ToolTipRole:
            return plain_tooltip(self._paths[r])
        if role == Qt.ItemDataRole.TextAlignmentRole and col != 1:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if col == 0:
            return str(r)
        if col == 1:
            return self._labels[r]
        return number_text(getattr(self.view.run.files[r], self._SERIES[col - 2]))


def entry_summary(view: RunView, entry: int, file: int | None = None) -> list[str]:
    """Lines describing one tensor across the run (and at one checkpoint), for the details label."""
    e = view.run.entries[entry]
    lines = [f"{safe_text(e.text, 300)}   {shape_text(e.shape)} {e.dtype}"]
    if entry not in view.ready:
        return lines + ["Not read yet…"]
    if file is not None and 0 <= file < len(view.run.files):
        f = view.run.files[file]
        parts = [f"{METRIC_TEXT[m].lower()} {number_text(metric_values(e, m)[file])}"
                 for m in ("norm", "mean", "std", "rel_change")]
        lines.append(f"at {safe_text(f.label, 120)}: " + ", ".join(parts)
                     + ("" if e.paths[file] is not None else " (not in this checkpoint)"))
    lines += [safe_text(x, 300) for x in e.errors[:3]]
    return lines
