"""The checkpoint tab's Values view and value exports: what to read for the selected tensor, in which worker.

:class:`ValuesController` connects a :class:`~ckptviewer.gui.panels.values.ValuesPanel` to the tab's task
runner. Plots run in the "values" channel (a newer request cancels the older one and its late results are
dropped), table blocks in channels of their own, exports and copies in "values-export". Nothing is read while
the Values tab is hidden: selecting tensors with the panel out of sight costs nothing, and the tensor
selected last is read when the panel is shown.
"""
from __future__ import annotations

import itertools
import os
from functools import partial
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QFileDialog, QMenu

from ...core.analyze.planes import (
    ViewRequest,
    ViewResult,
    default_request,
    is_filter_bank,
    read_table_rows,
    retransform,
    table_layout,
    view_steps,
    widened_note,
)
from ...core.model.tensor import TensorRef
from ...core.model.tree import Node
from ...core.util.locations import is_url
from ...core.util.progress import Progress
from ...core.util.textsafe import path_text, safe_text
from ...core.write.values import MAX_COPY_VALUES, csv_text, numpy_text, write_values_steps
from ..panels.values import ValuesPanel
from ..widgets.messages import error_text
from ..widgets.workers import WorkerError

if TYPE_CHECKING:
    from .tab import CheckpointTab


def _table_steps(t: TensorRef, layout, blocks: list[tuple[int, int]]):
    for first, count in blocks:
        yield ("block", first, read_table_rows(t, layout, first, count))


def _copy_steps(t: TensorRef, fmt: str):
    yield Progress(0, 1, "copying values")
    return (numpy_text if fmt == "numpy" else csv_text)(t)


