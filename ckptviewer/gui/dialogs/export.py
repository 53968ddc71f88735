"""Export: which part of the edited checkpoint, which format, which dtype, where.

The plan (what would be written, the notes and the problems that stop an export) is computed by
``core.export.plan_export`` in a worker whenever a choice changes. The source file is never offered
as the destination, and replacing an existing file is asked about before OK closes the dialog. The
export itself runs in the tab's session, in a worker, with progress and Cancel in the status bar.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from ...core.edit.ops import Cast, Select, Step, WeightsOnlySafe
from ...core.edit.recipes import sanitize_file_name
from ...core.model import keypath
from ...core.model.interpret import Analysis
from ...core.util.errors import OperationError
from ...core.util.locations import is_url, location_name
from ...core.util.textsafe import path_text, safe_text
from ...core.util.units import human_bytes
from ...core.write.destination import check_destination
from ...core.write.export import ExportOptions
from ..widgets.messages import error_text
from ..widgets.workers import TaskRunner, WorkerError
from .common import TORCH_SUFFIXES, WritingDialog, error_line, plain_label
from .export_work import ExportRequest, plan_task

FORMATS = (("pt", "PyTorch (.pt, zip archive)"), ("pt-legacy", "PyTorch legacy format (before 1.6)"),
           ("safetensors", "safetensors (tensors only)"))
DTYPES = ((None, "Keep the dtypes"), ("float16", "Cast floating tensors to float16"),
          ("bfloat16", "Cast floating tensors to bfloat16"), ("float32", "Cast floating tensors to float32"))
NON_TENSORS = (("error", "Stop: name them"), ("drop", "Leave them out"),
               ("metadata", "Store simple values in the metadata"))


@dataclass
class Subtree:
    label: str
    path: tuple | None          # None: the whole edited checkpoint


def subtrees(analysis: Analysis) -> tuple[list[Subtree], int]:
    """What can be exported: the whole edited checkpoint and each model state_dict or pickled model in it.
    The default is the model's weights when the file holds exactly one (a training checkpoint), else
    the whole file."""
    out = [Subtree("the whole checkpoint (as edited)", None)]
    models = [sd for sd in analysis.state_dicts if sd.kind in ("state_dict", "module") and sd.path]
    for sd in models:
        what = "pickled model, written as its state_dict" if sd.kind == "module" else "state_dict"
        out.append(Subtree(f"{path_text(sd.path)} ({what}, {len(sd.entries):,} entries)", tuple(sd.path)))
    return out, (1 if len(models) == 1 else 0)


def default_destination(source: str, fmt: str, subtree: tuple | None, tail: str | None = None) -> str:
    """``<stem>-edited.<ext>`` (or ``<stem>-<entry>``, ``<stem>-<tail>``) beside the source (in the home folder
    for a remote source), not an existing file."""
    folder = os.path.expanduser("~") if is_url(source) else os.path.dirname(os.path.abspath(source))
    base = location_name(source)
    stem, ext = os.path.splitext(base)
    if base.endswith(".pth.tar"):
        stem, ext = base[: -len(".pth.tar")], ".pth.tar"
    ext = format_suffix(fmt, ext)
    tail = tail or ("edited" if not subtree else str(subtree[-1])[:60])
    name = sanitize_file_name(f"{stem}-{tail}")
    candidate = os.path.join(folder, name + ext)
    n = 2
    while os.path.exists(candidate):
        candidate = os.path.join(folder, f"{name}-{n}{ext}")
        n += 1
    return candidate


def format_suffix(fmt: str, ext: str = "") -> str:
    """The file suffix of an output in ``fmt``: ``.safetensors``, or for torch files the source's ``.pt`` /
    ``.pth`` when it has one and ``.pt`` otherwise (a ``.tar``, ``.bin`` or ``.ckpt`` name would say that
    the file is something it is not)."""
    if fmt == "safetensors":
        return ".safetensors"
    return ext if ext in (".pt", ".pth") else ".pt"


def _split_suffix(path: str) -> tuple[str, str]:
    if path.endswith(".pth.tar"):
        return path[: -len(".pth.tar")], ".pth.tar"
    return os.path.splitext(path)


def with_suffix_for(dest: str, fmt: str) -> str:
    """``dest`` with its suffix switched to match ``fmt`` (only between the suffixes we know)."""
    stem, ext = _split_suffix(dest)
    if fmt == "safetensors" and (ext in TORCH_SUFFIXES or ext == ".pth.tar"):
        return stem + ".safetensors"
    if fmt != "safetensors" and ext == ".safetensors":
        return stem + ".pt"
    return dest


@dataclass
class ExportState:
    source: str
    root: Any
    choices: list[Subtree]
    subtree: int = 0
    fmt: str = "pt"
    dtype: str | None = None
    non_tensors: str = "error"
    force_bad_crc: bool = False        # write tensors whose bytes fail the source's CRC-32 check
    dest: str = ""
    plan: Any = None                   # ExportPlan for the current choices (None while planning)
    plan_root: Any = None              # the tree that plan describes
    plan_error: str = ""
    notes: list[str] = field(default_factory=list)
    weights_only_safe: bool = False    # make the copy loadable by plain torch.load (the weights_only_safe step)

    def steps(self) -> list[Step]:
        out: list[Step] = [WeightsOnlySafe()] if self.weights_only_safe and self.fmt != "safetensors" else []
        path = self.choices[self.subtree].path
        if path:
            out.append(Select(keypath.format_path(path)))
        if self.dtype:
            out.append(Cast(self.dtype))
        return out

    def options(self, overwrite: bool = False) -> ExportOptions:
        return ExportOptions(fmt=self.fmt, non_tensors=self.non_tensors, overwrite=overwrite,
                             force_bad_crc=self.force_bad_crc)

    def dest_error(self) -> str:
        """Why ``dest`` cannot be written ("" when it can; an existing file is asked about later)."""
        if not self.dest.strip():
            return "Choose where to write the export."
        try:
            check_destination(self.dest, [self.source], overwrite=True)
        except OperationError as e:
            return error_line(e)
        return ""

    def what(self) -> str:
        path = self.choices[self.subtree].path
        text = path_text(path) if path else "the edited checkpoint"
        safe = " (loadable by plain torch.load)" if self.weights_only_safe and self.fmt != "safetensors" else ""
        return text + (f" as {self.dtype}" if self.dtype else "") + safe

    def request(self, overwrite: bool) -> ExportRequest | None:
        if self.plan is None or self.plan.problems or self.dest_error():
            return None
        return ExportRequest(self.plan_root, os.path.abspath(self.dest), self.options(overwrite), self.source,
                             self.what())


class ExportDialog(WritingDialog):
    WRITES = "the export"

    def __init__(self, parent: QWidget | None, source: str, root: Any, analysis: Analysis,
                 subtree: tuple | None = None, *, weights_only_safe: bool = False):
        super().__init__(parent, "Export")
        choices, default = subtrees(analysis)
        if weights_only_safe and subtree is None:
            default = 0                 # the whole file: every entry made loadable, not only the model
        if subtree is not None:
            match = next((i for i, c in enumerate(choices) if c.path == tuple(subtree)), None)
            if match is None:
                choices.append(Subtree(path_text(subtree), tuple(subtree)))
                match = len(choices) - 1
            default = match
        self.state = ExportState(os.path.abspath(source), root, choices, default)
        self.state.weights_only_safe = weights_only_safe
        self.state.dest = default_destination(source, self.state.fmt, choices[default].path,
                                              "weights-only" if weights_only_safe else None)
        self._dest_is_default = True
        self.runner = TaskRunner(self)
        self.planning = False

        form = QFormLayout()
        self.subtree_combo = QComboBox(self)
        for c in choices:
            self.subtree_combo.addItem(c.label)
        self.subtree_combo.setCurrentIndex(default)
        self.subtree_combo.currentIndexChanged.connect(self._on_subtree_changed)
        form.addRow("Export:", self.subtree_combo)
        self.format_combo = QComboBox(self)
        for fmt, label in FORMATS:
            self.format_combo.addItem(label, fmt)
        self.format_combo.currentIndexChanged.connect(self._on_format_changed)
        form.addRow("Format:", self.format_combo)
        self.non_tensor_combo = QComboBox(self)
        for value, label in NON_TENSORS:
            self.non_tensor_combo.addItem(label, value)
        self.non_tensor_combo.currentIndexChanged.connect(self._on_non_tensors_changed)
        self.non_tensor_label = plain_label("Entries that are not tensors:", self, wrap=False)
        form.addRow(self.non_tensor_label, self.non_tensor_combo)
        self.dtype_combo = QComboBox(self)
        for value, label in DTYPES:
            self.dtype_combo.addItem(label, value)
        self.dtype_combo.currentIndexChanged.connect(self._on_dtype_changed)
        form.addRow("DType:", self.dtype_combo)
        self.safe_check = QCheckBox("Make it load with plain torch.load (weights-only safe)", self)
        self.safe_check.setObjectName("export-weights-only-safe")
        self.safe_check.setToolTip("Objects become dicts of their fields, pickled modules their state_dicts, numpy "
                                   "values numbers and tensors, so torch.load opens the copy with its defaults "
                                   "(weights_only=True). Tensors are kept as they are.")
        self.safe_check.setChecked(weights_only_safe)
        self.safe_check.toggled.connect(self._on_safe_toggled)
        form.addRow("", self.safe_check)
        row = QHBoxLayout()
        self.dest_edit = QLineEdit(self.state.dest, self)
        self.dest_edit.setObjectName("export-destination")
        self.dest_edit.textChanged.connect(self._on_dest_changed)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._on_browse)
        row.addWidget(self.dest_edit, 1)
        row.addWidget(browse)
        form.addRow("Destination:", row)
        self.force_crc_check = QCheckBox("Export even if the CRC-32 check fails (a damaged source)", self)
        self.force_crc_check.setObjectName("export-force-bad-crc")
        self.force_crc_check.setToolTip("Tensors whose bytes fail the source zip's CRC-32 check are refused "
                                        "unless this is ticked; their values may be wrong.")
        self.force_crc_check.toggled.connect(self._on_force_crc_toggled)
        form.addRow("", self.force_crc_check)
        self.body.addLayout(form)
        self.plan_text = QPlainTextEdit(self)
        self.plan_text.setReadOnly(True)
        self.plan_text.setObjectName("export-plan")
        self.plan_text.setMinimumHeight(110)
        self.body.addWidget(self.plan_text, 1)
        self.body.addWidget(plain_label("The file is written to a temporary name beside the destination, read back "
                                        "and checked tensor by tensor, then renamed into place. The source is "
                                        "never changed.", self))
        self.finish_layout()
        self.set_ok(False, "Export")
        self.resize(720, 480)
        self._sync_format_widgets()
        self._replan()

    # -- choices ----------------------------------------------------------------------------------
    def _on_subtree_changed(self, index: int) -> None:
        self.state.subtree = index
        if self._dest_is_default:
            self._set_dest(default_destination(self.state.source, self.state.fmt, self.state.choices[index].path))
        self._replan()

    def _on_format_changed(self, index: int) -> None:
        self.state.fmt = self.format_combo.itemData(index)
        if self._dest_is_default:        # the name we chose: choose it again, with this format's suffix
            switched = default_destination(self.state.source, self.state.fmt,
                                           self.state.choices[self.state.subtree].path,
                                           "weights-only" if self.state.weights_only_safe else None)
        else:
            switched = with_suffix_for(self.state.dest, self.state.fmt)
        if switched != self.state.dest:
            self._set_dest(switched, keep_default=self._dest_is_default)
        self._sync_format_widgets()
        self._replan()

    def _sync_format_widgets(self) -> None:
        safetensors = self.state.fmt == "safetensors"
        self.non_tensor_combo.setVisible(safetensors)
        self.non_tensor_label.setVisible(safetensors)
        self.safe_check.setEnabled(not safetensors)      # safetensors holds no pickle: nothing to make safe

    def _on_non_tensors_changed(self, index: int) -> None:
        self.state.non_tensors = self.non_tensor_combo.itemData(index)
        self._replan()

    def _on_force_crc_toggled(self, on: bool) -> None:
        self.state.force_bad_crc = on
        self._replan()

    def _on_safe_toggled(self, checked: bool) -> None:
        self.state.weights_only_safe = checked
        self._replan()

    def _on_dtype_changed(self, index: int) -> None:
        self.state.dtype = self.dtype_combo.itemData(index)
        self._replan()

    def _on_browse(self) -> None:
        filters = "safetensors (*.safetensors)" if self.state.fmt == "safetensors" else \
            "PyTorch checkpoints (*.pt *.pth *.tar *.bin *.ckpt)"
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.state.dest, filters + ";;All files (*)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.set_destination(path)

    def set_destination(self, path: str) -> None:
        self.dest_edit.setText(path)

    # -- plan -------------------------------------------------------------------------------------
    def _replan(self) -> None:
        self.planning = True
        self.state.plan = None
        self.plan_text.setPlainText("Planning…")
        self._update_ok()
        self.runner.submit("plan", plan_task, self.state.root, self.state.steps(), self.state.options(),
                           on_result=self._on_planned, on_error=self._on_plan_failed)

    def _on_planned(self, result: tuple[Any, Any] | None) -> None:
        if result is None:
            return
        self.planning = False
        self.state.plan_root, self.state.plan = result
        self.state.plan_error = ""
        plan = self.state.plan
        lines = [f"{len(plan.tensors):,} tensors, {human_bytes(plan.total_bytes)} of tensor data "
                 f"({plan.total_bytes:,} bytes), {self.state.fmt}"]
        lines += [f"• {safe_text(n, 400)}" for n in plan.notes]
        if plan.problems:
            lines.append("")
            lines.append("Cannot export yet:")
            lines += [f"✖ {safe_text(p, 400)}" for p in plan.problems]
        self.plan_text.setPlainText("\n".join(lines))
        self._update_ok()

    def _on_plan_failed(self, err: WorkerError) -> None:
        self.planning = False
        self.state.plan = None
        self.state.plan_error = error_text(err.exc)
        self.plan_text.setPlainText(f"Cannot export: {safe_text(self.state.plan_error, 600)}")
        self._update_ok()

    def _update_ok(self) -> None:
        err = self.state.dest_error()
        self.set_error(err if self.state.dest.strip() else "")
        ok = (not err and self.state.plan is not None and not self.state.plan.problems)
        self.set_ok(ok)

    # -- result -----------------------------------------------------------------------------------
    @classmethod
    def ask(cls, parent: QWidget | None, source: str, root: Any, analysis: Analysis,
            subtree: tuple | None = None, *, weights_only_safe: bool = False) -> ExportRequest | None:
        dlg = cls(parent, source, root, analysis, subtree, weights_only_safe=weights_only_safe)
        try:
            return dlg.request() if dlg.run() else None
        finally:
            dlg.deleteLater()
