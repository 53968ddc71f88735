"""Rename Keys: ordered rules (add/remove prefix, find/replace, regex with groups, a mapping table),
a live old -> new preview from ``ops.rename_preview``, collisions highlighted and OK disabled while
there are any."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generator

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QListWidget,
    QMenu,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.edit.ops import Rename, RenameRow, find_state_dicts, rename_preview_steps, rule_text
from ...core.util.errors import OperationError
from ..widgets.gc_pause import gc_paused
from ..widgets.workers import TaskRunner
from .common import ERROR_STYLE, RenamePreviewModel, StepDialog, at_text, plain_label, preview_table, where_text

RULE_LABELS = {"add_prefix": "Add prefix", "remove_prefix": "Remove prefix", "replace": "Find and replace",
               "regex": "Regular expression", "map": "Mapping table"}
EMPTY_RULES = {"add_prefix": ("add_prefix", ""), "remove_prefix": ("remove_prefix", ""),
               "replace": ("replace", "", ""), "regex": ("regex", "", ""), "map": ("map", {})}
DEBOUNCE_KEYS = 5000          # above this many keys, the preview waits for a pause in typing and is
                              # computed in a worker (100,000 keys: ~0.85 s of regex work per preview)


def preview_job(state: "RenameState", only_changed: bool) -> Generator[None, None, tuple]:
    """The preview of ``state`` and the rows to show, off the GUI thread; cancellable between chunks.
    With the collector paused (``loading.gc_paused``): its passes over the new rows held the GIL."""
    with gc_paused():
        p = yield from state.preview_steps()
        yield None
        return p, shown_rows(p.rows, only_changed)


def shown_rows(rows: list, only_changed: bool) -> list:
    return [(p, r) for p, r in rows if r.changed or r.collision] if only_changed else rows


@dataclass
class RenamePreview:
    rows: list[tuple[tuple, RenameRow]] = field(default_factory=list)    # (state_dict path, row)
    changed: int = 0
    collisions: int = 0
    total: int = 0
    error: str = ""


class RenameState:
    """The state_dicts to rename (``targets``: path -> keys), which of them (``scope``: None = all),
    and the ordered rules."""

    def __init__(self, targets: list[tuple[tuple, list]], rules: list[tuple] | None = None):
        self.targets = targets
        self.scope: int | None = None if len(targets) != 1 else 0
        self.rules: list[tuple] = list(rules or [])

    @classmethod
    def for_root(cls, root: Any, rules: list[tuple] | None = None) -> "RenameState":
        return cls([(path, list(sd)) for path, sd in find_state_dicts(root)], rules)

    def chosen(self) -> list[tuple[tuple, list]]:
        return self.targets if self.scope is None else [self.targets[self.scope]]

    def check(self) -> str:
        """The first problem with the rules ("" when they are valid)."""
        try:
            Rename(tuple(self.rules))
        except OperationError as e:
            return str(e)
        return ""

    def copy(self) -> "RenameState":
        """A snapshot for a worker (the rules go on changing as the user types)."""
        other = RenameState(self.targets, self.rules)
        other.scope = self.scope
        return other

    def preview(self) -> RenamePreview:
        steps = self.preview_steps()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def preview_steps(self) -> Generator[None, None, RenamePreview]:
        """:meth:`preview` with cancel points between chunks of keys (for a worker)."""
        out = RenamePreview()
        if not self.targets:
            out.error = "There is no state_dict to rename keys in."
            return out
        out.error = self.check()
        if out.error:
            return out
        rules = tuple(Rename(tuple(self.rules)).rules)
        for path, keys in self.chosen():
            try:
                rows = yield from rename_preview_steps(keys, rules)
            except (re.error, IndexError) as e:          # a replacement naming a group the pattern lacks
                out.error = f"bad replacement: {e}"
                out.rows = []
                return out
            out.total += len(rows)
            out.rows.extend((path, r) for r in rows)
            out.changed += sum(r.changed for r in rows)
            out.collisions += sum(r.collision for r in rows)
        return out

    def step(self, preview: RenamePreview | None = None) -> Rename | None:
        """The Rename step, or None while the rules are invalid, collide or rename nothing. ``preview``:
        one already computed for the current rules and scope (the dialog's), else it is computed."""
        p = preview if preview is not None else self.preview()
        if p.error or p.collisions or not p.changed:
            return None
        at = None if self.scope is None else at_text(self.targets[self.scope][0])
        return Rename(tuple(self.rules), at)


class RenameDialog(StepDialog):
    def __init__(self, parent: QWidget | None, root: Any, rules: list[tuple] | None = None):
        super().__init__(parent, "Rename Keys")
        self.state = RenameState.for_root(root, rules)
        self.last_preview = RenamePreview()
        self._loading_rule = False
        total_keys = sum(len(k) for _, k in self.state.targets)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150 if total_keys > DEBOUNCE_KEYS else 0)
        self._timer.timeout.connect(self._start_preview)
        self._in_worker = total_keys > DEBOUNCE_KEYS
        self._runner: TaskRunner | None = None
        self._computing = False

        top = QHBoxLayout()
        top.addWidget(plain_label("Rename keys of", self, wrap=False))
        self.scope_combo = QComboBox(self)
        if len(self.state.targets) != 1:
            self.scope_combo.addItem(f"all {len(self.state.targets)} state_dicts")
        for path, keys in self.state.targets:
            self.scope_combo.addItem(f"{where_text(path)} ({len(keys):,} keys)")
        self.scope_combo.currentIndexChanged.connect(self._on_scope_changed)
        top.addWidget(self.scope_combo, 1)
        self.body.addLayout(top)

        split = QSplitter(self)
        left = QWidget(split)
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(plain_label("Rules, applied in order to each key:", left))
        self.rule_list = QListWidget(left)
        self.rule_list.setObjectName("rename-rules")
        self.rule_list.currentRowChanged.connect(self._on_rule_selected)
        ll.addWidget(self.rule_list, 1)
        buttons = QHBoxLayout()
        self.add_button = QToolButton(left)
        self.add_button.setText("Add rule")
        self.add_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.add_button)
        for kind, label in RULE_LABELS.items():
            menu.addAction(label, lambda k=kind: self.add_rule(k))
        self.add_button.setMenu(menu)
        self.remove_button = QToolButton(left)
        self.remove_button.setText("Remove")
        self.remove_button.clicked.connect(self._on_remove_rule)
        self.up_button = QToolButton(left)
        self.up_button.setText("↑")
        self.up_button.setToolTip("Apply this rule earlier")
        self.up_button.clicked.connect(lambda: self._move_rule(-1))
        self.down_button = QToolButton(left)
        self.down_button.setText("↓")
        self.down_button.setToolTip("Apply this rule later")
        self.down_button.clicked.connect(lambda: self._move_rule(1))
        for b in (self.add_button, self.remove_button, self.up_button, self.down_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        ll.addLayout(buttons)
        self.editor = QStackedWidget(left)
        self._build_editor()
        ll.addWidget(self.editor)

        right = QWidget(split)
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.count_label = plain_label("", right, wrap=False)
        head.addWidget(self.count_label, 1)
        self.only_changed = QCheckBox("Only renamed keys", right)
        self.only_changed.setChecked(True)
        self.only_changed.toggled.connect(lambda _on: self._show_rows())
        head.addWidget(self.only_changed)
        rl.addLayout(head)
        self.preview_model = RenamePreviewModel(self)
        self.preview_view = preview_table(self.preview_model, right)
        rl.addWidget(self.preview_view, 1)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        self.body.addWidget(split, 1)
        self.finish_layout()
        self.resize(960, 560)
        for rule in self.state.rules:
            self.rule_list.addItem(rule_text(rule))
        if self.state.rules:
            self.rule_list.setCurrentRow(0)
        self._update_editor()
        self._start_preview()

    # -- the rule editor ------------------------------------------------------------------------
    def _build_editor(self) -> None:
        empty = plain_label("Add a rule: a prefix to add or remove, a text to replace, a regular expression, "
                            "or a table of names.", self.editor)
        self.editor.addWidget(empty)

        page = QWidget(self.editor)
        form = QFormLayout(page)
        self.prefix_edit = QLineEdit(page)
        self.prefix_edit.setPlaceholderText("e.g. module.")
        self.prefix_edit.textEdited.connect(self._on_editor_changed)
        form.addRow("Prefix:", self.prefix_edit)
        self.prefix_page = page
        self.editor.addWidget(page)

        page = QWidget(self.editor)
        form = QFormLayout(page)
        self.find_edit = QLineEdit(page)
        self.replace_edit = QLineEdit(page)
        self.find_edit.textEdited.connect(self._on_editor_changed)
        self.replace_edit.textEdited.connect(self._on_editor_changed)
        form.addRow("Find:", self.find_edit)
        form.addRow("Replace with:", self.replace_edit)
        self.replace_page = page
        self.editor.addWidget(page)

        page = QWidget(self.editor)
        form = QFormLayout(page)
        self.pattern_edit = QLineEdit(page)
        self.pattern_edit.setPlaceholderText(r"e.g. ^layer(\d+)\.")
        self.repl_edit = QLineEdit(page)
        self.repl_edit.setPlaceholderText(r"e.g. blocks.\1.")
        self.pattern_edit.textEdited.connect(self._on_editor_changed)
        self.repl_edit.textEdited.connect(self._on_editor_changed)
        form.addRow("Pattern:", self.pattern_edit)
        form.addRow("Replacement:", self.repl_edit)
        hint = plain_label(r"Python re.sub on each key; refer to groups as \1 or \g<name>.", page)
        hint.setStyleSheet("color: palette(mid);")
        form.addRow(hint)
        self.regex_page = page
        self.editor.addWidget(page)

        page = QWidget(self.editor)
        lay = QVBoxLayout(page)
        lay.setContentsMargins(0, 0, 0, 0)
        self.map_table = QTableWidget(0, 2, page)
        self.map_table.setObjectName("rename-map")
        self.map_table.setHorizontalHeaderLabels(["Old name", "New name"])
        self.map_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.map_table.verticalHeader().setVisible(False)
        self.map_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.map_table.itemChanged.connect(lambda _item: self._on_editor_changed())
        lay.addWidget(self.map_table)
        row = QHBoxLayout()
        add = QPushButton("Add row", page)
        add.clicked.connect(lambda: self.add_mapping("", ""))
        fill = QPushButton("Add selected keys", page)
        fill.setToolTip("Add the keys selected in the preview as rows to fill in")
        fill.clicked.connect(self._on_fill_from_preview)
        remove = QPushButton("Remove row", page)
        remove.clicked.connect(self._on_remove_mapping)
        for b in (add, fill, remove):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.map_page = page
        self.editor.addWidget(page)

    def add_rule(self, kind: str) -> int:
        """Append an empty rule of ``kind`` and select it for editing; returns its row."""
        self.state.rules.append(EMPTY_RULES[kind] if kind != "map" else ("map", {}))
        self.rule_list.addItem(rule_text(self.state.rules[-1]))
        self.rule_list.setCurrentRow(len(self.state.rules) - 1)
        self._schedule()
        return len(self.state.rules) - 1

    def current_rule(self) -> int:
        return self.rule_list.currentRow()

    def _on_rule_selected(self, _row: int) -> None:
        self._update_editor()

    def _update_editor(self) -> None:
        row = self.current_rule()
        has = 0 <= row < len(self.state.rules)
        self.remove_button.setEnabled(has)
        self.up_button.setEnabled(has and row > 0)
        self.down_button.setEnabled(has and row < len(self.state.rules) - 1)
        if not has:
            self.editor.setCurrentIndex(0)
            return
        rule = self.state.rules[row]
        self._loading_rule = True
        try:
            kind = rule[0]
            if kind in ("add_prefix", "remove_prefix"):
                self.prefix_edit.setText(rule[1])
                self.editor.setCurrentWidget(self.prefix_page)
            elif kind == "replace":
                self.find_edit.setText(rule[1])
                self.replace_edit.setText(rule[2])
                self.editor.setCurrentWidget(self.replace_page)
            elif kind == "regex":
                self.pattern_edit.setText(rule[1])
                self.repl_edit.setText(rule[2])
                self.editor.setCurrentWidget(self.regex_page)
            else:
                self.map_table.setRowCount(0)
                for old, new in rule[1].items():
                    self._append_mapping_row(old, new)
                self.editor.setCurrentWidget(self.map_page)
        finally:
            self._loading_rule = False

    def _on_editor_changed(self, *_args: Any) -> None:
        if self._loading_rule:
            return
        row = self.current_rule()
        if not 0 <= row < len(self.state.rules):
            return
        kind = self.state.rules[row][0]
        if kind in ("add_prefix", "remove_prefix"):
            rule: tuple = (kind, self.prefix_edit.text())
        elif kind == "replace":
            rule = (kind, self.find_edit.text(), self.replace_edit.text())
        elif kind == "regex":
            rule = (kind, self.pattern_edit.text(), self.repl_edit.text())
        else:
            rule = (kind, self._mapping_from_table())
        self.state.rules[row] = rule
        self.rule_list.item(row).setText(rule_text(rule))
        self._schedule()

    def _append_mapping_row(self, old: str, new: str) -> None:
        r = self.map_table.rowCount()
        self.map_table.insertRow(r)
        self.map_table.setItem(r, 0, QTableWidgetItem(old))
        self.map_table.setItem(r, 1, QTableWidgetItem(new))

    def add_mapping(self, old: str, new: str) -> None:
        """Add a row to the mapping table of the current rule (which must be a mapping rule)."""
        self.map_table.blockSignals(True)
        self._append_mapping_row(old, new)
        self.map_table.blockSignals(False)
        self._on_editor_changed()

    def _mapping_from_table(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in range(self.map_table.rowCount()):
            old = self.map_table.item(r, 0)
            new = self.map_table.item(r, 1)
            if old is not None and new is not None and old.text() and new.text():
                out[old.text()] = new.text()
        return out

    def _on_remove_mapping(self) -> None:
        rows = sorted({i.row() for i in self.map_table.selectedIndexes()}, reverse=True)
        if not rows and self.map_table.rowCount():
            rows = [self.map_table.rowCount() - 1]
        self.map_table.blockSignals(True)
        for r in rows:
            self.map_table.removeRow(r)
        self.map_table.blockSignals(False)
        self._on_editor_changed()

    def _on_fill_from_preview(self) -> None:
        rows = sorted({i.row() for i in self.preview_view.selectionModel().selectedRows()})
        for r in rows[:500]:
            _path, row = self.preview_model.row_at(r)
            if isinstance(row.new, str):
                self.add_mapping(row.new, row.new)

    def _on_remove_rule(self) -> None:
        row = self.current_rule()
        if 0 <= row < len(self.state.rules):
            del self.state.rules[row]
            self.rule_list.takeItem(row)
            self._update_editor()
            self._schedule()

    def _move_rule(self, delta: int) -> None:
        row = self.current_rule()
        other = row + delta
        if not (0 <= row < len(self.state.rules) and 0 <= other < len(self.state.rules)):
            return
        rules = self.state.rules
        rules[row], rules[other] = rules[other], rules[row]
        self.rule_list.item(row).setText(rule_text(rules[row]))
        self.rule_list.item(other).setText(rule_text(rules[other]))
        self.rule_list.setCurrentRow(other)
        self._schedule()

    def _on_scope_changed(self, index: int) -> None:
        if len(self.state.targets) != 1:
            self.state.scope = None if index == 0 else index - 1
        self._schedule()

    # -- preview --------------------------------------------------------------------------------
    def _schedule(self) -> None:
        self._timer.start()

    def flush(self) -> None:
        """Compute the pending preview now, here (tests; OK)."""
        if self._timer.isActive() or self._computing:
            self._timer.stop()
            if self._runner is not None:
                self._runner.cancel("preview")
            self._computing = False
            self._refresh_preview()

    def _start_preview(self) -> None:
        if not self._in_worker:
            self._refresh_preview()
            return
        if self._runner is None:
            self._runner = TaskRunner(self)
        self._computing = True
        self.count_label.setText("Computing the preview…")
        self.set_ok(False)
        self._runner.submit("preview", preview_job, self.state.copy(), self.only_changed.isChecked(),
                            on_result=self._on_preview_ready, on_error=self._on_preview_failed)

    def _on_preview_ready(self, result: tuple) -> None:
        self._computing = False
        self._show_preview(*result)

    def _on_preview_failed(self, err) -> None:
        self._computing = False
        self.set_error(f"Could not compute the preview: {err.exc}")

    def done(self, result: int) -> None:  # noqa: D401 - Qt override: stop the preview worker with the dialog
        if self._runner is not None:
            self._runner.shutdown(wait=False)
        super().done(result)

    def _refresh_preview(self) -> None:
        self._show_preview(self.state.preview())

    def _show_preview(self, p: RenamePreview, shown: list | None = None) -> None:
        self.last_preview = p
        self._show_rows(shown)
        if p.error:
            self.count_label.setText("")
            self.set_error(p.error)
        else:
            text = f"{p.changed:,} of {p.total:,} keys renamed"
            if p.collisions:
                text += f" · {p.collisions:,} keys collide"
            self.count_label.setText(text)
            self.count_label.setStyleSheet(ERROR_STYLE if p.collisions else "")
            self.set_error("Two or more keys would get the same name (highlighted); change the rules."
                           if p.collisions else "")
        ok = not p.error and not p.collisions and p.changed > 0
        self.set_ok(ok)
        self.ok_button.setToolTip("" if ok else "Add a rule that renames at least one key, without collisions")

    def _show_rows(self, shown: list | None = None) -> None:
        rows = shown if shown is not None else shown_rows(self.last_preview.rows, self.only_changed.isChecked())
        self.preview_model.set_rows(rows, multi=len(self.state.chosen()) > 1)
        self.preview_view.horizontalHeader().resizeSection(0, 260)

    def step(self) -> Rename | None:
        self.flush()                      # after it, last_preview is the preview of the current rules
        return self.state.step(self.last_preview)

    def _on_ok(self) -> None:
        self.flush()
        super()._on_ok()

    @classmethod
    def ask(cls, parent: QWidget | None, root: Any, rules: list[tuple] | None = None) -> Rename | None:
        dlg = cls(parent, root, rules)
        try:
            return dlg.step() if dlg.run() else None
        finally:
            dlg.deleteLater()
