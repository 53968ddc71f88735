"""Cleaning a checkpoint in the window: edits with undo/redo, the marks on changed keys, the dialogs
(driven by setting their widgets, never ``exec()``), the strip banner, warm starts and exports."""
from __future__ import annotations

import os

import pytest
import torch
from PySide6.QtCore import QThreadPool, Qt

from gui_support import (QT_STRICT, isolated_settings, no_workers_left, open_one, visible_nodes,  # noqa: F401
                         wait_idle, window)

pytestmark = QT_STRICT


# -- helpers --------------------------------------------------------------------------------------------
def view_snapshot(tab):
    """What the tree view shows: each visible row's path, texts and expansion, and the current row."""
    from ckptviewer.gui.checkpoint.tree_model import COL_NAME, COL_VALUE
    model = tab.view.model()
    rows = []
    for node in visible_nodes(tab):
        idx = tab.view_index(node)
        rows.append((node.path, node.kind, tab.view.isExpanded(idx),
                     model.index(idx.row(), COL_NAME, idx.parent()).data(),
                     model.index(idx.row(), COL_VALUE, idx.parent()).data(),
                     model.index(idx.row(), COL_NAME, idx.parent()).data(Qt.ItemDataRole.FontRole) is not None))
    current = tab.current_node()
    return rows, (current.path if current is not None else None), tab.view.verticalScrollBar().value()


def apply_and_wait(qtbot, tab, steps):
    tab.apply_steps(steps)
    wait_idle(qtbot, tab)


def tensor_keys(tab, under: tuple = ()):
    out = []
    stack = list(tab.tree_root.children())
    while stack:
        n = stack.pop()
        if n.kind == "tensor" and tuple(n.path[:len(under)]) == tuple(under):
            out.append(tuple(n.path))
        elif n.has_children:
            stack.extend(n.children())
    return sorted(out, key=repr)


def node_at(tab, path, kind="tensor"):
    from ckptviewer.gui.checkpoint.tree_model import find_node
    node = find_node(tab.tree_root, tuple(path), kind)
    assert node is not None, path
    return node


@pytest.fixture(autouse=True)
def answers(monkeypatch):
    """Questions the window asks (replace? discard?) never show a modal box in a test: they are answered
    from ``replies`` (then "yes", so a window with edits can close at teardown) and recorded."""
    from ckptviewer.gui.dialogs import common
    asked: list[str] = []
    replies: list[bool] = []

    def confirm(_parent, _title, text, _accept):
        asked.append(text)
        return replies.pop(0) if replies else True

    monkeypatch.setattr(common, "confirm", confirm)
    return asked, replies


