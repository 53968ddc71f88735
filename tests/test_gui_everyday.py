"""The window's side of issue 19: values of small tensors, missing bytes, folders, the warm-start fit,
diff labels and the export file name."""
from __future__ import annotations

import os
import re

import pytest
import torch

from gui_support import (QT_STRICT, isolated_settings, load_now, no_workers_left, open_one,  # noqa: F401
                         wait_idle, wait_loaded, window)

pytestmark = QT_STRICT

SHOTS = os.environ.get("CKPTVIEWER_TEST_SHOTS")     # a folder: save what the tests look at, to look at it too


def _shot(widget, name):
    if SHOTS:
        widget.grab().save(os.path.join(SHOTS, name))


def _cell(tab, node, column):
    model = tab.model
    return model.data(model.index_for_node(node, column))


def test_a_counter_shows_its_value_not_statistics(qtbot, window, ckpts):
    from ckptviewer.gui.checkpoint.small_values import SINGLE_VALUE
    from ckptviewer.gui.checkpoint.tree_model import COL_VALUE, PENDING, find_node
    tab = open_one(qtbot, window, ckpts["bn_checkpoint.pt"])
    expected = int(ckpts.objects["bn_checkpoint.pt"]["model"]["features.1.num_batches_tracked"])
    assert tab.select_path(("model", "features.1.num_batches_tracked"))
    wait_idle(qtbot, tab)
    facts = tab.details.facts
    assert facts["Value"] == str(expected)
    assert "stat:min" not in facts and not tab.details.stat_labels           # no min/max/mean
    assert tab.histogram.histogram is None and tab.histogram.note.text() == SINGLE_VALUE
    node = tab.current_node()
    qtbot.waitUntil(lambda: _cell(tab, node, COL_VALUE) not in (None, PENDING), timeout=10_000)
    assert _cell(tab, node, COL_VALUE) == str(expected)
    # a small tensor of several values: its values, and its statistics as before
    assert tab.select_path(("model", "head.bias"))
    wait_idle(qtbot, tab)
    bias = ckpts.objects["bn_checkpoint.pt"]["model"]["head.bias"]
    assert tab.details.facts["Value"].startswith("[") and tab.details.facts["Value"].count(",") == bias.numel() - 1
    assert "stat:min" in tab.details.facts
    # the Value column of an optimizer's step counter, read in the background when its row is painted
    step = find_node(tab.model.root, ("optimizer", "state", 0, "step"))
    tab.view.expand(tab.view_index(step.parent.parent))
    tab.view.expand(tab.view_index(step.parent))
    _cell(tab, step, COL_VALUE)
    qtbot.waitUntil(lambda: _cell(tab, step, COL_VALUE) not in (None, PENDING), timeout=10_000)
    assert _cell(tab, step, COL_VALUE) == "2.0"
    wait_idle(qtbot, tab)
    _shot(window, "counter.png")


def test_a_truncated_file_says_so_above_everything(qtbot, window, ckpts, tmp_path):
    from ckptviewer.gui.panels.safety_report import CLEAN
    raw = ckpts["state_dict_legacy.pt"].read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) // 3])
    tab = open_one(qtbot, window, cut)
    wait_idle(qtbot, tab)
    banner = tab.summary.labels["missing"]
    assert banner.isVisibleTo(tab) and banner.text().startswith("⚠ Truncated: ")
    # legacy files order storages by memory address at save time, so how many a cut loses varies from file to file
    assert re.search(r"\b[1-9]\d* of 10 tensors? (has|have) no bytes", banner.text()), banner.text()
    assert "download or copy the file again" in banner.text()
    layout = tab.summary.layout()
    assert layout.indexOf(banner) < layout.indexOf(tab.summary.labels["roles"])      # said first
    assert tab.file.safety.level != CLEAN           # not a green "clean" over missing bytes
    _shot(window, "truncated.png")
    whole = open_one(qtbot, window, ckpts["state_dict_legacy.pt"])
    assert "missing" not in whole.summary.labels


