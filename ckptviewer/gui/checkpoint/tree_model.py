"""A lazy QAbstractItemModel over the core display tree, and the filter proxy that search drives.

Rows are core :class:`~ckptviewer.core.model.tree.Node` objects; an index's ``internalPointer()`` is the
node itself. Children are exposed in batches through ``canFetchMore``/``fetchMore``, so a state_dict
with 100,000 keys costs the view only the rows it has been scrolled to. The columns that sum over a
container's tensors (DType, Parameters, Size, Device) are "heavy": until a container's totals are
known the cell shows an ellipsis, the totals are computed in a worker, and ``dataChanged`` repaints.
The Value column of a small tensor (a ``num_batches_tracked`` counter, a 0-d loss) works the same way:
its few bytes are read in that worker, never while painting.

Hazard: ``createIndex(row, col, node)`` stores a bare pointer to the Python object without a
reference. The nodes stay alive because the tree (``self._root`` and every node's children list)
holds them for as long as the model exists; never pass a temporary object.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QFont

from ...core.model.tree import CONTAINER_KINDS, Node
from ...core.model.values import is_small
from ...core.model.values import value_text as small_value_text
from ...core.util.textsafe import safe_text
from ..widgets.qtcompat import top_up
from ..widgets.theme import is_dark, kind_color, kind_icon, kind_label, plain_tooltip

BATCH = 1000
# "Elements" counts every element (parameters and buffers); the summary's parameter counts exclude
# buffers, so calling this column "Parameters" would disagree with it on any model with BatchNorm.
COLUMNS = ("Name", "Kind", "Shape", "DType", "Elements", "Size", "Device", "Value")
COL_NAME, COL_KIND, COL_SHAPE, COL_DTYPE, COL_NUMEL, COL_SIZE, COL_DEVICE, COL_VALUE = range(len(COLUMNS))
HEAVY = (COL_DTYPE, COL_NUMEL, COL_SIZE, COL_DEVICE)
PENDING = "…"
LEAF_VALUE_KINDS = {"scalar", "string", "none", "values", "ndarray", "unreadable", "cycle", "truncated"}

AnyIndex = QModelIndex | QPersistentModelIndex
EDIT_COLOR_LIGHT = "#b35900"     # entries an edit changed, and the rows above them
EDIT_COLOR_DARK = "#f0a04b"
_HEALTH_TINTS = {"error": QColor(220, 50, 40, 60), "warning": QColor(230, 160, 30, 60)}

# Role and flag values as plain ints/objects: data() runs thousands of times per repaint, and
# comparing enum members is several times slower than comparing ints.
_DISPLAY = Qt.ItemDataRole.DisplayRole.value
_DECORATION = Qt.ItemDataRole.DecorationRole.value
_TOOLTIP = Qt.ItemDataRole.ToolTipRole.value
_FOREGROUND = Qt.ItemDataRole.ForegroundRole.value
_FONT = Qt.ItemDataRole.FontRole.value
_BACKGROUND = Qt.ItemDataRole.BackgroundRole.value
_ALIGN = Qt.ItemDataRole.TextAlignmentRole.value
_RIGHT = int((Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter).value)
_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_NCOLS = len(COLUMNS)


class CheckpointTreeModel(QAbstractItemModel):
    """The tree of one checkpoint. ``totals_wanted(list[Node])`` asks for heavy columns to be computed."""

    totals_wanted = Signal(list)

    def __init__(self, root: Node, warmed: set[int] | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self._root = root
        self._top: list[Node] = root.children() if root.has_children else [root]
        self._top_is_children = root.has_children
        self._fetched: dict[int, int] = {0: min(BATCH, len(self._top))}   # key 0: the top level
        self._ready: set[int] = set(warmed or ())
        self._wanted: dict[int, Node] = {}
        self._asked: set[int] = set()
        self._want_timer = QTimer(self)
        self._want_timer.setSingleShot(True)
        self._want_timer.setInterval(0)
        self._want_timer.timeout.connect(self._on_want_timer)
        self._calls = 0
        self._texts: dict[int, tuple[str, ...]] = {}     # display texts per node, once computed
        self._bold = QFont()
        self._bold.setBold(True)
        # Entries an edit changed (path -> what changed) and the rows above them (path -> how many).
        self._marks: dict[tuple, str] = {}
        self._containing: dict[tuple, int] = {}
        self._italic = QFont()
        self._italic.setItalic(True)
        self._bold_italic = QFont(self._bold)
        self._bold_italic.setItalic(True)
        self._edit_color = QColor(EDIT_COLOR_DARK if is_dark() else EDIT_COLOR_LIGHT)
        # Tensors the health check found something on: path -> (worst severity, kinds, details).
        self._health: dict[tuple, tuple[str, str, str]] = {}

    def set_health_marks(self, marks: dict[tuple, tuple[str, str, str]]) -> None:
        """Mark the rows of tensors with health findings (tinted for errors and warnings, named in the Value
        column, detailed in the tooltip); an empty dict removes the marks."""
        if not marks and not self._health:
            return
        self._health = marks
        self._texts.clear()
        self.layoutAboutToBeChanged.emit()
        self.layoutChanged.emit()

    def health_mark(self, node: Node) -> tuple[str, str, str] | None:
        return self._health.get(node.path) if self._health and node.kind == "tensor" else None

    def set_marks(self, marks: dict[tuple, str], containing: dict[tuple, int] | None = None) -> None:
        """Mark the entries an edit changed (italic, coloured, noted in the Value column and tooltip).
        Call before a view shows the model."""
        self._marks = marks
        self._containing = containing or {}
        self._texts.clear()

    def mark_of(self, node: Node) -> str:
        """What the edits changed at ``node`` ("" when nothing)."""
        return self._marks.get(node.path, "") if self._marks and node.kind != "group" else ""

    # -- navigation -----------------------------------------------------------------------------
    @property
    def root(self) -> Node:
        return self._root

    def top_nodes(self) -> list[Node]:
        return self._top

    def node_from_index(self, index: AnyIndex) -> Node | None:
        if not index.isValid():
            return None
        return index.internalPointer()

    def _is_top(self, node: Node) -> bool:
        if self._top_is_children:
            return node.parent is self._root
        return node is self._root

    def index_for_node(self, node: Node, column: int = 0) -> QModelIndex:
        """The index of ``node``, fetching rows along the way so it exists (invalid if not in this tree)."""
        chain = [node]
        while not self._is_top(chain[-1]):
            if chain[-1].parent is None:
                return QModelIndex()
            chain.append(chain[-1].parent)
        chain.reverse()
        parent = QModelIndex()
        for n in chain:
            row = n.row if (parent.isValid() or self._top_is_children) else 0
            self.fetch_until(parent, row + 1)
            if not parent.isValid() and (row >= len(self._top) or self._top[row] is not n):
                return QModelIndex()
            parent = self.createIndex(row, 0, n)
        return parent if column == 0 else self.createIndex(parent.row(), column, node)

    def _children_of(self, node: Node | None) -> list[Node]:
        return self._top if node is None else node.children()

    def _key(self, node: Node | None) -> int:
        return 0 if node is None else id(node)       # 0 is never an object's id

    def fetch_until(self, parent: AnyIndex, rows: int) -> None:
        node = self.node_from_index(parent)
        while self._fetched.get(self._key(node), 0) < min(rows, len(self._children_of(node))):
            self.fetchMore(parent)

    def fetch_all(self, parent: AnyIndex) -> None:
        node = self.node_from_index(parent)
        if parent.isValid() and parent.column() > 0:
            return
        total = len(self._children_of(node))
        have = self._fetched.get(self._key(node), 0)
        if have < total:
            self.beginInsertRows(parent if isinstance(parent, QModelIndex) else QModelIndex(parent), have, total - 1)
            self._fetched[self._key(node)] = total
            self.endInsertRows()

    # -- structure ------------------------------------------------------------------------------
    def index(self, row: int, column: int, parent: AnyIndex = QModelIndex()) -> QModelIndex:
        # hasIndex() would call back into rowCount()/columnCount(): check the bounds here instead.
        if parent.isValid():
            if parent.column() != 0:
                return QModelIndex()
            pnode = parent.internalPointer()
            if not (0 <= column < _NCOLS and 0 <= row < self._fetched.get(id(pnode), 0)):
                return QModelIndex()
            return self.createIndex(row, column, pnode.children()[row])
        if not (0 <= column < _NCOLS and 0 <= row < self._fetched.get(0, 0)):
            return QModelIndex()
        return self.createIndex(row, column, self._top[row])

    def parent(self, index: AnyIndex = QModelIndex()) -> QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        node = index.internalPointer()
        p = node.parent
        if p is None or (self._top_is_children and p is self._root):
            return QModelIndex()
        row = p.row if not self._is_top(p) or self._top_is_children else 0
        return self.createIndex(row, 0, p)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        if not parent.isValid():
            return self._fetched.get(0, 0)
        if parent.column() > 0:
            return 0
        return self._fetched.get(id(parent.internalPointer()), 0)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return _NCOLS

    def hasChildren(self, parent: AnyIndex = QModelIndex()) -> bool:
        if parent.column() > 0:
            return False
        node = self.node_from_index(parent)
        if node is None:
            return bool(self._top)
        return node.has_children

    def canFetchMore(self, parent: AnyIndex) -> bool:
        if parent.column() > 0:
            return False
        node = self.node_from_index(parent)
        if node is not None and not node.has_children:
            return False
        return self._fetched.get(self._key(node), 0) < len(self._children_of(node))

    def fetchMore(self, parent: AnyIndex) -> None:
        if parent.column() > 0:
            return
        node = self.node_from_index(parent)
        total = len(self._children_of(node))
        have = self._fetched.get(self._key(node), 0)
        add = min(BATCH, total - have)
        if add <= 0:
            return
        self.beginInsertRows(parent if isinstance(parent, QModelIndex) else QModelIndex(parent), have, have + add - 1)
        self._fetched[self._key(node)] = have + add
        self.endInsertRows()

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return _FLAGS

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        role = getattr(role, "value", role)
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY and 0 <= section < _NCOLS:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == _ALIGN and section in (COL_NUMEL, COL_SIZE):
            return _RIGHT
        return None

    # -- data -----------------------------------------------------------------------------------
    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        self._calls += 1
        if self._calls & 0x1FFF == 0:     # see qtcompat: some bindings lose a None per None returned
            top_up()
        if not index.isValid():
            return None
        node = index.internalPointer()
        col = index.column()
        role = getattr(role, "value", role)
        if role == _DISPLAY:
            texts = self._texts.get(id(node))
            if texts is None:
                texts = self._row_texts(node)
            return texts[col]
        if role == _DECORATION:
            return kind_icon(node.kind) if col == COL_NAME else None
        if role == _FOREGROUND:
            if col == COL_KIND:
                return kind_color(node.kind)
            if node.kind == "tensor" and (node.value.problem or node.value.integrity_error):
                return QColor("#d9534f")
            if self._marks and col in (COL_NAME, COL_VALUE) and (self.mark_of(node) or node.path in self._containing):
                return self._edit_color
            return None
        if role == _ALIGN:
            return _RIGHT if col in (COL_NUMEL, COL_SIZE) else None
        if role == _BACKGROUND:
            mark = self.health_mark(node) if self._health else None
            if mark is not None and mark[0] in _HEALTH_TINTS:
                return _HEALTH_TINTS[mark[0]]
            return None
        if role == _FONT:
            bold = col == COL_NAME and node.kind in ("state_dict", "module", "optimizer")
            if self._marks and col in (COL_NAME, COL_VALUE) and self.mark_of(node):
                return self._bold_italic if bold else self._italic
            return self._bold if bold else None
        if role == _TOOLTIP:
            tip = self._tooltip(node, col)
            return plain_tooltip(tip) if tip else None
        return None

    def _row_texts(self, node: Node) -> tuple[str, ...]:
        texts = tuple(self.cell_text(node, c) for c in range(_NCOLS))
        if PENDING not in texts:
            self._texts[id(node)] = texts
        return texts

    def cell_text(self, node: Node, col: int) -> str:
        if col == COL_NAME:
            return node.name
        if col == COL_KIND:
            if node.kind == "param_state" and node.info:
                return safe_text(f"state of {node.info}")
            return safe_text(node.type_text, 60)
        if col == COL_SHAPE:
            return node.shape_text()
        if col in HEAVY:
            if node.kind in CONTAINER_KINDS and id(node) not in self._ready:
                self._want(node)
                return PENDING
            if col == COL_DTYPE:
                return node.dtype_text()
            if col == COL_NUMEL:
                return node.numel_text()
            if col == COL_SIZE:
                return node.size_text()
            return safe_text(node.device_text(), 40)
        if col == COL_VALUE:
            text = self._value_text(node)
            mark = self.mark_of(node)
            if mark:
                text = f"{text} · ✎ {mark}" if text else f"✎ {mark}"
            health = self.health_mark(node)
            if health is not None:
                sign = "⚠" if health[0] in ("error", "warning") else "·"
                text = f"{text} · {sign} {health[1]}" if text else f"{sign} {health[1]}"
            return text
        return ""

    def _value_text(self, node: Node) -> str:
        if node.kind == "tensor":
            t = node.value
            if t.problem:
                return safe_text(f"unreadable: {t.problem}", 80)
            if t.integrity_error:
                return "CRC-32 mismatch: damaged bytes"
            if not is_small(t):
                return ""
            # A counter or a 0-d loss shows its value; its bytes are read in a worker (as totals are).
            known, value = node.small_value()
            if not known:
                self._want(node)
                return PENDING
            return safe_text(small_value_text(value), 120) if value is not None else ""
        if node.kind in LEAF_VALUE_KINDS:
            return safe_text(node.value_text(), 120)
        if node.kind == "object":
            return safe_text(f"<{node.type_text}> (stand-in)", 80)
        if node.kind in ("mapping", "sequence", "set"):
            try:
                n = node.child_count_hint()
            except Exception:  # noqa: BLE001 - a label must never break painting
                return ""
            return f"{n:,} entr{'y' if n == 1 else 'ies'}"
        return ""

    def _tooltip(self, node: Node, col: int) -> str | None:
        if col == COL_NAME:
            from ...core.util.textsafe import path_text
            text = path_text(node.path) if node.path else node.name
            if node.note:
                text += "\n" + safe_text(node.note)
            health = self.health_mark(node)
            if health is not None:
                text += "\nHealth check:\n" + health[2]
            if self._marks:
                mark = self.mark_of(node)
                below = self._containing.get(node.path, 0) if node.has_children else 0
                if mark:
                    text += f"\nEdited: {mark}"
                if below:
                    text += f"\n{below:,} edited entr{'y' if below == 1 else 'ies'} below"
            return text
        if col == COL_KIND:
            return kind_label(node.kind)
        if col == COL_VALUE and node.kind in LEAF_VALUE_KINDS:
            return safe_text(node.value_text(), 1000)
        if col == COL_VALUE and self.health_mark(node) is not None:
            return "Health check:\n" + self.health_mark(node)[2]
        return None

    # -- heavy columns --------------------------------------------------------------------------
    def totals_ready(self, node: Node) -> bool:
        return node.kind not in CONTAINER_KINDS or id(node) in self._ready

    def _want(self, node: Node) -> None:
        if id(node) in self._asked:
            return
        self._asked.add(id(node))
        self._wanted[id(node)] = node
        if not self._want_timer.isActive():
            self._want_timer.start()

    def _on_want_timer(self) -> None:
        nodes = list(self._wanted.values())
        self._wanted.clear()
        if nodes:
            self.totals_wanted.emit(nodes)

    def mark_totals_ready(self, nodes: list[Node]) -> None:
        """Totals of ``nodes`` were computed (in a worker): repaint their heavy cells."""
        for node in nodes:
            self._ready.add(id(node))
            self._asked.discard(id(node))
            self._texts.pop(id(node), None)
            if node is self._root and self._top_is_children:
                continue
            idx = self._existing_index(node)
            if idx is not None:
                self.dataChanged.emit(self.createIndex(idx, HEAVY[0], node), self.createIndex(idx, COL_VALUE, node),
                                      [Qt.ItemDataRole.DisplayRole])

    def refresh_tensor_rows(self) -> None:
        """Repaint every row: what is known about tensors changed (a CRC-32 check found damaged bytes)."""
        self._texts.clear()
        self.layoutAboutToBeChanged.emit()
        self.layoutChanged.emit()

    def forget_wanted(self) -> None:
        """Totals requests were cancelled: ask again when the cells are painted next."""
        self._asked -= {k for k in self._asked if k not in self._ready}

    def _existing_index(self, node: Node) -> int | None:
        """The row of ``node`` if it is already exposed to views (without fetching anything)."""
        if self._is_top(node):
            row = node.row if self._top_is_children else 0
            return row if row < self._fetched.get(0, 0) else None
        p = node.parent
        if p is None or node.row >= self._fetched.get(id(p), 0):
            return None
        return node.row


class KeyFilterProxy(QSortFilterProxyModel):
    """Shows only the nodes in ``keep`` (matches and their ancestors) while a search is active."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._keep: set[int] | None = None
        self.setDynamicSortFilter(False)

    def source(self) -> CheckpointTreeModel:
        return self.sourceModel()  # type: ignore[return-value]

    def set_keep(self, keep: set[int] | None) -> None:
        if hasattr(self, "beginFilterChange"):        # Qt >= 6.9
            self.beginFilterChange()
            self._keep = keep
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._keep = keep
            self.invalidateFilter()

    @property
    def filtering(self) -> bool:
        return self._keep is not None

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        if self._keep is None:
            return True
        idx = self.sourceModel().index(source_row, 0, source_parent)  # the tree model's own index()
        node = idx.internalPointer() if idx.isValid() else None
        return node is not None and id(node) in self._keep

    def node_from_index(self, index: AnyIndex) -> Node | None:
        if not index.isValid():
            return None
        return self.source().node_from_index(self.mapToSource(index))


