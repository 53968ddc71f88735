"""The tree model, search, details, histogram and copy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from gui_support import (QT_STRICT, isolated_settings, load_now, no_workers_left, open_one, visible_nodes,  # noqa: F401
                         wait_idle, window)

pytestmark = QT_STRICT


def _fetch_everything(model, limit=5000):
    from PySide6.QtCore import QModelIndex
    stack = [QModelIndex()]
    seen = 0
    while stack and seen < limit:
        parent = stack.pop()
        while model.canFetchMore(parent):
            model.fetchMore(parent)
        for r in range(model.rowCount(parent)):
            stack.append(model.index(r, 0, parent))
            seen += 1


@pytest.mark.parametrize("name", ["checkpoint.tar", "whole_model.pt", "values.pt", "gan.tar", "tied_module.pt",
                                  "state_dict.safetensors", "scripted.pt"])
def test_tree_model_passes_qtmodeltester(qtmodeltester, qtbot, ckpts, name, no_workers_left):
    from ckptviewer.gui.checkpoint.tree_model import CheckpointTreeModel, KeyFilterProxy

    f = load_now(ckpts[name])
    try:
        model = CheckpointTreeModel(f.root, f.warmed)
        _fetch_everything(model)
        qtmodeltester.check(model)
        proxy = KeyFilterProxy()
        proxy.setSourceModel(model)
        proxy.set_keep({id(n) for n in model.top_nodes()[:1]})
        qtmodeltester.check(proxy)
        proxy.set_keep(None)
        qtmodeltester.check(proxy)
    finally:
        f.close()


def test_model_is_lazy_and_fills_heavy_columns_later(qtbot, tmp_path, no_workers_left):
    from PySide6.QtCore import QModelIndex

    from ckptviewer.gui.checkpoint.tree_model import BATCH, COL_NUMEL, PENDING, CheckpointTreeModel

    sd = {f"p{i}": torch.zeros(2) for i in range(2500)}
    sd_nested = {"outer": {"inner": sd}}
    path = tmp_path / "many.pt"
    torch.save(sd_nested, path)
    flat = tmp_path / "flat.pt"
    torch.save(sd, flat)
    f = load_now(path)
    g = load_now(flat)
    try:
        top = CheckpointTreeModel(g.root, g.warmed)
        assert top.rowCount() == BATCH and top.canFetchMore(QModelIndex())
        top.fetchMore(QModelIndex())
        assert top.rowCount() == 2 * BATCH
        last = g.root.children()[-1]
        assert top.index_for_node(last).row() == 2499 and top.rowCount() == 2500
        model = CheckpointTreeModel(f.root, set())
        outer = model.index(0, 0)
        assert model.rowCount(outer) == 0 and model.canFetchMore(outer)
        model.fetchMore(outer)
        inner = model.index(0, 0, outer)
        model.fetchMore(inner)
        assert model.rowCount(inner) == BATCH
        model.fetchMore(inner)
        assert model.rowCount(inner) == 2 * BATCH
        # Not warmed: the container's count is computed off the GUI thread, then repainted.
        assert model.index(0, COL_NUMEL, outer).data() == PENDING
        with qtbot.waitSignal(model.totals_wanted, timeout=2000) as blocker:
            pass
        nodes = blocker.args[0]
        from ckptviewer.gui.checkpoint.loading import totals_steps
        from ckptviewer.core.util.progress import run_steps
        done = run_steps(totals_steps(nodes))
        with qtbot.waitSignal(model.dataChanged, timeout=2000):
            model.mark_totals_ready(done)
        assert model.index(0, COL_NUMEL, outer).data() == "5,000"
    finally:
        f.close()
        g.close()


def test_selecting_a_tensor_fills_details_and_an_exact_histogram(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    assert tab.select_path(("model_state_dict", "fc1.weight"))
    wait_idle(qtbot, tab)
    expected = ckpts.objects["checkpoint.tar"]["model_state_dict"]["fc1.weight"].numpy().astype(np.float64)
    facts = tab.details.facts
    assert facts["Shape"] == "[120, 400]" and facts["DType"] == "float32"
    assert facts["Elements"] == "48,000" and facts["Saved device"] == "cpu"
    assert "(contiguous)" in facts["Stride"]
    assert float(facts["stat:min"]) == pytest.approx(expected.min(), rel=1e-5)
    assert float(facts["stat:max"]) == pytest.approx(expected.max(), rel=1e-5)
    s = tab.last_stats
    assert s.mean == pytest.approx(expected.mean(), rel=1e-9) and s.std == pytest.approx(expected.std(), rel=1e-9)
    h = tab.histogram.histogram
    assert h.exact and h.counts.sum() == expected.size
    ref, _ = np.histogram(expected, bins=h.edges)
    assert np.array_equal(h.counts, ref)
    i = int(np.argmax(h.counts))
    x = (h.edges[i] + h.edges[i + 1]) / 2
    assert f"{int(h.counts[i]):,} values" in tab.histogram.hover_text_at(x)
    tab.histogram.log_box.setChecked(True)
    assert window.settings.log_counts()


def test_big_tensor_shows_a_sample_first_and_changing_selection_drops_old_results(qtbot, window, tmp_path):
    x = torch.randn(1500, 1024)
    x[0, :10] = float("nan")
    y = torch.arange(12, dtype=torch.int64)
    path = tmp_path / "big.pt"
    torch.save({"x": x, "y": y}, path)
    tab = open_one(qtbot, window, path)
    shown = []
    original = tab.histogram.set_histogram

    def record(h, what=""):
        shown.append((what, h.exact))
        original(h, what)

    tab.histogram.set_histogram = record
    assert tab.select_path(("x",))
    wait_idle(qtbot, tab)
    assert shown[0] == ("x", False) and shown[-1] == ("x", True)
    h = tab.histogram.histogram
    assert h.counts.sum() == x.numel() - 10 and h.nan == 10
    assert "10 NaN" in tab.histogram.note.text()
    # Select x again and move to y at once: x's late results must never paint.
    assert tab.select_path(("y",))
    assert tab.select_path(("x",))
    assert tab.select_path(("y",))
    shown.clear()
    wait_idle(qtbot, tab)
    assert shown and all(what == "y" for what, _ in shown)
    assert tab.histogram.histogram.integer_bins and tab.histogram.histogram.counts.sum() == 12
    assert tab.details.facts["Shape"] == "[12]"


def test_search_filters_keeps_ancestors_and_counts(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    window.actions_by_id["edit.find"].trigger()
    tab.find_bar.edit.setText("conv1")
    tab.finish_search()
    nodes = visible_nodes(tab)
    names = [n.name for n in nodes]
    assert "model_state_dict" in names and "optimizer_state_dict" in names
    assert "fc1" not in names and "epoch" not in names
    tensors = [n for n in nodes if n.kind == "tensor"]
    assert {str(t.path[-1]) for t in tensors} >= {"conv1.weight", "conv1.bias"}
    # conv1 group + 2 tensors, and the two optimizer states named after conv1's parameters
    assert tab.filtering and tab.find_bar.count.text() == f"{tab.search_result.n_matches} matches"
    assert tab.search_result.n_matches == 5

    tab.find_bar.regex.setChecked(True)
    tab.find_bar.edit.setText(r"^fc[12]\.bias$")
    tab.finish_search()
    leaves = [n for n in visible_nodes(tab) if n.kind == "tensor"]
    assert sorted(str(n.path[-1]) for n in leaves) == ["fc1.bias", "fc2.bias"]
    assert tab.find_bar.count.text() == "2 matches"

    tab.find_bar.edit.setText("fc[")
    tab.finish_search()
    assert "bad pattern" in tab.find_bar.count.text()

    assert tab.select_path(("model_state_dict", "fc2.bias"))
    tab.find_bar.edit.clear()
    tab.finish_search()
    assert not tab.filtering and "epoch" in [n.name for n in visible_nodes(tab)]
    assert tab.current_node().path == ("model_state_dict", "fc2.bias")
    wait_idle(qtbot, tab)


def test_copy_key_path_and_a_snippet_that_really_loads_the_entry(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    assert tab.select_path(("model_state_dict", "conv1.weight"))
    window.actions_by_id["edit.copy_path"].trigger()
    assert QGuiApplication.clipboard().text() == '["model_state_dict"]["conv1.weight"]'
    window.actions_by_id["edit.copy_snippet"].trigger()
    snippet = QGuiApplication.clipboard().text()
    assert 'torch.load(PATH, map_location="cpu", weights_only=True)["model_state_dict"]["conv1.weight"]' in snippet
    scope: dict = {}
    exec(snippet, scope)   # our own file, made by the test: safe to load
    assert torch.equal(scope["value"], ckpts.objects["checkpoint.tar"]["model_state_dict"]["conv1.weight"])
    wait_idle(qtbot, window)


def test_snippet_for_a_whole_model_says_weights_only_cannot_load_it(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["whole_model.pt"])
    node = tab.first_tensor()
    assert tab.select_node(node)
    snippet = tab.copy_snippet()
    assert "weights_only=True cannot load this file" in snippet and "weights_only=False" in snippet
    assert "models.Net" in snippet
    assert "not imported" in tab.summary.labels["stand_ins"].text()
    wait_idle(qtbot, window)


def test_optimizer_details_link_state_to_parameter_names(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    assert tab.select_path(("optimizer_state_dict",))
    d = tab.details
    rows = {d.hyper_table.item(r, 0).text(): d.hyper_table.item(r, 1).text() for r in range(d.hyper_table.rowCount())}
    assert rows["lr"] == "0.001" and rows["momentum"] == "0.9"
    assert d.state_table.item(0, 1).text().startswith("conv1.weight")
    d.state_table.cellClicked.emit(0, 1)
    node = tab.current_node()
    assert node.kind == "tensor" and node.path == ("model_state_dict", "conv1.weight")
    wait_idle(qtbot, tab)


def test_shared_storage_and_group_totals(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["tied.pt"])
    assert tab.select_path(("embed.weight",))
    assert "head.weight" in tab.details.facts["Shared storage"]
    wait_idle(qtbot, tab)
    tab.select_path(("norm.weight",))
    group = tab.current_node().parent
    assert tab.select_node(group)
    assert tab.details.facts["Tensors"] == "2" and tab.details.facts["Elements"] == "24"


def test_expand_and_collapse_all(qtbot, window, ckpts):
    tab = open_one(qtbot, window, ckpts["gan.tar"])
    window.actions_by_id["view.expand_all"].trigger()
    nodes = visible_nodes(tab)
    assert all(tab.view.isExpanded(tab.view_index(n)) for n in nodes if n.has_children)
    window.actions_by_id["view.collapse_all"].trigger()
    assert not tab.view.isExpanded(tab.view.model().index(0, 0))


def test_file_text_is_shown_as_plain_text(qtbot, window, tmp_path):
    evil = {"<b>bold</b>\u202eexe.pt": torch.ones(2), "note": "<img src=x>\x1b[2J"}
    path = tmp_path / "evil.pt"
    torch.save(evil, path)
    tab = open_one(qtbot, window, path)
    names = [tab.view.model().index(r, 0).data() for r in range(tab.view.model().rowCount())]
    assert "<b>bold</b>\\u202eexe.pt" in names
    tip = tab.view.model().index(names.index("<b>bold</b>\\u202eexe.pt"), 0).data(Qt.ItemDataRole.ToolTipRole)
    assert "&lt;b&gt;bold&lt;/b&gt;" in tip and "<b>" not in tip
    assert tab.select_path(("note",))
    assert "\\x1b" in tab.details.facts["Value"]
    wait_idle(qtbot, tab)


def test_details_of_a_container_whose_totals_are_not_known_yet(qtbot, window, tmp_path):
    from ckptviewer.gui.checkpoint import loading

    nested = {"a": {"b": {"c": {f"k{i}": torch.zeros(3) for i in range(50)}}}}
    path = tmp_path / "deep.pt"
    torch.save(nested, path)
    old = loading.PREBUILD_LEVELS
    loading.PREBUILD_LEVELS = 1
    try:
        tab = open_one(qtbot, window, path)
    finally:
        loading.PREBUILD_LEVELS = old
    node = tab.model.top_nodes()[0].children()[0].children()[0]        # a / b / c
    assert not tab.model.totals_ready(node)
    assert tab.select_node(node)
    qtbot.waitUntil(lambda: tab.details.facts.get("Tensors") == "50", timeout=5000)
    assert tab.details.facts["Elements"] == "150"
    wait_idle(qtbot, tab)
