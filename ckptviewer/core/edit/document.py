"""An open checkpoint plus the edits applied to it: what the window shows and what Export writes.

The steps are plain data (see ``ops.py``); the GUI wraps ``push``/``pop`` in undo commands. The edited
tree is recomputed from the source and the step list whenever it is asked for after a change, so
undo is exact and the source checkpoint is never modified.
"""
from __future__ import annotations

from typing import Any

from ..model.checkpoint import Checkpoint
from ..write.export import ExportOptions, ExportResult, export
from .ops import EditLog, Step, apply_steps


class Document:
    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.steps: list[Step] = []
        self._edited: tuple[Any, EditLog] | None = None

    @property
    def is_edited(self) -> bool:
        return bool(self.steps)

    def push(self, step: Step, edited: tuple[Any, EditLog] | None = None) -> EditLog:
        """Add a step; it is applied first, so an invalid step raises and leaves the document as it was.

        ``edited`` is what :meth:`preview` returned for ``step`` on the current steps (the window
        computes it in a worker, since applying steps to a large tree takes seconds); it is used
        instead of applying the steps again.
        """
        root, log = edited if edited is not None else apply_steps(self.checkpoint.root, self.steps + [step])
        self.steps.append(step)
        self._edited = (root, log)
        return log

    def pop(self, edited: tuple[Any, EditLog] | None = None) -> Step:
        """Remove the last step. ``edited``: the known result of the remaining steps (a window keeps
        it for undo), else it is recomputed when next asked for."""
        step = self.steps.pop()
        self._edited = edited
        return step

    def preview(self, step: Step) -> tuple[Any, EditLog]:
        """What the document would look like with ``step`` added (raises OperationError if it cannot apply)."""
        return apply_steps(self.checkpoint.root, self.steps + [step])

    @property
    def root(self) -> Any:
        return self.edited()[0]

    def edited(self) -> tuple[Any, EditLog]:
        if self._edited is None:
            self._edited = apply_steps(self.checkpoint.root, self.steps)
        return self._edited

    def export(self, dest: str, options: ExportOptions, **kw) -> ExportResult:
        return export(self.root, dest, options, sources=[self.checkpoint.path], **kw)
