"""A tab's edits, mixed into :class:`~ckptviewer.gui.checkpoint.tab.CheckpointTab`: the edited view, undo/redo,
the edit dialogs, the tree's edit actions and exports.

The tab shows its session's current :class:`~ckptviewer.gui.checkpoint.editing.ViewState`. When the state
changes (an edit arrives, undo, redo) the tree model is rebuilt over that state's tree (built in
the worker), the changed entries are marked, and the view's expansion, selection and scroll are
carried over: exactly as they were when returning to a state, by key path (following a tensor
through a rename) when entering a new one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu

from ...core.edit.ops import Drop, Select, Step
from ...core.model import keypath
from ...core.model.tree import Node
from ...core.model.walk import iter_tensors
from ...core.util.textsafe import safe_text
from .edit_session import EditSession
from .editing import ViewMemory, ViewState
from .tree_model import CheckpointTreeModel, find_node

if TYPE_CHECKING:
    from .loading import LoadedFile

UNEDITABLE_KINDS = ("group", "cycle", "truncated")


def node_key(node: Node) -> tuple:
    return (tuple(node.path), node.kind == "group")


class TabEditsMixin:
    """Edit integration for CheckpointTab (plain Python: signals live on the session)."""

    session: EditSession | None = None

    # -- setup ----------------------------------------------------------------------------------
    def _init_edits(self, f: "LoadedFile") -> None:
        self.session = EditSession(f, self)
        s = self.session
        s.state_changed.connect(self._on_state_changed)
        s.progressed.connect(self._on_session_progress)
        s.message.connect(self.status_message)
        self.model.set_marks({}, {})
        self.summary.strip_requested.connect(self._on_strip_requested)

    def _on_session_progress(self, p: Any) -> None:
        self.work_progressed.emit(p)

    @property
    def state(self) -> ViewState | None:
        return self.session.state if self.session is not None else None

    @property
    def tree_root(self) -> Node | None:
        """The root of the tree the tab shows (the edited view once there are edits)."""
        if self.session is not None:
            return self.session.state.tree
        return self.file.root if self.file is not None else None

    @property
    def view_analysis(self):
        if self.session is not None:
            return self.session.state.analysis
        return self.file.analysis if self.file is not None else None

    @property
    def is_edited(self) -> bool:
        return self.session is not None and bool(self.session.document.steps)

    @property
    def has_unexported_edits(self) -> bool:
        return self.session is not None and self.session.has_unexported_edits

    def edit_ready(self) -> bool:
        """Whether an edit can start now (the file is loaded); says why not in the status bar."""
        if self.session is None:
            self.status_message.emit("The file is still opening.")
            return False
        return True

    # -- applying steps -------------------------------------------------------------------------
    def apply_steps(self, steps: Step | list[Step]) -> None:
        if self.edit_ready() and steps:
            self.session.apply(steps)

    def undo(self) -> bool:
        return self.session is not None and self.session.undo()

    def redo(self) -> bool:
        return self.session is not None and self.session.redo()

    # -- dialogs --------------------------------------------------------------------------------
    def remap_devices(self) -> None:
        if not self.edit_ready():
            return
        from ..dialogs import RemapDevicesDialog
        step = RemapDevicesDialog.ask(self, dict(self.session.state.device_counts()))
        if step is not None:
            self.apply_steps(step)

    def rename_keys(self) -> None:
        if not self.edit_ready():
            return
        from ..dialogs import RenameDialog
        step = RenameDialog.ask(self, self.session.root)
        if step is not None:
            self.apply_steps(step)

    def strip_prefix(self, prefix: str = "", at: tuple | None = None) -> None:
        if not self.edit_ready():
            return
        from ..dialogs import StripPrefixDialog
        step = StripPrefixDialog.ask(self, self.session.root, prefix, at)
        if step is not None:
            self.apply_steps(step)

    def warm_start(self) -> None:
        if not self.edit_ready():
            return
        from ..dialogs import WarmStartDialog
        steps = WarmStartDialog.ask(self, self.session.root)
        if steps:
            self.apply_steps(steps)

    def export(self, subtree: tuple | None = None, *, weights_only_safe: bool = False) -> None:
        if not self.edit_ready():
            return
        if self.session.exporting:
            self.status_message.emit("An export of this tab is running; cancel it or wait for it to finish.")
            return
        from ..dialogs import ExportDialog
        state = self.session.state
        request = ExportDialog.ask(self, self.path, state.root, state.analysis, subtree,
                                   weights_only_safe=weights_only_safe)
        if request is not None:
            self.session.export(request)

    def _on_strip_requested(self, prefix: str, sd_path: tuple) -> None:
        """The summary banner's one-click Strip."""
        from ...core.edit.ops import StripPrefix
        from ..dialogs.common import at_text
        self.apply_steps(StripPrefix(prefix, at_text(tuple(sd_path))))

    # -- the tree's context menu ----------------------------------------------------------------
    def _add_edit_actions(self, menu: QMenu, node: Node | None) -> None:
        if node is None or self.session is None:
            return
        menu.addSeparator()
        editable = node.kind not in UNEDITABLE_KINDS and bool(node.path)
        entries = (("Export this entry…", lambda: self.export(tuple(node.path))),
                   ("Drop", lambda: self.drop_node(node)),
                   ("Keep only this", lambda: self.keep_only(node)))
        for text, slot in entries:
            action = QAction(text, menu)
            action.setEnabled(editable)
            action.triggered.connect(slot)
            menu.addAction(action)
        if node.kind == "group" and node.path:
            # A key group stands for every key starting with "<group>.": drop them with a pattern.
            label = safe_text(node.key, 60).replace("&", "&&")       # not a mnemonic
            action = QAction(f"Drop all {label}.* keys", menu)
            action.triggered.connect(lambda: self.apply_steps(Drop((group_pattern(node),))))
            menu.addAction(action)

    def drop_node(self, node: Node) -> None:
        self.apply_steps(Drop((keypath.format_path(node.path),)))

    def keep_only(self, node: Node) -> None:
        self.apply_steps(Select(keypath.format_path(node.path)))

    # -- showing a state ------------------------------------------------------------------------
    def _on_state_changed(self, new: ViewState, old: ViewState) -> None:
        if self.model is None:
            return
        old.memory = self._capture_memory()
        memory = new.memory or old.memory
        old_model = self.model
        query = (self.find_bar.edit.text(), self.find_bar.regex.isChecked())
        self._search.cancel()
        self.model = CheckpointTreeModel(new.tree, new.warmed, self)
        self.model.set_marks(new.marks, new.containing)
        self.model.totals_wanted.connect(self._on_totals_wanted)
        self._search_index = None
        self.search_result = None
        self._shared_index = None
        self._set_view_model(self.model)
        old_model.deleteLater()
        self._restore_memory(memory, new)
        self.summary.set_edit_state(new.analysis, list(new.steps), self.has_unexported_edits)
        if query[0]:
            self._on_query_changed(*query)

    def _capture_memory(self) -> ViewMemory:
        view = self.view
        model = view.model()
        mem = ViewMemory(scroll=view.verticalScrollBar().value())
        stack = [model.index(r, 0) for r in range(model.rowCount())]
        while stack:
            idx = stack.pop()
            if view.isExpanded(idx):
                node = self.node_at(idx)
                if node is not None:
                    mem.expanded.add(node_key(node))
                stack.extend(model.index(r, 0, idx) for r in range(model.rowCount(idx)))
        current = self.current_node()
        if current is not None:
            mem.current = node_key(current)
            if current.kind == "tensor":
                mem.current_tensor = current.value
        return mem

    def _restore_memory(self, memory: ViewMemory | None, state: ViewState) -> None:
        view = self.view
        if memory is None:
            self._auto_expand()
            self._show_no_selection()
            return
        # One pass over the visible nodes, cheap per node: a 100,000-key top level is common.
        expanded, current = memory.expanded, memory.current
        target = None
        stack = list(self.model.top_nodes())
        while stack:
            node = stack.pop()
            path = node.path
            if type(path) is not tuple:
                path = tuple(path)
            key = (path, node.kind == "group")
            if key == current:
                target = node
            if expanded and key in expanded and node.has_children:
                idx = self.model.index_for_node(node)
                if idx.isValid():
                    view.expand(idx)
                    stack.extend(node.children())
        if current is not None:
            if target is None and not current[1]:
                target = find_node(state.tree, memory.current[0])
            if target is None and memory.current_tensor is not None:
                target = self._follow_tensor(memory.current_tensor, state)
        if target is not None and self.select_node(target):
            view.verticalScrollBar().setValue(memory.scroll)
        else:
            self._show_no_selection()
            view.verticalScrollBar().setValue(memory.scroll)

    def _follow_tensor(self, tensor: Any, state: ViewState) -> Node | None:
        """The node of ``state`` holding the same stored tensor (after a rename moved it)."""
        origin = tensor.origin or tensor
        for path, t in iter_tensors(state.root):
            if (t.origin or t) is origin:
                return find_node(state.tree, tuple(path), "tensor")
        return None

    def _show_no_selection(self) -> None:
        self.details.show_message("Select an entry in the tree to see its details.")
        self.histogram.clear("Select a tensor to see the distribution of its values.")
        self.selection_changed.emit(None)

    # -- snippets and details for edited entries ------------------------------------------------
    def snippet_node(self, node: Node) -> Node | None:
        """The node a load snippet can be written for: the file's own node at the same key path when
        the edits left it as it is (a snippet loads the file on disk, not the edited view)."""
        if not self.is_edited:
            return node
        src = find_node(self.file.root, tuple(node.path), node.kind if node.kind != "group" else None)
        if src is None or self.model.mark_of(node) or node.path in self.session.state.containing:
            return None
        if node.kind == "tensor" and (node.value.origin or node.value) is not src.value:
            return None
        return src

    def edit_note(self, node: Node) -> str:
        return self.model.mark_of(node) if self.model is not None else ""


def group_pattern(node: Node) -> str:
    """The Drop pattern for every key of a key group: ``<state_dict path>/<group>.*``."""
    base = node.path[:-1]
    return keypath.format_path(base + (f"{node.key}.*",))
