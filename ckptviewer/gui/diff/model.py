"""The diff tab's tree: a lazy QAbstractItemModel over the merged :class:`DiffNode` tree.

Rows come in batches (``canFetchMore``/``fetchMore``) like the checkpoint tree. Each row has a status
(colour and icon); a group shows how many of its keys differ. With "differences only" the model
exposes only the nodes that have a difference below them; while values are still being compared, a
row appears when its pair turns out to differ (``beginInsertRows`` at its place in key order).

Hazard: ``createIndex(row, col, node)`` stores a bare pointer to the Python object. The nodes stay
alive because the tree (the model's ``_root`` and every node's ``children``) holds them for as long as
the model exists; never pass a temporary object.
"""
from __future__ import annotations

import bisect
import math
from functools import lru_cache
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap

from ...core.analyze.diff import STATUS_TEXT
from ...core.model.tensor import TensorRef
from ...core.model.tree import value_text
from ...core.model.values import value_text as small_value_text
from ...core.util.textsafe import safe_text
from ...core.util.units import shape_text
from ..widgets.qtcompat import top_up
from ..widgets.theme import is_dark, plain_tooltip
from .work import DiffNode, set_leaf_status

BATCH = 1000
COLUMNS = ("Name", "Status", "rel. change", "max |a−b|", "not close", "A", "B")
COL_NAME, COL_STATUS, COL_REL, COL_MAX, COL_FRAC, COL_A, COL_B = range(len(COLUMNS))
NUMERIC = (COL_MAX, COL_REL, COL_FRAC)
_NCOLS = len(COLUMNS)

# status -> (symbol, light colour, dark colour)
STATUS_STYLE: dict[str, tuple[str, str, str]] = {
    "same": ("=", "#5f7f6a", "#86a892"),
    "changed": ("≠", "#c7631a", "#ff9f4a"),
    "value": ("≠", "#c7631a", "#ff9f4a"),
    "dtype": ("T", "#8a4fc7", "#b48cff"),
    "shape": ("S", "#c0392b", "#ff6b5b"),
    "only_a": ("−", "#c0392b", "#ff6b5b"),
    "only_b": ("+", "#1f8a4c", "#4cc27e"),
    "error": ("!", "#8b1e1e", "#ff4d4d"),
    "pending": ("…", "#8a8a8a", "#8a8a8a"),
    "differs": ("≠", "#c7631a", "#ff9f4a"),      # a group with differences below it
}

_DISPLAY = Qt.ItemDataRole.DisplayRole.value
_DECORATION = Qt.ItemDataRole.DecorationRole.value
_TOOLTIP = Qt.ItemDataRole.ToolTipRole.value
_FOREGROUND = Qt.ItemDataRole.ForegroundRole.value
_FONT = Qt.ItemDataRole.FontRole.value
_ALIGN = Qt.ItemDataRole.TextAlignmentRole.value
_RIGHT = int((Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter).value)
_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

AnyIndex = QModelIndex | QPersistentModelIndex


def status_color(status: str, dark: bool | None = None) -> QColor:
    spec = STATUS_STYLE.get(status, STATUS_STYLE["pending"])
    return QColor(spec[2] if (is_dark() if dark is None else dark) else spec[1])


@lru_cache(maxsize=64)
def _icon(status: str, dark: bool, size: int = 16) -> QIcon:
    symbol = STATUS_STYLE.get(status, STATUS_STYLE["pending"])[0]
    color = status_color(status, dark)
    icon = QIcon()
    for scale in (1, 2):
        px = QPixmap(size * scale, size * scale)
        px.fill(Qt.GlobalColor.transparent)
        p = QPainter(px)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(1 * scale, 1 * scale, (size - 2) * scale, (size - 2) * scale)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        p.drawEllipse(r) if status in ("same", "pending") else p.drawRoundedRect(r, 3.5 * scale, 3.5 * scale)
        f = QFont()
        f.setBold(True)
        f.setPixelSize(int(11 * scale))
        p.setFont(f)
        p.setPen(QColor("#ffffff"))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, symbol)
        p.end()
        icon.addPixmap(px)
    return icon


def status_icon(status: str) -> QIcon:
    return _icon(status, is_dark())


