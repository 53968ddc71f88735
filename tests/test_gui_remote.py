"""The window with remote checkpoints: File > Open URL…, a link dropped from a browser, recent URLs, the bytes
fetched in the status bar, credentials never shown, and Cancel while the network is slow."""
from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest
from netservers import FileServer
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from gui_support import QT_STRICT, isolated_settings, no_workers_left, wait_idle, wait_loaded, window  # noqa: F401

pytestmark = QT_STRICT


@pytest.fixture(autouse=True)
def remote_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CKPTVIEWER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CKPTVIEWER_NET_TIMEOUT", "5")
    from ckptviewer.core.source import net
    net.forget_credentials()
    yield
    net.forget_credentials()


def checkpoint_bytes() -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save({"conv.weight": torch.arange(24.0).reshape(2, 3, 4), "conv.bias": torch.ones(2)}, buf)
    return buf.getvalue()


def test_open_url_dialog_checks_what_is_typed(qtbot):
    from ckptviewer.gui.dialogs.open_url import OpenUrlDialog
    dialog = OpenUrlDialog(None)
    qtbot.addWidget(dialog)
    assert not dialog.ok_button.isEnabled() and not dialog.error_label.isVisibleTo(dialog)
    for text, ok in [("model.pt", False), ("hf://gpt2", False), ("nope://x/y", False), ("https://", False),
                     ("  hf://org/repo/model.safetensors ", True), ("https://example.org/m.pt", True),
                     ("s3://bucket/key.pt", True)]:
        dialog.edit.setText(text)
        assert dialog.ok_button.isEnabled() is ok, text
        assert dialog.error_label.isVisibleTo(dialog) is (not ok), text
    assert dialog.state.location == "s3://bucket/key.pt"


def test_open_url_opens_a_tab_and_keeps_the_url_in_recent_files(qtbot, window, monkeypatch):
    from ckptviewer.gui.dialogs import open_url
    with FileServer({"/ckpt/model.pt": checkpoint_bytes()}) as srv:
        url = srv.url("/ckpt/model.pt")
        monkeypatch.setattr(open_url.OpenUrlDialog, "ask", classmethod(lambda cls, parent, initial="": url))
        window.actions_by_id["file.open_url"].trigger()
        tab = wait_loaded(qtbot, window.current_tab())
        assert tab.path == url and tab.title == "model.pt"
        assert tab.file.checkpoint.format == "torch-zip"
        wait_idle(qtbot, window)
        assert window.net_label.isVisibleTo(window) and window.net_label.text().startswith("Fetched ")
        assert window.settings.recent_files()[0] == url
        # The recent list keeps a URL (a local file that is gone is dropped; a URL cannot be checked).
        window.close_current_tab()
        window.recent_menu.aboutToShow.emit()
        recent = [a for a in window.recent_menu.actions() if a.data()]
        assert recent[0].data() == url
        recent[0].trigger()
        again = wait_loaded(qtbot, window.current_tab())
        assert again.path == url
        wait_idle(qtbot, window)


def test_a_link_dropped_from_a_browser_opens(qtbot, window):
    with FileServer({"/m.pt": checkpoint_bytes()}) as srv:
        mime = QMimeData()
        mime.setUrls([QUrl(srv.url("/m.pt"))])                       # what a browser's text/uri-list gives
        enter = QDragEnterEvent(QPoint(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(window, enter)
        assert enter.isAccepted()
        drop = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                          Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(window, drop)
        tab = wait_loaded(qtbot, window.current_tab())
        assert tab.path == srv.url("/m.pt")
        wait_idle(qtbot, window)


def test_credentials_never_reach_titles_tooltips_recents_or_messages(qtbot, window):
    secret = "s3cr3t-pass"
    with FileServer({"/m.pt": checkpoint_bytes()}, auth=("carol", secret)) as srv:
        url = srv.url("/m.pt").replace("http://", f"http://carol:{secret}@")
        tab = wait_loaded(qtbot, window.open_paths([url])[0])
        wait_idle(qtbot, window)
        index = window.tabs.indexOf(tab)
        shown = " ".join([tab.path, tab.title, window.tabs.tabText(index), window.tabs.tabToolTip(index),
                          window.windowTitle(), window.status_text.text(), *window.settings.recent_files(),
                          *[a.text() for a in window.recent_menu.actions()]])
        assert secret not in shown and "carol" not in shown
        # A failure's message and its details are redacted too.
        bad = srv.url("/missing.pt?token=abc123secret").replace("http://", f"http://carol:{secret}@")
        window.open_paths([bad])
        qtbot.waitUntil(lambda: bool(window.messages.texts()), timeout=20_000)
        text = " ".join(window.messages.texts()) + window.status_text.text()
        assert "missing.pt" in text and "404" in text
        assert secret not in text and "abc123secret" not in text
        wait_idle(qtbot, window)


def test_cancel_stops_a_slow_remote_open(qtbot, window):
    with FileServer({"/slow.pt": checkpoint_bytes()}, latency=4.0) as srv:
        tab = window.open_paths([srv.url("/slow.pt")])[0]
        qtbot.waitUntil(lambda: tab.has_pending_work(), timeout=5000)
        time.sleep(0.3)
        started = time.monotonic()
        window.cancel_work()
        qtbot.waitUntil(lambda: not tab.has_pending_work(), timeout=3000)
        assert time.monotonic() - started < 2.5          # not the 4 s the server would have taken
        assert not tab.is_loaded


def test_the_gui_still_imports_no_network_library_at_start():
    code = ("import sys, ckptviewer.gui.shell.app, ckptviewer.gui.shell.main_window; "
            "bad = [m for m in ('fsspec', 'aiohttp', 'huggingface_hub', 's3fs') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
