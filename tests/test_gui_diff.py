"""The diff tab driven end to end: identical files, a fine-tuned head singled out in the tree and the
chart, DataParallel vs plain with strip prefix, a scalar old -> new, the overlaid histograms' counts,
rows filling in while comparing, cancel on close, and the compare-with drop zone and menu action."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PySide6.QtCore import QMimeData, QModelIndex, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QToolButton

from gui_support import QT_STRICT, isolated_settings, no_workers_left, open_one, wait_idle, window  # noqa: F401
from models import Net

pytestmark = QT_STRICT


# -- helpers ----------------------------------------------------------------------------------------------
def wait_compared(qtbot, tab, timeout: int = 60_000):
    qtbot.waitUntil(lambda: tab.error is not None or (tab.compare_done and not tab.has_pending_work()),
                    timeout=timeout)
    assert tab.error is None, tab.error.details
    return tab


def open_diff(qtbot, window, a, b, **options):
    from ckptviewer.gui.diff.work import DiffSetup
    import os
    setup = DiffSetup(os.path.abspath(a), os.path.abspath(b), **options)
    tab = window.open_diff(setup.path_a, setup.path_b, setup)
    return wait_compared(qtbot, tab)


def leaves_shown(tab):
    """(key path, status) of every leaf the view exposes (fetching everything)."""
    model = tab.view.model()
    out = []
    stack = [QModelIndex()]
    while stack:
        parent = stack.pop()
        model.fetch_all(parent)
        for r in range(model.rowCount(parent)):
            idx = model.index(r, 0, parent)
            node = model.node_from_index(idx)
            if node.entry is not None:
                out.append((tuple(node.entry.path), node.status))
            else:
                stack.append(idx)
    return sorted(out, key=str)


def drop_on(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return enter.isAccepted(), drop.isAccepted()


@pytest.fixture
def fine_tune(tmp_path):
    """base.pt and tuned.pt: the same Net, with only the head (fc3) trained."""
    torch.manual_seed(0)
    model = Net()
    torch.save(model.state_dict(), tmp_path / "base.pt")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.fc3.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(list(model.fc3.parameters()), lr=0.5)
    opt.zero_grad()
    model(torch.randn(4, 3, 32, 32)).square().mean().backward()
    opt.step()
    torch.save(model.state_dict(), tmp_path / "tuned.pt")
    return tmp_path / "base.pt", tmp_path / "tuned.pt"


# -- tests ------------------------------------------------------------------------------------------------
def test_identical_files(qtbot, window, ckpts, tmp_path):
    copy = tmp_path / "copy.tar"
    shutil.copyfile(ckpts["checkpoint.tar"], copy)
    tab = open_diff(qtbot, window, ckpts["checkpoint.tar"], copy)
    run = tab.session.run
    assert run.equal
    counts = run.counts()
    assert counts["same"] == len(run.entries) and counts["pending"] == 0
    assert tab.verdict.text() == "Identical:"
    assert tab.count_labels["same"].text() == f"● {counts['same']} identical"
    assert tab.count_labels["changed"].isHidden()
    assert window.tabs.currentWidget() is tab and window.tabs.tabText(window.tabs.indexOf(tab)) == "checkpoint.tar ⇄ copy.tar"
    tab.diff_only_box.setChecked(True)
    assert tab.view.model().rowCount() == 0
    assert np.all(tab.chart.heights() == 0)


def test_fine_tuned_head_is_singled_out_in_tree_chart_and_histograms(qtbot, qtmodeltester, window, fine_tune):
    base, tuned = fine_tune
    tab = open_diff(qtbot, window, base, tuned)
    qtmodeltester.check(tab.model, force_py=True)
    assert tab.verdict.text() == "Different:"
    assert tab.count_labels["changed"].text() == "● 2 tensors changed"
    tab.diff_only_box.setChecked(True)
    assert leaves_shown(tab) == [(("fc3.bias",), "changed"), (("fc3.weight",), "changed")]
    # the model's rows carry the status text and the metrics
    model = tab.view.model()
    fc3 = model.index(0, 0)
    assert model.data(fc3) == "fc3" and "2 of 2 differ" in model.data(model.index(0, 1))
    # the chart: bars only where fc3 is, in key order; heights from the core
    keys, heights = tab.chart.keys(), tab.chart.heights()
    assert keys == [k for k, _ in tab.session.run.layer_changes()]
    nonzero = [k for k, h in zip(keys, heights) if h > 0]
    assert nonzero == ["fc3.weight", "fc3.bias"]
    assert dict(zip(keys, heights)) == dict(tab.session.run.layer_changes())
    # click the fc3.weight column with the mouse: the tree selects that key
    tab.diff_only_box.setChecked(False)
    x = keys.index("fc3.weight")
    point = tab.chart.view_point(x, heights[x] / 2)
    QTest.mouseClick(tab.chart.plot.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)
    node = tab.current_node()
    assert node is not None and node.entry.path == ("fc3.weight",)
    assert tab.chart.cursor.isVisible() and tab.chart.cursor.value() == x
    assert "relative change" in tab.headline.text().lower()
    assert any(line.startswith("cosine similarity") for line in tab.details.toPlainText().splitlines())
    # the histograms: A and B over common bins, and A - B, counted right
    qtbot.waitUntil(lambda: tab.last_pair is not None and tab.last_pair.exact and not tab.has_pending_work(),
                    timeout=20_000)
    pair = tab.last_pair
    a = torch.load(base, weights_only=True)["fc3.weight"].double().numpy().ravel()
    b = torch.load(tuned, weights_only=True)["fc3.weight"].double().numpy().ravel()
    assert np.array_equal(pair.a.edges, pair.b.edges)
    assert pair.a.edges[0] == min(a.min(), b.min()) and pair.a.edges[-1] == max(a.max(), b.max())
    assert np.array_equal(pair.a.counts, np.histogram(a, bins=pair.a.edges)[0])
    assert np.array_equal(pair.b.counts, np.histogram(b, bins=pair.b.edges)[0])
    d = a.astype(np.float32).astype(np.float64) - b.astype(np.float32).astype(np.float64)
    assert np.array_equal(pair.diff.counts, np.histogram(d, bins=pair.diff.edges)[0])
    assert pair.a.counts.sum() == pair.b.counts.sum() == pair.diff.counts.sum() == a.size
    shown = tab.histograms.plotted_counts()
    assert np.array_equal(shown["a"], pair.a.counts) and np.array_equal(shown["diff"], pair.diff.counts)
    assert tab.histograms.diff_plot.isVisibleTo(tab.histograms)
    # a frozen layer: identical, a grey mark and no bar
    assert tab.select_path(("conv1.weight",))
    assert tab.current_node().status == "same" and "Identical" in tab.headline.text()
    wait_idle(qtbot, tab)


def test_dataparallel_against_plain_with_select_and_strip(qtbot, window, ckpts):
    tab = open_diff(qtbot, window, ckpts["dataparallel_checkpoint.pth"], ckpts["checkpoint.tar"])
    assert not tab.session.run.equal
    # choose the parts with the option widgets, without the strip first
    tab.select_a.setText("net")
    tab.select_b.setText("model_state_dict")
    tab.compare_button.click()
    qtbot.waitUntil(lambda: tab.session.setup.select_a == "net" and tab.compare_done and not tab.has_pending_work(),
                    timeout=30_000)
    # keys that differ only by DataParallel's module. are lined up by themselves, and the tab says so
    assert tab.session.run.equal and not tab.count_labels["only_a"].isVisibleTo(tab)
    assert tab.hint_label.isVisibleTo(tab) and "stripped 'module.'" in tab.hint_label.text()
    tab.strip_box.setChecked(True)
    tab.compare_button.click()
    qtbot.waitUntil(lambda: tab.session.setup.strip_prefix and tab.compare_done and not tab.has_pending_work(),
                    timeout=30_000)
    assert tab.session.run.equal and tab.verdict.text() == "Identical:"
    assert tab.session.ckpt_a is not None and tab.error is None


def test_training_checkpoint_against_plain_weights_with_model_weights_only(qtbot, window, fine_tune, tmp_path):
    base, tuned = fine_tune
    ckpt = tmp_path / "train.tar"
    torch.save({"epoch": 4, "model_state_dict": torch.load(tuned, weights_only=True), "loss": 0.5}, ckpt)
    tab = open_diff(qtbot, window, base, ckpt)
    # a bare state_dict against a checkpoint holding exactly one: those two are compared, and it says so
    assert tab.hint_label.isVisibleTo(tab)
    assert "holds exactly one (model_state_dict): comparing those" in tab.hint_label.text()
    counts = tab.session.run.counts()
    assert counts["changed"] == 2 and counts["same"] == 8 and counts["only_b"] == 0
    tab.model_box.setChecked(True)
    tab.compare_button.click()
    qtbot.waitUntil(lambda: tab.session.setup.model_only and tab.compare_done and not tab.has_pending_work(),
                    timeout=30_000)
    assert not tab.hint_label.isVisibleTo(tab) and not tab.chart.empty.isVisible()
    counts = tab.session.run.counts()
    assert counts["changed"] == 2 and counts["same"] == 8 and counts["only_b"] == 0


def test_scalar_old_to_new_and_tolerances(qtbot, window, tmp_path):
    torch.manual_seed(0)
    w = torch.randn(4, 4)
    torch.save({"epoch": 3, "lr": 0.1, "w": w}, tmp_path / "a.pt")
    torch.save({"epoch": 7, "lr": 0.1, "w": w + 1e-6, "extra": torch.ones(2)}, tmp_path / "b.pt")
    tab = open_diff(qtbot, window, tmp_path / "a.pt", tmp_path / "b.pt")
    assert tab.select_path(("epoch",))
    assert tab.headline.text() == "3 → 7"
    tab.findChild(QToolButton, "swap").click()            # B against A
    qtbot.waitUntil(lambda: tab.session.setup.path_a.endswith("b.pt") and tab.compare_done
                    and not tab.has_pending_work(), timeout=30_000)
    assert tab.select_path(("epoch",)) and tab.headline.text() == "7 → 3"
    assert tab.session.run.entry(("extra",)).status == "only_a"
    tab.findChild(QToolButton, "swap").click()
    qtbot.waitUntil(lambda: tab.session.setup.path_a.endswith("a.pt") and tab.compare_done
                    and not tab.has_pending_work(), timeout=30_000)
    assert tab.select_path(("epoch",))
    assert "Histograms are drawn for tensors." in tab.histograms.note.text()
    assert tab.select_path(("lr",)) and "unchanged" in tab.headline.text()
    assert tab.select_path(("extra",)) and tab.headline.text().startswith("Only in B")
    w_status = tab.session.run.entry(("w",)).status
    assert w_status == "changed"
    assert "not close" in tab.details.toPlainText() or tab.select_path(("w",))
    # with a looser tolerance nothing is "not close", but the bytes still differ
    tab.atol_edit.setText("1e-3")
    tab.compare_button.click()
    qtbot.waitUntil(lambda: tab.session.setup.atol == 1e-3 and tab.compare_done and not tab.has_pending_work(),
                    timeout=30_000)
    e = tab.session.run.entry(("w",))
    assert e.status == "changed" and e.metrics.not_close == 0
    tab.atol_edit.setText("lots")
    tab.compare_button.click()
    assert "must be numbers" in tab.error_label.text()
    wait_idle(qtbot, tab)


@pytest.fixture
def many_tensors(tmp_path):
    torch.manual_seed(0)
    a = {f"layer{i}.weight": torch.randn(64, 64) for i in range(40)}
    b = {k: (v + 0.01 if i % 3 == 0 else v.clone()) for i, (k, v) in enumerate(a.items())}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    return tmp_path / "a.pt", tmp_path / "b.pt"


def test_rows_fill_in_while_comparing_and_the_tab_stays_usable(qtbot, window, many_tensors, monkeypatch):
    from ckptviewer.gui.diff import work as diff_work
    from ckptviewer.gui.diff.work import DiffSetup

    monkeypatch.setattr(diff_work, "BATCH_SECONDS", 0.0)
    a, b = many_tensors
    seen = []
    tab = window.open_diff(str(a), str(b), DiffSetup(str(a), str(b), chunk_bytes=1024))

    def on_batch(batch):
        root = tab.session.root
        seen.append((root.n_pending, root.n_leaves, len(batch.finished)))
        if len(seen) == 3:          # mid-way: the tree answers and a compared row shows its result
            tab.diff_only_box.setChecked(True)
            seen.append(("diff-only rows", tab.view.model().rowCount()))
            tab.diff_only_box.setChecked(False)
            assert tab.select_path(("layer0.weight",))
            seen.append(("selected", tab.current_node().status))

    tab.compare_progressed.connect(on_batch)
    wait_compared(qtbot, tab)
    progress = [s for s in seen if isinstance(s[0], int)]
    assert any(0 < pending < total for pending, total, _ in progress), seen
    assert progress[-1][0] == 0 or tab.session.root.n_pending == 0
    assert 0 < dict(s for s in seen if not isinstance(s[0], int))["diff-only rows"] < 40
    # the differences-only view grew as differences were found; at the end it holds exactly them
    tab.diff_only_box.setChecked(True)
    assert [k for (k,), _ in leaves_shown(tab)] == sorted(f"layer{i}.weight" for i in range(0, 40, 3))
    assert tab.session.run.counts()["changed"] == 14


def test_differences_only_rows_are_inserted_in_key_order_while_comparing(qtbot, qtmodeltester, window,
                                                                        many_tensors, monkeypatch):
    from ckptviewer.gui.diff import work as diff_work
    from ckptviewer.gui.diff.work import DiffSetup

    monkeypatch.setattr(diff_work, "BATCH_SECONDS", 0.0)
    a, b = many_tensors
    tab = window.open_diff(str(a), str(b), DiffSetup(str(a), str(b), chunk_bytes=1024))
    qtbot.waitUntil(lambda: tab.model is not None, timeout=20_000)
    tab.diff_only_box.setChecked(True)
    qtmodeltester.check(tab.model, force_py=True)     # and again on every insert while comparing
    wait_compared(qtbot, tab)
    names = [tab.model.data(tab.model.index(r, 0)) for r in range(tab.model.rowCount())]
    assert names == [f"layer{i}" for i in range(0, 40, 3)]


def test_closing_the_tab_cancels_the_comparison(qtbot, window, tmp_path, monkeypatch):
    from ckptviewer.gui.diff import work as diff_work
    from ckptviewer.gui.diff.work import DiffSetup

    from ckptviewer.gui.diff import tab as diff_tab_module
    import threading

    monkeypatch.setattr(diff_work, "BATCH_SECONDS", 0.0)
    # The worker does not wait for the GUI, so without a gate it may finish all 40 pairs before the
    # first batch reaches the GUI thread. Hold it after its first batch until the tab is closed.
    released = threading.Event()

    def gated_compare_steps(run, interval=None):
        gen = diff_work.compare_steps(run, interval)
        first = True
        try:
            while True:
                batch = next(gen)
                yield batch
                if first and batch is not None and batch.finished:
                    first = False
                    released.wait(20)
        except StopIteration as stop:
            return stop.value

    monkeypatch.setattr(diff_tab_module, "compare_steps", gated_compare_steps)
    torch.manual_seed(0)
    a = {f"w{i}": torch.randn(256, 256) for i in range(40)}
    torch.save(a, tmp_path / "a.pt")
    torch.save({k: v + 1 for k, v in a.items()}, tmp_path / "b.pt")
    pa, pb = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    tab = window.open_diff(pa, pb, DiffSetup(pa, pb, chunk_bytes=1024))
    closed = []

    def close_on_first_batch(batch):
        if batch.finished and not closed:
            closed.append([t.worker for t in tab.runner._tasks.values()])
            window.tabs.tabCloseRequested.emit(window.tabs.indexOf(tab))
            released.set()

    tab.compare_progressed.connect(close_on_first_batch)
    qtbot.waitUntil(lambda: bool(closed), timeout=20_000)
    run = tab.session.run
    assert window.diff_tabs() == [] and window.tabs.count() == 0
    workers = closed[0]
    assert workers and all(w.is_cancelled for w in workers)
    qtbot.waitUntil(lambda: all(w.wait(0) for w in workers), timeout=10_000)
    assert run.counts()["pending"] > 0         # it stopped before the end


def test_compare_with_zone_of_a_tab_takes_a_real_drop(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    entered, dropped = drop_on(tab.compare_zone, [ckpts["gpu1_checkpoint.tar"]])
    assert entered and dropped
    diffs = window.diff_tabs()
    assert len(diffs) == 1 and window.tabs.currentWidget() is diffs[0]
    diff = wait_compared(qtbot, diffs[0])
    assert diff.setup.path_a == str(ckpts["checkpoint.tar"]) and diff.setup.path_b == str(ckpts["gpu1_checkpoint.tar"])
    # same values, saved on another device: identical, and the device change is said
    assert diff.session.run.equal
    assert diff.select_path(("model_state_dict", "conv1.weight"))
    assert "cpu -> cuda:1" in diff.headline.text()
    # a drag without files is refused by the zone
    mime = QMimeData()
    mime.setText("text")
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(tab.compare_zone, enter)
    assert not enter.isAccepted()
    wait_idle(qtbot, window)


def test_compare_action_asks_for_the_other_file(qtbot, window, ckpts, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QFileDialog
    from safetensors.torch import save_file

    same = tmp_path / "same.safetensors"
    save_file(torch.load(ckpts["state_dict.pt"], weights_only=True), same)
    tab = open_one(qtbot, window, ckpts["state_dict.pt"])
    asked = []

    def fake_open(parent, title, start, filters):
        asked.append(title)
        return str(same), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", fake_open)
    window.actions_by_id["file.compare"].trigger()
    assert asked == ["Compare state_dict.pt with…"]
    diff = wait_compared(qtbot, window.diff_tabs()[0])
    assert diff.session.run.equal            # a .pt against a .safetensors of the same weights
    assert window.actions_by_id["file.close_tab"].isEnabled()
    window.actions_by_id["file.close_tab"].trigger()
    assert window.diff_tabs() == [] and window.current_tab() is tab


def test_bad_select_path_is_reported_in_the_tab(qtbot, window, ckpts):
    from ckptviewer.gui.diff.work import DiffSetup
    import os

    a, b = os.path.abspath(ckpts["checkpoint.tar"]), os.path.abspath(ckpts["state_dict.pt"])
    tab = window.open_diff(a, b, DiffSetup(a, b, select_a="no_such_key"))
    qtbot.waitUntil(lambda: tab.error is not None, timeout=20_000)
    assert "no_such_key" in tab.error_label.text() and tab.error_label.isVisibleTo(tab)
    tab.select_a.setText("model_state_dict")
    tab.compare_button.click()
    wait_compared(qtbot, tab)
    counts = tab.session.run.counts()        # the same keys; training moved every weight
    assert counts["changed"] == 10 and counts["only_a"] == counts["only_b"] == 0
    assert not tab.error_label.isVisibleTo(tab)


def _shot(tmp_path, scene, *files):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CKPTVIEWER_SCREENSHOT_SCENE=scene,
               CKPTVIEWER_SETTINGS=str(tmp_path / "s.ini"))
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / f"{scene}.png"
    proc = subprocess.run([sys.executable, "-m", "ckptviewer", "--screenshot", str(out), *map(str, files)],
                          env=env, capture_output=True, timeout=180)
    return proc, out


def test_screenshot_scene_shows_a_diff(fine_tune, tmp_path):
    proc, out = _shot(tmp_path, "diff", *fine_tune)
    assert proc.returncode == 0, proc.stderr.decode()
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    proc, _ = _shot(tmp_path, "nonsense", *fine_tune)
    assert proc.returncode == 2 and b"unknown screenshot scene" in proc.stderr


def test_compare_action_without_a_tab_asks_for_both_files(qtbot, window, ckpts, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    answers = [str(ckpts["checkpoint.tar"]), str(ckpts["checkpoint_legacy.tar"])]
    titles = []

    def fake_open(parent, title, start, filters):
        titles.append(title)
        return answers.pop(0), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", fake_open)
    assert window.current_tab() is None
    window.actions_by_id["file.compare"].trigger()
    assert [t.split(":")[0] for t in titles] == ["Compare", "Compare"] and "(A)" in titles[0] and "(B)" in titles[1]
    diff = wait_compared(qtbot, window.diff_tabs()[0])
    assert diff.session.run.equal             # a zip file against a legacy one with the same contents
    assert window.windowTitle().startswith("checkpoint.tar ⇄ checkpoint_legacy.tar")


def test_closing_a_diff_tab_hands_its_frozen_objects_back_to_the_collector(qtbot, window, ckpts):
    """Preparing a diff freezes what it built (loading.gc_paused); closing the tab must unfreeze, or the
    reference cycles of every closed comparison would stay in memory for good."""
    import gc
    tab = open_diff(qtbot, window, ckpts["checkpoint.tar"], ckpts["checkpoint.tar"])
    assert gc.get_freeze_count() > 0
    window.close_diff_tab(tab)
    assert gc.get_freeze_count() == 0 and window.diff_tabs() == []
