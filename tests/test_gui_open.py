"""Every way a file arrives: argv, drop, recent list, single-instance forwarding, file-open events; and
what happens when a file is not a checkpoint."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QFileOpenEvent
from PySide6.QtWidgets import QApplication

from gui_support import QT_STRICT, isolated_settings, no_workers_left, open_one, wait_idle, wait_loaded, window  # noqa: F401

pytestmark = QT_STRICT
REPO = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_open_by_argument_runs_the_window_and_opens_each_file(qapp, ckpts, no_workers_left):
    from ckptviewer.gui.shell import app as app_module
    from ckptviewer.gui.shell.main_window import MainWindow

    seen = {}

    def check_and_close():
        wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not wins:
            QTimer.singleShot(50, check_and_close)
            return
        win = wins[0]
        tabs = win.checkpoint_tabs()
        if len(tabs) == 2 and all(t.is_loaded for t in tabs):
            seen["titles"] = [t.title for t in tabs]
            seen["summary"] = tabs[0].file.analysis.summary
            win.close()
        elif any(t.error for t in tabs):
            seen["error"] = [t.error.details for t in tabs if t.error]
            win.close()
        else:
            QTimer.singleShot(50, check_and_close)

    QTimer.singleShot(0, check_and_close)
    args = argparse.Namespace(files=[str(ckpts["checkpoint.tar"]), str(ckpts["state_dict.safetensors"])],
                              demo=False, new_window=True, screenshot=None)
    rc = app_module.run(args)
    assert rc == 0
    assert "error" not in seen, seen.get("error")
    assert seen["titles"] == ["checkpoint.tar", "state_dict.safetensors"]
    assert "training checkpoint" in seen["summary"]


def test_screenshot_command_writes_a_png(ckpts, tmp_path):
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, "-m", "ckptviewer", "--screenshot", str(out), str(ckpts["checkpoint.tar"])],
                          env=_env(CKPTVIEWER_SETTINGS=str(tmp_path / "s.ini")), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _drop(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    accepted = enter.isAccepted()
    drop = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return accepted, drop.isAccepted()


def test_drop_of_many_files_opens_each_and_reports_the_bad_one(qtbot, window, ckpts, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are not the weights you are looking for\n")
    entered, dropped = _drop(window, [ckpts["state_dict.pt"], text, ckpts["gan.tar"]])
    assert entered and dropped
    qtbot.waitUntil(lambda: len(window.messages.texts()) == 1 and all(t.is_loaded for t in window.checkpoint_tabs()),
                    timeout=30_000)
    assert [t.title for t in window.checkpoint_tabs()] == ["state_dict.pt", "gan.tar"]
    msg = window.messages.texts()[0]
    assert "notes.pt" in msg and "text file" in msg


def test_drop_without_files_is_refused(window):
    mime = QMimeData()
    mime.setText("just text")
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert not enter.isAccepted()


def test_open_recent_menu_opens_and_drops_missing_files(qtbot, window, ckpts, tmp_path):
    gone = tmp_path / "gone.pt"
    gone.write_bytes(b"x")
    for i in range(12):
        extra = tmp_path / f"r{i}.pt"
        extra.write_bytes(b"x")
        window.settings.add_recent_file(extra)
    window.settings.add_recent_file(gone)
    window.settings.add_recent_file(ckpts["checkpoint.tar"])
    gone.unlink()
    window.recent_menu.aboutToShow.emit()
    actions = [a for a in window.recent_menu.actions() if a.data()]
    paths = [a.data() for a in actions]
    assert paths[0] == str(ckpts["checkpoint.tar"])
    assert str(gone) not in paths
    assert len(paths) <= 10
    actions[0].trigger()
    tab = window.current_tab()
    wait_loaded(qtbot, tab)
    assert tab.path == str(ckpts["checkpoint.tar"])
    assert window.settings.recent_files()[0] == str(ckpts["checkpoint.tar"])


def test_reopening_a_file_switches_to_its_tab(qtbot, window, ckpts):
    first = open_one(qtbot, window, ckpts["state_dict.pt"])
    open_one(qtbot, window, ckpts["tied.pt"])
    again = window.open_paths([ckpts["state_dict.pt"]])
    assert again == [first] and window.current_tab() is first and len(window.checkpoint_tabs()) == 2


def test_corrupt_file_shows_reason_with_details_and_window_keeps_working(qtbot, window, ckpts, tmp_path):
    data = Path(ckpts["checkpoint.tar"]).read_bytes()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[:300])           # cut inside data.pkl: nothing can be listed (a later cut opens)
    tabs = window.open_paths([broken])
    qtbot.waitUntil(lambda: bool(window.messages.texts()), timeout=20_000)
    assert tabs[0].error is not None and window.checkpoint_tabs() == []
    item = window.messages.items()[0]
    assert "broken.tar" in item.text.text()
    assert not item.details.isVisibleTo(item)
    item.details_button.click()
    assert item.details.isVisibleTo(item) and str(broken) in item.details.toPlainText()
    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    assert tab.select_path(("model_state_dict", "conv1.bias"))
    wait_idle(qtbot, tab)
    assert tab.last_stats is not None and tab.last_stats.numel == 6


def test_missing_file_and_folder_are_reported(qtbot, window, tmp_path):
    window.open_paths([tmp_path / "nope.pt", tmp_path])
    qtbot.waitUntil(lambda: len(window.messages.texts()) == 2, timeout=20_000)
    texts = " ".join(window.messages.texts())
    assert "no such file" in texts and "folder" in texts


def test_single_instance_forwards_files_to_the_running_window(qtbot, window, ckpts, tmp_path):
    from ckptviewer.gui.shell.single_instance import InstanceServer

    server = InstanceServer(parent=window)
    assert server.listen()
    server.files_received.connect(window.on_files_forwarded)
    proc = subprocess.Popen([sys.executable, "-m", "ckptviewer", str(ckpts["dtypes.pt"])],
                            env=_env(CKPTVIEWER_SETTINGS=str(tmp_path / "other.ini")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        qtbot.waitUntil(lambda: proc.poll() is not None, timeout=60_000)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"handed the files" in out
    qtbot.waitUntil(lambda: bool(window.checkpoint_tabs()) and window.checkpoint_tabs()[0].is_loaded, timeout=20_000)
    assert window.checkpoint_tabs()[0].path == str(ckpts["dtypes.pt"])
    server.close()


def test_single_instance_message_is_bounded():
    from ckptviewer.gui.shell.single_instance import decode_message, encode_message

    paths, demo = decode_message(encode_message(["/a/b.pt", "c.pt"], demo=True))
    assert paths[0] == "/a/b.pt" and os.path.isabs(paths[1]) and demo
    assert decode_message(b"\xff\xfe") == ([], False)
    assert decode_message(b'{"paths": [1, "x\\u0000y", "ok"]}') == (["ok"], False)


def test_file_open_event_goes_through_open_paths(qtbot, window, ckpts, qapp):
    from ckptviewer.gui.shell.app import FileOpenFilter

    filt = FileOpenFilter(window)
    qapp.installEventFilter(filt)
    try:
        QApplication.sendEvent(qapp, QFileOpenEvent(str(ckpts["values.pt"])))
    finally:
        qapp.removeEventFilter(filt)
    assert len(window.checkpoint_tabs()) == 1
    wait_loaded(qtbot, window.checkpoint_tabs()[0])


def test_close_tab_action_and_welcome_page(qtbot, window, ckpts):
    open_one(qtbot, window, ckpts["state_dict.pt"])
    assert window.stack.currentWidget() is window.tabs
    assert window.actions_by_id["file.close_tab"].shortcut().toString()
    window.actions_by_id["file.close_tab"].trigger()
    assert window.checkpoint_tabs() == []
    assert window.stack.currentWidget() is window.welcome
    assert not window.actions_by_id["edit.copy_path"].isEnabled()


def test_closing_the_window_mid_statistics_leaves_no_worker(qtbot, window, tmp_path, no_workers_left):
    import torch
    from PySide6.QtCore import QThreadPool

    path = tmp_path / "big.pt"
    torch.save({"w": torch.randn(4096, 2048)}, path)
    tab = open_one(qtbot, window, path)
    assert tab.select_path(("w",))
    qtbot.waitUntil(lambda: tab.runner.is_busy("stats"), timeout=5000)
    window.shutdown()
    assert QThreadPool.globalInstance().waitForDone(2000)
    assert not tab.runner.is_busy()


def test_geometry_is_remembered(qtbot, isolated_settings, no_workers_left):
    from ckptviewer.gui.shell.main_window import MainWindow
    from ckptviewer.gui.widgets.settings import Settings

    win = MainWindow(Settings(isolated_settings))
    qtbot.addWidget(win)
    win.show()
    win.resize(700, 520)
    qtbot.waitUntil(lambda: (win.width(), win.height()) == (700, 520), timeout=3000)
    win.close()
    again = MainWindow(Settings(isolated_settings))
    qtbot.addWidget(again)
    assert (again.width(), again.height()) == (700, 520)
    again.shutdown()


def test_shutdown_waits_for_the_background_plotting_import(qtbot, isolated_settings, monkeypatch):
    """The interpreter must not finalize under the pyqtgraph import thread (a segfault at exit when a
    window closed within 0.4 s of its first paint): shutdown waits for it."""
    import threading
    import time

    from ckptviewer.gui.shell import main_window as mw
    from ckptviewer.gui.widgets.settings import Settings

    slow = threading.Thread(target=time.sleep, args=(0.5,), daemon=True)
    monkeypatch.setattr(mw, "_preload", slow)
    slow.start()
    win = mw.MainWindow(Settings(isolated_settings))
    qtbot.addWidget(win)
    win.show()
    win.shutdown()
    assert not slow.is_alive()


def test_demo_opens_the_tutorial_checkpoint(qtbot, window):
    window.open_demo()
    qtbot.waitUntil(lambda: bool(window.checkpoint_tabs()) and window.checkpoint_tabs()[0].is_loaded, timeout=120_000)
    tab = window.checkpoint_tabs()[0]
    summary = tab.file.analysis.summary
    assert "training checkpoint" in summary and "62,006 parameters" in summary and "SGD" in summary
    assert tab.select_path(("optimizer_state_dict", "state", 0, "momentum_buffer"))
    wait_idle(qtbot, window)


def test_gui_import_does_not_import_torch_or_pyqtgraph():
    code = ("import sys, ckptviewer.gui.shell.app, ckptviewer.gui.shell.main_window; "
            "bad = [m for m in ('torch', 'pyqtgraph') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=60)


@pytest.mark.parametrize("name", ["whole_model.pt", "gan_modules.tar", "values.pt", "scripted.pt",
                                  "checkpoint_legacy.tar", "gpu1_checkpoint.tar", "ensemble.pt"])
def test_every_case_opens_and_first_tensor_has_statistics(qtbot, window, ckpts, name):
    tab = open_one(qtbot, window, ckpts[name])
    node = tab.first_tensor()
    if node is not None:
        assert tab.select_node(node)
        wait_idle(qtbot, tab)
        assert tab.last_stats is not None and tab.last_stats.numel == node.value.numel
    assert tab.summary.labels["roles"].text()


def test_binding_refcount_defects_are_guarded():
    """Many emits and None-returning data() calls must not abort the interpreter (see gui/qtcompat)."""
    code = """