def test_dropping_a_folder_opens_each_checkpoint_in_it(qtbot, window, ckpts, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    for name in ("a.pt", "b.pth"):
        (folder / name).write_bytes(ckpts["state_dict.pt"].read_bytes())
    (folder / "readme.txt").write_text("notes")
    assert window.open_paths([folder]) == []          # the folder is looked into by a worker
    qtbot.waitUntil(lambda: len(window.checkpoint_tabs()) == 2, timeout=20_000)
    for tab in window.checkpoint_tabs():
        wait_loaded(qtbot, tab)
    assert sorted(os.path.basename(t.path) for t in window.checkpoint_tabs()) == ["a.pt", "b.pth"]
    wait_idle(qtbot, window)


def test_warm_start_dialog_opens_on_the_problems_and_fits(qtbot, window, ckpts, tmp_path):
    from ckptviewer.core.edit.ops import Drop, Rename
    from ckptviewer.gui.dialogs import WarmStartDialog

    target_sd = dict(ckpts.objects["state_dict.pt"])
    target_sd["fc3.weight"] = torch.zeros(5, 84)          # a new classifier head
    target_sd["fc3.bias"] = torch.zeros(5)
    target = tmp_path / "target.pt"
    torch.save(target_sd, target)
    tab = open_one(qtbot, window, ckpts["dataparallel.pt"])
    dlg = WarmStartDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    dlg.open_target(str(target))
    qtbot.waitUntil(lambda: dlg.state.report is not None, timeout=10_000)
    assert dlg.lists.currentWidget() is dlg.missing_list            # opens on the problems
    assert dlg.fit_button.isEnabled()
    dlg.fit_button.click()
    rep = dlg.state.report
    assert rep.unexpected_keys == [] and rep.shape_mismatches == [] and len(rep.matched) == 8
    assert rep.missing_keys == ["fc3.weight", "fc3.bias"]
    assert dlg.ok_button.isEnabled() and "2 keys dropped" in dlg.ok_button.text()
    steps = dlg.steps()
    assert steps[0] == Rename((("remove_prefix", "module."),), None)
    assert isinstance(steps[-1], Drop) and steps[-1].paths == ("fc3.weight", "fc3.bias")
    _shot(dlg, "warm_start_fit.png")
    dlg.take_back_button.click()                      # the drops first
    assert dlg.state.dropped == [] and len(dlg.state.report.shape_mismatches) == 2
    dlg.reject()


def test_diff_tab_names_optimizer_state_by_parameter(qtbot, window, tmp_path):
    from ckptviewer.gui.diff.model import COL_A, COL_B
    from models import BNNet
    torch.manual_seed(0)
    model = BNNet()
    opt = torch.optim.Adam(model.parameters())
    for n, name in ((6, "a.pt"), (9, "b.pt")):
        for _ in range(n):
            opt.zero_grad()
            model(torch.randn(2, 3, 8, 8)).square().mean().backward()
            opt.step()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / name)
    window.open_diff(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    tab = window.tabs.currentWidget()
    qtbot.waitUntil(lambda: tab.session is not None and tab.compare_done and not tab.has_pending_work(),
                    timeout=30_000)
    names = []
    stack = [tab.session.root]
    while stack:
        n = stack.pop()
        names.append(n.name)
        stack.extend(n.children)
    assert "0 (features.0.weight, inferred)" in names
    leaf = next(lf for lf in tab.session.leaves if lf.entry.path == ("model", "features.1.num_batches_tracked"))
    assert tab.model.cell_text(leaf, COL_A) == "6" and tab.model.cell_text(leaf, COL_B) == "15"


def test_export_dialog_default_name_follows_the_format(qtbot, window, ckpts, tmp_path):
    from ckptviewer.core.model.interpret import analyze
    from ckptviewer.gui.dialogs.export import ExportDialog
    src = tmp_path / "run.pth.tar"
    src.write_bytes(ckpts["checkpoint.tar"].read_bytes())
    f = load_now(src)
    try:
        dlg = ExportDialog(window, str(src), f.checkpoint.root, analyze(f.checkpoint.root))
        qtbot.addWidget(dlg)
        assert dlg.state.dest.endswith("run-model_state_dict.pt")
        dlg.format_combo.setCurrentIndex(2)                   # safetensors
        assert dlg.state.dest.endswith("run-model_state_dict.safetensors")
        dlg.format_combo.setCurrentIndex(0)
        assert dlg.state.dest.endswith("run-model_state_dict.pt")
        dlg.runner.shutdown()
        dlg.reject()
    finally:
        f.close()
