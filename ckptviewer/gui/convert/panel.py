"""The Convert panel (a dock): a recipe, a drop zone, and one row per file with progress and status.

Dropped files and folders are expanded in a worker (``convert_work.expand_steps``), then each file
becomes a job that runs the core's ``convert_iter`` (the command line's code path) in its own worker,
a few files at a time. Each job takes a copy of the recipe as it was when its files were dropped, so
editing the recipe during a batch changes only the files dropped after.

One bad file fails alone (its row shows why). "Cancel" stops the batch: queued files are not started
and running ones stop at their next step, and the core removes their temporary files, so no partial
output is left. A finished row can be dragged out to a file manager (the view starts a ``QDrag`` with
the output's file URL as ``text/uri-list``) or opened in a tab.
"""
from __future__ import annotations

import copy
import itertools
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import (
    QAbstractTableModel,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSize,
    Qt,
    QUrl,
    Signal,
)
from PySide6.QtGui import QColor, QDragEnterEvent, QDragMoveEvent, QDropEvent, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ...core.edit.batch import ConvertResult
from ...core.edit.ops import Step
from ...core.edit.recipes import Recipe
from ...core.model.walk import iter_tensors
from ...core.util.errors import CheckpointError
from ...core.util.textsafe import safe_text
from ...core.util.units import human_bytes
from ...core.write.export import ExportProgress
from ..widgets.drop_zone import FileDropZone, local_paths
from ..widgets.settings import Settings
from ..widgets.theme import plain_tooltip
from ..widgets.workers import TaskRunner, WorkerError
from .recipe_editor import RecipeEditor, default_step, read_recipe, write_recipe
from .work import CANCELLED, Expansion, convert_job_steps, expand_steps

COLUMNS = ("File", "Status", "Progress", "Output")
COL_FILE, COL_STATUS, COL_PROGRESS, COL_OUTPUT = range(len(COLUMNS))
FINISHED = ("done", "skipped", "failed", CANCELLED)
STATUS_COLORS = {"done": ("#1f8a4c", "#4cc27e"), "failed": ("#c0392b", "#ff6b5b"),
                 CANCELLED: ("#8a8a8a", "#8a8a8a"), "skipped": ("#8a6d00", "#e0b93a")}
FRACTION_ROLE = Qt.ItemDataRole.UserRole + 1
FILE_FILTER = "Checkpoints (*.pt *.pth *.tar *.bin *.ckpt *.safetensors *.pkl);;All files (*)"


