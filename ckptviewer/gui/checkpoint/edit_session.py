"""A tab's edits: the core ``Document``, its undo stack, and the workers that apply steps and export.

``apply(step)`` computes the state after the step in a worker (see ``editing.edit_steps``); when it
arrives, an :class:`EditCommand` goes on the undo stack and pushes the step onto the document with
the computed result. A step the core refuses raises in the worker: ``refused`` carries its message
and nothing enters the stack. Steps given together run one after the other, each its own undo
entry. Undo and redo move between the states the commands keep, so they are instant and show
exactly the earlier view.

While an edit is being computed, the document must not change under the worker: undo and redo
wait (``busy`` is true) and further steps queue behind it.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from ...core.edit.document import Document
from ...core.edit.ops import Step
from ...core.util.errors import CheckpointError
from ...core.util.progress import Progress
from ...core.util.textsafe import safe_text
from ..dialogs.export_work import ExportRequest, export_task
from ..widgets.gc_pause import freeze_loaded_objects
from ..widgets.messages import error_text
from ..widgets.workers import TaskRunner, WorkerError
from .editing import ViewState, base_state, edit_steps
from .loading import LoadedFile


class EditCommand(QUndoCommand):
    """One step: redo pushes it onto the document and shows ``after``; undo pops it and shows ``before``."""

    def __init__(self, session: "EditSession", step: Step, before: ViewState, after: ViewState):
        super().__init__(safe_text(step.describe(), 80))
        self.step = step
        self._session = session
        self._before = before
        self._after = after

    def redo(self) -> None:
        self._session._enter(self._after, push=self.step)

    def undo(self) -> None:
        self._session._enter(self._before, pop=True)


class EditSession(QObject):
    state_changed = Signal(object, object)   # the ViewState now shown, the one left
    busy_changed = Signal(bool)              # an edit or an export is running
    progressed = Signal(object)              # a Progress, or None when idle
    refused = Signal(str, str)               # message, details: an edit or export that failed
    message = Signal(str)                    # status bar text
    exported = Signal(object)                # ExportResult
    edited_changed = Signal(bool)            # whether there are edits not exported since

    def __init__(self, loaded: LoadedFile, parent: QObject | None = None):
        super().__init__(parent)
        self.document = Document(loaded.checkpoint)
        self.state: ViewState = base_state(loaded)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.runner = TaskRunner(self)
        self.runner.busy_changed.connect(self._on_runner_busy)
        self._queue: list[Step] = []
        self._editing: Step | None = None
        self._cache: dict = {}
        self._busy = False
        self.last_export: Any = None

    # -- state ----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._editing is not None or self.runner.is_busy()

    @property
    def editing(self) -> bool:
        """An edit is being computed (the document must not change until it arrives)."""
        return self._editing is not None

    @property
    def exporting(self) -> bool:
        return self.runner.is_busy("export")

    @property
    def has_unexported_edits(self) -> bool:
        return not self.undo_stack.isClean()

    @property
    def root(self) -> Any:
        """The edited object graph the tab shows (the document's ``root``, kept by the state)."""
        return self.state.root

    def _update_busy(self) -> None:
        busy = self.busy
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)
            if not busy:
                self.progressed.emit(None)

    def _on_runner_busy(self, _busy: bool) -> None:
        self._update_busy()

    def _on_clean_changed(self, clean: bool) -> None:
        self.edited_changed.emit(not clean)

    # -- edits ----------------------------------------------------------------------------------
    def apply(self, steps: Step | list[Step]) -> None:
        """Apply ``steps`` in order, each as its own undo entry (computed in a worker)."""
        self._queue.extend([steps] if isinstance(steps, Step) else list(steps))
        self._next()

    def _next(self) -> None:
        if self._editing is not None or not self._queue:
            self._update_busy()
            return
        step = self._queue.pop(0)
        self._editing = step
        self.runner.submit("edit", edit_steps, self.document, step, self._cache,
                           on_progress=self._on_progress,
                           on_result=lambda state, s=step: self._on_edit_done(s, state),
                           on_error=lambda err, s=step: self._on_edit_failed(s, err))
        self._update_busy()

    def _on_progress(self, p: Any) -> None:
        if isinstance(p, Progress):
            self.progressed.emit(p)

    def _on_edit_done(self, step: Step, state: ViewState | None) -> None:
        self._editing = None
        if state is None or state.steps != tuple(self.document.steps) + (step,):
            self._queue.clear()        # cancelled, or the document moved on (cannot happen while editing)
            self._update_busy()
            return
        # The log covers every step (they are applied again from the file); this step's lines come last.
        said = state.log.lines[len(self.state.log.lines):]
        self.undo_stack.push(EditCommand(self, step, self.state, state))
        freeze_loaded_objects()          # the new view is long-lived: keep the collector off it
        self.message.emit(safe_text(step.describe(), 120) + (": " + "; ".join(said[:3]) if said else ""))
        self._next()

    def _on_edit_failed(self, step: Step, err: WorkerError) -> None:
        self._editing = None
        dropped = len(self._queue)
        self._queue.clear()
        text = f"Could not apply “{safe_text(step.describe(), 120)}”: {error_text(err.exc)}"
        if dropped:
            text += f" ({dropped} later step{'s' if dropped != 1 else ''} not applied)"
        details = err.details if not isinstance(err.exc, CheckpointError) else str(err.exc)
        self.refused.emit(text, details)
        self._update_busy()

    def _enter(self, state: ViewState, *, push: Step | None = None, pop: bool = False) -> None:
        if push is not None:
            self.document.push(push, edited=state.edited)
        if pop:
            self.document.pop(edited=state.edited)
        old, self.state = self.state, state
        self.state_changed.emit(state, old)

    def undo(self) -> bool:
        if self.editing:
            self.message.emit("An edit is still being applied; undo when it is done.")
            return False
        if not self.undo_stack.canUndo():
            return False
        text = self.undo_stack.undoText()
        self.undo_stack.undo()
        self.message.emit(f"Undone: {text}")
        return True

    def redo(self) -> bool:
        if self.editing:
            self.message.emit("An edit is still being applied; redo when it is done.")
            return False
        if not self.undo_stack.canRedo():
            return False
        text = self.undo_stack.redoText()
        self.undo_stack.redo()
        self.message.emit(f"Redone: {text}")
        return True

    # -- export ---------------------------------------------------------------------------------
    def export(self, request: ExportRequest) -> None:
        self.runner.submit("export", export_task, request, on_progress=self._on_progress,
                           on_result=lambda result, r=request: self._on_exported(r, result),
                           on_error=lambda err, r=request: self._on_export_failed(r, err))
        self._update_busy()

    def _on_exported(self, request: ExportRequest, result: Any) -> None:
        if result is None:
            return
        self.last_export = result
        if self.document.steps:
            self.undo_stack.setClean()
        self.message.emit(f"Exported {request.what or 'the checkpoint'} to {safe_text(result.path, 200)} "
                          f"({result.size:,} bytes, {result.tensors} tensors, {result.fmt}; verified) "
                          f"in {result.seconds:.2f} s")
        self.exported.emit(result)

    def _on_export_failed(self, request: ExportRequest, err: WorkerError) -> None:
        text = f"Export to {safe_text(request.dest, 200)} failed; nothing was written: {error_text(err.exc)}"
        details = err.details if not isinstance(err.exc, CheckpointError) else str(err.exc)
        self.refused.emit(text, details)

    # -- cancel and shutdown --------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the running edit (nothing is applied) and export (nothing is written)."""
        was_exporting = self.exporting
        was_editing = self._editing is not None
        self.runner.cancel()
        self._editing = None
        self._queue.clear()
        if was_exporting:
            self.message.emit("Export cancelled; nothing was written.")
        elif was_editing:
            self.message.emit("Edit cancelled; nothing was changed.")
        self._update_busy()

    def shutdown(self, wait: bool = True) -> None:
        self._queue.clear()
        self._editing = None
        self.runner.shutdown(wait=wait)