# -- edits, undo, redo, marks -----------------------------------------------------------------------------
def test_strip_banner_is_one_click_and_undo_redo_restore_the_exact_view(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import StripPrefix

    tab = open_one(qtbot, window, ckpts["dataparallel_checkpoint.pth"])
    wait_idle(qtbot, tab)
    assert [b.text() for b in tab.summary.strip_buttons] == ["Strip 'module.'"]
    assert "net: keys start with 'module.'" in tab.summary.labels["prefixes"].text()
    assert tab.select_path(("net", "module.conv2.weight"))
    wait_idle(qtbot, tab)
    before = view_snapshot(tab)
    undo = window.actions_by_id["edit.undo"]
    assert not undo.isEnabled()

    tab.summary.strip_buttons[0].click()
    wait_idle(qtbot, tab)
    assert tab.session.document.steps == [StripPrefix("module.", "net")]
    assert tensor_keys(tab, ("net",)) == sorted(
        [("net", k) for k in ckpts.objects["state_dict.pt"]], key=repr)
    # The selection followed the tensor through the rename; the entry is marked, and says what changed.
    current = tab.current_node()
    assert current.path == ("net", "conv2.weight")
    assert tab.model.mark_of(current) == "renamed from module.conv2.weight"
    assert tab.details.facts["Edited"] == "renamed from module.conv2.weight"
    tip = tab.view_index(current).data(Qt.ItemDataRole.ToolTipRole)
    assert "Edited: renamed from module.conv2.weight" in tip
    assert "module.conv2.weight" in tab.view.model().index(tab.view_index(current).row(), 7,
                                                              tab.view_index(current).parent()).data()
    assert tab.summary.strip_buttons == []              # nothing left to strip
    assert "Strip prefix module. in net" in tab.summary.labels["edits"].text()
    assert window.tabs.tabText(window.tabs.indexOf(tab)).endswith(" *")
    assert window.windowTitle().startswith("dataparallel_checkpoint.pth *")
    assert undo.isEnabled() and "Strip prefix" in undo.text()
    wait_idle(qtbot, tab)
    after = view_snapshot(tab)

    undo.trigger()
    wait_idle(qtbot, tab)
    assert tab.session.document.steps == []
    assert view_snapshot(tab) == before
    assert [b.text() for b in tab.summary.strip_buttons] == ["Strip 'module.'"]
    assert not tab.summary.labels["edits"].isVisibleTo(tab)
    assert not window.tabs.tabText(window.tabs.indexOf(tab)).endswith(" *")

    window.actions_by_id["edit.redo"].trigger()
    wait_idle(qtbot, tab)
    assert tab.session.document.steps == [StripPrefix("module.", "net")]
    assert view_snapshot(tab) == after


def test_an_edit_the_core_refuses_is_reported_and_not_on_the_stack(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import Rename, Select

    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    apply_and_wait(qtbot, tab, Select("no_such_entry"))
    assert tab.session.document.steps == [] and tab.session.undo_stack.count() == 0
    assert any("no entry 'no_such_entry'" in t for t in window.messages.texts())
    # A collision found only when applying (two keys become one): refused, nothing changes.
    apply_and_wait(qtbot, tab, Rename((("regex", r"\.(weight|bias)$", ".w"),), "model_state_dict"))
    assert tab.session.document.steps == []
    assert any("collision" in t for t in window.messages.texts())
    assert not window.actions_by_id["edit.undo"].isEnabled()
    assert not tab.has_unexported_edits


def test_cast_marks_entries_and_drop_keep_only_from_the_context_menu(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import Cast, Drop, Select

    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    wait_idle(qtbot, tab)
    # The context menu offers the edits for a real entry.
    node = node_at(tab, ("optimizer_state_dict",), None)
    tab.select_node(node)
    pos = tab.view.visualRect(tab.view_index(node)).center()
    tab._on_context_menu(pos)
    texts = [a.text() for a in tab.context_menu.actions() if a.text()]
    assert {"Export this entry…", "Drop", "Keep only this"} <= set(texts)
    drop = next(a for a in tab.context_menu.actions() if a.text() == "Drop")
    tab.context_menu.close()
    drop.trigger()
    wait_idle(qtbot, tab)
    assert tab.session.document.steps == [Drop(("optimizer_state_dict",))]
    assert [n.key for n in tab.model.top_nodes()] == ["epoch", "model_state_dict", "loss"]

    apply_and_wait(qtbot, tab, Cast("float16"))
    weight = node_at(tab, ("model_state_dict", "conv1.weight"))
    assert weight.value.dtype.name == "float16"
    assert tab.model.mark_of(weight) == "cast float32 → float16"
    group = weight.parent
    assert group.kind == "group" and tab.model.index_for_node(group).data(Qt.ItemDataRole.ForegroundRole) is not None
    # The copy snippet loads the file on disk: refused for an entry the edits changed.
    tab.select_node(weight)
    assert tab.copy_snippet() is None

    tab.keep_only(node_at(tab, ("model_state_dict",), "state_dict"))
    wait_idle(qtbot, tab)
    assert tab.session.document.steps[-1] == Select("model_state_dict")
    assert node_at(tab, ("conv1.weight",)).value.dtype.name == "float16"
    assert tab.model.mark_of(node_at(tab, ("conv1.weight",))) == "cast float32 → float16"
    for _ in range(3):
        assert tab.undo()
        wait_idle(qtbot, tab)
    assert tab.session.document.steps == [] and not tab.has_unexported_edits
    assert [n.key for n in tab.model.top_nodes()] == ["epoch", "model_state_dict", "optimizer_state_dict", "loss"]
    assert tab.model.mark_of(node_at(tab, ("model_state_dict", "conv1.weight"))) == ""


def test_undo_redo_follow_the_current_tab(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import StripPrefix

    a = open_one(qtbot, window, ckpts["dataparallel.pt"])
    b = open_one(qtbot, window, ckpts["state_dict.pt"])
    window.tabs.setCurrentWidget(a)
    apply_and_wait(qtbot, a, StripPrefix())
    undo = window.actions_by_id["edit.undo"]
    assert undo.isEnabled()
    window.tabs.setCurrentWidget(b)
    assert not undo.isEnabled()
    undo.trigger()                        # nothing to undo in b; a keeps its edit
    assert a.session.document.steps == [StripPrefix()]
    window.tabs.setCurrentWidget(a)
    assert undo.isEnabled()
    undo.trigger()
    wait_idle(qtbot, a)
    assert a.session.document.steps == []
    assert window.actions_by_id["edit.redo"].isEnabled()


def test_closing_an_edited_tab_or_the_window_asks_first(qtbot, window, ckpts, answers):
    from ckptviewer.core.edit.ops import StripPrefix

    asked, replies = answers
    tab = open_one(qtbot, window, ckpts["dataparallel.pt"])
    window.close_current_tab()                    # no edits: no question
    assert not asked and not window.checkpoint_tabs()
    tab = open_one(qtbot, window, ckpts["dataparallel.pt"])
    apply_and_wait(qtbot, tab, StripPrefix())
    replies.append(False)
    window.close_current_tab()
    assert window.checkpoint_tabs() == [tab] and "dataparallel.pt (1 edit)" in asked[-1]
    replies.append(False)
    window.close()
    assert window.isVisible() and window.checkpoint_tabs() == [tab]
    replies.append(True)
    window.close_current_tab()
    assert window.checkpoint_tabs() == []
    assert len(asked) == 3


# -- dialogs ----------------------------------------------------------------------------------------------
def test_remap_devices_dialog_and_export_that_loads_on_cpu(qtbot, window, ckpts, tmp_path):
    from ckptviewer.core.edit.ops import RemapDevice
    from ckptviewer.gui.dialogs import ExportDialog, RemapDevicesDialog

    tab = open_one(qtbot, window, ckpts["gpu1_checkpoint.tar"])
    devices = dict(tab.session.state.device_counts())
    n = len(tab.file.checkpoint.all_tensors())
    assert devices == {"cuda:1": n} and n > 20            # model, optimizer (and loss) tensors
    dlg = RemapDevicesDialog(tab, devices)
    qtbot.addWidget(dlg)
    assert not dlg.ok_button.isEnabled() and dlg.step() is None
    dlg.combos["cuda:1"].setCurrentText("cuda:0")
    assert dlg.step() == RemapDevice((("cuda:1", "cuda:0"),)) and dlg.ok_button.isEnabled()
    dlg.combos["cuda:1"].setCurrentText("gpu7")
    assert not dlg.ok_button.isEnabled() and "not a device" in dlg.error_label.text()
    dlg.cpu_button.click()
    assert dlg.combos["cuda:1"].currentText() == "cpu"
    step = dlg.step()
    assert step == RemapDevice((("cuda:1", "cpu"),))
    assert f"{n} tensors recorded on cuda:1 → cpu" in dlg.summary_label.text()

    apply_and_wait(qtbot, tab, step)
    weight = node_at(tab, ("model_state_dict", "conv1.weight"))
    assert weight.value.device == "cpu" and tab.model.mark_of(weight) == "device cuda:1 → cpu"
    assert tab.session.state.device_counts() == {"cpu": n}

    exp = ExportDialog(tab, tab.path, tab.session.root, tab.session.state.analysis)
    qtbot.addWidget(exp)
    exp.subtree_combo.setCurrentIndex(0)                 # the whole (edited) checkpoint
    out = tmp_path / "on_cpu.tar"
    exp.set_destination(str(out))
    qtbot.waitUntil(lambda: exp.ok_button.isEnabled(), timeout=10_000)
    tab.session.export(exp.request())
    wait_idle(qtbot, tab)
    assert not tab.has_unexported_edits
    loaded = torch.load(out, weights_only=True)          # no map_location needed
    src = ckpts.objects["gpu1_checkpoint.tar"]
    assert loaded["epoch"] == src["epoch"]
    for k, v in src["model_state_dict"].items():
        assert loaded["model_state_dict"][k].device.type == "cpu"
        assert torch.equal(loaded["model_state_dict"][k], v)
    for pid, st in src["optimizer_state_dict"]["state"].items():
        assert torch.equal(loaded["optimizer_state_dict"]["state"][pid]["momentum_buffer"], st["momentum_buffer"])


def test_rename_dialog_rules_preview_and_collisions(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import Rename
    from ckptviewer.gui.dialogs import RenameDialog

    tab = open_one(qtbot, window, ckpts["state_dict.pt"])
    dlg = RenameDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    assert not dlg.ok_button.isEnabled()
    dlg.add_rule("regex")
    dlg.pattern_edit.setText(r"^fc(\d)\.")
    dlg.pattern_edit.textEdited.emit(dlg.pattern_edit.text())
    dlg.repl_edit.setText(r"head.\1.")
    dlg.repl_edit.textEdited.emit(dlg.repl_edit.text())
    dlg.flush()
    rows = {dlg.preview_model.index(r, 0).data(): dlg.preview_model.index(r, 1).data()
            for r in range(dlg.preview_model.rowCount())}
    assert rows == {"fc1.weight": "head.1.weight", "fc1.bias": "head.1.bias", "fc2.weight": "head.2.weight",
                    "fc2.bias": "head.2.bias", "fc3.weight": "head.3.weight", "fc3.bias": "head.3.bias"}
    assert dlg.ok_button.isEnabled() and "6 of 10 keys renamed" in dlg.count_label.text()

    # A rule that makes two keys one: highlighted, counted, OK disabled.
    dlg.add_rule("replace")
    dlg.find_edit.setText("weight")
    dlg.find_edit.textEdited.emit("weight")
    dlg.replace_edit.setText("bias")
    dlg.replace_edit.textEdited.emit("bias")
    dlg.flush()
    assert not dlg.ok_button.isEnabled() and dlg.step() is None
    assert "collide" in dlg.count_label.text() and dlg.error_label.isVisibleTo(dlg)
    collided = [r for r in range(dlg.preview_model.rowCount())
                if dlg.preview_model.index(r, 1).data(Qt.ItemDataRole.BackgroundRole) is not None]
    assert len(collided) == 20 - 10 and len(collided) == dlg.last_preview.collisions
    dlg._on_remove_rule()
    dlg.flush()
    assert dlg.ok_button.isEnabled()

    # A bad regular expression is named and blocks OK.
    dlg.rule_list.setCurrentRow(0)
    dlg.pattern_edit.setText("fc(")
    dlg.pattern_edit.textEdited.emit("fc(")
    dlg.flush()
    assert not dlg.ok_button.isEnabled() and "bad regular expression" in dlg.error_label.text()
    dlg.pattern_edit.setText(r"^fc(\d)\.")
    dlg.pattern_edit.textEdited.emit(dlg.pattern_edit.text())

    # A mapping table, applied after the regex.
    dlg.add_rule("map")
    dlg.add_mapping("conv1.weight", "stem.weight")
    dlg.add_mapping("conv1.bias", "stem.bias")
    step = dlg.step()
    assert step == Rename((("regex", r"^fc(\d)\.", r"head.\1."),
                           ("map", {"conv1.weight": "stem.weight", "conv1.bias": "stem.bias"})))
    apply_and_wait(qtbot, tab, step)
    keys = {p[-1] for p in tensor_keys(tab)}
    assert {"stem.weight", "head.3.bias", "conv2.weight"} <= keys and "fc1.weight" not in keys
    assert tab.model.mark_of(node_at(tab, ("stem.weight",))) == "renamed from conv1.weight"
    assert tab.model.mark_of(node_at(tab, ("conv2.weight",))) == ""


def test_rename_preview_of_a_big_state_dict_is_computed_in_a_worker(qtbot, window, ckpts, monkeypatch):
    """Above DEBOUNCE_KEYS keys the preview runs off the GUI thread (100,000 keys took 0.85 s per
    keystroke there); OK waits for it, a newer edit supersedes an older preview, and the rows are those
    of the synchronous preview."""
    import threading

    from ckptviewer.gui.dialogs import RenameDialog
    from ckptviewer.gui.dialogs import rename as rename_module

    monkeypatch.setattr(rename_module, "DEBOUNCE_KEYS", 4)     # state_dict.pt has 10 keys
    gate = threading.Event()
    gate.set()
    on_main = []
    real_job = rename_module.preview_job

    def job(state, only_changed):                              # held at the gate: the test decides when
        on_main.append(threading.current_thread() is threading.main_thread())
        gate.wait(10)
        return (yield from real_job(state, only_changed))

    monkeypatch.setattr(rename_module, "preview_job", job)
    tab = open_one(qtbot, window, ckpts["state_dict.pt"])
    dlg = RenameDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: not dlg._computing, timeout=10_000)
    gate.clear()
    dlg.add_rule("regex")
    dlg.pattern_edit.setText(r"^fc(\d)\.")
    dlg.pattern_edit.textEdited.emit(dlg.pattern_edit.text())
    dlg.repl_edit.setText(r"wrong.\1.")
    dlg.repl_edit.textEdited.emit(dlg.repl_edit.text())
    started = len(on_main)
    qtbot.waitUntil(lambda: len(on_main) == started + 1, timeout=10_000)   # running, held at the gate
    assert dlg._computing and not dlg.ok_button.isEnabled() and "Computing" in dlg.count_label.text()
    dlg.repl_edit.setText(r"head.\1.")                      # typed on: supersedes the held preview
    dlg.repl_edit.textEdited.emit(dlg.repl_edit.text())
    qtbot.waitUntil(lambda: len(on_main) == started + 2, timeout=10_000)
    gate.set()
    qtbot.waitUntil(lambda: not dlg._computing, timeout=10_000)
    rows = {dlg.preview_model.index(r, 0).data(): dlg.preview_model.index(r, 1).data()
            for r in range(dlg.preview_model.rowCount())}
    assert rows == {f"fc{i}.{w}": f"head.{i}.{w}" for i in (1, 2, 3) for w in ("weight", "bias")}
    assert dlg.ok_button.isEnabled() and "6 of 10 keys renamed" in dlg.count_label.text()
    assert on_main and not any(on_main)                        # every preview ran on a worker thread
    synchronous = dlg.state.preview()
    assert [(r.old, r.new) for _, r in dlg.last_preview.rows] == [(r.old, r.new) for _, r in synchronous.rows]
    dlg.done(0)                                                # closing stops its worker (no_workers_left)


def test_strip_prefix_dialog_offers_the_detected_prefix(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import StripPrefix
    from ckptviewer.gui.dialogs import StripPrefixDialog

    tab = open_one(qtbot, window, ckpts["compiled.pt"])
    dlg = StripPrefixDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    assert dlg.prefix_combo.currentText() == "_orig_mod."
    assert "torch.compile" in dlg.offer_label.text()
    assert "10 of 10 keys start with '_orig_mod.'" in dlg.lines_label.text()
    assert dlg.step() == StripPrefix("_orig_mod.", None) and dlg.ok_button.isEnabled()
    dlg.prefix_combo.setCurrentText("nothing.")
    assert not dlg.ok_button.isEnabled() and "No key starts with 'nothing.'" in dlg.error_label.text()
    dlg.prefix_combo.setCurrentText("_orig_mod.conv")      # keys without it stay, and the preview says so
    assert "4 of 10 keys" in dlg.lines_label.text() and "6 without it stay" in dlg.lines_label.text()
    dlg.prefix_combo.setCurrentText("_orig_mod.")
    apply_and_wait(qtbot, tab, dlg.step())
    assert {p[-1] for p in tensor_keys(tab)} == set(ckpts.objects["state_dict.pt"])


def test_warm_start_with_a_real_target_file_and_accepting_a_suggestion(qtbot, window, ckpts, tmp_path):
    from ckptviewer.core.edit.ops import Rename
    from ckptviewer.gui.dialogs import WarmStartDialog

    # The target: the bare model's state_dict, plus one layer the source does not have.
    target_sd = dict(ckpts.objects["state_dict.pt"])
    target_sd["extra.weight"] = torch.zeros(3)
    target = tmp_path / "target_model.pt"
    torch.save({"epoch": 1, "model": target_sd}, target)

    tab = open_one(qtbot, window, ckpts["dataparallel.pt"])
    dlg = WarmStartDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    assert not dlg.ok_button.isEnabled()
    dlg.open_target(str(target))
    qtbot.waitUntil(lambda: dlg.state.report is not None, timeout=10_000)
    rep = dlg.state.report
    assert rep.matched == [] and len(rep.missing_keys) == 11 and len(rep.unexpected_keys) == 10
    assert dlg.lists.tabText(1) == "missing_keys (11)" and dlg.missing_list.count() == 11
    first = dlg.state.suggestions[0]
    assert first.rule == ("remove_prefix", "module.") and first.gain == 10
    assert "remove prefix 'module.'" in dlg.suggestion_list.item(0).text()

    dlg.suggestion_list.setCurrentRow(0)
    dlg.accept_button.click()
    rep = dlg.state.report
    assert len(rep.matched) == 10 and rep.missing_keys == ["extra.weight"] and rep.unexpected_keys == []
    assert dlg.lists.tabText(0) == "Matched (10)"
    assert dlg.ok_button.isEnabled() and dlg.ok_button.text() == "Apply 1 rename"
    dlg.take_back_button.click()
    assert dlg.state.report.matched == [] and not dlg.ok_button.isEnabled()
    dlg.accept_suggestion(0)
    steps = dlg.steps()
    assert steps == [Rename((("remove_prefix", "module."),), None)]
    dlg.reject()

    apply_and_wait(qtbot, tab, steps)
    assert {p[-1] for p in tensor_keys(tab)} == set(ckpts.objects["state_dict.pt"])
    # Checked again on the edited view: only the target's extra layer is missing, nothing else to suggest.
    check = WarmStartDialog(tab, tab.session.root)
    qtbot.addWidget(check)
    check.open_target(str(target))
    qtbot.waitUntil(lambda: check.state.report is not None, timeout=10_000)
    rep = check.state.report
    assert len(rep.matched) == 10 and rep.missing_keys == ["extra.weight"] and rep.unexpected_keys == []
    assert check.state.suggestions == [] and check.suggestion_list.item(0).text() == "No rename would match more keys."
    check.reject()


def test_warm_start_reports_a_target_that_cannot_be_opened(qtbot, window, ckpts, tmp_path):
    from ckptviewer.gui.dialogs import WarmStartDialog

    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    tab = open_one(qtbot, window, ckpts["state_dict.pt"])
    dlg = WarmStartDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    dlg.open_target(str(bad))
    qtbot.waitUntil(lambda: not dlg.loading, timeout=10_000)
    assert "Could not open the target" in dlg.status_label.text() and dlg.state.report is None
    dlg.reject()


# -- export -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pt", "pt-legacy", "safetensors"])
def test_export_dialog_writes_each_format_and_values_are_equal(qtbot, window, ckpts, tmp_path, fmt):
    from ckptviewer.core.edit.ops import StripPrefix
    from ckptviewer.gui.dialogs import ExportDialog
    from ckptviewer.gui.dialogs.export import FORMATS

    tab = open_one(qtbot, window, ckpts["dataparallel_checkpoint.pth"])
    apply_and_wait(qtbot, tab, StripPrefix())
    dlg = ExportDialog(tab, tab.path, tab.session.root, tab.session.state.analysis)
    qtbot.addWidget(dlg)
    # The default: the model's state_dict, beside the source, a name that is not taken.
    assert dlg.state.choices[dlg.state.subtree].path == ("net",)
    assert os.path.dirname(dlg.state.dest) == os.path.dirname(tab.path)
    dlg.format_combo.setCurrentIndex([f for f, _ in FORMATS].index(fmt))
    out = tmp_path / ("net.safetensors" if fmt == "safetensors" else "net.pt")
    dlg.set_destination(str(out))
    assert dlg.state.fmt == fmt
    qtbot.waitUntil(lambda: dlg.ok_button.isEnabled(), timeout=10_000)
    assert "10 tensors" in dlg.plan_text.toPlainText()
    request = dlg.request()
    assert request.options.fmt == fmt and request.dest == str(out)
    dlg.reject()
    tab.session.export(request)
    wait_idle(qtbot, tab)
    assert out.exists(), window.messages.texts()
    expected = {k.removeprefix("module."): v for k, v in ckpts.objects["dataparallel_checkpoint.pth"]["net"].items()}
    if fmt == "safetensors":
        from safetensors.torch import load_file
        loaded = load_file(str(out))
    else:
        loaded = torch.load(out, weights_only=True)
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    from models import Net
    Net().load_state_dict(loaded, strict=True)
    assert f"Exported net to {out}" in window._last_message
    assert not tab.has_unexported_edits and not window.tabs.tabText(window.tabs.indexOf(tab)).endswith(" *")
    assert sorted(os.listdir(tmp_path)) == sorted(["settings", out.name])


def test_export_dialog_casts_and_exports_one_entry(qtbot, window, ckpts, tmp_path):
    from ckptviewer.gui.dialogs import ExportDialog

    tab = open_one(qtbot, window, ckpts["gan.tar"])
    dlg = ExportDialog(tab, tab.path, tab.session.root, tab.session.state.analysis, ("modelB_state_dict",))
    qtbot.addWidget(dlg)
    assert dlg.state.choices[dlg.state.subtree].path == ("modelB_state_dict",)
    assert os.path.basename(dlg.state.dest) == "gan-modelB_state_dict.pt"      # the format's suffix, not .tar
    dlg.dtype_combo.setCurrentIndex(1)                          # float16
    out = tmp_path / "disc16.pt"
    dlg.set_destination(str(out))
    qtbot.waitUntil(lambda: dlg.ok_button.isEnabled(), timeout=10_000)
    tab.session.export(dlg.request())
    dlg.reject()
    wait_idle(qtbot, tab)
    loaded = torch.load(out, weights_only=True)
    src = ckpts.objects["gan.tar"]["modelB_state_dict"]
    assert set(loaded) == set(src)
    for k, v in src.items():
        want = v.to(torch.float16) if v.is_floating_point() else v
        assert loaded[k].dtype == want.dtype and torch.equal(loaded[k], want)
    assert tab.session.document.steps == []                    # the export's cast is not an edit of the tab


def test_export_refuses_the_source_and_asks_before_replacing(qtbot, window, ckpts, tmp_path, answers):
    from ckptviewer.gui.dialogs import ExportDialog

    asked, replies = answers
    tab = open_one(qtbot, window, ckpts["state_dict.pt"])
    dlg = ExportDialog(tab, tab.path, tab.session.root, tab.session.state.analysis)
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: dlg.ok_button.isEnabled(), timeout=10_000)
    assert dlg.state.dest != tab.path
    dlg.set_destination(tab.path)
    assert not dlg.ok_button.isEnabled() and "file being read" in dlg.error_label.text()
    assert dlg.request() is None
    link = tmp_path / "link.pt"
    link.symlink_to(tab.path)
    dlg.set_destination(str(link))
    assert not dlg.ok_button.isEnabled() and "file being read" in dlg.error_label.text()

    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"old")
    dlg.set_destination(str(existing))
    assert dlg.ok_button.isEnabled()
    accepted = []
    dlg.accepted.connect(lambda: accepted.append(True))
    replies.append(False)
    dlg.ok_button.click()
    assert not accepted and "existing.pt already exists" in asked[-1]
    replies.append(True)
    dlg.ok_button.click()
    assert accepted
    request = dlg.request()
    assert request.options.overwrite
    tab.session.export(request)
    wait_idle(qtbot, tab)
    assert set(torch.load(existing, weights_only=True)) == set(ckpts.objects["state_dict.pt"])


def test_cancelled_and_failed_exports_leave_nothing_behind(qtbot, window, ckpts, tmp_path, monkeypatch):
    import threading

    from ckptviewer.core.write import export as core_export
    from ckptviewer.core.util.errors import OperationError
    from ckptviewer.gui.dialogs import ExportDialog

    real = core_export.export_iter
    seen_tmp: list[list[str]] = []
    folder = tmp_path / "exports"
    folder.mkdir()
    # The export worker does not wait for the GUI: a sleep per step only made it likely that Cancel
    # came before the last step. Hold it after its second step (its temporary file being written)
    # until the test has pressed Cancel; then it goes on, and must stop at its next step.
    released = threading.Event()

    def held_export_iter(*args, **kwargs):
        gen = real(*args, **kwargs)
        result = None
        try:
            while True:
                p = next(gen)
                seen_tmp.append([n for n in os.listdir(folder) if "ckptviewer-tmp" in n])
                yield p
                if len(seen_tmp) == 2:
                    released.wait(30)
        except StopIteration as stop:
            result = stop.value
        finally:
            gen.close()
        return result

    monkeypatch.setattr(core_export, "export_iter", held_export_iter)
    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    dlg = ExportDialog(tab, tab.path, tab.session.root, tab.session.state.analysis)
    qtbot.addWidget(dlg)
    dlg.subtree_combo.setCurrentIndex(0)
    out = folder / "cancelled.tar"
    dlg.set_destination(str(out))
    qtbot.waitUntil(lambda: dlg.ok_button.isEnabled(), timeout=10_000)
    request = dlg.request()
    dlg.reject()
    tab.session.export(request)
    qtbot.waitUntil(lambda: window.cancel_button.isVisible() and len(seen_tmp) >= 2, timeout=10_000)
    assert any(seen_tmp[-1]), "the export was writing its temporary file"
    window.cancel_button.click()
    released.set()
    wait_idle(qtbot, tab)
    assert QThreadPool.globalInstance().waitForDone(5000)
    assert not out.exists()
    assert os.listdir(folder) == []
    assert not tab.session.exporting

    # A failure while checking the written file: reported, and again nothing is left.
    monkeypatch.setattr(core_export, "export_iter", real)

    def broken_verify(*_args, **_kwargs):
        raise OperationError("the written file does not match the source (test)")
        yield  # pragma: no cover

    monkeypatch.setattr(core_export, "_verify", broken_verify)
    tab.session.export(request)
    wait_idle(qtbot, tab)
    assert not out.exists() and os.listdir(folder) == []
    assert any("failed; nothing was written" in t and "does not match" in t for t in window.messages.texts())


def test_checkpoint_menu_lists_the_edit_actions(qtbot, window, ckpts):
    menus = {m.title(): m for m in window.menuBar().findChildren(type(window.recent_menu))}
    checkpoint = [a.text() for a in menus["&Checkpoint"].actions() if a.text()]
    assert checkpoint[:5] == ["Remap &Devices…", "&Rename Keys…", "&Strip Prefix…", "&Warm Start Check…", "&Export…"]
    assert checkpoint[-2:] == ["Check &Health", "&Verify Integrity"]
    edit = [a.objectName() for a in menus["&Edit"].actions() if a.objectName()]
    assert edit[:2] == ["edit.undo", "edit.redo"]
    assert window.actions_by_id["edit.undo"].shortcut().toString() == "Ctrl+Z"
    assert window.actions_by_id["edit.redo"].shortcut().toString() == "Ctrl+Shift+Z"
    assert not window.actions_by_id["checkpoint.rename"].isEnabled()
    open_one(qtbot, window, ckpts["state_dict.pt"])
    assert window.actions_by_id["checkpoint.rename"].isEnabled()
    assert not window.actions_by_id["edit.undo"].isEnabled()


def test_dialogs_open_from_the_menu_and_apply_their_step(qtbot, window, ckpts, monkeypatch):
    """The menu handlers run a dialog's ``ask`` and push what it returns (``exec`` replaced here)."""
    from ckptviewer.core.edit.ops import StripPrefix
    from ckptviewer.gui.dialogs import StripPrefixDialog
    from ckptviewer.gui.dialogs.common import StepDialog

    tab = open_one(qtbot, window, ckpts["dataparallel.pt"])
    shown = []

    def run(self):
        shown.append(type(self).__name__)
        return isinstance(self, StripPrefixDialog)

    monkeypatch.setattr(StepDialog, "run", run)
    window.actions_by_id["checkpoint.strip"].trigger()
    wait_idle(qtbot, tab)
    assert shown == ["StripPrefixDialog"] and tab.session.document.steps == [StripPrefix("module.", None)]
    for action in ("checkpoint.remap", "checkpoint.rename", "checkpoint.warm_start", "checkpoint.export"):
        window.actions_by_id[action].trigger()
    wait_idle(qtbot, tab)
    assert shown == ["StripPrefixDialog", "RemapDevicesDialog", "RenameDialog", "WarmStartDialog", "ExportDialog"]
    assert len(tab.session.document.steps) == 1


def test_a_key_group_is_dropped_with_a_pattern_from_the_context_menu(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import Drop

    tab = open_one(qtbot, window, ckpts["state_dict.pt"])
    wait_idle(qtbot, tab)
    group = next(n for n in tab.model.top_nodes() if n.kind == "group" and n.key == "fc1")
    tab._on_context_menu(tab.view.visualRect(tab.view_index(group)).center())
    actions = {a.text(): a for a in tab.context_menu.actions() if a.text()}
    assert not actions["Keep only this"].isEnabled()          # a key group is not an entry of the file
    tab.context_menu.close()
    actions["Drop all fc1.* keys"].trigger()
    wait_idle(qtbot, tab)
    assert tab.session.document.steps == [Drop(("fc1.*",))]
    assert {p[-1] for p in tensor_keys(tab)} == set(ckpts.objects["state_dict.pt"]) - {"fc1.weight", "fc1.bias"}


def test_dialogs_show_file_text_as_plain_text(qtbot, window, tmp_path):
    from ckptviewer.gui.dialogs import RenameDialog, WarmStartDialog

    evil = {"<b>bold</b>\u202e.weight": torch.ones(2), "fc.bias": torch.ones(3)}
    path = tmp_path / "evil.pt"
    torch.save(evil, path)
    tab = open_one(qtbot, window, path)
    dlg = RenameDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    dlg.add_rule("add_prefix")
    dlg.prefix_edit.setText("m.")
    dlg.prefix_edit.textEdited.emit("m.")
    dlg.flush()
    shown = [dlg.preview_model.index(r, 1).data() for r in range(dlg.preview_model.rowCount())]
    assert "m.<b>bold</b>\\u202e.weight" in shown
    target = tmp_path / "target.pt"
    torch.save({"<b>bold</b>\u202e.weight": torch.ones(2)}, target)
    ws = WarmStartDialog(tab, tab.session.root)
    qtbot.addWidget(ws)
    ws.open_target(str(target))
    qtbot.waitUntil(lambda: ws.state.report is not None, timeout=10_000)
    assert ws.matched_list.item(0).text() == "<b>bold</b>\\u202e.weight"
    ws.reject()


def test_warm_start_target_can_be_a_pickled_model(qtbot, window, ckpts):
    from ckptviewer.gui.dialogs import WarmStartDialog

    tab = open_one(qtbot, window, ckpts["state_dict.pt"])
    dlg = WarmStartDialog(tab, tab.session.root)
    qtbot.addWidget(dlg)
    dlg.open_target(str(ckpts["whole_model.pt"]))
    qtbot.waitUntil(lambda: dlg.state.report is not None, timeout=10_000)
    assert dlg.state.target.state_dicts[0].kind == "module"
    assert "pickled module" in dlg.target_combo.itemText(0)
    assert dlg.state.report.loads_strictly and "strict=True" in dlg.summary_label.text()
    dlg.reject()


def test_a_dropped_entry_is_noted_on_its_parent(qtbot, window, ckpts):
    from ckptviewer.core.edit.ops import Drop

    tab = open_one(qtbot, window, ckpts["checkpoint.tar"])
    apply_and_wait(qtbot, tab, Drop(("model_state_dict/fc3.bias", "model_state_dict/fc3.weight")))
    sd = node_at(tab, ("model_state_dict",), "state_dict")
    assert tab.model.mark_of(sd) == "dropped fc3.bias, fc3.weight"
    assert "✎ dropped fc3.bias, fc3.weight" in tab.model.index_for_node(sd, 7).data()
    assert tab.model.index_for_node(sd).data(Qt.ItemDataRole.FontRole).italic()
