"""The value table: any tensor as rows (every index but the last) by columns (the last index), a page at a time.

A page is at most :data:`PAGE_ROWS` x :data:`PAGE_COLUMNS` cells; the model never holds more than the blocks of
the page that were painted. When the view asks for a cell whose block of rows is not loaded, the model shows
an ellipsis and emits ``block_wanted(first_row, count)`` (coalesced by a zero timer); whoever owns the model
reads the block in a worker and hands it back with :meth:`ValuesTableModel.set_block`. Blocks that arrive for
an older tensor or page are dropped (each request carries the model's generation).

Copying (Ctrl+C) gives the selected cells as tab-separated text, every value in the fewest digits that read
back exactly in the dtype shown.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.planes import TableLayout

PAGE_ROWS = 1000
PAGE_COLUMNS = 1000
BLOCK_VALUES = 1 << 15          # a block of rows holds about this many values
PENDING = "…"

AnyIndex = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_ALIGN = Qt.ItemDataRole.TextAlignmentRole
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter


def value_text(v: Any, full: bool = False) -> str:
    """A value for a cell (six significant digits) or for copying (shortest text that reads back exactly)."""
    if isinstance(v, np.generic) and v.dtype.kind == "f":
        if full or not np.isfinite(v):
            return str(v)
        return f"{float(v):.6g}"
    if isinstance(v, np.generic):
        return str(v.item()) if v.dtype.kind != "b" else ("True" if v else "False")
    return str(v)


class ValuesTableModel(QAbstractTableModel):
    """One page of a tensor's table. ``block_wanted(generation, first_row, count)`` asks for values."""

    block_wanted = Signal(int, int, int)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.layout_: TableLayout | None = None
        self.dtype = ""
        self.generation = 0
        self.page_row = 0            # first table row of the page
        self.page_col = 0            # first column of the page
        self.rows = 0                # rows and columns of this page
        self.cols = 0
        self.block_rows = 1
        self._blocks: dict[int, np.ndarray] = {}       # block number -> values (block_rows x all columns)
        self._asked: set[int] = set()
        self._wanted: set[int] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._on_timer)

    # -- what is shown --------------------------------------------------------------------------
    def set_layout(self, layout: TableLayout | None, dtype: str = "") -> None:
        """Show a tensor's table from its first page (None: nothing)."""
        self.beginResetModel()
        self.layout_ = layout
        self.dtype = dtype
        self.generation += 1
        self._blocks.clear()
        self._asked.clear()
        self._wanted.clear()
        self.page_row = self.page_col = 0
        self._size_page()
        self.endResetModel()

    def set_page(self, page_row: int, page_col: int = 0) -> None:
        """Show the page whose first row and column are ``page_row`` and ``page_col`` (clamped to pages)."""
        lay = self.layout_
        if lay is None:
            return
        page_row = max(0, min(page_row, max(0, lay.rows - 1))) // PAGE_ROWS * PAGE_ROWS
        page_col = max(0, min(page_col, max(0, lay.columns - 1))) // PAGE_COLUMNS * PAGE_COLUMNS
        if (page_row, page_col) == (self.page_row, self.page_col):
            return
        self.beginResetModel()
        self.page_row, self.page_col = page_row, page_col
        self.generation += 1
        self._blocks.clear()
        self._asked.clear()
        self._wanted.clear()
        self._size_page()
        self.endResetModel()

    def _size_page(self) -> None:
        lay = self.layout_
        if lay is None:
            self.rows = self.cols = 0
            return
        self.rows = max(0, min(PAGE_ROWS, lay.rows - self.page_row))
        self.cols = max(0, min(PAGE_COLUMNS, lay.columns - self.page_col))
        self.block_rows = max(1, min(PAGE_ROWS, BLOCK_VALUES // max(1, lay.columns)))

    @property
    def pages(self) -> tuple[int, int]:
        lay = self.layout_
        if lay is None:
            return 0, 0
        return math.ceil(lay.rows / PAGE_ROWS), math.ceil(lay.columns / PAGE_COLUMNS)

    def set_block(self, generation: int, first_row: int, values: np.ndarray) -> None:
        """Values of table rows ``first_row ..`` (all columns) read for request ``generation``."""
        if generation != self.generation or self.layout_ is None:
            return
        block = (first_row - self.page_row) // self.block_rows
        self._blocks[block] = values
        self._asked.discard(block)
        top = block * self.block_rows
        bottom = min(self.rows, top + values.shape[0]) - 1
        if bottom >= top and self.cols:
            self.dataChanged.emit(self.index(top, 0), self.index(bottom, self.cols - 1), [_DISPLAY, _TOOLTIP])

    def block_failed(self, generation: int, first_row: int) -> None:
        if generation == self.generation:
            self._asked.discard((first_row - self.page_row) // self.block_rows)

    def value_at(self, row: int, col: int) -> Any:
        """The value of page cell (row, col), or None when its block is not loaded."""
        block = self._blocks.get(row // self.block_rows)
        if block is None:
            return None
        r = row % self.block_rows
        c = self.page_col + col
        if r >= block.shape[0] or c >= block.shape[1]:
            return None
        return block[r, c]

    def tensor_index(self, row: int, col: int) -> tuple[int, ...]:
        """The tensor index of page cell (row, col)."""
        lay = self.layout_
        trow, tcol = self.page_row + row, self.page_col + col
        if lay is None or not lay.shape:
            return ()
        if len(lay.shape) == 1:
            return (trow // lay.per_element,)
        return lay.row_index(trow) + (tcol // lay.per_element,)

    def page_for_index(self, index: tuple[int, ...]) -> tuple[int, int]:
        """(table row, table column) of a tensor index."""
        lay = self.layout_
        if lay is None or not lay.shape:
            return 0, 0
        if len(lay.shape) == 1:
            return index[0] * lay.per_element, 0
        row = int(np.ravel_multi_index(index[:-1], lay.shape[:-1]))
        return row, index[-1] * lay.per_element

    # -- Qt model -------------------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self.rows

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self.cols

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: AnyIndex, role: int = _DISPLAY) -> Any:
        if not index.isValid() or self.layout_ is None:
            return None
        row, col = index.row(), index.column()
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            return None
        if role == _ALIGN:
            return _RIGHT
        if role not in (_DISPLAY, _TOOLTIP):
            return None
        v = self.value_at(row, col)
        if v is None:
            self._want(row // self.block_rows)
            return PENDING if role == _DISPLAY else None
        if role == _DISPLAY:
            return value_text(v)
        idx = self.tensor_index(row, col)
        return f"[{', '.join(str(i) for i in idx)}] = {value_text(v, full=True)}  ({self.dtype})"

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if role != _DISPLAY or self.layout_ is None:
            return None
        if orientation == Qt.Orientation.Horizontal:
            if len(self.layout_.shape) < 2:
                return "value"
            return str((self.page_col + section) // self.layout_.per_element)
        return self.layout_.row_label(self.page_row + section)

    # -- loading --------------------------------------------------------------------------------
    def _want(self, block: int) -> None:
        if block in self._asked or block in self._blocks:
            return
        self._asked.add(block)
        self._wanted.add(block)
        if not self._timer.isActive():
            self._timer.start()

    def _on_timer(self) -> None:
        wanted, self._wanted = sorted(self._wanted), set()
        for block in wanted:
            first = self.page_row + block * self.block_rows
            count = min(self.block_rows, self.rows - block * self.block_rows)
            if count > 0:
                self.block_wanted.emit(self.generation, first, count)

    def copy_text(self, indexes: list[QModelIndex]) -> str:
        """Tab-separated text of the cells ``indexes`` (their bounding rectangle; unloaded cells empty)."""
        if not indexes:
            return ""
        rows = sorted({i.row() for i in indexes})
        cols = sorted({i.column() for i in indexes})
        chosen = {(i.row(), i.column()) for i in indexes}
        lines = []
        for r in range(rows[0], rows[-1] + 1):
            cells = []
            for c in range(cols[0], cols[-1] + 1):
                v = self.value_at(r, c) if (r, c) in chosen else None
                cells.append("" if v is None else value_text(v, full=True))
            lines.append("\t".join(cells))
        return "\n".join(lines)


class ValuesTable(QWidget):
    """The table with its page controls and a go-to-index box. ``copied(str)`` after a copy."""

    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = ValuesTableModel(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.prev_button = QToolButton(self)
        self.prev_button.setText("◀")
        self.prev_button.setToolTip("Previous page")
        self.prev_button.clicked.connect(lambda: self._step(-1))
        self.next_button = QToolButton(self)
        self.next_button.setText("▶")
        self.next_button.setToolTip("Next page")
        self.next_button.clicked.connect(lambda: self._step(1))
        self.page_label = QLabel("", self)
        self.page_label.setTextFormat(Qt.TextFormat.PlainText)
        self.goto = QLineEdit(self)
        self.goto.setPlaceholderText("go to index, e.g. 3, 17")
        self.goto.setMaximumWidth(180)
        self.goto.returnPressed.connect(self._on_goto)
        bar.addWidget(self.prev_button)
        bar.addWidget(self.next_button)
        bar.addWidget(self.page_label, 1)
        bar.addWidget(self.goto)
        lay.addLayout(bar)
        self.view = QTableView(self)
        self.view.setModel(self.model)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.horizontalHeader().setDefaultSectionSize(84)
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        self.view.setWordWrap(False)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        # The view's own Ctrl+C copies one cell's display text (six digits); this copies the selection exactly.
        self.copy_action = QAction("Copy", self.view)
        self.copy_action.setShortcut(QKeySequence.StandardKey.Copy)
        self.copy_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.copy_action.triggered.connect(self.copy_selection)
        self.view.addAction(self.copy_action)
        lay.addWidget(self.view, 1)
        self.message = QLabel("", self)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)
        lay.addWidget(self.message)
        self.model.modelReset.connect(self._update_label)
        self._update_label()

    def set_layout(self, layout: TableLayout | None, dtype: str = "") -> None:
        self.model.set_layout(layout, dtype)
        self.message.setText("")

    def _step(self, direction: int) -> None:
        m = self.model
        lay = m.layout_
        if lay is None:
            return
        if lay.rows > PAGE_ROWS or lay.columns <= PAGE_COLUMNS:
            m.set_page(m.page_row + direction * PAGE_ROWS, m.page_col)
        else:
            m.set_page(m.page_row, m.page_col + direction * PAGE_COLUMNS)

    def _update_label(self) -> None:
        m = self.model
        lay = m.layout_
        if lay is None:
            self.page_label.setText("")
            self.prev_button.setEnabled(False)
            self.next_button.setEnabled(False)
            return
        text = f"rows {m.page_row + 1:,}–{m.page_row + m.rows:,} of {lay.rows:,}"
        if lay.columns > PAGE_COLUMNS:
            text += f", columns {m.page_col + 1:,}–{m.page_col + m.cols:,} of {lay.columns:,}"
        self.page_label.setText(text)
        self.prev_button.setEnabled(m.page_row > 0 or m.page_col > 0)
        self.next_button.setEnabled(m.page_row + m.rows < lay.rows or m.page_col + m.cols < lay.columns)

    def go_to(self, index: tuple[int, ...]) -> bool:
        """Show and select the cell of tensor ``index``."""
        m = self.model
        lay = m.layout_
        if lay is None:
            return False
        if len(index) != len(lay.shape) or any(not 0 <= i < n for i, n in zip(index, lay.shape)):
            self.message.setText(f"{list(index)} is not an index of a tensor shaped {list(lay.shape)}")
            return False
        row, col = m.page_for_index(index)
        m.set_page(row, col)
        cell = m.index(row - m.page_row, col - m.page_col)
        self.view.setCurrentIndex(cell)
        self.view.scrollTo(cell, QAbstractItemView.ScrollHint.PositionAtCenter)
        self.message.setText("")
        return True

    def _on_goto(self) -> None:
        text = self.goto.text().replace("[", "").replace("]", "").replace(":", "")
        try:
            index = tuple(int(p) for p in text.replace(",", " ").split())
        except ValueError:
            self.message.setText("Type an index as integers separated by commas, e.g. 3, 17")
            return
        lay = self.model.layout_
        if lay is not None and len(index) == 1 and len(lay.shape) > 1 and 0 <= index[0] < math.prod(lay.shape):
            index = tuple(int(i) for i in np.unravel_index(index[0], lay.shape))     # a flat index
        self.go_to(index)

    def copy_selection(self) -> str:
        text = self.model.copy_text(self.view.selectionModel().selectedIndexes())
        if text:
            QGuiApplication.clipboard().setText(text)
            self.copied.emit(text)
        return text
