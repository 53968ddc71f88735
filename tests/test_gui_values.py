"""The Values view (heatmap, filters, lines, numbers, the paged table, exports and copies) and the Health panel
(findings, selection, tree marks, charts), driven headless with pytest-qt."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMenu

from gui_support import QT_STRICT, isolated_settings, no_workers_left, open_one, wait_idle, window  # noqa: F401

pytestmark = QT_STRICT


@pytest.fixture(scope="module")
def values_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    sd = {
        "fc.weight": torch.randn(120, 400, generator=g),
        "cube": torch.randn(4, 30, 50, generator=g).to(torch.bfloat16),
        "conv.weight": torch.randn(16, 6, 5, 5, generator=g),
        "bias": torch.randn(40, generator=g),
        "scale": torch.tensor(0.125),
        "long": torch.randn(3000, 700, generator=g),
    }
    path = tmp_path_factory.mktemp("gui_values") / "values.pt"
    torch.save({"model": sd, "step": 7}, path)
    return path, sd


def show(qtbot, tab, key: str):
    """Select ``model/key`` with the Values tab in front and wait for the final plot."""
    assert tab.show_values(f"model/{key}")
    ctl = tab.values_ctl
    qtbot.waitUntil(lambda: ctl.panel.result is not None and ctl.panel.result.final
                    and not tab.runner.is_busy("values"), timeout=30_000)
    return ctl.panel.result


def test_heatmap_is_the_tensors_plane_and_sliders_move_it(qtbot, window, values_file):
    path, sd = values_file
    tab = open_one(qtbot, window, path)
    result = show(qtbot, tab, "fc.weight")
    assert result.request.mode == "plane"
    assert np.array_equal(result.data.values, sd["fc.weight"].numpy())
    assert result.rgba.shape == (120, 400, 4) and result.shown.diverging
    lo, hi = result.shown.levels
    assert lo == -hi == -np.abs(sd["fc.weight"].numpy()).max()
    panel = tab.values_panel
    image = panel._plot["image"].image
    assert image is not None and image.shape == (120, 400, 4)
    assert "[0, 0] = " in panel.hover_text(0.5, 0.5)

    result = show(qtbot, tab, "cube")
    ref = sd["cube"].float().numpy()
    assert np.array_equal(result.data.values, ref[0]) and "bfloat16" in panel.title.text()
    assert "widened to float32" in panel.note.text()
    panel.slider(0).setValue(2)
    qtbot.waitUntil(lambda: panel.result is not None and panel.result.request.index[0] == 2
                    and panel.result.final, timeout=10_000)
    assert np.array_equal(panel.result.data.values, ref[2])
    panel.rows_box.setCurrentIndex(0)              # rows: dim 0, so dim 1 gets the slider
    qtbot.waitUntil(lambda: panel.result is not None and panel.result.request.axes == (0, 2), timeout=10_000)
    assert np.array_equal(panel.result.data.values, ref[:, 0, :])
    panel.abs_box.setChecked(True)
    qtbot.waitUntil(lambda: panel.result.request.absolute, timeout=10_000)
    assert not panel.result.shown.diverging and np.array_equal(panel.result.shown.values, np.abs(ref[:, 0, :]))
    wait_idle(qtbot, tab)


def test_big_plane_is_previewed_then_sharpened(qtbot, window, values_file):
    path, sd = values_file
    tab = open_one(qtbot, window, path)
    seen = []
    tab.values_panel.set_result = (lambda orig: (lambda r: (seen.append(r.final), orig(r))))(
        tab.values_panel.set_result)
    result = show(qtbot, tab, "long")
    assert seen[0] is False and seen[-1] is True
    assert "Preview" not in tab.values_panel.note.text()
    assert np.array_equal(result.data.values, sd["long"].numpy())


def test_filters_lines_and_numbers(qtbot, window, values_file):
    path, sd = values_file
    tab = open_one(qtbot, window, path)
    result = show(qtbot, tab, "conv.weight")
    assert result.request.mode == "grid" and result.data.count == 16
    o, i, j = result.data.cell_at(6 + 2, 6 * 1 + 3)
    assert result.data.values[8, 9] == sd["conv.weight"][o, 0, i, j].item()
    panel = tab.values_panel
    panel.slider(1).setValue(4)                        # the input channel
    qtbot.waitUntil(lambda: panel.result.request.in_channel == 4 and panel.result.final, timeout=10_000)
    assert panel.result.data.values[0, 0] == sd["conv.weight"][0, 4, 0, 0].item()
    panel.filters_box.setChecked(False)                # the plain plane view of the same weight, same channel
    qtbot.waitUntil(lambda: panel.result.request.mode == "plane", timeout=10_000)
    assert np.array_equal(panel.result.data.values, sd["conv.weight"][0, 4].numpy())

    result = show(qtbot, tab, "bias")
    assert result.request.mode == "line" and np.array_equal(result.data.low, sd["bias"].numpy())
    result = show(qtbot, tab, "scale")
    assert result.request.mode == "scalar" and "0.125" in panel.number.text()
    wait_idle(qtbot, tab)


def test_nothing_is_read_while_the_values_tab_is_hidden(qtbot, window, values_file):
    path, _ = values_file
    tab = open_one(qtbot, window, path)
    wait_idle(qtbot, tab)
    tab.side_tabs.setCurrentWidget(tab.v_split)        # Details in front
    from ckptviewer.gui.checkpoint.tree_model import find_node
    tab.select_node(find_node(tab.tree_root, ("model", "long"), "tensor"))
    assert not tab.runner.is_busy("values") and tab.values_panel.result is None
    tab.side_tabs.setCurrentWidget(tab.values_panel)
    qtbot.waitUntil(lambda: tab.values_panel.result is not None and tab.values_panel.result.final, timeout=30_000)
    wait_idle(qtbot, tab)


def test_value_table_pages_and_copies(qtbot, qtmodeltester, window, values_file):
    path, sd = values_file
    tab = open_one(qtbot, window, path)
    show(qtbot, tab, "long")
    table = tab.values_panel.table
    model = table.model
    assert (model.layout_.rows, model.layout_.columns) == (3000, 700)
    assert model.rowCount() == 1000 and model.columnCount() == 700
    assert model.data(model.index(5, 3)) == "…"         # asked for, read in a worker
    qtbot.waitUntil(lambda: model.value_at(5, 3) is not None, timeout=10_000)
    ref = sd["long"].numpy()
    assert model.value_at(5, 3) == ref[5, 3]
    assert model.data(model.index(5, 3)) == f"{float(ref[5, 3]):.6g}"
    table._step(1)                                     # the second page of rows
    assert model.page_row == 1000 and "rows 1,001–2,000 of 3,000" in table.page_label.text()
    assert model.headerData(0, Qt.Orientation.Vertical) == "[1000, :]"
    assert table.go_to((2999, 699))
    model.data(model.index(999, 699))                  # as the view's next paint would
    qtbot.waitUntil(lambda: model.value_at(999, 699) is not None, timeout=10_000)
    sel = table.view.selectionModel()
    sel.clearSelection()
    for c in (698, 699):
        sel.select(model.index(999, c), QItemSelectionModel.SelectionFlag.Select)
    text = table.copy_selection()
    assert text == str(ref[2999, 698]) + "\t" + str(ref[2999, 699])      # shortest exact float32 text
    assert np.float32(text.split("\t")[1]) == ref[2999, 699]
    assert QGuiApplication.clipboard().text() == text
    table.goto.setText("5")                           # a flat index
    table._on_goto()
    assert model.page_row == 0 and table.view.currentIndex().column() == 5
    show(qtbot, tab, "cube")                           # a small table for the model tester (it reads every cell)
    assert model.layout_.rows == 4 * 30 and model.headerData(31, Qt.Orientation.Vertical) == "[1, 1, :]"
    qtmodeltester.check(model, force_py=True)
    wait_idle(qtbot, tab)


def test_export_and_copy_from_the_context_menu(qtbot, window, values_file, tmp_path):
    path, sd = values_file
    tab = open_one(qtbot, window, path)
    from ckptviewer.gui.checkpoint.tree_model import find_node
    node = find_node(tab.tree_root, ("model", "cube"), "tensor")
    menu = QMenu()
    tab.values_ctl.add_actions(menu, node)
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts == ["Export Values…", "Copy as NumPy", "Copy as CSV"]
    assert not menu.actions()[-1].isEnabled()          # CSV holds two dimensions or less
    out = tmp_path / "cube.npy"
    tab.values_ctl.export_values(node, str(out))
    qtbot.waitUntil(lambda: tab.values_ctl.last_export is not None, timeout=10_000)
    assert np.array_equal(np.load(out), sd["cube"].float().numpy())
    tab.values_ctl.last_export = None
    tab.values_ctl.copy_values(find_node(tab.tree_root, ("model", "bias"), "tensor"), "csv")
    qtbot.waitUntil(lambda: tab.values_ctl.last_export is not None, timeout=10_000)
    back = np.array([np.float32(x) for x in QGuiApplication.clipboard().text().split()])
    assert np.array_equal(back, sd["bias"].numpy())
    wait_idle(qtbot, tab)


@pytest.fixture(scope="module")
def sick_file(tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    sd = {}
    for i in range(6):
        sd[f"layers.{i}.fc.weight"] = torch.randn(32, 16, generator=g)
        sd[f"layers.{i}.fc.bias"] = torch.zeros(32)
    sd["layers.2.fc.weight"][3, 4] = float("nan")
    sd["head.weight"] = torch.zeros(4, 32)
    path = tmp_path_factory.mktemp("gui_health") / "sick.pt"
    torch.save({"model": sd}, path)
    return path


def test_health_panel_lists_findings_selects_and_marks(qtbot, qtmodeltester, window, sick_file):
    tab = open_one(qtbot, window, sick_file)
    window.actions_by_id["checkpoint.health"].trigger()
    ctl = tab.health_ctl
    qtbot.waitUntil(lambda: ctl.report is not None, timeout=30_000)
    panel = tab.health_panel
    model = panel.model
    qtmodeltester.check(model, force_py=True)
    rows = [(model.data(model.index(r, 0)), model.data(model.index(r, 1)), model.data(model.index(r, 2)))
            for r in range(model.rowCount())]
    assert rows[0] == ("error", "nan", "model / layers.2.fc.weight")
    assert ("warning", "all_zero", "model / head.weight") in rows
    panel.view.clicked.emit(model.index(1, 2))          # the all-zero head
    assert tab.current_node().path == ("model", "head.weight")
    node = tab.current_node()
    tree = tab.model
    mark = tree.health_mark(node)
    assert mark is not None and mark[0] == "warning"
    idx = tree.index_for_node(node, 0)
    assert tree.data(idx, Qt.ItemDataRole.BackgroundRole) is not None
    assert "all zero" in tree.data(tree.index_for_node(node, 7))
    panel.filter_box.setCurrentIndex(2)                 # errors only
    assert model.rowCount() == 1
    norms, stds = panel.layer_chart.values()
    ref = torch.load(sick_file, weights_only=True)["model"]
    assert norms[0] == pytest.approx(ref["layers.0.fc.weight"].norm().item(), rel=1e-6)
    assert [s.name for s in panel.breakdown_chart.shown()] == ["model/layers", "model/head"]
    panel.layer_chart.tensor_clicked.emit(("model", "layers.0.fc.weight"))
    assert tab.current_node().path == ("model", "layers.0.fc.weight")
    wait_idle(qtbot, tab)


def test_edits_make_the_check_stale_and_clear_the_marks(qtbot, window, sick_file, monkeypatch):
    from ckptviewer.core.edit.ops import Drop
    from ckptviewer.gui.dialogs import common
    monkeypatch.setattr(common, "confirm", lambda *_args: True)      # closing with unexported edits: discard
    tab = open_one(qtbot, window, sick_file)
    tab.show_health()
    qtbot.waitUntil(lambda: tab.health_ctl.report is not None, timeout=30_000)
    tab.apply_steps(Drop(("model/head.weight",)))
    qtbot.waitUntil(lambda: tab.is_edited and not tab.has_pending_work(), timeout=30_000)
    assert "edited" in tab.health_panel.summary.text()
    assert not tab.model._health


def test_select_on_the_command_line_with_a_screenshot(tmp_path, values_file):
    path, _ = values_file
    out = tmp_path / "shot.png"
    env_cmd = [sys.executable, "-m", "ckptviewer", "--screenshot", str(out), str(path), "--select", "model/cube"]
    r = subprocess.run(env_cmd, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 10_000
    r = subprocess.run(env_cmd[:-1] + ["model/nope"], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0 and "no entry 'nope'" in r.stderr
