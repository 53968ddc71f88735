"""Fixtures and helpers shared by the GUI tests (imported by tests/test_gui_*.py).

* Every GUI test runs with ``$CKPTVIEWER_SETTINGS`` pointing at a temporary INI file and a private
  single-instance server name, so no test reads or writes the user's settings or talks to their window.
* ``no_workers_left`` fails a test that leaves a worker running on the thread pool after its windows
  were shut down (a cancelled worker stops at its next yield, well within the grace period).
"""
from __future__ import annotations

import os
import uuid

import pytest
from PySide6.QtCore import QThreadPool

from ckptviewer.core.util.progress import run_steps

# Qt warnings fail GUI tests, except the offscreen platform's notes about what it cannot do.
QT_STRICT = [pytest.mark.qt_log_level_fail("WARNING"),
             pytest.mark.qt_log_ignore(r"This plugin does not support", r"propagateSizeHints")]


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    path = tmp_path / "settings" / "ckptviewer.ini"
    monkeypatch.setenv("CKPTVIEWER_SETTINGS", str(path))
    monkeypatch.setenv("CKPTVIEWER_INSTANCE", f"ckptviewer-test-{uuid.uuid4().hex[:12]}")
    return path


@pytest.fixture
def no_workers_left():
    yield
    pool = QThreadPool.globalInstance()
    finished = pool.waitForDone(2000)
    assert finished and pool.activeThreadCount() == 0, "a worker was still running after the test"


@pytest.fixture
def window(qtbot, no_workers_left, isolated_settings):
    from ckptviewer.gui.shell.main_window import MainWindow
    from ckptviewer.gui.widgets.settings import Settings

    win = MainWindow(Settings(isolated_settings))
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown()
    win.close()


def wait_loaded(qtbot, tab, timeout: int = 30_000):
    qtbot.waitUntil(lambda: tab.is_loaded or tab.error is not None, timeout=timeout)
    assert tab.error is None, tab.error.details if tab.error else ""
    return tab


def open_one(qtbot, window, path, timeout: int = 30_000):
    tabs = window.open_paths([path])
    assert len(tabs) == 1
    return wait_loaded(qtbot, tabs[0], timeout)


def wait_idle(qtbot, window_or_tab, timeout: int = 30_000):
    qtbot.waitUntil(lambda: not window_or_tab.has_pending_work(), timeout=timeout)


def load_now(path):
    """A LoadedFile made synchronously (for model tests that need no window)."""
    from ckptviewer.gui.checkpoint.loading import load_steps
    return run_steps(load_steps(os.fspath(path)))


def visible_nodes(tab):
    """Every node the tab's view exposes (fetched rows, through the filter when one is active)."""
    model = tab.view.model()
    out = []
    stack = [model.index(r, 0) for r in reversed(range(model.rowCount()))]
    while stack:
        idx = stack.pop()
        out.append(tab.node_at(idx))
        stack.extend(model.index(r, 0, idx) for r in reversed(range(model.rowCount(idx))))
    return out
