"""The window's side of editing: the Checkpoint menu's handlers, Undo/Redo for the current tab, the
edited marker in tab and window titles, and the question before unexported edits are discarded.

The main window makes one :class:`EditController` and names its methods in the actions table
(``edits.rename_keys``...). Each checkpoint tab has its own undo stack; a ``QUndoGroup`` follows the
current tab, so Undo/Redo (and their texts) always refer to it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtGui import QUndoGroup
from shiboken6 import isValid

from ...core.util.textsafe import safe_text
from ..dialogs import common

if TYPE_CHECKING:
    from ..checkpoint.tab import CheckpointTab
    from .main_window import MainWindow

EDITED_MARK = " *"


class EditController(QObject):
    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        self.window = window
        self.group = QUndoGroup(self)
        self.group.canUndoChanged.connect(lambda _can: self.update_actions())
        self.group.canRedoChanged.connect(lambda _can: self.update_actions())
        self.group.undoTextChanged.connect(lambda _text: self.update_actions())
        self.group.redoTextChanged.connect(lambda _text: self.update_actions())
        window.tab_opened.connect(self._on_tab_opened)
        window.tabs.currentChanged.connect(self._on_current_changed)

    # -- tabs -----------------------------------------------------------------------------------
    def _on_tab_opened(self, tab: "CheckpointTab") -> None:
        session = tab.session
        if session is None:
            return
        self.group.addStack(session.undo_stack)
        session.refused.connect(self._on_refused)
        session.edited_changed.connect(lambda _edited, t=tab: self._on_edited_changed(t))
        session.busy_changed.connect(lambda _busy: self.update_actions())
        if self.window.current_tab() is tab:
            self.group.setActiveStack(session.undo_stack)
        self.update_actions()

    def _on_current_changed(self, _index: int) -> None:
        tab = self.window.current_tab()
        self.group.setActiveStack(tab.session.undo_stack if tab is not None and tab.session is not None else None)
        self.update_actions()

    def _on_refused(self, text: str, details: str) -> None:
        self.window.messages.add_error(text, details)
        self.window.show_status(text)

    def _on_edited_changed(self, tab: "CheckpointTab") -> None:
        index = self.window.tabs.indexOf(tab)
        if index >= 0:
            self.window.tabs.setTabText(index, self.tab_title(tab))
        if tab.session is not None:
            tab.summary.set_edit_state(tab.session.state.analysis, list(tab.session.state.steps),
                                       tab.session.has_unexported_edits)
        self.update_actions()

    @staticmethod
    def tab_title(tab: "CheckpointTab") -> str:
        return safe_text(tab.title, 60) + (EDITED_MARK if tab.has_unexported_edits else "")

    def update_actions(self) -> None:
        """Undo/Redo follow the current tab's stack (disabled while an edit is being computed);
        the window title carries the edited marker."""
        if not isValid(self.window.tabs):      # the window is being torn down (stacks announce their end)
            return
        tab = self.window.current_tab()
        busy = tab is not None and tab.session is not None and tab.session.editing
        actions = self.window.actions_by_id
        undo, redo = actions.get("edit.undo"), actions.get("edit.redo")
        if undo is not None:
            undo.setEnabled(self.group.canUndo() and not busy)
            text = self.group.undoText()
            undo.setText(f"&Undo {text}" if text and self.group.canUndo() else "&Undo")
        if redo is not None:
            redo.setEnabled(self.group.canRedo() and not busy)
            text = self.group.redoText()
            redo.setText(f"&Redo {text}" if text and self.group.canRedo() else "&Redo")
        if tab is not None and self.window.tabs.currentWidget() is tab:
            self.window.setWindowTitle(f"{self.tab_title(tab)} — ckptviewer")

    # -- closing --------------------------------------------------------------------------------
    def confirm_discard(self, tabs: list["CheckpointTab"]) -> bool:
        """True when ``tabs`` may close: none has unexported edits, or the user agrees to discard them."""
        edited = [t for t in tabs if t.has_unexported_edits]
        if not edited:
            return True
        names = "\n".join(f"• {safe_text(t.title, 120)} ({len(t.session.document.steps)} edit"
                          f"{'s' if len(t.session.document.steps) != 1 else ''})" for t in edited[:8])
        more = f"\n… and {len(edited) - 8} more" if len(edited) > 8 else ""
        text = (f"{'These tabs have' if len(edited) > 1 else 'This tab has'} edits that were not exported:\n"
                f"{names}{more}\n\nThe files on disk are unchanged either way. Discard the edits?")
        return common.confirm(self.window, "Discard edits?", text, "Discard")

    # -- menu handlers --------------------------------------------------------------------------
    def _tab(self) -> "CheckpointTab | None":
        tab = self.window.current_tab()
        if tab is None:
            self.window.show_status("Open a checkpoint tab first.")
        return tab

    def undo(self) -> None:
        tab = self._tab()
        if tab is not None:
            tab.undo()

    def redo(self) -> None:
        tab = self._tab()
        if tab is not None:
            tab.redo()

    def remap_devices(self) -> None:
        tab = self._tab()
        if tab is not None:
            tab.remap_devices()

    def rename_keys(self) -> None:
        tab = self._tab()
        if tab is not None:
            tab.rename_keys()

    def strip_prefix(self) -> None:
        tab = self._tab()
        if tab is not None:
            tab.strip_prefix()

    def warm_start(self) -> None:
        tab = self._tab()
        if tab is not None:
            tab.warm_start()

    def export(self) -> None:
        tab = self._tab()
        if tab is not None:
            tab.export()
