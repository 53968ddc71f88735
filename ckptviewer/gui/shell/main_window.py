"""The main window: composition only. Menus come from the actions table, each file from ``open_paths``.

Every way a file arrives (command line, File > Open, Open Recent, drag-and-drop, the single-instance
server, the OS's file-open event) ends in :meth:`MainWindow.open_paths`, which opens one tab per file
(or switches to the tab already showing it) and reports failures in the message bar without stopping
the other files or the app. A folder of checkpoints, or files asked to open as one (File > Open Run, a
drop of several files with Shift or Ctrl held), becomes a Run tab (``run_controller.py``).
"""
from __future__ import annotations

import gc
import operator
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterable

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QIcon, QKeySequence, QPaintEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.read.open import is_checkpoint_folder
from ...core.source.net import fetched_bytes
from ...core.source.remote import prepare_location
from ...core.util.locations import is_url, redact, shown_location
from ...core.util.progress import Progress
from ...core.util.textsafe import safe_text
from ...core.util.units import human_bytes
from ..checkpoint.loading import RefusedFile, demo_steps, folder_steps
from ..checkpoint.tab import CheckpointTab
from ..diff.tab import DiffTab, ask_compare_paths
from ..diff.work import DiffSetup
from ..panels.safety_report import SafetyReport
from ..run.tab import RunTab
from ..widgets.dispose import dispose
from ..widgets.gc_pause import freeze_loaded_objects
from ..widgets.messages import MessageBar, error_text
from ..widgets.resources import icon_pixmap
from ..widgets.settings import Settings
from ..widgets.theme import level_icon, plain_tooltip
from ..widgets.workers import TaskRunner, WorkerError, keep_gui_responsive
from .about import AboutDialog
from .actions import ACTIONS, MENUS, ActionSpec
from .edit_controller import EditController
from .run_controller import RunController

# *.json: a sharded checkpoint's index (model.safetensors.index.json, pytorch_model.bin.index.json).
FILE_FILTER = ("Checkpoints and shard indexes (*.pt *.pth *.tar *.bin *.ckpt *.safetensors *.pkl *.pth.tar "
               "*.json);;Shard indexes (*.index.json);;"
               "All files (*)")


def file_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``: the identity of a file or folder whatever name reaches it."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def refused_message(message: str, report: SafetyReport) -> str:
    """The message about a refused file, with what its pickles would have imported when that matters."""
    if report.is_dangerous:
        names = ", ".join(name for name, _ in report.dangerous[:4])
        more = f" and {len(report.dangerous) - 4} more" if len(report.dangerous) > 4 else ""
        return (f"{message} It is also DANGEROUS: its pickles name {names}{more}, which plain "
                f"torch.load(weights_only=False) or pickle would import and call. Nothing was run.")
    return message


REMOTE_DROP_SCHEMES = ("http", "https", "hf", "s3", "gs")


def paths_from_urls(urls: Iterable[QUrl]) -> list[str]:
    """Local files, and links (a browser drags ``text/uri-list``) to remote checkpoints."""
    out = []
    for u in urls:
        if u.isLocalFile():
            if u.toLocalFile():
                out.append(u.toLocalFile())
        elif u.scheme().lower() in REMOTE_DROP_SCHEMES and u.host():
            out.append(u.toString(QUrl.ComponentFormattingOption.FullyEncoded))
    return out


def start_folder(recent: list[str]) -> str:
    """Where a file dialog starts: the newest recent local file's folder, else the home folder."""
    local = [p for p in recent if not is_url(p)]
    return os.path.dirname(local[0]) if local else str(Path.home())