def compile_matcher(text: str, regex: bool, case_sensitive: bool = False) -> Callable[[str], bool]:
    """A predicate for search text; raises ``re.error`` for a bad regular expression."""
    if regex:
        rx = re.compile(text, 0 if case_sensitive else re.IGNORECASE)
        return lambda s: rx.search(s) is not None
    if case_sensitive:
        return lambda s: text in s
    low = text.casefold()
    return lambda s: low in s.casefold()


def _could_contain(c: Node, target: tuple) -> bool:
    cp = c.path
    if len(cp) > len(target):
        return False
    if tuple(target[:len(cp)]) == tuple(cp):
        return True
    if cp and tuple(cp[:-1]) == tuple(target[:len(cp) - 1]):
        a, b = cp[-1], target[len(cp) - 1]
        return isinstance(a, str) and isinstance(b, str) and b.startswith(a + ".")
    return False


def find_node(start: Node, target: tuple, kind: str | None = None) -> Node | None:
    """The node at key path ``target`` under ``start`` (descending through groups and submodules)."""
    target = tuple(target)
    stack = [start]
    while stack:
        n = stack.pop()
        if tuple(n.path) == target and n.kind != "group" and (kind is None or n.kind == kind):
            return n
        if n.has_children:
            stack.extend(c for c in reversed(n.children()) if _could_contain(c, target))
    return None
