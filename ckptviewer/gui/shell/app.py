"""Starting the window: single-instance hand-off, theme, the main window, screenshots.

Importing this module imports Qt but neither torch nor pyqtgraph: the first window is painted before
anything slow is imported (the demo imports torch in a worker; the histogram imports pyqtgraph when it
first draws).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

from PySide6.QtCore import QEvent, QObject, QTimer, qInstallMessageHandler  # noqa: E402 - PySide6 first
from PySide6.QtGui import QFileOpenEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from ...core.util.locations import normalize_location  # noqa: E402
from ..widgets.qtcompat import top_up  # noqa: E402
from ..widgets.resources import app_icon  # noqa: E402
from ..widgets.settings import Settings  # noqa: E402
from ..widgets.theme import ThemeWatcher  # noqa: E402
from .main_window import MainWindow  # noqa: E402
from .single_instance import InstanceServer, forward_to_running  # noqa: E402

# Benchmarks (tests/bench/bench_first_paint.py) watch these files from outside the process.
FIRST_PAINT_ENV = "CKPTVIEWER_FIRST_PAINT_FILE"
LOADED_ENV = "CKPTVIEWER_LOADED_FILE"
SCREENSHOT_TIMEOUT_S = 180.0


class FileOpenFilter(QObject):
    """Turns the OS's file-open events (macOS Finder, some Linux launchers) into ``open_paths``."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self._window = window

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.FileOpen and isinstance(event, QFileOpenEvent):
            path = event.file() or event.url().toLocalFile()
            if path:
                self._window.open_paths([path])
                return True
        return False


class ScreenshotDriver(QObject):
    """Waits until every file is loaded and every worker is idle, selects a tensor, saves a PNG, quits."""

    def __init__(self, window: MainWindow, out: str, app: QApplication, select: str | None = None):
        super().__init__(window)
        self._window = window
        self._out = out
        self._app = app
        self._select = select
        self._start = time.monotonic()
        self._selected = False
        self._quiet_ticks = 0
        self.ok = False
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._on_tick)
        self._timer.start()

    def _on_tick(self) -> None:
        w = self._window
        timed_out = time.monotonic() - self._start > SCREENSHOT_TIMEOUT_S
        busy = w.has_pending_work() or any(not t.is_loaded for t in w.checkpoint_tabs())
        if busy and not timed_out:
            self._quiet_ticks = 0
            return
        if not self._selected and not timed_out:
            self._selected = True
            tab = w.current_tab()
            if tab is not None and tab.is_loaded:
                if self._select:
                    if not tab.show_values(self._select):
                        print(f"ckptviewer: --select {self._select}: {w.status_text.text()}", file=sys.stderr)
                    return
                node = tab.first_tensor()
                if node is not None:
                    tab.select_node(node)
            return
        self._quiet_ticks += 1
        if self._quiet_ticks < 3 and not timed_out:
            return
        self._timer.stop()
        self.ok = w.grab().save(self._out)
        if timed_out:
            print(f"ckptviewer: screenshot taken after {SCREENSHOT_TIMEOUT_S:.0f} s with work still pending",
                  file=sys.stderr)
        self._app.exit(0 if self.ok else 1)


def _write_marker(env: str) -> None:
    target = os.environ.get(env)
    if target and not os.path.exists(target):
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(f"{time.time():.6f}\n")


def _quiet_offscreen_plugin() -> None:
    """The offscreen platform (screenshots without a display) warns that it cannot resize or raise a
    window on every show; those lines say nothing to a user. Every other message passes through."""
    def handler(mode, context, message):
        if not message.startswith("This plugin does not support"):
            sys.stderr.write(message + "\n")
    qInstallMessageHandler(handler)


def run(args: argparse.Namespace) -> int:
    """Run the window for parsed command-line ``args`` (see ``cli._gui_parser``); returns the exit code."""
    files = [normalize_location(p) for p in getattr(args, "files", []) or []]   # URLs: see open_paths
    demo = bool(getattr(args, "demo", False))
    screenshot = getattr(args, "screenshot", None)
    single = not getattr(args, "new_window", False) and not screenshot

    if os.environ.get("QT_QPA_PLATFORM") == "offscreen" and QApplication.instance() is None:
        _quiet_offscreen_plugin()
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "ckptviewer"])
    app.setApplicationName("ckptviewer")
    app.setOrganizationName("ckptviewer")
    app.setDesktopFileName("ckptviewer")
    if single and forward_to_running(files, demo):
        print("ckptviewer: handed the files to the window already open (use --new-window for another)")
        return 0

    ThemeWatcher(app)
    app.setWindowIcon(app_icon())
    scratch = None
    if screenshot:
        # A screenshot must not depend on, or add to, the user's recent files and window state.
        scratch = tempfile.TemporaryDirectory(prefix="ckptviewer-shot-", ignore_cleanup_errors=True)
        settings = Settings(os.path.join(scratch.name, "settings.ini"))
    else:
        settings = Settings()
    window = MainWindow(settings)
    window.first_painted.connect(lambda: _write_marker(FIRST_PAINT_ENV))
    window.tab_opened.connect(lambda _tab: _write_marker(LOADED_ENV))
    app.installEventFilter(FileOpenFilter(window))
    server = None
    if single:
        server = InstanceServer(parent=window)
        if server.listen():
            server.files_received.connect(window.on_files_forwarded)
    driver = None
    scene = os.environ.get("CKPTVIEWER_SCREENSHOT_SCENE", "") if screenshot else ""
    if screenshot:
        window.resize(1440, 900)
        if not scene:
            driver = ScreenshotDriver(window, os.path.abspath(screenshot), app, getattr(args, "select", None))
    reserve_timer = QTimer(window)       # see qtcompat: keeps a defective binding from aborting
    reserve_timer.timeout.connect(top_up)
    reserve_timer.start(2000)
    window.show()
    if scene:
        # Other views to look at headless (a diff tab, the Convert panel mid-batch): screenshot_scenes.py
        from .screenshot_scenes import RECIPE_ENV, start_scene
        try:
            driver = start_scene(scene, window, files, os.path.abspath(screenshot), app, scratch.name,
                                 os.environ.get(RECIPE_ENV) or "clean-dataparallel")
        except (ValueError, KeyError) as e:
            print(f"ckptviewer: {e}", file=sys.stderr)
            window.shutdown()
            scratch.cleanup()
            return 2
    elif files:
        select = getattr(args, "select", None)
        if select and not screenshot:
            pending = [select]

            def reveal(tab) -> None:        # the first tab that loads shows the entry
                if pending:
                    tab.show_values(pending.pop())
            window.tab_opened.connect(reveal)
        window.open_paths(files)
    if demo:
        window.open_demo()
    rc = app.exec()
    window.shutdown()
    if server is not None:
        server.close()
    if scratch is not None:
        scratch.cleanup()
    if driver is not None and not driver.ok:
        print(f"ckptviewer: could not write {screenshot}", file=sys.stderr)
        return 1
    return rc