class WelcomePage(QWidget):
    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        pixmap = icon_pixmap(128)
        if pixmap is not None:
            logo = QLabel(self)
            logo.setPixmap(pixmap)
            logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
            lay.addWidget(logo)
        title = QLabel("ckptviewer", self)
        f = title.font()
        f.setPointSizeF(f.pointSizeF() * 2)
        f.setBold(True)
        title.setFont(f)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(title)
        text = QLabel("Drop checkpoints or checkpoint folders here, or use File > Open (Ctrl+O) or "
                      "File > Open Folder (Ctrl+Shift+O).\n"
                      "Nothing in a file is ever run: classes are shown, never imported.", self)
        text.setTextFormat(Qt.TextFormat.PlainText)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(text)
        row = QHBoxLayout()
        row.addStretch(1)
        open_button = QPushButton("Open…", self)
        open_button.clicked.connect(window.open_dialog)
        demo_button = QPushButton("Open the demo checkpoint", self)
        demo_button.clicked.connect(window.open_demo)
        row.addWidget(open_button)
        row.addWidget(demo_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.recent_label = QLabel("Recent files", self)
        self.recent_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(self.recent_label)
        self.recent = QListWidget(self)
        self.recent.setMaximumWidth(640)
        self.recent.setMaximumHeight(200)
        self.recent.itemActivated.connect(lambda item: window.open_paths([item.data(Qt.ItemDataRole.UserRole)]))
        lay.addWidget(self.recent, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addStretch(2)

    def set_recent(self, files: list[str]) -> None:
        self.recent.clear()
        for p in files:
            item = QListWidgetItem(safe_text(p, 300))
            item.setData(Qt.ItemDataRole.UserRole, p)
            self.recent.addItem(item)
        self.recent.setVisible(bool(files))
        self.recent_label.setVisible(bool(files))


_preload: "threading.Thread | None" = None


def preload_plotting() -> None:
    """Import pyqtgraph on a background thread once the window is up.

    The import takes about 0.4 s; done on the GUI thread when the first histogram or diff chart is
    drawn, it froze the window right when the user had clicked something. Importing it here makes no Qt
    objects (the widgets are made on the GUI thread later); a GUI-thread import that comes first simply
    waits for this one to finish. Hazard: the interpreter must not finalize while this thread is still
    inside the import (Qt's modules are torn down under it: a segfault at exit, seen when a window
    closed within 0.4 s of its first paint); :func:`wait_for_preload` is called on shutdown.
    """
    global _preload
    if _preload is not None:
        return

    def work() -> None:
        try:
            import pyqtgraph  # noqa: F401
        except Exception:  # pragma: no cover - the GUI-thread import will report it properly
            pass
    _preload = threading.Thread(target=work, name="ckptviewer-preload", daemon=True)
    _preload.start()


def wait_for_preload(timeout: float = 10.0) -> None:
    """Let a running background import of pyqtgraph finish (see :func:`preload_plotting`)."""
    if _preload is not None and _preload.is_alive():
        _preload.join(timeout)


class MainWindow(QMainWindow):
    first_painted = Signal()
    tab_opened = Signal(object)           # a CheckpointTab that finished loading
    open_failed = Signal(str, str)        # path, message
    merge_finished = Signal(str)          # the merged file, written and verified

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        keep_gui_responsive()
        self.settings = settings or Settings()
        self.setWindowTitle("ckptviewer")
        self.setAcceptDrops(True)
        self._painted = False
        self._demo_dirs: list[str] = []
        self._closing = False
        self.runner = TaskRunner(self)
        self._folders_listed = 0
        self.actions_by_id: dict[str, QAction] = {}
        self._about: AboutDialog | None = None
        self._last_message = ""
        self.convert_dock = None          # the Convert panel's dock, made when first shown

        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.messages = MessageBar(central)
        lay.addWidget(self.messages)
        self.stack = QStackedWidget(central)
        self.welcome = WelcomePage(self)
        self.tabs = QTabWidget(central)
        self.tabs.setTabsClosable(True)
        self.tabs.setMovable(True)
        self.tabs.setDocumentMode(True)
        self.tabs.tabCloseRequested.connect(self._on_tab_close_requested)
        self.tabs.currentChanged.connect(self._on_current_tab_changed)
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.tabs)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.status_text = QLabel("", self)
        self.status_text.setTextFormat(Qt.TextFormat.PlainText)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(200)
        self.progress.setMaximumHeight(16)
        self.progress.hide()
        self.cancel_button = QToolButton(self)
        self.cancel_button.setText("Cancel")
        self.cancel_button.clicked.connect(self.cancel_work)
        self.cancel_button.hide()
        self.net_label = QLabel("", self)        # bytes fetched over the network, once there are any
        self.net_label.setTextFormat(Qt.TextFormat.PlainText)
        self.net_label.setToolTip("Bytes of remote checkpoints fetched over the network by this window "
                                  "(cached ones are not fetched again)")
        self.net_label.hide()
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.net_label)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)

        self.edits = EditController(self)   # Checkpoint menu, Undo/Redo, discarding unexported edits
        self.runs = RunController(self)     # Run tabs, click-through from them, merging
        self._build_menus()
        self._refresh_recent()
        self._update_actions()
        geometry = self.settings.window_geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)

    # -- menus ----------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        menus = {name: self.menuBar().addMenu(name) for name in MENUS}
        for spec in ACTIONS:
            menu = menus[spec.menu]
            if spec.separator_before:
                menu.addSeparator()
            action = self._make_action(spec)
            menu.addAction(action)
            if spec.id == "file.open_folder":
                self.recent_menu = QMenu("Open &Recent", self)
                self.recent_menu.aboutToShow.connect(self._refresh_recent)
                menu.addMenu(self.recent_menu)

    def _make_action(self, spec: ActionSpec) -> QAction:
        action = QAction(spec.text, self)
        action.setObjectName(spec.id)
        if spec.shortcut is not None:
            action.setShortcut(QKeySequence(spec.shortcut))
        if spec.tip:
            action.setStatusTip(spec.tip)
        action.triggered.connect(operator.attrgetter(spec.handler)(self))
        self.actions_by_id[spec.id] = action
        return action

    def _update_actions(self) -> None:
        has_tab = self.current_tab() is not None
        for spec in ACTIONS:
            if spec.needs_tab:
                self.actions_by_id[spec.id].setEnabled(has_tab)
        self.actions_by_id["file.close_tab"].setEnabled(self.tabs.currentWidget() is not None)
        self.edits.update_actions()

    def _refresh_recent(self) -> None:
        files = self.settings.recent_files()
        self.recent_menu.clear()
        for path in files:
            action = self.recent_menu.addAction(safe_text(shown_location(path), 200))
            action.setData(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_paths([p]))
        if not files:
            empty = self.recent_menu.addAction("No recent files")
            empty.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear Recent Files")
            clear.triggered.connect(self._on_clear_recent)
        self.welcome.set_recent(files)

    def _on_clear_recent(self) -> None:
        self.settings.clear_recent_files()
        self._refresh_recent()

    # -- the one way in -------------------------------------------------------------------------
    def open_paths(self, paths: Iterable[str | os.PathLike], *, expand: bool = True,
                   run: bool = False) -> list[CheckpointTab | RunTab]:
        """Open each path in a tab (or show the tab that has it). Failures go to the message bar.

        A folder that is one checkpoint (sharded, distributed) opens as one tab; any other folder opens
        each checkpoint in it, once a worker has found them (``expand``). ``run=True`` opens all the paths
        as one Run tab instead (a folder stands for the checkpoints in it; local paths only)."""
        if run:
            return self.runs.open_run_paths([os.fspath(p) for p in paths])
        tabs, new = [], []
        for raw in paths:
            path = prepare_location(os.fspath(raw))      # a URL loses its user:password@ here
            if expand and not is_url(path) and os.path.isdir(path) and not is_checkpoint_folder(path):
                self._open_folder_contents(path)
                continue
            key = None if is_url(path) else file_key(path)
            existing = self.tab_for_path(path, key)
            if existing is not None:
                self.tabs.setCurrentWidget(existing)
                tabs.append(existing)
                continue
            # Folders go to the reader like files: a torch.distributed.checkpoint folder or a folder
            # holding a shard index opens; any other folder fails with the reader's message.
            tab = CheckpointTab(path, self.settings, self.tabs)
            tab.file_key = key
            tab.loaded.connect(self._on_tab_loaded)
            tab.failed.connect(self._on_tab_failed)
            tab.status_message.connect(self.show_status)
            tab.work_progressed.connect(self._on_work_progressed)
            tab.compare_requested.connect(self.open_diff)
            index = self.tabs.addTab(tab, safe_text(tab.title, 60))
            self.tabs.setTabToolTip(index, plain_tooltip(safe_text(shown_location(path), 400)))
            self.tabs.setCurrentIndex(index)
            tabs.append(tab)
            new.append(tab)
        # Workers start once every tab exists: a running loader holds the GIL for up to 5 ms each time
        # this thread lets go of it (a stat, a signal connection), which made opening 50 files at once
        # freeze the window for 2.4 s.
        for tab in new:
            tab.start_loading()
        self._sync_stack()
        self.raise_and_activate()
        return tabs

    def _open_folder_contents(self, folder: str) -> None:
        self._folders_listed += 1
        self.runner.submit(f"folder-{self._folders_listed}", folder_steps, folder,
                           on_progress=self._on_work_progressed,
                           on_result=lambda found: self._on_folder_listed(folder, found),
                           on_error=lambda err: self._report_failure(
                               folder, f"Could not look into {safe_text(folder, 300)}: {error_text(err.exc)}",
                               err.details))

    def _on_folder_listed(self, folder: str, found: list[str] | None) -> None:
        if found is None:
            return
        # None found: open the folder itself, so that the reader says why it is not a checkpoint.
        self.open_paths(found or [folder], expand=False)
        if found:
            self.show_status(f"Opened {len(found)} checkpoint{'s' if len(found) != 1 else ''} from "
                             f"{safe_text(os.path.basename(folder), 200)}")

    def tab_for_path(self, path: str, key: tuple[int, int] | None = None) -> CheckpointTab | None:
        """The tab showing ``path`` (the same file or folder under another name too). ``key`` is the
        path's :func:`file_key` when the caller has it; each tab keeps its own, so this stats once."""
        tabs = self.checkpoint_tabs()
        for tab in tabs:
            if tab.path == path:
                return tab
        key = key if key is not None else file_key(path)
        if key is None:
            return None
        for tab in tabs:
            if tab.file_key == key:
                return tab
        return None

    def checkpoint_tabs(self) -> list[CheckpointTab]:
        return [w for i in range(self.tabs.count()) if isinstance(w := self.tabs.widget(i), CheckpointTab)]

    def diff_tabs(self) -> list[DiffTab]:
        return [w for i in range(self.tabs.count()) if isinstance(w := self.tabs.widget(i), DiffTab)]

    def current_tab(self) -> CheckpointTab | None:
        w = self.tabs.currentWidget()
        return w if isinstance(w, CheckpointTab) else None

    def _on_tab_loaded(self, tab: CheckpointTab) -> None:
        freeze_loaded_objects()
        self._show_tab_safety(tab)
        self.settings.add_recent_file(tab.path)
        self._refresh_recent()
        f = tab.file
        self.show_status(f"Opened {safe_text(tab.title)} in {f.seconds:.2f} s: {safe_text(f.analysis.summary, 200)}")
        self._update_actions()
        self.tab_opened.emit(tab)

    def _show_tab_safety(self, tab: CheckpointTab) -> None:
        """A tab of a file that names dangerous globals carries a warning icon in the tab bar."""
        index = self.tabs.indexOf(tab)
        report = tab.safety
        if index < 0 or report is None:
            return
        tip = safe_text(shown_location(tab.path), 400)
        if report.is_dangerous:
            self.tabs.setTabIcon(index, level_icon(report.level))
            tip += "\n" + report.verdict
        else:
            self.tabs.setTabIcon(index, QIcon())
        self.tabs.setTabToolTip(index, plain_tooltip(tip))

    def _on_tab_failed(self, tab: CheckpointTab, err: WorkerError) -> None:
        self._remove_tab(tab)
        message = f"Could not open {error_text(err.exc)}"
        details = err.details
        report = err.exc.safety if isinstance(err.exc, RefusedFile) else None
        if report is not None:
            message = refused_message(message, report)
            details = f"Safety scan of the file:\n{report.text()}\n\n{details}"
        self._report_failure(tab.path, message, details, danger=report is not None and report.is_dangerous)

    def _report_failure(self, path: str, message: str, details: str, *, danger: bool = False) -> None:
        full = redact(f"File: {shown_location(path)}\n\n{message}\n\n{details}").strip()
        self.messages.add_error(message, full, danger=danger)
        self.show_status(message)
        self.open_failed.emit(path, message)

    # -- other ways in --------------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = start_folder(self.settings.recent_files())
        paths, _ = QFileDialog.getOpenFileNames(self, "Open checkpoints", start, FILE_FILTER)
        if paths:
            self.open_paths(paths)

    def open_folder_dialog(self) -> None:
        """Open a folder: a sharded checkpoint (its *.index.json) or a torch.distributed.checkpoint."""
        start = start_folder(self.settings.recent_files())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of checkpoints (or a sharded or distributed "
                                                          "checkpoint)", start)
        if folder:
            self.open_paths([folder])

    def open_url_dialog(self) -> None:
        """File > Open URL…: a checkpoint on the Hub, in a bucket or behind https, read by range."""
        from ..dialogs.open_url import OpenUrlDialog
        url = OpenUrlDialog.ask(self)
        if url:
            self.open_paths([url])

    def open_demo(self) -> None:
        folder = tempfile.mkdtemp(prefix="ckptviewer-demo-")
        self._demo_dirs.append(folder)
        self.show_status("Writing the demo checkpoint…")
        self.runner.submit(f"demo-{len(self._demo_dirs)}", demo_steps, folder,
                           on_progress=self._on_work_progressed,
                           on_result=lambda path: path and self.open_paths([path]),
                           on_error=lambda err: self._report_failure(
                               "demo", f"Could not write the demo checkpoint: {error_text(err.exc)}", err.details))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if paths_from_urls(event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = paths_from_urls(event.mimeData().urls())
        if not paths:
            event.ignore()
            return
        # Always a copy: a "move" proposed by a file manager (Shift held) must not make it delete the files.
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.open_paths(paths, run=self.runs.drop_as_run(paths, event.modifiers()))

    def on_files_forwarded(self, paths: list[str], demo: bool) -> None:
        """Files another launch handed over (single instance)."""
        if paths:
            self.open_paths(paths)
        if demo:
            self.open_demo()
        self.raise_and_activate()

    def raise_and_activate(self) -> None:
        if self.isMinimized():
            self.showNormal()
        self.raise_()
        self.activateWindow()

    # -- actions ------------------------------------------------------------------------------
    def close_current_tab(self) -> None:
        tab = self.current_tab()
        if tab is not None:
            if self.edits.confirm_discard([tab]):
                self._remove_tab(tab)
        elif isinstance(self.tabs.currentWidget(), (DiffTab, RunTab)):
            self.close_diff_tab(self.tabs.currentWidget())

    def _on_tab_close_requested(self, index: int) -> None:
        tab = self.tabs.widget(index)
        if isinstance(tab, CheckpointTab):
            if self.edits.confirm_discard([tab]):
                self._remove_tab(tab)
        elif isinstance(tab, (DiffTab, RunTab)):
            self.close_diff_tab(tab)

    def _remove_tab(self, tab: CheckpointTab | DiffTab | RunTab) -> None:
        # The tab's objects may be in the collector's permanent generation (loads and diffs freeze what
        # they build: loading.gc_paused); hand them back so that their reference cycles (tree nodes and
        # their parents) can be collected.
        gc.unfreeze()
        tab.save_state()
        tab.shutdown(wait=False)
        index = self.tabs.indexOf(tab)
        if index >= 0:
            self.tabs.removeTab(index)
        dispose(tab)
        self._sync_stack()
        self._update_actions()

    def _sync_stack(self) -> None:
        self.stack.setCurrentWidget(self.tabs if self.tabs.count() else self.welcome)

    def _on_current_tab_changed(self, _index: int) -> None:
        tab = self.current_tab() or self.tabs.currentWidget()
        self.setWindowTitle(f"{safe_text(tab.title, 80)} — ckptviewer" if tab else "ckptviewer")
        self._update_actions()

    def _call_tab(self, name: str):
        tab = self.current_tab()
        return getattr(tab, name)() if tab is not None else None

    def copy_key_path(self) -> str | None:
        return self._call_tab("copy_key_path")

    def copy_snippet(self) -> str | None:
        return self._call_tab("copy_snippet")

    def focus_search(self) -> None:
        self._call_tab("focus_search")

    def expand_all(self) -> None:
        self._call_tab("expand_all")

    def verify_integrity(self) -> None:
        self._call_tab("verify_integrity")

    def collapse_all(self) -> None:
        self._call_tab("collapse_all")

    def show_values(self) -> None:
        self._call_tab("show_values")

    def check_health(self) -> None:
        self._call_tab("show_health")

    def export_values(self) -> None:
        self._call_tab("export_selected_values")

    def cancel_work(self) -> None:
        self._call_tab("cancel_work")
        self.runner.cancel("merge")
        self.show_status("Cancelled")

    def show_about(self) -> None:
        if self._about is None:
            self._about = AboutDialog(self)
        self._about.show()
        self._about.raise_()

    # -- status ---------------------------------------------------------------------------------
    def show_status(self, text: str) -> None:
        self._last_message = safe_text(text, 300)
        self.status_text.setText(self._last_message)

    def _on_work_progressed(self, p: Progress | None) -> None:
        fetched = fetched_bytes()
        if fetched:
            self.net_label.setText(f"Fetched {human_bytes(fetched)}")
            self.net_label.show()
        if p is None or not isinstance(p, Progress):
            if not self.has_pending_work():
                self.progress.hide()
                self.cancel_button.hide()
                self.status_text.setText(self._last_message)
            return
        self.progress.show()
        self.cancel_button.show()
        if p.total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * p.fraction))
        else:
            self.progress.setRange(0, 0)
        self.progress.setFormat(f"{100 * p.fraction:.0f}%")
        self.status_text.setText(safe_text(p.what, 200) + "…")

    def has_pending_work(self) -> bool:
        return (self.runner.is_busy() or any(t.has_pending_work() for t in self.checkpoint_tabs())
                or any(t.has_pending_work() for t in self.diff_tabs())
                or any(t.has_pending_work() for t in self.runs.run_tabs())
                or (self.convert_dock is not None and self.convert_dock.panel.has_pending_work()))

    # -- compare (diff tabs) and convert (the Convert panel) ------------------------------------
    def compare_dialog(self) -> None:
        current = self.current_tab()
        paths = ask_compare_paths(self, current.path if current is not None else None)
        if paths is not None:
            self.open_diff(*paths)

    def open_diff(self, path_a: str, path_b: str, setup: DiffSetup | None = None) -> DiffTab:
        """Open a diff tab of A against B (or show the one already open for this pair)."""
        setup = setup or DiffSetup(prepare_location(os.fspath(path_a)), prepare_location(os.fspath(path_b)))
        for tab in self.diff_tabs():
            if (tab.setup.path_a, tab.setup.path_b) == (setup.path_a, setup.path_b):
                self.tabs.setCurrentWidget(tab)
                return tab
        tab = DiffTab(setup, self.settings, self.tabs)
        tab.status_message.connect(self.show_status)
        index = self.tabs.addTab(tab, safe_text(tab.title, 60))
        self.tabs.setTabToolTip(index, plain_tooltip(f"A: {safe_text(setup.path_a, 300)}\n"
                                                     f"B: {safe_text(setup.path_b, 300)}"))
        self.tabs.setCurrentIndex(index)
        self._sync_stack()
        tab.start()
        return tab

    def close_diff_tab(self, tab: DiffTab | RunTab) -> None:
        self._remove_tab(tab)

    def show_convert_panel(self):
        """Show (making it the first time) the Convert panel's dock; returns the panel."""
        if self.convert_dock is None:
            from ..convert.panel import ConvertDock
            self.convert_dock = ConvertDock(self.settings, self)
            self.convert_dock.panel.open_requested.connect(self.open_paths)
            self.convert_dock.panel.status_message.connect(self.show_status)
            self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.convert_dock)
            self.resizeDocks([self.convert_dock], [560], Qt.Orientation.Horizontal)
        self.convert_dock.show()
        self.convert_dock.raise_()
        return self.convert_dock.panel

    # -- painting and closing -------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            self.first_painted.emit()
            preload_plotting()

    def shutdown(self) -> None:
        """Stop all workers, close all files, remember the window (idempotent)."""
        if self._closing:
            return
        self._closing = True
        wait_for_preload()
        self.settings.set_window_geometry(self.saveGeometry())
        current = self.current_tab()
        if current is not None:
            current.save_state()
        self.runner.shutdown()
        for tab in self.checkpoint_tabs():
            tab.shutdown()
        for diff in self.diff_tabs() + self.runs.run_tabs():
            diff.save_state()
            diff.shutdown(wait=True)
        if self.convert_dock is not None:
            self.convert_dock.panel.shutdown()
        self.settings.sync()
        for folder in self._demo_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self._closing and not self.edits.confirm_discard(self.checkpoint_tabs()):
            event.ignore()
            return
        self.shutdown()
        super().closeEvent(event)
