"""The window's side of runs and merges: Run tabs, click-through from a run to a checkpoint's tab, the
choice between tabs and a run when checkpoints are dropped, and the Merge dialog with its work.

The main window makes one :class:`RunController` and names its methods in the actions table
(``runs.open_run_dialog``, ``runs.merge_dialog``). Files still come in through ``MainWindow.open_paths``
(the one way in), which hands runs to :meth:`open_run`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QFileDialog

from ...core.util.locations import is_url, shown_location
from ...core.util.textsafe import safe_text
from ..dialogs.merge import MergeDialog
from ..dialogs.merge_work import MergeRequest, merge_task
from ..run.tab import RunTab
from ..run.work import RunSetup
from ..widgets.messages import error_text
from ..widgets.theme import plain_tooltip
from ..widgets.workers import WorkerError

if TYPE_CHECKING:
    from ..checkpoint.tab import CheckpointTab
    from .main_window import MainWindow


# Held while dropping several checkpoints: open them as one run instead of a tab each.
RUN_MODIFIERS = Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier


class RunController(QObject):
    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        self.window = window

    # -- run tabs -------------------------------------------------------------------------------
    def run_tabs(self) -> list[RunTab]:
        tabs = self.window.tabs
        return [w for i in range(tabs.count()) if isinstance(w := tabs.widget(i), RunTab)]

    def open_run(self, paths: list[str], order: str = "auto") -> RunTab:
        """A Run tab over ``paths`` (or the one already open for them)."""
        setup = RunSetup([os.path.abspath(os.fspath(p)) for p in paths], order)
        w = self.window
        for tab in self.run_tabs():
            if tab.setup.key == setup.key:
                w.tabs.setCurrentWidget(tab)
                return tab
        tab = RunTab(setup, w.settings, w.tabs)
        tab.status_message.connect(w.show_status)
        tab.open_tensor_requested.connect(self.open_tensor)
        tab.merge_requested.connect(self.merge_dialog)
        tab.failed.connect(lambda t, err: w.show_status(f"Could not open the run: {error_text(err.exc)}"))
        index = w.tabs.addTab(tab, safe_text(tab.title, 60))
        w.tabs.setTabToolTip(index, plain_tooltip("\n".join(safe_text(p, 300) for p in setup.paths[:20])))
        w.tabs.setCurrentIndex(index)
        w._sync_stack()
        tab.start()
        return tab

    def open_run_paths(self, paths: list[str]) -> list[RunTab]:
        """``MainWindow.open_paths(..., run=True)``: one Run tab over local paths. A run reads every file of
        it at once, so addresses (URLs) are refused with a message rather than fetched."""
        urls = [p for p in paths if is_url(p)]
        if urls:
            message = (f"A run reads local checkpoints; {len(urls)} of the {len(paths)} paths are addresses "
                       f"(download them first, or open them in tabs)")
            self.window.messages.add_error(message, "\n".join(safe_text(shown_location(u), 300) for u in urls))
            self.window.show_status(message)
            return []
        return [self.open_run(paths)] if paths else []

    def open_run_dialog(self) -> None:
        recent = self.window.settings.recent_files()
        start = os.path.dirname(recent[0]) if recent else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self.window, "Open a folder of checkpoints as a run", start)
        if folder:
            self.window.open_paths([folder], run=True)

    def drop_as_run(self, paths: list[str], modifiers: Qt.KeyboardModifier) -> bool:
        """Whether dropped ``paths`` open as one run: with Shift or Ctrl held, several checkpoints or a
        folder of them. Without, each checkpoint gets its tab (a folder: each checkpoint in it), and the
        status bar says how to get a run."""
        if modifiers & RUN_MODIFIERS and (len(paths) >= 2 or os.path.isdir(paths[0])):
            return True
        if len(paths) < 2:
            return False
        if sum(1 for p in paths if not os.path.isdir(p)) >= 2:
            self.window.show_status(f"Opened {len(paths)} checkpoints in tabs; hold Shift while dropping to open "
                                    f"them as one run (or use File > Open Run)")
        return False

    # -- click-through --------------------------------------------------------------------------
    def open_tensor(self, path: str, key: tuple) -> "CheckpointTab | None":
        """Open ``path`` in its tab (or show it) and select ``key`` there once it is loaded."""
        tabs = self.window.open_paths([path], run=False)
        if not tabs:
            return None
        tab = tabs[0]
        if tab.is_loaded:
            self._select(tab, key)
        else:
            def on_loaded(t, key=tuple(key)):
                tab.loaded.disconnect(on_loaded)
                self._select(t, key)
            tab.loaded.connect(on_loaded)
        return tab

    def _select(self, tab: "CheckpointTab", key: tuple) -> None:
        if not tab.select_path(tuple(key)):
            self.window.show_status("That tensor is not in the checkpoint's tree.")

    # -- merging --------------------------------------------------------------------------------
    def merge_open_tabs(self) -> MergeRequest | None:
        """File > Merge Checkpoints: the dialog starts with the open checkpoints (files can be added)."""
        return self.merge_dialog([t.path for t in self.window.checkpoint_tabs()])

    def merge_dialog(self, paths: list[str]) -> MergeRequest | None:
        """Ask how to merge ``paths`` (the dialog can add and remove files) and start the merge."""
        request = MergeDialog.ask(self.window, list(paths))
        if request is not None:
            self.start_merge(request)
        return request

    def start_merge(self, request: MergeRequest) -> None:
        w = self.window
        name = safe_text(os.path.basename(request.dest), 80)
        w.show_status(f"Merging into {name}…")
        w.runner.submit("merge", merge_task, request, on_progress=w._on_work_progressed,
                        on_result=lambda result, r=request: self._on_merged(r, result),
                        on_error=lambda err, r=request: self._on_merge_failed(r, err))

    def _on_merged(self, request: MergeRequest, result) -> None:
        w = self.window
        w._on_work_progressed(None)
        if result is None:
            w.show_status("Merge cancelled; nothing was written")
            return
        w.show_status(f"Wrote {safe_text(result.path, 200)} ({len(request.paths)} checkpoints merged; verified)")
        w.merge_finished.emit(result.path)

    def _on_merge_failed(self, request: MergeRequest, err: WorkerError) -> None:
        w = self.window
        w._on_work_progressed(None)
        message = f"Could not merge into {safe_text(os.path.basename(request.dest), 80)}: {error_text(err.exc)}"
        w.messages.add_error(message, err.details)
        w.show_status(message)