def default_parallel() -> int:
    """A few files at a time: enough to overlap reading and writing, few enough to bound memory."""
    return max(2, min(4, (os.cpu_count() or 2) // 2))


@dataclass
class ConvertJob:
    id: int
    source: str
    recipe: Recipe
    status: str = "queued"            # queued, converting, done, skipped, failed, cancelled
    done: int = 0
    total: int = 0
    stage: str = ""
    output: str | None = None
    size: int = 0
    message: str = ""
    seconds: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def fraction(self) -> float:
        """Of the whole job: writing is the first half, reading the output back to verify it the second."""
        if self.status == "done":
            return 1.0
        part = min(1.0, self.done / self.total) if self.total else 0.0
        if self.stage == "writing":
            return 0.5 * part
        if self.stage == "verifying":
            return 0.5 + 0.5 * part
        return 0.0

    def status_text(self) -> str:
        if self.status == "queued":
            return "queued"
        if self.status == "converting":
            if self.stop.is_set():
                return "cancelling…"
            return f"converting: {self.stage}" if self.stage else "converting"
        if self.status == "done":
            return f"done, {human_bytes(self.size)}"
        if self.status == "failed":
            return f"failed: {safe_text(self.message, 300)}"
        if self.status == "skipped":
            return f"skipped: {safe_text(self.message, 200)}"
        return "cancelled"


class JobsModel(QAbstractTableModel):
    """One row per job. Finished rows with an output can be dragged out as file URLs."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.jobs: list[ConvertJob] = []

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.jobs)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt override
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def job_at(self, index: QModelIndex | QPersistentModelIndex) -> ConvertJob | None:
        return self.jobs[index.row()] if index.isValid() and 0 <= index.row() < len(self.jobs) else None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole) -> Any:
        job = self.job_at(index)
        if job is None:
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_FILE:
                return safe_text(os.path.basename(job.source), 120)
            if col == COL_STATUS:
                return job.status_text()
            if col == COL_PROGRESS:
                return "" if job.status != "converting" else f"{100 * job.fraction:.0f}%"
            if col == COL_OUTPUT:
                return safe_text(os.path.basename(job.output), 120) if job.output else ""
        if role == FRACTION_ROLE:
            return job.fraction
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_FILE:
                return plain_tooltip(safe_text(job.source, 500))
            if col == COL_OUTPUT and job.output:
                return plain_tooltip(safe_text(job.output, 500) + "\nDrag it to a file manager, or double-click "
                                     "to open it in a tab.")
            text = job.status_text()
            if job.message and job.status == "done":
                text += "\n" + safe_text(job.message, 800)
            return plain_tooltip(text)
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATUS and job.status in STATUS_COLORS:
            from ..widgets.theme import is_dark
            light, dark = STATUS_COLORS[job.status]
            return QColor(dark if is_dark() else light)
        return None

    def flags(self, index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        f = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        job = self.job_at(index)
        if job is not None and job.status == "done" and job.output:
            f |= Qt.ItemFlag.ItemIsDragEnabled
        return f

    # -- drag out -------------------------------------------------------------------------------
    def mimeTypes(self) -> list[str]:  # noqa: N802 - Qt override
        return ["text/uri-list"]

    def supportedDragActions(self) -> Qt.DropAction:  # noqa: N802 - Qt override
        return Qt.DropAction.CopyAction

    def mimeData(self, indexes) -> QMimeData:  # noqa: N802 - Qt override
        paths = []
        for idx in indexes:
            job = self.job_at(idx)
            if job is not None and job.status == "done" and job.output and job.output not in paths:
                paths.append(job.output)
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(p) for p in paths])
        mime.setText("\n".join(paths))
        return mime

    # -- changes --------------------------------------------------------------------------------
    def add(self, jobs: list[ConvertJob]) -> None:
        if not jobs:
            return
        n = len(self.jobs)
        self.beginInsertRows(QModelIndex(), n, n + len(jobs) - 1)
        self.jobs.extend(jobs)
        self.endInsertRows()

    def changed(self, job: ConvertJob) -> None:
        try:
            row = self.jobs.index(job)
        except ValueError:
            return
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def remove_finished(self) -> None:
        keep = [j for j in self.jobs if not j.finished]
        if len(keep) != len(self.jobs):
            self.beginResetModel()
            self.jobs = keep
            self.endResetModel()


class ProgressDelegate(QStyledItemDelegate):
    """Draws a job's progress as a progress bar in its cell."""

    def paint(self, painter, option: QStyleOptionViewItem, index) -> None:
        if index.column() != COL_PROGRESS:
            super().paint(painter, option, index)
            return
        model = index.model()
        job = model.job_at(index) if isinstance(model, JobsModel) else None
        if job is None:
            return
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 2, -2, -2)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(1000 * job.fraction)
        bar.text = {"queued": "queued", "done": "100%", "failed": "failed", CANCELLED: "cancelled",
                    "skipped": "skipped"}.get(job.status, f"{100 * job.fraction:.0f}%")
        bar.textVisible = True
        bar.state = option.state | QStyle.StateFlag.State_Horizontal
        bar.palette = option.palette
        style = option.widget.style() if option.widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, option.widget)

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:  # noqa: N802 - Qt override
        hint = super().sizeHint(option, index)
        return QSize(hint.width(), max(hint.height(), option.fontMetrics.height() + 10))


