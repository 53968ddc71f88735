"""Merge: average several checkpoints (a run's, or open tabs') into a new file.

The dialog lists the checkpoints with a weight each, the cleaning applied to every input (its model
weights only, wrapper prefixes stripped), the output dtype, format and destination. Whenever a choice
changes, a worker opens the inputs (metadata only) and the core's ``merge_plan`` lines them up; the
preview shows the mismatches that stop a merge (keys only in some files, shapes that differ) or what
the merge would average. The merge itself runs in the window's worker, written by the same verified,
atomic exporter as Export.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableView,
    QWidget,
)

from ...core.edit.merge import MergePlan, check_weights
from ...core.edit.recipes import sanitize_file_name
from ...core.util.errors import OperationError
from ...core.util.textsafe import safe_text
from ...core.write.destination import check_destination
from ...core.write.export import ExportOptions
from ..widgets.messages import error_text
from ..widgets.theme import plain_tooltip
from ..widgets.workers import TaskRunner, WorkerError
from .common import WritingDialog, error_line, plain_label
from .export import DTYPES, FORMATS, with_suffix_for
from .merge_work import MergeRequest, input_steps, preview_task

_Index = QModelIndex | QPersistentModelIndex


class MergeInputsModel(QAbstractTableModel):
    """The checkpoints to merge and their weights (the weight column is editable)."""

    changed = Signal()
    COLUMNS = ("Checkpoint", "Weight")

    def __init__(self, paths: list[str], parent=None):
        super().__init__(parent)
        self.paths = list(paths)
        self.weights = [1.0] * len(paths)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.paths)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else 2

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt override
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < 2:
            return self.COLUMNS[section]
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        f = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        return f | Qt.ItemFlag.ItemIsEditable if index.column() == 1 else f

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.paths):
            return None
        r, c = index.row(), index.column()
        if role == Qt.ItemDataRole.ToolTipRole:
            return plain_tooltip(safe_text(self.paths[r], 400))
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            if c == 0:
                return safe_text(os.path.basename(os.path.normpath(self.paths[r])), 200)
            return f"{self.weights[r]:g}"
        return None

    def setData(self, index: _Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        if not index.isValid() or index.column() != 1 or role != Qt.ItemDataRole.EditRole:
            return False
        try:
            w = float(str(value).strip())
        except ValueError:
            return False
        self.weights[index.row()] = w
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole])
        self.changed.emit()
        return True

    def add(self, paths: list[str]) -> None:
        new = [p for p in paths if os.path.abspath(p) not in {os.path.abspath(x) for x in self.paths}]
        if not new:
            return
        self.beginInsertRows(QModelIndex(), len(self.paths), len(self.paths) + len(new) - 1)
        self.paths.extend(new)
        self.weights.extend([1.0] * len(new))
        self.endInsertRows()
        self.changed.emit()

    def remove(self, row: int) -> None:
        if not 0 <= row < len(self.paths):
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self.paths[row], self.weights[row]
        self.endRemoveRows()
        self.changed.emit()

    def set_equal(self) -> None:
        self.weights = [1.0] * len(self.paths)
        if self.paths:
            self.dataChanged.emit(self.index(0, 1), self.index(len(self.paths) - 1, 1))
        self.changed.emit()


def default_merge_destination(paths: list[str], fmt: str) -> str:
    """``<first stem>-merged.<ext>`` beside the first checkpoint, not an existing file."""
    first = os.path.abspath(os.path.normpath(paths[0])) if paths else os.path.abspath("merged.pt")
    folder = os.path.dirname(first)
    stem = os.path.splitext(os.path.basename(first))[0]
    ext = ".safetensors" if fmt == "safetensors" else ".pt"
    name = sanitize_file_name(f"{stem}-merged")
    candidate = os.path.join(folder, name + ext)
    n = 2
    while os.path.exists(candidate):
        candidate = os.path.join(folder, f"{name}-{n}{ext}")
        n += 1
    return candidate


@dataclass
class MergeState:
    paths: list[str]
    weights: list[float]
    model_only: bool = True
    strip_prefix: bool = False
    dtype: str | None = None
    fmt: str = "pt"
    dest: str = ""
    plan: MergePlan | None = None              # the preview for the current choices (None while planning)
    plan_error: str = ""
    notes: list[str] = field(default_factory=list)

    def steps(self) -> list:
        return input_steps(self.model_only, self.strip_prefix)

    def input_error(self) -> str:
        if len(self.paths) < 2:
            return "Add at least two checkpoints to merge."
        try:
            check_weights(self.weights, len(self.paths))
        except OperationError as e:
            return error_line(e)
        return ""

    def dest_error(self) -> str:
        if not self.dest.strip():
            return "Choose where to write the merged checkpoint."
        try:
            check_destination(self.dest, self.paths, overwrite=True)
        except OperationError as e:
            return error_line(e)
        return ""

    def request(self, overwrite: bool) -> MergeRequest | None:
        if self.plan is None or not self.plan.ok or self.input_error() or self.dest_error():
            return None
        return MergeRequest(list(self.paths), list(self.weights), self.steps(), os.path.abspath(self.dest),
                            ExportOptions(fmt=self.fmt, overwrite=overwrite), self.dtype)


class MergeDialog(WritingDialog):
    WRITES = "the merge"

    def __init__(self, parent: QWidget | None, paths: list[str]):
        super().__init__(parent, "Merge Checkpoints")
        self.inputs = MergeInputsModel([os.path.abspath(p) for p in paths], self)
        self.state = MergeState(self.inputs.paths, self.inputs.weights)
        self.state.dest = default_merge_destination(self.state.paths, self.state.fmt)
        self._dest_is_default = True
        self.runner = TaskRunner(self)
        self.planning = False

        self.body.addWidget(plain_label("Floating-point tensors are averaged with these weights (divided by their "
                                        "sum), computed in float32 or wider; integer tensors, counters and other "
                                        "values come from the first checkpoint.", self))
        self.table = QTableView(self)
        self.table.setObjectName("merge-inputs")
        self.table.setModel(self.inputs)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(120)
        self.body.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        add = QPushButton("Add…", self)
        add.clicked.connect(self._on_add)
        remove = QPushButton("Remove", self)
        remove.clicked.connect(self._on_remove)
        equal = QPushButton("Equal Weights", self)
        equal.clicked.connect(self.inputs.set_equal)
        for b in (add, remove, equal):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.body.addLayout(buttons)
        self.inputs.changed.connect(self._on_inputs_changed)

        form = QFormLayout()
        self.model_box = QCheckBox("Model weights only (each file's state_dict)", self)
        self.model_box.setChecked(self.state.model_only)
        self.model_box.toggled.connect(self._on_options_changed)
        self.strip_box = QCheckBox("Strip module. / _orig_mod. prefixes", self)
        self.strip_box.toggled.connect(self._on_options_changed)
        form.addRow("Inputs:", self.model_box)
        form.addRow("", self.strip_box)
        self.dtype_combo = QComboBox(self)
        for value, label in DTYPES:
            self.dtype_combo.addItem(label.replace("Cast floating tensors to", "Write averaged tensors as"), value)
        self.dtype_combo.currentIndexChanged.connect(self._on_options_changed)
        form.addRow("DType:", self.dtype_combo)
        self.format_combo = QComboBox(self)
        for fmt, label in FORMATS:
            self.format_combo.addItem(label, fmt)
        self.format_combo.currentIndexChanged.connect(self._on_format_changed)
        form.addRow("Format:", self.format_combo)
        row = QHBoxLayout()
        self.dest_edit = QLineEdit(self.state.dest, self)
        self.dest_edit.setObjectName("merge-destination")
        self.dest_edit.textChanged.connect(self._on_dest_changed)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._on_browse)
        row.addWidget(self.dest_edit, 1)
        row.addWidget(browse)
        form.addRow("Destination:", row)
        self.body.addLayout(form)
        self.preview = QPlainTextEdit(self)
        self.preview.setReadOnly(True)
        self.preview.setObjectName("merge-preview")
        self.preview.setMinimumHeight(110)
        self.body.addWidget(self.preview, 1)
        self.finish_layout()
        self.set_ok(False, "Merge")
        self.resize(760, 560)
        self._replan()

    # -- choices --------------------------------------------------------------------------------
    def _on_inputs_changed(self) -> None:
        self.state.paths, self.state.weights = self.inputs.paths, self.inputs.weights
        if self._dest_is_default and self.state.paths:
            self._set_dest(default_merge_destination(self.state.paths, self.state.fmt))
        self._replan()

    def _on_options_changed(self, *_args) -> None:
        self.state.model_only = self.model_box.isChecked()
        self.state.strip_prefix = self.strip_box.isChecked()
        self.state.dtype = self.dtype_combo.currentData()
        self._replan()

    def _on_format_changed(self, index: int) -> None:
        self.state.fmt = self.format_combo.itemData(index)
        switched = with_suffix_for(self.state.dest, self.state.fmt)
        if switched != self.state.dest:
            self._set_dest(switched, keep_default=self._dest_is_default)
        self._update_ok()

    def _on_browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Write the merged checkpoint to", self.state.dest,
                                              "Checkpoints (*.pt *.pth *.safetensors);;All files (*)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.dest_edit.setText(path)

    def _on_add(self) -> None:
        start = os.path.dirname(self.state.paths[0]) if self.state.paths else ""
        paths, _ = QFileDialog.getOpenFileNames(self, "Add checkpoints to merge", start,
                                                "Checkpoints (*.pt *.pth *.tar *.bin *.ckpt *.safetensors);;"
                                                "All files (*)")
        if paths:
            self.inputs.add(paths)

    def _on_remove(self) -> None:
        idx = self.table.currentIndex()
        if idx.isValid():
            self.inputs.remove(idx.row())

    # -- preview --------------------------------------------------------------------------------
    def _replan(self) -> None:
        self.state.plan = None
        err = self.state.input_error()
        if err:
            self.runner.cancel("preview")
            self.planning = False
            self.preview.setPlainText(err)
            self._update_ok()
            return
        self.planning = True
        self.preview.setPlainText("Lining up the checkpoints…")
        self._update_ok()
        self.runner.submit("preview", preview_task, list(self.state.paths), self.state.steps(),
                           list(self.state.weights), on_result=self._on_planned, on_error=self._on_plan_failed)

    def _on_planned(self, plan: MergePlan | None) -> None:
        if plan is None:
            return
        self.planning = False
        self.state.plan = plan
        self.state.plan_error = ""
        lines = []
        if plan.mismatches:
            lines.append("Cannot merge: the checkpoints do not match.")
        lines += [safe_text(line, 400) for line in plan.describe()]
        self.preview.setPlainText("\n".join(lines))
        self._update_ok()

    def _on_plan_failed(self, err: WorkerError) -> None:
        self.planning = False
        self.state.plan = None
        self.state.plan_error = error_text(err.exc)
        self.preview.setPlainText(f"Cannot merge: {safe_text(self.state.plan_error, 600)}")
        self._update_ok()

    def _update_ok(self) -> None:
        err = self.state.input_error() or self.state.dest_error()
        self.set_error(err if self.state.dest.strip() else "")
        self.set_ok(not err and self.state.plan is not None and self.state.plan.ok)

    # -- result ---------------------------------------------------------------------------------
    @classmethod
    def ask(cls, parent: QWidget | None, paths: list[str]) -> MergeRequest | None:
        dlg = cls(parent, paths)
        try:
            return dlg.request() if dlg.run() else None
        finally:
            dlg.deleteLater()