import sys
import ckptviewer.gui
from ckptviewer.gui.widgets.qtcompat import leaks, top_up
from PySide6.QtCore import QAbstractListModel, QCoreApplication, QModelIndex, QObject, Qt, Signal
app = QCoreApplication([])
class S(QObject):
    s = Signal(object)
class M(QAbstractListModel):
    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else 1
    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        return None
s, m = S(), M()
idx = m.index(0, 0)
for i in range(60_000):
    s.s.emit(i)
    idx.data(Qt.ItemDataRole.ToolTipRole)
    if i % 4096 == 0:
        top_up()
print(leaks())
"""
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_closing_a_busy_tab_does_not_wait_for_its_worker(qtbot, window, tmp_path, monkeypatch):
    import threading
    import time

    import torch
    from PySide6.QtCore import QThreadPool

    from ckptviewer.gui.checkpoint import tab as tab_module

    # Hold the statistics worker inside its task until the tab is closed, so it is certainly busy while
    # the tab closes (not just likely to be, on a big tensor). A close that waited for it would block
    # for the whole of TaskRunner.shutdown's timeout (10 s); a close that does not wait takes
    # milliseconds. The bound below sits between the two, far from both (it was 0.5 s, which a busy
    # machine could exceed without any waiting).
    inside, released = threading.Event(), threading.Event()
    real_steps = tab_module.tensor_steps

    def held_tensor_steps(*args, **kwargs):
        inside.set()
        released.wait(30)
        return (yield from real_steps(*args, **kwargs))

    monkeypatch.setattr(tab_module, "tensor_steps", held_tensor_steps)
    path = tmp_path / "big.pt"
    torch.save({"w": torch.randn(4096, 2048)}, path)
    tab = open_one(qtbot, window, path)
    assert tab.select_path(("w",))
    qtbot.waitUntil(lambda: tab.runner.is_busy("stats") and inside.is_set(), timeout=20_000)
    workers = [t.worker for t in tab.runner._tasks.values() if t.channel == "stats"]
    assert workers
    t0 = time.perf_counter()
    try:
        window.actions_by_id["file.close_tab"].trigger()
        elapsed = time.perf_counter() - t0
        still_running = [not w.wait(0) for w in workers]
    finally:
        released.set()
    assert all(still_running), "the statistics worker ended before the tab had closed"
    assert elapsed < 5.0, f"closing the tab took {elapsed:.1f} s"
    assert window.checkpoint_tabs() == []
    assert all(w.is_cancelled for w in workers)
    assert QThreadPool.globalInstance().waitForDone(20_000)


def test_many_files_at_once_are_built_one_per_pass_and_closing_early_is_safe(qtbot, window, ckpts, tmp_path):
    """Tabs of files that finish loading together are built one per pass of the event loop; a tab closed
    while it waits for its turn is dropped (its file closed), and the status bar ends idle."""
    from ckptviewer.gui.checkpoint import tab as tab_module
    paths = []
    for i in range(12):
        p = tmp_path / f"copy{i}.pt"
        p.write_bytes(Path(ckpts["state_dict.pt"]).read_bytes())
        paths.append(p)
    built = []
    original = tab_module.CheckpointTab.finish_loading

    def record(self):
        built.append((self.title, len(tab_module.build_queue()._queue)))
        original(self)

    tab_module.CheckpointTab.finish_loading = record
    try:
        tabs = window.open_paths(paths)
        first = tabs[0]
        # Let every load end before the GUI thread handles any result, so that they do finish together
        # (left to the scheduler, a busy machine can deliver each result and build its tab before the
        # next load ends, and then no build ever waits).
        from PySide6.QtCore import QThreadPool
        assert QThreadPool.globalInstance().waitForDone(60_000)
        qtbot.waitUntil(lambda: first._pending_file is not None or first.is_loaded, timeout=20_000)
        if not first.is_loaded:
            window.tabs.setCurrentWidget(first)
            window.close_current_tab()                  # closed before its widgets were built
        qtbot.waitUntil(lambda: all(t.is_loaded for t in window.checkpoint_tabs())
                        and not window.has_pending_work(), timeout=30_000)
    finally:
        tab_module.CheckpointTab.finish_loading = original
    assert len(window.checkpoint_tabs()) in (11, 12)
    assert first.file is None or first.is_loaded
    assert not window.progress.isVisibleTo(window) and not window.cancel_button.isVisibleTo(window)
    assert any(waiting for _, waiting in built)         # some builds waited for an earlier one's pass