class JobsView(QTreeView):
    """The job list: drags finished outputs out, and takes files dropped from outside like the zone."""

    paths_dropped = Signal(list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setAcceptDrops(True)           # after DragOnly, which turns drops off: files from outside
        self.viewport().setAcceptDrops(True)

    def _external(self, event) -> list[str]:
        return [] if event.source() is self else local_paths(event.mimeData())

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if self._external(event):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt override
        if self._external(event):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = self._external(event)
        if not paths:
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.paths_dropped.emit([os.path.abspath(p) for p in paths])


class ConvertPanel(QWidget):
    """Recipe + drop zone + jobs. ``open_requested(list[str])`` asks the window to open outputs in tabs."""

    open_requested = Signal(list)
    job_changed = Signal(object)          # a ConvertJob whose status or progress changed
    batch_finished = Signal()             # nothing queued or converting any more
    status_message = Signal(str)

    _ids = itertools.count(1)

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.max_parallel = default_parallel()
        self.runner = TaskRunner(self)
        self._expansions = 0
        self._saves = 0
        self._pending_expansions: set[str] = set()
        self._shut = False
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        split = QSplitter(Qt.Orientation.Vertical, self)
        self.editor = RecipeEditor(split)
        self.editor.load_requested.connect(self._on_load_requested)
        self.editor.save_requested.connect(self._on_save_requested)
        lower = QWidget(split)
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        self.zone = FileDropZone("Drop checkpoints or folders here to convert them with this recipe", lower)
        self.zone.setMinimumHeight(56)
        self.zone.paths_dropped.connect(self.add_paths)
        ll.addWidget(self.zone)
        row = QHBoxLayout()
        add_files = QPushButton("Add Files…", lower)
        add_files.clicked.connect(self._on_add_files_clicked)
        add_folder = QPushButton("Add Folder…", lower)
        add_folder.clicked.connect(self._on_add_folder_clicked)
        self.recursive_box = QCheckBox("Include sub-folders", lower)
        row.addWidget(add_files)
        row.addWidget(add_folder)
        row.addWidget(self.recursive_box)
        row.addStretch(1)
        ll.addLayout(row)
        self.model = JobsModel(self)
        self.view = JobsView(lower)
        self.view.setModel(self.model)
        self.view.setItemDelegate(ProgressDelegate(self.view))
        self.view.paths_dropped.connect(self.add_paths)
        self.view.doubleClicked.connect(self._on_double_clicked)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_context_menu)
        header = self.view.header()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for col, width in enumerate((150, 180, 80, 150)):
            self.view.setColumnWidth(col, width)
        ll.addWidget(self.view, 1)
        self.job_details = QLabel("", lower)
        self.job_details.setTextFormat(Qt.TextFormat.PlainText)
        self.job_details.setWordWrap(True)
        self.job_details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.job_details.hide()
        ll.addWidget(self.job_details)
        self.view.selectionModel().currentRowChanged.connect(self._on_current_row_changed)
        bottom = QHBoxLayout()
        self.summary = QLabel("", lower)
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel", lower)
        self.cancel_button.setToolTip("Stop the batch: queued files are not started, running ones stop and "
                                      "leave no partial output")
        self.cancel_button.clicked.connect(self.cancel_batch)
        self.cancel_button.setEnabled(False)
        self.clear_button = QPushButton("Clear Finished", lower)
        self.clear_button.clicked.connect(self.model.remove_finished)
        self.open_button = QPushButton("Open", lower)
        self.open_button.setToolTip("Open the selected outputs in tabs")
        self.open_button.clicked.connect(self._on_open_clicked)
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.open_button)
        bottom.addWidget(self.clear_button)
        bottom.addWidget(self.cancel_button)
        ll.addLayout(bottom)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        lay.addWidget(split)
        self._update_summary()

    # -- adding files ---------------------------------------------------------------------------
    @property
    def jobs(self) -> list[ConvertJob]:
        return self.model.jobs

    def add_paths(self, paths: list[str]) -> bool:
        """Queue ``paths`` (files and folders) with a copy of the current recipe. False if the recipe is
        not valid (the editor says why)."""
        if self._shut or not paths:
            return False
        try:
            recipe = copy.deepcopy(self.editor.recipe())
        except CheckpointError as e:
            self.editor.show_problem(f"Fix the recipe first: {getattr(e, 'message', e)}")
            self.status_message.emit("The recipe is not valid; nothing was queued.")
            return False
        self._expansions += 1
        channel = f"expand-{self._expansions}"
        self._pending_expansions.add(channel)
        self.runner.submit(channel, expand_steps, list(paths), self.recursive_box.isChecked(), recipe,
                           on_result=lambda exp, c=channel, r=recipe: self._on_expanded(c, exp, r),
                           on_error=lambda err, c=channel: self._on_expand_error(c, err))
        self.cancel_button.setEnabled(True)
        self._update_summary()
        return True

    def _on_expanded(self, channel: str, exp: Expansion | None, recipe: Recipe) -> None:
        self._pending_expansions.discard(channel)
        if exp is None:
            self._update_summary()
            return
        # A file already queued or converting is not queued twice (by name: no file-system calls here).
        active = {os.path.normcase(os.path.abspath(j.source)) for j in self.jobs if not j.finished}
        jobs = [ConvertJob(next(self._ids), f, recipe) for f in exp.files
                if os.path.normcase(os.path.abspath(f)) not in active]
        self.model.add(jobs)
        notes = []
        if exp.passed_over:
            notes.append(f"{len(exp.passed_over)} other file(s) in the folders left alone")
        if exp.own_outputs:
            notes.append(f"{len(exp.own_outputs)} earlier output(s) of this recipe left alone")
        if not jobs:
            notes.insert(0, "Nothing to convert")
        if notes:
            self.status_message.emit("; ".join(notes))
        self._pump()

    def _on_expand_error(self, channel: str, err: WorkerError) -> None:
        self._pending_expansions.discard(channel)
        self.status_message.emit(f"Could not list the dropped files: {err.exc}")
        self._update_summary()

    # -- running --------------------------------------------------------------------------------
    def running(self) -> list[ConvertJob]:
        return [j for j in self.jobs if j.status == "converting"]

    def _pump(self) -> None:
        """Start queued jobs while fewer than ``max_parallel`` run."""
        if self._shut:
            return
        running = len(self.running())
        for job in self.jobs:
            if running >= self.max_parallel:
                break
            if job.status == "queued":
                self._start(job)
                running += 1
        self._update_summary()
        if not self.has_pending_work():
            self.cancel_button.setEnabled(False)
            self.batch_finished.emit()

    def _start(self, job: ConvertJob) -> None:
        job.status = "converting"
        job.stage = "opening"
        self.model.changed(job)
        self.cancel_button.setEnabled(True)
        self.runner.submit(f"job-{job.id}", convert_job_steps, job.source, job.recipe, job.stop,
                           on_progress=lambda p, j=job: self._on_job_progress(j, p),
                           on_result=lambda r, j=job: self._on_job_result(j, r),
                           on_error=lambda err, j=job: self._on_job_error(j, err))
        self.job_changed.emit(job)

    def _on_job_progress(self, job: ConvertJob, p: Any) -> None:
        if isinstance(p, ExportProgress):
            # The export announces verification with done == total, then counts the read-back from 0.
            starting = p.stage == "verifying" and job.stage != "verifying"
            job.done, job.total, job.stage = (0 if starting else p.done), p.total, p.stage
            self.model.changed(job)
            self.job_changed.emit(job)

    def _on_job_result(self, job: ConvertJob, result: ConvertResult | None) -> None:
        if result is None:                  # the worker was cancelled by a shutdown
            job.status = CANCELLED
        else:
            job.status = result.status
            job.output = result.output
            job.size = result.size
            job.message = result.message
            job.seconds = result.seconds
            if result.status == "done":
                job.done = job.total = max(job.total, 1)
        self._finish(job)

    def _on_job_error(self, job: ConvertJob, err: WorkerError) -> None:
        job.status = "failed"
        exc = err.exc
        job.message = str(exc) if isinstance(exc, CheckpointError) else f"internal error ({type(exc).__name__}: {exc})"
        self._finish(job)

    def _finish(self, job: ConvertJob) -> None:
        self.model.changed(job)
        self.job_changed.emit(job)
        if self.model.job_at(self.view.currentIndex()) is job:
            self._show_job(job)
        self._pump()

    def cancel_batch(self) -> None:
        """Stop everything queued or running; outputs already finished stay."""
        for channel in list(self._pending_expansions):
            self.runner.cancel(channel)
        self._pending_expansions.clear()
        for job in self.jobs:
            if job.status == "queued":
                job.status = CANCELLED
                job.message = "cancelled before it started"
                self.model.changed(job)
            elif job.status == "converting":
                job.stop.set()
                self.model.changed(job)
        self.status_message.emit("Cancelling the batch…")
        self._update_summary()
        if not self.has_pending_work():
            self.cancel_button.setEnabled(False)
            self.batch_finished.emit()

    def has_pending_work(self) -> bool:
        return bool(self._pending_expansions) or any(j.status in ("queued", "converting") for j in self.jobs)

    def shutdown(self, wait: bool = True) -> None:
        """Stop every job (running ones remove their temporary files) and every worker."""
        self._shut = True
        for job in self.jobs:
            job.stop.set()
        self.runner.shutdown(wait=wait)

    # -- summary --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("queued", "converting", "done", "skipped", "failed", CANCELLED)}
        for j in self.jobs:
            out[j.status] += 1
        return out

    def _update_summary(self) -> None:
        c = self.counts()
        parts = [f"{n} {s}" for s, n in c.items() if n]
        written = sum(j.size for j in self.jobs if j.status == "done")
        text = ", ".join(parts) if parts else "No files yet."
        if written:
            text += f" — {human_bytes(written)} written"
        if self._pending_expansions:
            text += " — listing the dropped files…"
        self.summary.setText(text)

    # -- recipe files (read and written in workers) ---------------------------------------------
    def _on_load_requested(self, path: str) -> None:
        self.runner.submit("recipe-load", read_recipe, path, on_result=self._on_recipe_loaded,
                           on_error=self._on_recipe_error)

    def _on_recipe_loaded(self, recipe: Recipe | None) -> None:
        if recipe is not None:
            self.editor.set_recipe(recipe)
            self.status_message.emit(f"Loaded the recipe {safe_text(recipe.name, 100)}")

    def _on_recipe_error(self, err: WorkerError) -> None:
        exc = err.exc
        self.editor.show_problem(f"Could not use that recipe: {getattr(exc, 'message', exc)}")

    def _on_save_requested(self, path: str, recipe: Recipe) -> None:
        self._saves += 1               # each save in its own channel: a later load must not cancel it
        self.runner.submit(f"recipe-save-{self._saves}", write_recipe, path, recipe,
                           on_result=lambda p: p and self.status_message.emit(f"Saved the recipe to {p}"),
                           on_error=self._on_recipe_error)

    # -- rows -----------------------------------------------------------------------------------
    def selected_jobs(self) -> list[ConvertJob]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [self.jobs[r] for r in rows if r < len(self.jobs)]

    def _on_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._show_job(self.model.job_at(current))

    def _show_job(self, job: ConvertJob | None) -> None:
        """The selected file's whole story (a failure's reason does not fit in its row)."""
        if job is None:
            self.job_details.hide()
            return
        lines = [safe_text(job.source, 400), job.status_text() if job.status != "failed" else "failed"]
        if job.message:
            lines.append(safe_text(job.message, 1000))
        if job.output:
            lines.append(f"→ {safe_text(job.output, 400)}" + (f" ({job.seconds:.2f} s)" if job.seconds else ""))
        self.job_details.setText("\n".join(lines))
        self.job_details.show()

    def _on_open_clicked(self) -> None:
        outputs = [j.output for j in self.selected_jobs() if j.status == "done" and j.output]
        if outputs:
            self.open_requested.emit(outputs)

    def _on_double_clicked(self, index: QModelIndex) -> None:
        job = self.model.job_at(index)
        if job is not None and job.status == "done" and job.output:
            self.open_requested.emit([job.output])

    def _on_context_menu(self, pos: QPoint) -> None:
        job = self.model.job_at(self.view.indexAt(pos))
        if job is None:
            return
        menu = QMenu(self)
        if job.status == "done" and job.output:
            menu.addAction("Open in Tab", lambda: self.open_requested.emit([job.output]))
            menu.addAction("Copy Output Path", lambda: QGuiApplication.clipboard().setText(job.output))
        menu.addAction("Copy Source Path", lambda: QGuiApplication.clipboard().setText(job.source))
        menu.popup(self.view.viewport().mapToGlobal(pos))

    def _on_add_files_clicked(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Convert checkpoints", "", FILE_FILTER)
        if paths:
            self.add_paths(paths)

    def _on_add_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Convert the checkpoints in a folder")
        if folder:
            self.add_paths([folder])


def install_cleaning_dialogs(editor: RecipeEditor, preview_root: Callable[[], Any | None]) -> None:
    """Edit rename / remap / strip-prefix steps with the cleaning issue's dialogs, previewed on
    ``preview_root()`` (a checkpoint's root, e.g. the current tab's file). Without one to preview on,
    a new step starts from its default and keeps its inline editor."""

    def rename(parent: QWidget, step: Step | None) -> Step | None:
        root = preview_root()
        if root is None:
            return step or default_step("rename")
        from ..dialogs import RenameDialog
        return RenameDialog.ask(parent, root, [tuple(r) for r in step.rules] if step is not None else None)

    def remap(parent: QWidget, step: Step | None) -> Step | None:
        root = preview_root()
        if root is None:
            return step
        from ..dialogs import RemapDevicesDialog
        devices = Counter(t.device for _, t in iter_tensors(root))
        return RemapDevicesDialog.ask(parent, dict(devices))

    def strip(parent: QWidget, step: Step | None) -> Step | None:
        root = preview_root()
        if root is None:
            return step
        from ..dialogs import StripPrefixDialog
        return StripPrefixDialog.ask(parent, root, (step.prefix or "") if step is not None else "")

    for kind, fn in (("rename", rename), ("remap_device", remap), ("strip_prefix", strip)):
        editor.set_default_dialog(kind, fn)


def current_tab_root(window: QWidget) -> Any | None:
    """The root of the checkpoint shown in ``window``'s current tab, as the file holds it."""
    tab = window.current_tab() if hasattr(window, "current_tab") else None
    loaded = getattr(tab, "file", None)
    return loaded.checkpoint.root if loaded is not None else None


class ConvertDock(QDockWidget):
    """The Convert panel as a dock of the main window."""

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None):
        super().__init__("Convert", parent)
        self.setObjectName("convert-dock")
        self.setAllowedAreas(Qt.DockWidgetArea.LeftDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea
                             | Qt.DockWidgetArea.BottomDockWidgetArea)
        self.panel = ConvertPanel(settings, self)
        self.setWidget(self.panel)
        if parent is not None:
            install_cleaning_dialogs(self.panel.editor, lambda: current_tab_root(parent))
