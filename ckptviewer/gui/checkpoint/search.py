"""Search: which nodes match a key substring or regex, plus their ancestors, and the find bar.

The walk builds tree nodes as it goes, so it runs on the GUI thread (the only thread that touches a
loaded tree), but in slices of a few milliseconds driven by a timer, so typing stays responsive and a
new query cancels the old walk. A node matches when its own label does (its key, the full dotted key
for state_dict entries, plus its note such as the parameter name of an optimizer state); a matching
container keeps its whole subtree visible; every kept node keeps its ancestors.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Generator

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QLineEdit, QToolButton, QWidget

from ...core.model.tree import CONTAINER_KINDS, Node
from ...core.util.textsafe import key_text

MAX_VISITED = 3_000_000


@dataclass
class SearchResult:
    pattern: str
    keep: set[int] = field(default_factory=set)
    matches: list[Node] = field(default_factory=list)
    n_matches: int = 0
    visited: int = 0
    truncated: bool = False


def node_label(node: Node) -> str:
    last = node.path[-1] if node.path else node.name
    text = key_text(last) if node.path else node.name
    if node.note:
        text += " " + node.note
    if node.kind == "param_state" and node.info:
        text += " " + str(node.info)
    return text


@dataclass
class SearchIndex:
    """Every node in pre-order with its label and the end of its subtree, built once per tree, so
    that each new query is one pass over a list instead of a walk of the tree."""

    nodes: list[Node]
    labels: list[str]
    ends: list[int]                 # ends[i]: index just past node i's subtree
    truncated: bool = False


def index_steps(top: list[Node]) -> Generator[int, None, SearchIndex]:
    nodes: list[Node] = []
    labels: list[str] = []
    ends: list[int] = []
    opened: list[int] = []
    stack: list[tuple[Node, bool]] = [(n, False) for n in reversed(top)]
    truncated = False
    while stack:
        node, leaving = stack.pop()
        if leaving:
            ends[opened.pop()] = len(nodes)
            continue
        i = len(nodes)
        nodes.append(node)
        labels.append(node_label(node))
        ends.append(i + 1)
        if node.has_children:
            opened.append(i)
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.children()))
        if i % 2000 == 0:
            yield i
        if i + 1 >= MAX_VISITED:
            truncated = True
            break
    for i in opened:
        ends[i] = len(nodes)
    return SearchIndex(nodes, labels, ends, truncated)


def search_steps(index: SearchIndex, matcher: Callable[[str], bool], pattern: str = "",
                 keep_matches: int = 10_000) -> Generator[int, None, SearchResult]:
    """Match every label of ``index``; yields now and then; returns the kept nodes and the matches."""
    res = SearchResult(pattern, visited=len(index.nodes), truncated=index.truncated)
    keep = res.keep
    nodes, ends = index.nodes, index.ends
    inside_until = -1
    for i, label in enumerate(index.labels):
        own = matcher(label)
        if own or i < inside_until:
            node = nodes[i]
            if own:
                res.n_matches += 1
                if len(res.matches) < keep_matches:
                    res.matches.append(node)
                if node.kind in CONTAINER_KINDS and ends[i] > inside_until:
                    inside_until = ends[i]
            n = node
            while n is not None and id(n) not in keep:
                keep.add(id(n))
                n = n.parent
        if i % 5000 == 0:
            yield i
    return res


def tree_search_steps(top: list[Node], matcher: Callable[[str], bool], pattern: str = "",
                      index: SearchIndex | None = None) -> Generator[int, None, tuple[SearchIndex, SearchResult]]:
    """Build the index if needed, then search it; returns both (the tab keeps the index)."""
    if index is None:
        index = yield from index_steps(top)
    res = yield from search_steps(index, matcher, pattern)
    return index, res


class SliceRunner(QObject):
    """Runs a generator on the GUI thread in time slices (for work that must stay on this thread)."""

    finished = Signal(object)

    def __init__(self, parent: QObject | None = None, slice_ms: float = 12.0):
        super().__init__(parent)
        self._gen: Generator | None = None
        self._slice = slice_ms / 1000.0
        self._timer = QTimer(self)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._on_tick)

    def start(self, gen: Generator) -> None:
        self.cancel()
        self._gen = gen
        self._timer.start()

    def cancel(self) -> None:
        if self._gen is not None:
            self._gen.close()
        self._gen = None
        self._timer.stop()

    @property
    def running(self) -> bool:
        return self._gen is not None

    def run_to_end(self) -> None:
        """Finish the current walk now (tests and screenshots)."""
        while self._gen is not None:
            self._on_tick(budget=None)

    def _on_tick(self, budget: float | None = -1.0) -> None:
        gen = self._gen
        if gen is None:
            self._timer.stop()
            return
        end = time.perf_counter() + (self._slice if budget == -1.0 else 1e9)
        try:
            while time.perf_counter() < end:
                next(gen)
        except StopIteration as stop:
            self._gen = None
            self._timer.stop()
            self.finished.emit(stop.value)


class FindBar(QWidget):
    """Search field, regex toggle and match count. ``query_changed(text, regex)`` after a short pause."""

    query_changed = Signal(str, bool)
    closed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText("Filter keys (substring; Ctrl+F)")
        self.edit.setClearButtonEnabled(True)
        self.regex = QCheckBox("Regex", self)
        self.regex.setToolTip("Treat the text as a Python regular expression")
        self.count = QLabel("", self)
        self.count.setTextFormat(Qt.TextFormat.PlainText)
        self.count.setMinimumWidth(120)
        self.close_button = QToolButton(self)
        self.close_button.setText("✕")
        self.close_button.setToolTip("Clear the filter (Esc)")
        self.close_button.setAutoRaise(True)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.regex)
        lay.addWidget(self.count)
        lay.addWidget(self.close_button)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(200)
        self._debounce.timeout.connect(self._on_debounced)
        self.edit.textChanged.connect(self._on_text_changed)
        self.regex.toggled.connect(self._on_text_changed)
        self.close_button.clicked.connect(self._on_close_clicked)
        esc = QShortcut(QKeySequence(Qt.Key.Key_Escape), self.edit)
        esc.activated.connect(self._on_close_clicked)

    def set_count_text(self, text: str, error: bool = False) -> None:
        self.count.setText(text)
        self.count.setStyleSheet("color: #d9534f;" if error else "")

    def flush(self) -> None:
        """Apply the pending query now instead of after the pause."""
        if self._debounce.isActive():
            self._debounce.stop()
            self._on_debounced()

    def _on_text_changed(self, *_args) -> None:
        self._debounce.start()

    def _on_debounced(self) -> None:
        self.query_changed.emit(self.edit.text(), self.regex.isChecked())

    def _on_close_clicked(self) -> None:
        self.edit.clear()
        self.flush()
        self.closed.emit()

