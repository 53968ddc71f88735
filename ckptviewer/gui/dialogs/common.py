"""Pieces the edit dialogs share: the OK/Cancel frame with an error line, questions, and the
preview table of old -> new key names."""
from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QMessageBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ...core.edit.ops import RenameRow
from ...core.model import keypath
from ...core.util.errors import CheckpointError
from ...core.util.locations import location_name
from ...core.util.textsafe import key_text, path_text
from ..widgets.theme import plain_label, plain_tooltip

ERROR_STYLE = "color: #d9534f;"
COLLISION_BG = QColor(217, 83, 79, 70)


def confirm(parent: QWidget | None, title: str, text: str, accept_text: str) -> bool:
    """Ask a yes/no question (tests replace this function: ``common.confirm``)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle(title)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setText(text)
    yes = box.addButton(accept_text, QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is yes


def error_line(err: CheckpointError) -> str:
    """One sentence (and the hint) for an error shown in a dialog."""
    msg = err.message[:1].upper() + err.message[1:]
    if err.path:
        msg = f"{location_name(err.path)}: {err.message}"
    msg = msg.rstrip(".") + "."
    return f"{msg} {err.hint}" if err.hint else msg


def at_text(path: tuple) -> str | None:
    """The ``at=`` argument of a step for the state_dict at ``path`` (None: the root)."""
    return keypath.format_path(path) if path else None


def where_text(path: tuple) -> str:
    return path_text(path) if path else "the root"


class StepDialog(QDialog):
    """A dialog with OK/Cancel and an error line; OK is enabled by :meth:`set_ok`."""

    def __init__(self, parent: QWidget | None, title: str):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setModal(True)
        self.body = QVBoxLayout(self)
        self.error_label = plain_label("", self)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.setObjectName("dialog-error")
        self.error_label.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                        self)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self._on_ok)
        self.buttons.rejected.connect(self.reject)

    def finish_layout(self) -> None:
        self.body.addWidget(self.error_label)
        self.body.addWidget(self.buttons)

    def set_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    def set_ok(self, enabled: bool, text: str | None = None) -> None:
        self.ok_button.setEnabled(enabled)
        if text is not None:
            self.ok_button.setText(text)

    def _on_ok(self) -> None:
        if self.ok_button.isEnabled():
            self.accept()

    def run(self) -> bool:
        """``exec()`` the dialog; True when accepted."""
        return self.exec() == QDialog.DialogCode.Accepted



TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt")


class WritingDialog(StepDialog):
    """A dialog whose OK writes a file to ``self.state.dest`` (Export, Merge): replacing an existing file
    is asked once per destination, and the request says whether it was allowed. Subclasses set
    ``self.state`` (with ``dest``, ``fmt`` and ``request(overwrite)``), ``self.runner`` (their background
    work, stopped when the dialog closes), ``dest_edit``, ``format_combo`` (pt, pt-legacy, safetensors)
    and ``_update_ok``, and name what they write in ``WRITES`` ("the export")."""

    WRITES = "the new file"

    def __init__(self, parent: QWidget | None, title: str):
        super().__init__(parent, title)
        self._replace_confirmed = ""

    def request(self, overwrite: bool | None = None) -> Any:
        """What to run (None while the choices cannot be written). ``overwrite`` defaults to whether
        replacing the existing destination was confirmed."""
        if overwrite is None:
            overwrite = self._replace_confirmed == os.path.abspath(self.state.dest)
        return self.state.request(overwrite)

    def _on_ok(self) -> None:
        if not self.ok_button.isEnabled():
            return
        dest = os.path.abspath(self.state.dest)
        if os.path.exists(dest) and self._replace_confirmed != dest:
            if not confirm(self, "Replace file?", f"{dest} already exists. Replace it with {self.WRITES}?\n\n"
                           "It is replaced only once the new file is completely written and checked.", "Replace"):
                return
            self._replace_confirmed = dest
        self.accept()

    def done(self, result: int) -> None:
        self.runner.shutdown(wait=False)
        super().done(result)

    def _set_dest(self, path: str, keep_default: bool = True) -> None:
        self.dest_edit.blockSignals(True)
        self.dest_edit.setText(path)
        self.dest_edit.blockSignals(False)
        self.state.dest = path
        self._dest_is_default = keep_default
        self._update_ok()

    def _on_dest_changed(self, text: str) -> None:
        self.state.dest = text
        self._dest_is_default = False
        if text.endswith(".safetensors") and self.state.fmt != "safetensors":
            self.format_combo.setCurrentIndex(2)
        elif text.endswith(TORCH_SUFFIXES) and self.state.fmt == "safetensors":
            self.format_combo.setCurrentIndex(0)
        self._update_ok()

class RenamePreviewModel(QAbstractTableModel):
    """old -> new rows from ``ops.rename_preview``; collisions highlighted. Lazy, so 100,000 keys are fine."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._rows: list[tuple[tuple, RenameRow]] = []
        self._multi = False

    def set_rows(self, rows: list[tuple[tuple, RenameRow]], multi: bool) -> None:
        self.beginResetModel()
        self._rows = rows
        self._multi = multi
        self.endResetModel()

    def row_at(self, row: int) -> tuple[tuple, RenameRow]:
        return self._rows[row]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else (3 if self._multi else 2)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            names = ("State dict", "Old key", "New key") if self._multi else ("Old key", "New key")
            return names[section] if 0 <= section < len(names) else None
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        path, row = self._rows[index.row()]
        col = index.column() - (1 if self._multi else 0)
        if role == Qt.ItemDataRole.DisplayRole:
            if col < 0:
                return where_text(path)
            if col == 0:
                return key_text(row.old)
            if row.changed:
                return key_text(row.new)
            return f"{key_text(row.new)}  (unchanged)" if row.collision else "(unchanged)"
        if role == Qt.ItemDataRole.BackgroundRole and row.collision:
            return COLLISION_BG
        if role == Qt.ItemDataRole.ForegroundRole and col == 1 and not row.changed and not row.collision:
            return QColor("#808080")
        if role == Qt.ItemDataRole.ToolTipRole and row.collision:
            return plain_tooltip(f"Collision: more than one key would be named {key_text(row.new)}")
        return None


def preview_table(model: RenamePreviewModel, parent: QWidget) -> QTableView:
    view = QTableView(parent)
    view.setModel(model)
    view.setObjectName("rename-preview")
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 6)
    view.horizontalHeader().setStretchLastSection(True)
    view.setWordWrap(False)
    view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    return view
