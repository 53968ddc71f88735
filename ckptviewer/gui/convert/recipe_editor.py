"""The Convert panel's recipe editor: a preset or a custom list of steps, and the output rule.

The editor holds the recipe as core objects (``ops`` steps and an ``OutputRule``); every edit goes
through the core's JSON form (``step_from_json``, ``recipe_from_json``), so the window accepts exactly
what a recipe file and the command line accept and shows the core's message when a value is wrong.

Steps are edited inline by small widgets registered per step kind in :data:`STEP_EDITORS`. Dialogs plug
in as ``fn(parent, step or None) -> step | None`` per kind: an "Edit…" button next to the inline editor
opens it (and adding a rename step starts with it, since a rename needs its rules). The Convert panel
plugs in the cleaning issue's dialogs (``RecipeEditor.set_default_dialog``), previewed on the checkpoint
of the current tab; :func:`register_step_dialog` registers one for every editor, before those.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.edit.ops import (
    Cast,
    Drop,
    RemapDevice,
    Rename,
    Select,
    SelectModel,
    Step,
    StripPrefix,
    WeightsOnlySafe,
    step_from_json,
)
from ...core.edit.recipes import EXISTS, OutputRule, Recipe, load_recipe, presets, recipe_from_json
from ...core.util.errors import CheckpointError, OperationError
from ...core.util.textsafe import safe_text
from ...core.write.export import FORMATS

StepDialog = Callable[[QWidget, Step | None], Step | None]
STEP_DIALOGS: dict[str, StepDialog] = {}

DIALOG_ON_ADD = {"rename"}          # kinds whose default step is no use without the dialog
STEP_LABELS = {"select_model": "Select the model's state_dict", "select": "Select an entry",
               "strip_prefix": "Strip a key prefix", "remap_device": "Remap devices", "cast": "Cast to a dtype",
               "drop": "Drop entries", "rename": "Rename keys",
               "weights_only_safe": "Make it load with plain torch.load"}
CAST_DTYPES = ("float16", "bfloat16", "float32", "float64")
CUSTOM = "__custom__"


def register_step_dialog(kind: str, fn: StepDialog) -> None:
    """Plug in a dialog for steps of ``kind``: ``fn(parent, step or None) -> new step or None``."""
    STEP_DIALOGS[kind] = fn


def default_step(kind: str) -> Step:
    """A new step of ``kind`` with sensible parameters for the user to adjust."""
    return {"select_model": lambda: SelectModel(), "select": lambda: Select("model_state_dict"),
            "strip_prefix": lambda: StripPrefix(), "remap_device": lambda: RemapDevice((("*", "cpu"),)),
            "cast": lambda: Cast("float16"), "drop": lambda: Drop(("*.num_batches_tracked",)),
            "rename": lambda: Rename((("remove_prefix", "module."),)),
            "weights_only_safe": lambda: WeightsOnlySafe()}[kind]()


def _line(parent: QWidget, placeholder: str = "") -> QLineEdit:
    e = QLineEdit(parent)
    e.setPlaceholderText(placeholder)
    return e


class StepEditor(QWidget):
    """Inline editor of one step kind: ``load(step)``, ``data()`` (the step's JSON form), ``edited``."""

    kind = ""
    edited = Signal()

    def load(self, step: Step) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def data(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self) -> Step:
        """The step the widgets describe; raises OperationError (from the core) when a value is wrong."""
        return step_from_json(self.data())

    def _form(self) -> QFormLayout:
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        return form


class SelectModelEditor(StepEditor):
    kind = "select_model"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prefer = _line(self, "automatic (the model's state_dict)")
        self.prefer.setToolTip("When a file holds several state_dicts, prefer the one at this key path")
        self.prefer.textEdited.connect(self.edited)
        self._form().addRow("Prefer", self.prefer)

    def load(self, step):
        self.prefer.setText(step.prefer or "")

    def data(self):
        return {"op": self.kind, "prefer": self.prefer.text().strip() or None}


class SelectEditor(StepEditor):
    kind = "select"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path = _line(self, "model_state_dict (a/b/0 for nested)")
        self.path.textEdited.connect(self.edited)
        self._form().addRow("Key path", self.path)

    def load(self, step):
        self.path.setText(step.path)

    def data(self):
        text = self.path.text().strip()
        if not text:
            raise OperationError("select needs a key path")
        return {"op": self.kind, "path": text}


class StripPrefixEditor(StepEditor):
    kind = "strip_prefix"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prefix = _line(self, "detected (module., _orig_mod., …)")
        self.at = _line(self, "every state_dict")
        for e in (self.prefix, self.at):
            e.textEdited.connect(self.edited)
        form = self._form()
        form.addRow("Prefix", self.prefix)
        form.addRow("In", self.at)

    def load(self, step):
        self.prefix.setText(step.prefix or "")
        self.at.setText(step.at or "")

    def data(self):
        return {"op": self.kind, "prefix": self.prefix.text() or None, "at": self.at.text().strip() or None}


class RemapDeviceEditor(StepEditor):
    kind = "remap_device"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rules = QPlainTextEdit(self)
        self.rules.setPlaceholderText("one rule a line: * -> cpu, cuda:1 -> cuda:0")
        self.rules.setMaximumHeight(70)
        self.rules.textChanged.connect(self.edited)
        self._form().addRow("Rules", self.rules)

    def load(self, step):
        self.rules.setPlainText("\n".join(f"{a} -> {b}" for a, b in step.mapping))

    def data(self):
        pairs = []
        for n, line in enumerate(self.rules.toPlainText().splitlines(), 1):
            if not line.strip():
                continue
            if "->" not in line:
                raise OperationError(f"rule {n} ({line.strip()!r}) must read SOURCE -> DEVICE, e.g. cuda:1 -> cuda:0")
            src, dst = (x.strip() for x in line.split("->", 1))
            pairs.append([src or "*", dst])
        if not pairs:
            raise OperationError("remap needs at least one rule, e.g. * -> cpu")
        return {"op": self.kind, "mapping": pairs}


class CastEditor(StepEditor):
    kind = "cast"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.dtype = QComboBox(self)
        self.dtype.addItems(CAST_DTYPES)
        self.dtype.currentIndexChanged.connect(self.edited)
        self._form().addRow("DType", self.dtype)

    def load(self, step):
        self.dtype.setCurrentText(step.dtype)

    def data(self):
        return {"op": self.kind, "dtype": self.dtype.currentText()}


class DropEditor(StepEditor):
    kind = "drop"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.paths = QPlainTextEdit(self)
        self.paths.setPlaceholderText("one key path a line; the last part may be a glob: *.num_batches_tracked")
        self.paths.setMaximumHeight(70)
        self.paths.textChanged.connect(self.edited)
        self._form().addRow("Entries", self.paths)

    def load(self, step):
        self.paths.setPlainText("\n".join(step.paths))

    def data(self):
        paths = [p.strip() for p in self.paths.toPlainText().splitlines() if p.strip()]
        if not paths:
            raise OperationError("drop needs at least one key path")
        return {"op": self.kind, "paths": paths}


class RenameEditor(StepEditor):
    """Rules as the recipe file writes them (a JSON list), until the rename dialog plugs in."""

    kind = "rename"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rules = QPlainTextEdit(self)
        self.rules.setPlaceholderText('[["remove_prefix", "module."], ["replace", "old", "new"]]')
        self.rules.setMaximumHeight(70)
        self.rules.textChanged.connect(self.edited)
        self.at = _line(self, "every state_dict")
        self.at.textEdited.connect(self.edited)
        form = self._form()
        form.addRow("Rules", self.rules)
        form.addRow("In", self.at)

    def load(self, step):
        self.rules.setPlainText(json.dumps([list(r) for r in step.rules]))
        self.at.setText(step.at or "")

    def data(self):
        try:
            rules = json.loads(self.rules.toPlainText() or "[]")
        except ValueError as e:
            raise OperationError(f"the rules are not valid JSON ({e})") from None
        if not isinstance(rules, list) or not rules or not all(isinstance(r, list) and r for r in rules):
            raise OperationError('rules must be a list such as [["replace", "old", "new"]]')
        return {"op": self.kind, "rules": rules, "at": self.at.text().strip() or None}


class WeightsOnlySafeEditor(StepEditor):
    """No parameters: the step says what it does."""

    kind = "weights_only_safe"

    def __init__(self, parent=None):
        super().__init__(parent)
        text = QLabel("Objects become dicts of their fields, pickled modules their state_dicts, numpy values "
                      "numbers and tensors, so torch.load opens the output with its defaults (weights_only=True). "
                      "Tensors are kept as they are.", self)
        text.setTextFormat(Qt.TextFormat.PlainText)
        text.setWordWrap(True)
        self._form().addRow(text)

    def load(self, step):
        pass

    def data(self):
        return {"op": self.kind}


STEP_EDITORS: dict[str, type[StepEditor]] = {c.kind: c for c in (SelectModelEditor, SelectEditor, StripPrefixEditor,
                                                                 RemapDeviceEditor, CastEditor, DropEditor,
                                                                 RenameEditor, WeightsOnlySafeEditor)}


class RecipeEditor(QGroupBox):
    """Choose a preset or build a recipe. ``recipe()`` returns a validated copy (raises OperationError)."""

    changed = Signal()
    load_requested = Signal(str)          # a recipe file to read (the panel reads it in a worker)
    save_requested = Signal(str, object)  # a path and the Recipe to write

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Recipe", parent)
        self._presets = presets()
        self._steps: list[Step] = []
        self._step_error = ""
        self._loading = False
        self._name = ""
        self._description = ""
        self._dialogs: dict[str, StepDialog] = dict(STEP_DIALOGS)
        lay = QVBoxLayout(self)

        top = QHBoxLayout()
        self.preset_box = QComboBox(self)
        for rid, r in self._presets.items():
            self.preset_box.addItem(r.name, rid)
        self.preset_box.addItem("Custom recipe", CUSTOM)
        self.preset_box.currentIndexChanged.connect(self._on_preset_chosen)
        self.load_button = QPushButton("Load…", self)
        self.load_button.setToolTip("Read a recipe JSON file")
        self.load_button.clicked.connect(self._on_load_clicked)
        self.save_button = QPushButton("Save…", self)
        self.save_button.setToolTip("Write this recipe as JSON (for `ckptviewer convert --recipe FILE`)")
        self.save_button.clicked.connect(self._on_save_clicked)
        top.addWidget(self.preset_box, 1)
        top.addWidget(self.load_button)
        top.addWidget(self.save_button)
        lay.addLayout(top)
        self.description = QLabel(self)
        self.description.setTextFormat(Qt.TextFormat.PlainText)
        self.description.setWordWrap(True)
        lay.addWidget(self.description)

        steps_row = QHBoxLayout()
        self.steps_list = QListWidget(self)
        self.steps_list.setMaximumHeight(110)
        self.steps_list.currentRowChanged.connect(self._on_step_selected)
        steps_row.addWidget(self.steps_list, 1)
        buttons = QVBoxLayout()
        self.add_button = QToolButton(self)
        self.add_button.setText("Add step ▾")
        self.add_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        # The style's own menu arrow is drawn over the text of a text-only button; the ▾ says it instead.
        self.add_button.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")
        menu = QMenu(self.add_button)
        for kind, label in STEP_LABELS.items():
            action = menu.addAction(label)
            action.setData(kind)
            action.triggered.connect(lambda _checked=False, k=kind: self.add_step(k))
        self.add_button.setMenu(menu)
        self.remove_button = QToolButton(self)
        self.remove_button.setText("Remove")
        self.remove_button.clicked.connect(self.remove_step)
        self.up_button = QToolButton(self)
        self.up_button.setText("↑")
        self.up_button.setToolTip("Run this step earlier")
        self.up_button.clicked.connect(lambda: self.move_step(-1))
        self.down_button = QToolButton(self)
        self.down_button.setText("↓")
        self.down_button.setToolTip("Run this step later")
        self.down_button.clicked.connect(lambda: self.move_step(1))
        for b in (self.add_button, self.remove_button, self.up_button, self.down_button):
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)   # one column, one width
            buttons.addWidget(b)
        buttons.addStretch(1)
        steps_row.addLayout(buttons)
        lay.addLayout(steps_row)

        edit_row = QHBoxLayout()
        self.step_stack = QStackedWidget(self)
        self.editors: dict[str, StepEditor] = {}
        empty = QLabel("Select a step to change its parameters.", self)
        self.step_stack.addWidget(empty)
        for kind, cls in STEP_EDITORS.items():
            ed = cls(self.step_stack)
            ed.edited.connect(self._on_step_edited)
            self.editors[kind] = ed
            self.step_stack.addWidget(ed)
        edit_row.addWidget(self.step_stack, 1)
        self.dialog_button = QPushButton("Edit…", self)
        self.dialog_button.clicked.connect(self._on_dialog_clicked)
        self.dialog_button.hide()
        edit_row.addWidget(self.dialog_button, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(edit_row)

        out = QFormLayout()
        self.format_box = QComboBox(self)
        for fmt in FORMATS:
            self.format_box.addItem({"pt": "PyTorch (.pt, zip)", "pt-legacy": "PyTorch legacy (non-zip)",
                                     "safetensors": "safetensors"}.get(fmt, fmt), fmt)
        folder_row = QHBoxLayout()
        self.beside_box = QCheckBox("Beside each input", self)
        self.folder_edit = _line(self, "output folder")
        self.folder_button = QToolButton(self)
        self.folder_button.setText("…")
        self.folder_button.setToolTip("Choose the output folder")
        self.folder_button.clicked.connect(self._on_folder_clicked)
        folder_row.addWidget(self.beside_box)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.folder_button)
        self.name_edit = _line(self, "{stem}.clean{ext}")
        self.name_edit.setToolTip("Output file name: {stem} (input name without suffix), {ext} (its suffix, or the "
                                  "format's), {name} (the whole input name), {parent} (its folder's name)")
        self.exists_box = QComboBox(self)
        for rule, text in zip(EXISTS, ("fail that file", "skip it", "overwrite", "write name-1, name-2, …")):
            self.exists_box.addItem(text, rule)
        self.non_tensor_box = QComboBox(self)
        for rule, text in (("error", "refuse (safetensors holds tensors only)"), ("drop", "drop them"),
                           ("metadata", "keep scalars as metadata")):
            self.non_tensor_box.addItem(text, rule)
        out.addRow("Format", self.format_box)
        out.addRow("Folder", folder_row)
        out.addRow("Name", self.name_edit)
        out.addRow("If it exists", self.exists_box)
        out.addRow("Non-tensors", self.non_tensor_box)
        lay.addLayout(out)
        # Format, name pattern and non-tensor rule make a preset "custom"; the folder and the exists rule
        # are where and how this run writes (the command line's --output-dir and --force).
        for w in (self.format_box, self.non_tensor_box):
            w.currentIndexChanged.connect(self._on_output_edited)
        self.name_edit.textEdited.connect(self._on_output_edited)
        self.exists_box.currentIndexChanged.connect(self._on_destination_edited)
        self.beside_box.toggled.connect(self._on_destination_edited)
        self.folder_edit.textEdited.connect(self._on_destination_edited)
        self.error = QLabel(self)
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d9534f;")
        self.error.hide()
        lay.addWidget(self.error)
        self.set_recipe(next(iter(self._presets.values())))

    # -- state ----------------------------------------------------------------------------------
    def set_default_dialog(self, kind: str, fn: StepDialog) -> None:
        """Use ``fn`` to edit steps of ``kind`` unless a dialog was registered for it globally."""
        if kind not in STEP_DIALOGS:
            self._dialogs[kind] = fn
        self._on_step_selected(self.steps_list.currentRow())

    def dialog_for(self, kind: str) -> StepDialog | None:
        return self._dialogs.get(kind)

    def preset_ids(self) -> list[str]:
        return list(self._presets)

    def choose_preset(self, rid: str) -> None:
        i = self.preset_box.findData(rid)
        if i < 0:
            raise KeyError(rid)
        self._use_preset(rid)

    def set_recipe(self, recipe: Recipe) -> None:
        """Show ``recipe`` (a copy is kept: the caller's object is never changed)."""
        recipe = copy.deepcopy(recipe)
        self._loading = True
        try:
            self._name, self._description = recipe.name, recipe.description
            i = self.preset_box.findData(recipe.id) if recipe.id else -1
            self.preset_box.setCurrentIndex(i if i >= 0 else self.preset_box.findData(CUSTOM))
            self._steps = list(recipe.steps)
            self._step_error = ""
            self._refresh_steps(0 if self._steps else -1)
            rule = recipe.output
            self.format_box.setCurrentIndex(max(0, self.format_box.findData(rule.format)))
            self.beside_box.setChecked(rule.folder is None)
            self.folder_edit.setText(rule.folder or "")
            self.folder_edit.setEnabled(rule.folder is not None)
            self.folder_button.setEnabled(rule.folder is not None)
            self.name_edit.setText(rule.name)
            self.exists_box.setCurrentIndex(max(0, self.exists_box.findData(rule.exists)))
            self.non_tensor_box.setCurrentIndex(max(0, self.non_tensor_box.findData(rule.non_tensors)))
            self.description.setText(safe_text(recipe.description or recipe.name, 400))
        finally:
            self._loading = False
        self._validate()
        self.changed.emit()

    def set_output_folder(self, folder: str | None) -> None:
        """Write outputs to ``folder`` (None: beside each input)."""
        self._loading = True
        self.beside_box.setChecked(folder is None)
        self.folder_edit.setText(folder or "")
        self._loading = False
        self._on_destination_edited()

    def output_rule(self) -> OutputRule:
        return OutputRule(self.format_box.currentData(),
                          None if self.beside_box.isChecked() else (self.folder_edit.text().strip() or None),
                          self.name_edit.text(), self.exists_box.currentData(), self.non_tensor_box.currentData())

    def recipe(self) -> Recipe:
        """The recipe as shown, validated by the core (the JSON round trip a recipe file takes)."""
        if self._step_error:
            raise OperationError(self._step_error)
        if not self.beside_box.isChecked() and not self.folder_edit.text().strip():
            raise OperationError("choose an output folder, or tick 'Beside each input'")
        rid = self.preset_box.currentData()
        rule = self.output_rule()
        data = {"ckptviewer_recipe": 1, "name": self._name, "description": self._description,
                "steps": [s.to_json() for s in self._steps],
                "output": {"format": rule.format, "folder": rule.folder, "name": rule.name,
                           "exists": rule.exists, "non_tensors": rule.non_tensors}}
        recipe = recipe_from_json(data)
        recipe.id = rid if rid != CUSTOM else ""
        return recipe

    def steps(self) -> list[Step]:
        return list(self._steps)

    # -- steps ----------------------------------------------------------------------------------
    def _refresh_steps(self, select: int) -> None:
        self.steps_list.blockSignals(True)
        self.steps_list.clear()
        for i, s in enumerate(self._steps, 1):
            item = QListWidgetItem(f"{i}. {safe_text(s.describe(), 160)}")
            item.setData(Qt.ItemDataRole.UserRole, s.kind)
            self.steps_list.addItem(item)
        self.steps_list.blockSignals(False)
        self.steps_list.setCurrentRow(select)
        self._on_step_selected(select)

    def add_step(self, kind: str) -> Step | None:
        step = default_step(kind)
        dialog = self._dialogs.get(kind) if kind in DIALOG_ON_ADD else None
        if dialog is not None:
            step = dialog(self, None)
            if step is None:
                return None
        row = self.steps_list.currentRow() + 1 if self.steps_list.currentRow() >= 0 else len(self._steps)
        self._steps.insert(row, step)
        self._edited(row)
        return step

    def remove_step(self) -> None:
        row = self.steps_list.currentRow()
        if 0 <= row < len(self._steps):
            del self._steps[row]
            self._step_error = ""
            self._edited(min(row, len(self._steps) - 1))

    def move_step(self, delta: int) -> None:
        row = self.steps_list.currentRow()
        new = row + delta
        if 0 <= row < len(self._steps) and 0 <= new < len(self._steps):
            self._steps[row], self._steps[new] = self._steps[new], self._steps[row]
            self._edited(new)

    def _edited(self, select: int) -> None:
        self._refresh_steps(select)
        self._became_custom()

    def _became_custom(self) -> None:
        if self._loading:
            return
        if self.preset_box.currentData() != CUSTOM:
            self._loading = True
            self.preset_box.setCurrentIndex(self.preset_box.findData(CUSTOM))
            self._loading = False
            self._name = f"{self._name} (edited)" if self._name and "(edited)" not in self._name else self._name
        self._validate()
        self.changed.emit()

    def _on_step_selected(self, row: int) -> None:
        if not 0 <= row < len(self._steps):
            self.step_stack.setCurrentIndex(0)
            self._fit_stack()
            self.dialog_button.hide()
            return
        step = self._steps[row]
        editor = self.editors.get(step.kind)
        if editor is None:
            self.step_stack.setCurrentIndex(0)
        else:
            was = self._loading
            self._loading = True
            editor.blockSignals(True)
            editor.load(step)
            editor.blockSignals(False)
            self._loading = was
            self.step_stack.setCurrentWidget(editor)
        self._fit_stack()
        self.dialog_button.setVisible(step.kind in self._dialogs)

    def _fit_stack(self) -> None:
        """Size the step editor to the page shown, not to the tallest page."""
        current = self.step_stack.currentWidget()
        for i in range(self.step_stack.count()):
            page = self.step_stack.widget(i)
            policy = QSizePolicy.Policy.Preferred if page is current else QSizePolicy.Policy.Ignored
            page.setSizePolicy(policy, policy)
        self.step_stack.adjustSize()

    def _on_step_edited(self) -> None:
        if self._loading:
            return
        row = self.steps_list.currentRow()
        editor = self.step_stack.currentWidget()
        if not 0 <= row < len(self._steps) or not isinstance(editor, StepEditor):
            return
        try:
            step = editor.step()
        except CheckpointError as e:
            self._step_error = f"step {row + 1} ({editor.kind}): {e.message}"
            self._became_custom()
            return
        self._step_error = ""
        self._steps[row] = step
        item = self.steps_list.item(row)
        item.setText(f"{row + 1}. {safe_text(step.describe(), 160)}")
        self._became_custom()

    def _on_dialog_clicked(self) -> None:
        row = self.steps_list.currentRow()
        if not 0 <= row < len(self._steps):
            return
        fn = self._dialogs.get(self._steps[row].kind)
        step = fn(self, self._steps[row]) if fn is not None else None
        if step is not None:
            self._steps[row] = step
            self._step_error = ""
            self._edited(row)

    # -- output and presets ---------------------------------------------------------------------
    def _on_output_edited(self, *_args) -> None:
        if not self._loading:
            self._became_custom()

    def _on_destination_edited(self, *_args) -> None:
        beside = self.beside_box.isChecked()
        self.folder_edit.setEnabled(not beside)
        self.folder_button.setEnabled(not beside)
        if not self._loading:
            self._validate()
            self.changed.emit()

    def _on_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)
            self._on_destination_edited()

    def _on_preset_chosen(self, _index: int) -> None:
        if self._loading:
            return
        rid = self.preset_box.currentData()
        if rid in self._presets:
            self._use_preset(rid)
        else:
            self._became_custom()

    def _use_preset(self, rid: str) -> None:
        """Show preset ``rid``, keeping where this run writes (the folder and the exists rule)."""
        recipe = copy.deepcopy(self._presets[rid])
        recipe.output.folder = None if self.beside_box.isChecked() else (self.folder_edit.text().strip() or None)
        recipe.output.exists = self.exists_box.currentData() or recipe.output.exists
        self.set_recipe(recipe)

    def _validate(self) -> bool:
        try:
            self.recipe()
        except CheckpointError as e:
            self.error.setText(e.message if isinstance(e, OperationError) else str(e))
            self.error.show()
            return False
        self.error.hide()
        return True

    @property
    def problem(self) -> str:
        return self.error.text() if not self.error.isHidden() else ""

    def _on_load_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a recipe", "", "Recipes (*.json);;All files (*)")
        if path:
            self.load_requested.emit(path)

    def _on_save_clicked(self) -> None:
        try:
            recipe = self.recipe()
        except CheckpointError as e:
            self._validate()
            self.error.setText(f"Cannot save: {e.message if isinstance(e, OperationError) else e}")
            return
        base = (recipe.id or "recipe").replace(os.sep, "_")
        path, _ = QFileDialog.getSaveFileName(self, "Save the recipe", f"{base}.json", "Recipes (*.json)")
        if path:
            self.save_requested.emit(path, recipe)

    def show_problem(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()


def read_recipe(path: str) -> Recipe:
    """Read a recipe file (in a worker; raises OperationError naming the bad step)."""
    return load_recipe(path)


def write_recipe(path: str, recipe: Recipe) -> str:
    recipe.save(path)
    return path