def group_status(node: DiffNode) -> str:
    """A group's colour: differences below it win, then keys still being compared, else identical."""
    if node.n_differ:
        return "differs"
    if node.n_pending:
        return "pending"
    return "same"


def group_text(node: DiffNode) -> str:
    n, d, p = node.n_leaves, node.n_differ, node.n_pending
    if d:
        text = f"{d:,} of {n:,} differ"
    elif p:
        text = f"comparing {p:,} of {n:,}"
    else:
        return f"all {n:,} identical" if n > 1 else "identical"
    return text + (f", {p:,} not compared yet" if d and p else "")


def side_text(v: Any) -> str:
    if isinstance(v, TensorRef):
        return safe_text(f"{v.dtype.name} {shape_text(v.shape)} {v.device}", 80)
    return safe_text(value_text(v, 60), 80)


def _num(x: float, digits: int = 4) -> str:
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


class DiffTreeModel(QAbstractItemModel):
    """The merged tree of a comparison; ``set_differences_only`` filters it, ``apply_finished`` fills rows."""

    def __init__(self, root: DiffNode, parent: QObject | None = None):
        super().__init__(parent)
        self._root = root
        self._diff_only = False
        self._kids: dict[int, list[DiffNode]] = {}     # visible children per node (key 0: the top)
        self._fetched: dict[int, int] = {}
        self._calls = 0
        self._bold = QFont()
        self._bold.setBold(True)

    # -- filtering ------------------------------------------------------------------------------
    @property
    def root(self) -> DiffNode:
        return self._root

    @property
    def differences_only(self) -> bool:
        return self._diff_only

    def set_differences_only(self, on: bool) -> None:
        if on == self._diff_only:
            return
        self.beginResetModel()
        self._diff_only = on
        self._kids.clear()
        self._fetched.clear()
        self.endResetModel()

    def _visible(self, node: DiffNode) -> bool:
        return not self._diff_only or node.n_differ > 0

    def _key(self, node: DiffNode | None) -> int:
        return 0 if node is None or node is self._root else id(node)

    def _node(self, node: DiffNode | None) -> DiffNode:
        return self._root if node is None else node

    def kids(self, node: DiffNode | None) -> list[DiffNode]:
        """The children a view sees (all of them, or those with differences below)."""
        node = self._node(node)
        if not self._diff_only:
            return node.children
        key = self._key(node)
        got = self._kids.get(key)
        if got is None:
            got = [c for c in node.children if c.n_differ > 0]
            self._kids[key] = got
        return got

    def _fetched_of(self, node: DiffNode | None) -> int:
        key = self._key(node)
        have = self._fetched.get(key)
        if have is None:
            have = min(BATCH, len(self.kids(node)))
            self._fetched[key] = have
        return have

    # -- navigation -----------------------------------------------------------------------------
    def node_from_index(self, index: AnyIndex) -> DiffNode | None:
        if not index.isValid():
            return None
        return index.internalPointer()

    def _row_of(self, node: DiffNode) -> int:
        if not self._diff_only:
            return node.row
        siblings = self.kids(node.parent)
        i = bisect.bisect_left(siblings, node.row, key=lambda n: n.row)
        return i if i < len(siblings) and siblings[i] is node else -1

    def index_for_node(self, node: DiffNode, column: int = 0) -> QModelIndex:
        """The index of ``node``, fetching rows on the way (invalid if the filter hides it)."""
        chain = [node]
        while chain[-1].parent is not None and chain[-1].parent is not self._root:
            chain.append(chain[-1].parent)
        if chain[-1].parent is not self._root:
            return QModelIndex()
        parent = QModelIndex()
        for n in reversed(chain):
            if not self._visible(n):
                return QModelIndex()
            row = self._row_of(n)
            if row < 0:
                return QModelIndex()
            self.fetch_until(parent, row + 1)
            parent = self.createIndex(row, 0, n)
        return parent if column == 0 else self.createIndex(parent.row(), column, node)

    def fetch_until(self, parent: AnyIndex, rows: int) -> None:
        node = self.node_from_index(parent)
        while self._fetched_of(node) < min(rows, len(self.kids(node))):
            self.fetchMore(parent)

    def fetch_all(self, parent: AnyIndex) -> None:
        node = self.node_from_index(parent)
        total = len(self.kids(node))
        have = self._fetched_of(node)
        if have < total:
            self.beginInsertRows(QModelIndex(parent) if not isinstance(parent, QModelIndex) else parent,
                                 have, total - 1)
            self._fetched[self._key(node)] = total
            self.endInsertRows()

    # -- structure ------------------------------------------------------------------------------
    def index(self, row: int, column: int, parent: AnyIndex = QModelIndex()) -> QModelIndex:
        if parent.isValid() and parent.column() != 0:
            return QModelIndex()
        node = parent.internalPointer() if parent.isValid() else None
        if not (0 <= column < _NCOLS and 0 <= row < self._fetched_of(node)):
            return QModelIndex()
        return self.createIndex(row, column, self.kids(node)[row])

    def parent(self, index: AnyIndex = QModelIndex()) -> QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        p = index.internalPointer().parent
        if p is None or p is self._root:
            return QModelIndex()
        row = self._row_of(p)
        return self.createIndex(row, 0, p) if row >= 0 else QModelIndex()

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: N802 - Qt override
        if parent.isValid() and parent.column() > 0:
            return 0
        return self._fetched_of(parent.internalPointer() if parent.isValid() else None)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return _NCOLS

    def hasChildren(self, parent: AnyIndex = QModelIndex()) -> bool:  # noqa: N802 - Qt override
        if parent.isValid() and parent.column() > 0:
            return False
        return bool(self.kids(parent.internalPointer() if parent.isValid() else None))

    def canFetchMore(self, parent: AnyIndex) -> bool:  # noqa: N802 - Qt override
        if parent.isValid() and parent.column() > 0:
            return False
        node = parent.internalPointer() if parent.isValid() else None
        return self._fetched_of(node) < len(self.kids(node))

    def fetchMore(self, parent: AnyIndex) -> None:  # noqa: N802 - Qt override
        if parent.isValid() and parent.column() > 0:
            return
        node = parent.internalPointer() if parent.isValid() else None
        total = len(self.kids(node))
        have = self._fetched_of(node)
        add = min(BATCH, total - have)
        if add <= 0:
            return
        self.beginInsertRows(QModelIndex(parent) if not isinstance(parent, QModelIndex) else parent,
                             have, have + add - 1)
        self._fetched[self._key(node)] = have + add
        self.endInsertRows()

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        return _FLAGS if index.isValid() else Qt.ItemFlag.NoItemFlags

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt override
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        role = getattr(role, "value", role)
        if orientation == Qt.Orientation.Horizontal and 0 <= section < _NCOLS:
            if role == _DISPLAY:
                return COLUMNS[section]
            if role == _ALIGN and section in NUMERIC:
                return _RIGHT
            if role == _TOOLTIP:
                return {COL_MAX: "largest |a − b| over the elements",
                        COL_REL: "‖a − b‖ / ‖a‖: how much of A moved",
                        COL_FRAC: "elements not close in the sense of torch.allclose(atol, rtol)"}.get(section)
        return None

    # -- data -----------------------------------------------------------------------------------
    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        self._calls += 1
        if self._calls & 0x1FFF == 0:     # see qtcompat: some bindings lose a None per None returned
            top_up()
        if not index.isValid():
            return None
        node: DiffNode = index.internalPointer()
        col = index.column()
        role = getattr(role, "value", role)
        if role == _DISPLAY:
            return self.cell_text(node, col)
        status = node.status if node.entry is not None else group_status(node)
        if role == _DECORATION:
            return status_icon(status) if col == COL_NAME else None
        if role == _FOREGROUND:
            if col == COL_STATUS or (col == COL_NAME and status not in ("same", "pending")):
                return status_color(status)
            return None
        if role == _ALIGN:
            return _RIGHT if col in NUMERIC else None
        if role == _FONT:
            return self._bold if col == COL_NAME and node.entry is None and node.n_differ else None
        if role == _TOOLTIP:
            return plain_tooltip(self.tooltip(node, col))
        return None

    def cell_text(self, node: DiffNode, col: int) -> str:
        if col == COL_NAME:
            return node.name
        e = node.entry
        if e is None:
            return group_text(node) if col == COL_STATUS else ""
        status = node.status
        if col == COL_STATUS:
            text = STATUS_TEXT[status]
            if status == "same" and e.device_change:
                text += f" (saved on {safe_text(e.device_change, 40)})"
            return text
        if col in (COL_A, COL_B) and e.values is not None and status not in ("pending", "only_a", "only_b"):
            return safe_text(small_value_text(e.values[0 if col == COL_A else 1]), 80)   # a counter: its value
        if col == COL_A:
            return "" if status == "only_b" else side_text(e.a)
        if col == COL_B:
            return "" if status == "only_a" else side_text(e.b)
        m = e.metrics
        if m is None or status not in ("changed", "dtype", "same"):
            return ""
        if col == COL_MAX:
            return _num(m.max_abs)
        if col == COL_REL:
            return "0" if status == "same" else _num(m.relative_change)
        if col == COL_FRAC:
            return f"{100 * m.fraction_changed:.3g}%"
        return ""

    def tooltip(self, node: DiffNode, col: int) -> str:
        e = node.entry
        if e is None:
            return f"{node.prefix or node.name}\n{group_text(node)}"
        text = node.prefix + "\n" + STATUS_TEXT[node.status]
        if node.status != "pending":
            more = safe_text(e.describe(), 400)
            if more:
                text += ": " + more
        return text

    # -- comparison results (GUI thread) ---------------------------------------------------------
    def apply_finished(self, leaves: list[DiffNode]) -> list[DiffNode]:
        """Leaves whose entries were compared: take their new status, repaint them and the groups above,
        and (with differences only) insert the rows that now have something to show. Returns the
        leaves whose status changed."""
        changed: list[DiffNode] = []
        for leaf in leaves:
            if not set_leaf_status(leaf, leaf.entry.status):
                continue
            changed.append(leaf)
            if self._diff_only and leaf.n_differ == 1:
                self._reveal(leaf)
        self._repaint(changed)
        return changed

    def _reveal(self, leaf: DiffNode) -> None:
        """``leaf`` has just turned out to differ: show it. The nodes above it that had no difference
        until now were hidden; the topmost of them is inserted under its (visible) parent, at its
        place in key order, and the rest follow when the view asks for their rows."""
        top = leaf
        while top.parent is not None and top.parent is not self._root and top.parent.n_differ == 1:
            top = top.parent
        n = leaf
        while n is not top.parent:
            self._kids.pop(self._key(n), None)        # hidden until now: rebuilt when first shown
            self._fetched.pop(self._key(n), None)
            n = n.parent
        parent = top.parent
        pkey = self._key(parent)
        siblings = self._kids.get(pkey)
        if siblings is None:
            return                          # made (with ``top`` in it) when the view first asks
        pos = bisect.bisect_left(siblings, top.row, key=lambda x: x.row)
        if pos < len(siblings) and siblings[pos] is top:
            return
        have = self._fetched.get(pkey)
        if have is None or not (pos < have or have == len(siblings)):
            siblings.insert(pos, top)       # not exposed to views yet: fetchMore brings it
            return
        pindex = QModelIndex() if parent is self._root else self.createIndex(self._row_of(parent), 0, parent)
        self.beginInsertRows(pindex, pos, pos)
        siblings.insert(pos, top)
        self._fetched[pkey] = have + 1
        self.endInsertRows()

    def _repaint(self, leaves: list[DiffNode]) -> None:
        """dataChanged for the exposed rows among ``leaves`` and their ancestors (one range per parent)."""
        rows: dict[int, tuple[DiffNode, int, int]] = {}
        seen: set[int] = set()
        for leaf in leaves:
            n = leaf
            while n is not None and n is not self._root and id(n) not in seen:
                seen.add(id(n))
                parent = n.parent
                key = self._key(parent)
                have = self._fetched.get(key)
                if have is not None and self._visible(n):
                    row = self._row_of(n)
                    if 0 <= row < have:
                        got = rows.get(key)
                        rows[key] = (parent, row, row) if got is None else (parent, min(got[1], row),
                                                                            max(got[2], row))
                n = parent
        for parent, lo, hi in rows.values():
            if parent is not self._root and (not self._visible(parent) or self._row_of(parent) < 0):
                continue
            self.dataChanged.emit(self.createIndex(lo, 0, self.kids(parent)[lo]),
                                  self.createIndex(hi, _NCOLS - 1, self.kids(parent)[hi]))