class ValuesController(QObject):
    def __init__(self, tab: CheckpointTab, panel: ValuesPanel):
        super().__init__(tab)
        self.tab = tab
        self.panel = panel
        self.node: Node | None = None
        self.visible = False
        self._pending: ViewRequest | None = None
        self._table_ids = itertools.count(1)
        self._table_channels: set[str] = set()
        self.last_export: Any = None
        panel.request_changed.connect(self._on_request_changed)
        panel.display_changed.connect(self._on_display_changed)
        panel.table.model.block_wanted.connect(self._on_block_wanted)
        panel.table.copied.connect(lambda text: tab.status_message.emit(f"Copied {text.count(chr(10)) + 1} row(s)"))

    @property
    def tensor(self) -> TensorRef | None:
        return self.node.value if self.node is not None and self.node.kind == "tensor" else None

    # -- selection ------------------------------------------------------------------------------
    def show_node(self, node: Node | None) -> None:
        """The tree's selection changed."""
        self.tab.runner.cancel("values")
        self._cancel_table()
        self.node = node
        self._pending = None
        if node is None or node.kind != "tensor":
            self.panel.clear("Values are shown for tensors." if node is not None else
                             "Select a tensor to see its values.")
            return
        t: TensorRef = node.value
        if not t.readable:
            self.panel.clear(f"Values cannot be read: {safe_text(t.problem or 'no stored values', 300)}")
            return
        if t.numel == 0:
            self.panel.clear("The tensor is empty.")
            return
        request = default_request(t)
        self.panel.set_tensor(path_text(node.path), tuple(t.shape), t.dtype.name, request, is_filter_bank(t),
                              widened_note(t))
        self.panel.table.set_layout(table_layout(t), t.dtype.name if t.dtype.numpy_native else
                                    f"{t.dtype.name} as float32")
        self._pending = request
        if self.visible:
            self._load()

    def set_visible(self, visible: bool) -> None:
        self.visible = visible
        if visible and self._pending is not None:
            self._load()

    def _load(self) -> None:
        req, self._pending = self._pending, None
        t = self.tensor
        if req is None or t is None:
            return
        self.tab.runner.submit("values", view_steps, t, req, self.panel.luts(), on_progress=self._on_step,
                               on_result=self._on_result, on_error=self._on_error)

    def _on_request_changed(self, req: ViewRequest) -> None:
        self._pending = req
        if self.visible:
            self._load()

    def _on_display_changed(self, absolute: bool, log: bool) -> None:
        result = self.panel.result
        t = self.tensor
        if t is None:
            return
        if result is None or not result.final:
            req = self.panel.current_request()
            self._pending = req
            if self.visible:
                self._load()
            return
        # The same data, coloured again: no read, but the arithmetic still runs off the GUI thread.
        self.tab.runner.submit("values", retransform, result, absolute, log, self.panel.luts(),
                               on_result=self._on_result, on_error=self._on_error)

    def _on_step(self, step: Any) -> None:
        if isinstance(step, ViewResult):
            self.panel.set_result(step)
        elif isinstance(step, Progress):
            self.tab.work_progressed.emit(Progress(step.done, step.total, f"reading values of {self._what()}"))

    def _on_result(self, result: ViewResult | None) -> None:
        if result is not None:
            self.panel.set_result(result)
        self.tab.work_progressed.emit(None)

    def _on_error(self, err: WorkerError) -> None:
        msg = error_text(err.exc)
        self.panel.show_error(f"Could not read the values: {msg}")
        self.tab.status_message.emit(msg)

    def _what(self) -> str:
        return path_text(self.node.path) if self.node is not None else ""

    def reveal(self, text: str) -> bool:
        """Select the entry at key path ``text`` (``model_state_dict/conv1.weight``, as `convert --select`
        takes it). Returns False, with the reason in the status bar, when there is no such entry."""
        from ...core.model import keypath
        from ...core.util.errors import CheckpointError
        from .tree_model import find_node
        tab = self.tab
        root = tab.session.state.root if tab.session is not None else tab.file.checkpoint.root
        try:
            exact, _value = keypath.resolve(root, text)
        except CheckpointError as e:
            tab.status_message.emit(str(e))
            return False
        node = find_node(tab.tree_root, tuple(exact))
        if node is None or not tab.select_node(node):
            tab.status_message.emit(f"{path_text(exact)} is not shown in the tree")
            return False
        return True

    # -- table ----------------------------------------------------------------------------------
    def _on_block_wanted(self, generation: int, first: int, count: int) -> None:
        t = self.tensor
        model = self.panel.table.model
        if t is None or model.layout_ is None:
            return
        channel = f"values-table-{next(self._table_ids)}"
        self._table_channels.add(channel)

        def delivered(step, gen=generation):
            if isinstance(step, tuple) and step[0] == "block":
                model.set_block(gen, step[1], step[2])

        def ended(_result, ch=channel):
            self._table_channels.discard(ch)

        def failed(err: WorkerError, ch=channel, gen=generation, first=first):
            self._table_channels.discard(ch)
            model.block_failed(gen, first)
            self.panel.table.message.setText(f"Could not read these values: {error_text(err.exc)}")

        self.tab.runner.submit(channel, _table_steps, t, model.layout_, [(first, count)], on_progress=delivered,
                               on_result=ended, on_error=failed)

    def _cancel_table(self) -> None:
        for ch in self._table_channels:
            self.tab.runner.cancel(ch)
        self._table_channels.clear()

    # -- exports --------------------------------------------------------------------------------
    def add_actions(self, menu: QMenu, node: Node | None) -> None:
        """The tensor entries of a tree row's context menu."""
        if node is None or node.kind != "tensor":
            return
        t: TensorRef = node.value
        menu.addSeparator()
        export = QAction("Export Values…", menu)
        export.triggered.connect(lambda: self.export_values(node))
        copy_np = QAction("Copy as NumPy", menu)
        copy_np.triggered.connect(lambda: self.copy_values(node, "numpy"))
        copy_csv = QAction("Copy as CSV", menu)
        copy_csv.triggered.connect(lambda: self.copy_values(node, "csv"))
        small = t.numel <= MAX_COPY_VALUES
        for action in (export, copy_np, copy_csv):
            action.setEnabled(t.readable)
        copy_np.setEnabled(t.readable and small)
        copy_csv.setEnabled(t.readable and small and len(t.shape) <= 2)
        if not small:
            copy_np.setToolTip("Too many values to copy: export them instead")
        menu.addAction(export)
        menu.addAction(copy_np)
        menu.addAction(copy_csv)

    def export_values(self, node: Node, dest: str | None = None) -> None:
        """Write ``node``'s values to ``dest`` (asked with a file dialog when None) in a worker."""
        t: TensorRef = node.value
        if dest is None:
            name = str(node.path[-1]) if node.path else "tensor"
            safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[:120] or "tensor"
            folder = os.path.expanduser("~") if is_url(self.tab.path) else os.path.dirname(self.tab.path)
            filters = "NumPy array (*.npy);;CSV, two dimensions or less (*.csv)"
            dest, chosen = QFileDialog.getSaveFileName(self.tab, "Export Values", os.path.join(folder, safe + ".npy"),
                                                       filters)
            if not dest:
                return
            if not dest.lower().endswith((".npy", ".csv")):
                dest += ".csv" if "csv" in chosen.lower() else ".npy"
        what = path_text(node.path)
        # The file dialog asked before replacing a file: the export may overwrite it.
        self.tab.runner.submit("values-export", partial(write_values_steps, overwrite=True), t, dest,
                               on_progress=lambda p: self.tab.work_progressed.emit(
                                   Progress(p.done, p.total, f"{p.what} values of {what}")),
                               on_result=self._on_exported, on_error=self._on_export_error)

    def _on_exported(self, written) -> None:
        self.last_export = written
        self.tab.work_progressed.emit(None)
        if written is None:
            return
        notes = f" ({'; '.join(written.notes)})" if written.notes else ""
        self.tab.status_message.emit(f"Wrote {os.path.basename(written.path)}: {written.fmt} {written.dtype}"
                                     f"{notes}")

    def _on_export_error(self, err: WorkerError) -> None:
        self.last_export = err
        self.tab.status_message.emit(f"Export failed: {error_text(err.exc)}")

    def copy_values(self, node: Node, fmt: str) -> None:
        """Put ``node``'s values on the clipboard as NumPy source or CSV text (built in a worker)."""
        self.tab.runner.submit("values-export", _copy_steps, node.value, fmt, on_result=self._on_copied,
                               on_error=self._on_export_error)

    def _on_copied(self, out) -> None:
        self.tab.work_progressed.emit(None)
        if out is None:
            return
        text, notes = out
        QGuiApplication.clipboard().setText(text)
        self.last_export = text
        self.tab.status_message.emit(f"Copied {len(text):,} characters" + (f" ({'; '.join(notes)})" if notes else ""))
