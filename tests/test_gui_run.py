"""The Run tab and the Merge dialog driven end to end: a fine-tuning run where only the head moved (heatmap,
table, line chart), the models under qtmodeltester, click-through to a checkpoint's tab, Stop with partial
results, ways in (a dropped folder, several dropped files, File > Open Run), and merging from the Run tab
and from open tabs, checked against torch's arithmetic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PySide6.QtCore import QMimeData, QModelIndex, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from gui_support import QT_STRICT, isolated_settings, no_workers_left, open_one, wait_idle, window  # noqa: F401
from models import Net

pytestmark = QT_STRICT


# -- fixtures and helpers ---------------------------------------------------------------------------------
@pytest.fixture
def head_run(tmp_path):
    """run/epoch_{0,1,2,10}.tar: Net with only fc3 trained (SGD), a training checkpoint per epoch."""
    folder = tmp_path / "run"
    folder.mkdir()
    torch.manual_seed(0)
    model = Net()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.fc3.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(list(model.fc3.parameters()), lr=0.1)
    saved = {}
    for ep in range(11):
        loss = model(torch.randn(4, 3, 32, 32)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ep in (0, 1, 2, 10):
            path = folder / f"epoch_{ep}.tar"
            torch.save({"epoch": ep, "model_state_dict": model.state_dict(), "loss": loss.item(),
                        "optimizer_state_dict": opt.state_dict()}, path)
            saved[ep] = torch.load(path, weights_only=True)
    return folder, saved


def wait_read(qtbot, tab, timeout: int = 60_000):
    qtbot.waitUntil(lambda: tab.error is not None or (tab.read_done and not tab.has_pending_work()), timeout=timeout)
    assert tab.error is None, tab.error.details
    return tab


def open_run(qtbot, window, *paths):
    from ckptviewer.gui.run.tab import RunTab
    tabs = window.open_paths([str(p) for p in paths], run=True)
    assert len(tabs) == 1 and isinstance(tabs[0], RunTab)
    return wait_read(qtbot, tabs[0])


def drop_on(widget, paths, modifiers=Qt.KeyboardModifier.NoModifier):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    QApplication.sendEvent(widget, QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                                                   Qt.MouseButton.LeftButton, modifiers))
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction | Qt.DropAction.MoveAction, mime,
                      Qt.MouseButton.LeftButton, modifiers)
    QApplication.sendEvent(widget, drop)
    return drop.isAccepted(), drop.dropAction()


def entry_index(tab, *key):
    return next(i for i, e in enumerate(tab.run.entries) if tuple(e.key) == tuple(key))


# -- the tab ----------------------------------------------------------------------------------------------
def test_only_the_trained_head_moves(qtbot, qtmodeltester, window, head_run):
    folder, saved = head_run
    tab = open_run(qtbot, window, folder)           # a folder stands for the checkpoints in it
    assert window.tabs.currentWidget() is tab and window.tabs.tabText(window.tabs.indexOf(tab)) == "Run: run"
    qtmodeltester.check(tab.layers, force_py=True)     # and again on every sort and filter below
    run = tab.run
    assert [f.label for f in run.files] == ["epoch_0.tar", "epoch_1.tar", "epoch_2.tar", "epoch_10.tar"]
    assert "ordered by the epoch recorded in each" in tab.summary.text()
    # Model tensors only: the ten parameters, no optimizer state, no loss.
    assert [tab.layers.data(tab.layers.index(r, 0)) for r in range(tab.layers.rowCount())] == \
        [f"model_state_dict / {k}" for k in saved[0]["model_state_dict"]]
    # The heatmap: log10 of the relative change; frozen layers at the "unchanged" floor, fc3 above it.
    m = tab.heatmap.matrix
    assert m.shape == (10, 4) and np.isnan(m[:, 0]).all()
    rows = {run.entries[i].key[1]: r for r, i in enumerate(tab.heatmap.rows)}
    for name in ("conv1.weight", "fc2.bias"):
        assert (m[rows[name], 1:] == -12).all()
    for name in ("fc3.weight", "fc3.bias"):
        for c, (ep0, ep1) in enumerate(((0, 1), (1, 2), (2, 10)), start=1):
            x1 = saved[ep1]["model_state_dict"][name].double()
            x0 = saved[ep0]["model_state_dict"][name].double()
            ref = ((x1 - x0).norm() / x0.norm()).item()
            assert m[rows[name], c] == pytest.approx(math.log10(ref), abs=1e-6)
    # The table sorted by the largest relative change puts the head first.
    tab.table.sortByColumn(4, Qt.SortOrder.DescendingOrder)
    top = {tab.layers.data(tab.layers.index(r, 0)) for r in range(2)}
    assert top == {"model_state_dict / fc3.weight", "model_state_dict / fc3.bias"}
    # When reading ended, the tensors that moved most were checked and plotted.
    assert set(tab.layers.checked) == {entry_index(tab, "model_state_dict", "fc3.weight"),
                                       entry_index(tab, "model_state_dict", "fc3.bias")}
    assert len(tab.line_chart.curves) == 2
    # The training chart has the recorded loss; the filter narrows the rows.
    assert tab.training_chart.plots["loss"].isVisibleTo(tab.training_chart)
    tab.filter_edit.setText("conv")
    assert tab.layers.rowCount() == 4 and tab.heatmap.matrix.shape == (4, 4)
    tab.model_box.setChecked(False)                 # plain SGD keeps no state: still the four conv tensors
    assert tab.layers.rowCount() == 4
    tab.filter_edit.setText("")
    assert tab.layers.rowCount() == len(run.entries) == 10


def test_click_and_double_click_open_the_tensor_in_its_checkpoint(qtbot, qtmodeltester, window, head_run):
    folder, saved = head_run
    tab = open_run(qtbot, window, folder)
    qtmodeltester.check(tab.files_model, force_py=True)
    model = tab.files_model
    assert [model.data(model.index(r, 1)) for r in range(4)] == ["epoch_0.tar", "epoch_1.tar", "epoch_2.tar",
                                                                  "epoch_10.tar"]
    assert model.data(model.index(3, 2)) == "10" and model.data(model.index(3, 4)) == f"{saved[10]['loss']:.4g}"
    fc3 = entry_index(tab, "model_state_dict", "fc3.weight")
    row = tab.heatmap.rows.index(fc3)
    vb_point = tab.heatmap.plot.mapFromScene(tab.heatmap.scene_point(row, 2))
    QTest.mouseClick(tab.heatmap.plot.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     vb_point)
    assert tab.current_entry == fc3 and tab.current_file == 2
    assert "at epoch_2.tar" in tab.details.text() and tab.heatmap.marker.isVisible()
    assert tab.target() == (str(folder / "epoch_2.tar"), ("model_state_dict", "fc3.weight"))
    QTest.mouseDClick(tab.heatmap.plot.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                      vb_point)
    from ckptviewer.gui.checkpoint.tab import CheckpointTab
    qtbot.waitUntil(lambda: isinstance(window.tabs.currentWidget(), CheckpointTab)
                    and window.tabs.currentWidget().is_loaded, timeout=30_000)
    ckpt_tab = window.tabs.currentWidget()
    assert ckpt_tab.path == str(folder / "epoch_2.tar")
    qtbot.waitUntil(lambda: ckpt_tab.current_node() is not None, timeout=10_000)
    assert tuple(ckpt_tab.current_node().path) == ("model_state_dict", "fc3.weight")
    # Again from the list, for a checkpoint already open: its tab comes forward with the key selected.
    window.tabs.setCurrentWidget(tab)
    tab.select(entry_index(tab, "model_state_dict", "conv1.bias"), 2)
    assert tab.open_button.isEnabled()
    tab.open_button.click()
    assert window.tabs.currentWidget() is ckpt_tab
    assert tuple(ckpt_tab.current_node().path) == ("model_state_dict", "conv1.bias")
    wait_idle(qtbot, window)


def test_stop_keeps_partial_results_and_close_cancels(qtbot, window, tmp_path, monkeypatch):
    import time

    from ckptviewer.gui.run import work as run_work
    monkeypatch.setattr(run_work, "BATCH_SECONDS", 0.0)
    real_steps = run_work.trend_steps

    def slow_steps(run, chunk_bytes):          # 50 ms per tensor: time to press Stop in the middle
        for p in real_steps(run, chunk_bytes):
            if p.entry >= 0:
                time.sleep(0.05)
            yield p

    monkeypatch.setattr(run_work, "trend_steps", slow_steps)
    folder = tmp_path / "big"
    folder.mkdir()
    torch.manual_seed(0)
    for i in range(3):
        torch.save({f"layer{k}.weight": torch.randn(256, 256) for k in range(40)}, folder / f"step_{i}.pt")
    from ckptviewer.gui.run.tab import RunTab
    tab = window.open_paths([folder], run=True)[0]
    assert isinstance(tab, RunTab)
    qtbot.waitUntil(lambda: tab.view is not None and len(tab.view.ready) >= 2, timeout=60_000)
    tab.stop_button.click()
    wait_idle(qtbot, tab)
    done = set(tab.view.ready)
    assert 2 <= len(done) < 40 and not tab.read_done and not tab.reading
    finished = [i for i, e in enumerate(tab.run.entries) if e.done]
    assert set(finished) >= done
    shown = [r for r, i in enumerate(tab.heatmap.rows) if i in done]
    assert np.isfinite(tab.heatmap.matrix[shown, 1:]).all()
    unread = [r for r, i in enumerate(tab.heatmap.rows) if i not in done]
    assert unread and all(np.isnan(tab.heatmap.matrix[r]).all() for r in unread)
    pending = next(i for i in range(40) if i not in done)
    assert tab.layers.data(tab.layers.index(tab.layers.row_of(pending), 3)) == "…"
    # Closing the tab releases the files and leaves no worker behind (the fixture checks).
    window.close_diff_tab(tab)
    assert window.runs.run_tabs() == []


def test_ways_in_drop_and_open_run_action(qtbot, window, head_run, monkeypatch):
    folder, _ = head_run
    from ckptviewer.gui.run.tab import RunTab
    files = [folder / "epoch_0.tar", folder / "epoch_1.tar"]
    # Several files dropped with Shift held: one run. The drop is a copy even when a move was proposed.
    accepted, action = drop_on(window, files, Qt.KeyboardModifier.ShiftModifier)
    assert accepted and action == Qt.DropAction.CopyAction
    tab = window.tabs.currentWidget()
    assert isinstance(tab, RunTab) and tab.title == "Run: 2 checkpoints"
    wait_read(qtbot, tab)
    # Without a modifier: a tab each, as before runs existed, and the status bar says how to get a run.
    drop_on(window, files)
    assert [t.title for t in window.checkpoint_tabs()] == ["epoch_0.tar", "epoch_1.tar"]
    assert "hold Shift while dropping" in window.status_text.text()
    drop_on(window, [folder], Qt.KeyboardModifier.ControlModifier)   # a folder, Ctrl held: a run of its files
    assert isinstance(window.tabs.currentWidget(), RunTab) and window.tabs.currentWidget().title == "Run: run"
    # File > Open Run: a folder picker; the same folder shows its open Run tab again.
    from PySide6.QtWidgets import QFileDialog
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    window.actions_by_id["file.open_run"].trigger()
    assert len(window.runs.run_tabs()) == 2
    for t in window.runs.run_tabs():
        wait_read(qtbot, t)
    for t in window.checkpoint_tabs():
        qtbot.waitUntil(lambda t=t: t.is_loaded, timeout=30_000)
    wait_idle(qtbot, window)


# -- merging ----------------------------------------------------------------------------------------------
def test_merge_dialog_preview_and_merge_from_the_run(qtbot, window, head_run, tmp_path, monkeypatch):
    folder, saved = head_run
    tab = open_run(qtbot, window, folder)
    from ckptviewer.gui.dialogs.merge import MergeDialog
    seen = {}

    def ask(parent, paths):
        dlg = MergeDialog(parent, paths)
        seen["dialog"] = dlg
        qtbot.waitUntil(lambda: not dlg.planning, timeout=30_000)
        assert "averages 10 floating-point tensors" in dlg.preview.toPlainText()
        # drop the first checkpoint, weight the last three 1, 1, 2
        dlg.inputs.remove(0)
        dlg.inputs.setData(dlg.inputs.index(2, 1), "2")
        qtbot.waitUntil(lambda: not dlg.planning, timeout=30_000)
        assert "weights 1, 1, 2" in dlg.preview.toPlainText()
        dlg.dtype_combo.setCurrentIndex(2)                   # bfloat16
        dlg.dest_edit.setText(str(tmp_path / "soup.safetensors"))
        qtbot.waitUntil(lambda: not dlg.planning and dlg.ok_button.isEnabled(), timeout=30_000)
        assert dlg.state.fmt == "safetensors"
        request = dlg.request()
        dlg.done(0)
        return request

    monkeypatch.setattr(MergeDialog, "ask", staticmethod(ask))
    with qtbot.waitSignal(window.merge_finished, timeout=60_000) as blocker:
        tab.merge_button.click()
    assert blocker.args == [str(tmp_path / "soup.safetensors")]
    from safetensors.torch import load_file
    got = load_file(tmp_path / "soup.safetensors")
    sds = [saved[ep]["model_state_dict"] for ep in (1, 2, 10)]
    for k in sds[0]:
        want = (0.25 * sds[0][k].float() + 0.25 * sds[1][k].float() + 0.5 * sds[2][k].float()).to(torch.bfloat16)
        assert torch.equal(got[k], want), k
    wait_idle(qtbot, window)


def test_merge_from_open_tabs_previews_mismatches(qtbot, window, tmp_path, monkeypatch):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"w": torch.ones(3), "only_a": torch.ones(1)}, a)
    torch.save({"w": torch.ones(4), "only_b": torch.ones(1)}, b)
    open_one(qtbot, window, a)
    open_one(qtbot, window, b)
    from ckptviewer.gui.dialogs.merge import MergeDialog
    seen = {}

    def ask(parent, paths):
        dlg = MergeDialog(parent, paths)
        qtbot.waitUntil(lambda: not dlg.planning, timeout=30_000)
        seen["paths"], seen["text"], seen["ok"] = paths, dlg.preview.toPlainText(), dlg.ok_button.isEnabled()
        seen["request"] = dlg.request()
        dlg.done(0)
        return None

    monkeypatch.setattr(MergeDialog, "ask", staticmethod(ask))
    window.actions_by_id["file.merge"].trigger()
    assert seen["paths"] == [str(a), str(b)]
    text = seen["text"]
    assert text.startswith("Cannot merge: the checkpoints do not match.")
    assert "w: shapes differ: [3] in a.pt, [4] in b.pt" in text and "only_a: only in a.pt, not in b.pt" in text
    assert not seen["ok"] and seen["request"] is None
    assert not (tmp_path / "a-merged.pt").exists()
    wait_idle(qtbot, window)


def test_merge_inputs_model_edits(qtmodeltester, qtbot, tmp_path):
    from ckptviewer.gui.dialogs.merge import MergeInputsModel
    model = MergeInputsModel([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")])
    qtmodeltester.check(model, force_py=True)       # and on every edit below
    assert not model.setData(model.index(0, 1), "heavy")
    assert model.setData(model.index(0, 1), " 0.25 ") and model.weights == [0.25, 1.0]
    model.add([str(tmp_path / "c.pt"), str(tmp_path / "a.pt")])
    assert [p.rsplit("/", 1)[-1] for p in model.paths] == ["a.pt", "b.pt", "c.pt"]
    model.set_equal()
    assert model.weights == [1.0, 1.0, 1.0]
    model.remove(1)
    assert model.rowCount() == 2 and model.data(model.index(1, 0)) == "c.pt"
    assert model.rowCount(model.index(0, 0)) == 0 and model.index(5, 0) == QModelIndex()


def test_the_tab_shows_before_its_charts_are_built_and_before_reading(qtbot, window, head_run):
    """Opening a run returns before the page of charts is built and before the worker starts (each would
    pause the window: building five plots, and building them while a worker holds the GIL); the next
    passes of the event loop build the page, then read. Closing at once leaves nothing running."""
    from ckptviewer.gui.run.tab import RunTab
    folder, _saved = head_run
    tab = window.open_paths([str(folder)], run=True)[0]
    assert isinstance(tab, RunTab)
    assert tab._page is None and not tab.runner.is_busy() and tab.has_pending_work()
    assert tab.stack.currentIndex() == 0                      # the loading page
    wait_read(qtbot, tab)
    assert tab._page is not None and tab.stack.currentWidget() is tab._page
    # A second run closed before its first event-loop pass starts nothing.
    other = window.open_paths([str(p) for p in sorted(folder.iterdir())[:2]], run=True)[0]
    window.close_diff_tab(other)
    qtbot.wait(50)
    assert not other.runner.is_busy()
