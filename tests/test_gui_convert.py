"""The Convert panel: real drops of files and folders, rows with progress and status, a corrupt file
failing alone, cancel leaving no partial outputs, drag-out MIME data, outputs opened in tabs, the
recipe editor, and byte-identical outputs from the panel and the command line for the same recipe."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from gui_support import QT_STRICT, isolated_settings, no_workers_left, wait_idle, wait_loaded, window  # noqa: F401

pytestmark = QT_STRICT
REPO = Path(__file__).resolve().parents[1]


# -- helpers ----------------------------------------------------------------------------------------------
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


def panel_of(window, preset="clean-dataparallel", folder=None):
    window.actions_by_id["file.convert"].trigger()
    panel = window.convert_dock.panel
    assert window.convert_dock.isVisible()
    panel.editor.choose_preset(preset)
    panel.editor.set_output_folder(str(folder) if folder is not None else None)
    return panel


def wait_batch(qtbot, panel, timeout=120_000):
    qtbot.waitUntil(lambda: not panel.has_pending_work() and not panel.runner.is_busy(), timeout=timeout)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder) -> list[str]:
    """Temporary files or folders an export would leave if it did not clean up."""
    return [n for n in os.listdir(folder) if "ckptviewer-tmp" in n or n.endswith(".tmp")]


@pytest.fixture
def inputs(ckpts, tmp_path):
    """A folder of checkpoints a DataParallel clean-up applies to, plus a text file."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("dataparallel.pt", "dataparallel_checkpoint.pth", "checkpoint.tar", "gpu1_checkpoint.tar"):
        shutil.copyfile(ckpts[name], folder / name)
    (folder / "notes.txt").write_text("not a checkpoint\n")
    return folder


# -- tests ------------------------------------------------------------------------------------------------
def test_dropped_files_each_get_a_row_that_ends_done_with_its_size(qtbot, window, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    panel = panel_of(window, "to-safetensors", out)
    seen: dict[str, set] = {}
    panel.job_changed.connect(lambda job: seen.setdefault(os.path.basename(job.source), set()).add(job.status))
    files = [inputs / "dataparallel_checkpoint.pth", inputs / "checkpoint.tar", inputs / "gpu1_checkpoint.tar"]
    assert drop_on(panel.zone, files) == (True, True)
    qtbot.waitUntil(lambda: len(panel.jobs) == 3, timeout=20_000)
    wait_batch(qtbot, panel)
    assert [j.status for j in panel.jobs] == ["done"] * 3
    for job in panel.jobs:
        assert seen[os.path.basename(job.source)] >= {"converting", "done"}
        assert os.path.dirname(job.output) == str(out) and job.output.endswith(".safetensors")
        assert job.size == os.path.getsize(job.output) > 0
        row = panel.jobs.index(job)
        status = panel.model.index(row, 1).data()
        assert status.startswith("done, ") and ("KiB" in status or "MiB" in status)
        assert panel.model.index(row, 3).data() == os.path.basename(job.output)
    assert "3 done" in panel.summary.text() and "written" in panel.summary.text()
    assert sorted(os.listdir(out)) == ["checkpoint.safetensors", "dataparallel_checkpoint.safetensors",
                                       "gpu1_checkpoint.safetensors"]
    assert not panel.cancel_button.isEnabled()


def test_a_dropped_folder_is_expanded_and_its_other_files_left_alone(qtbot, window, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    panel = panel_of(window, "gpu-to-cpu", out)
    messages = []
    panel.status_message.connect(messages.append)
    assert drop_on(panel.view.viewport(), [inputs]) == (True, True)        # the job list takes drops too
    qtbot.waitUntil(lambda: not panel._pending_expansions, timeout=20_000)
    assert len(panel.jobs) == 4, (messages, [j.source for j in panel.jobs])
    wait_batch(qtbot, panel)
    assert {j.status for j in panel.jobs} == {"done"}
    assert any("1 other file(s)" in m for m in messages)
    assert sorted(os.listdir(out)) == ["checkpoint.cpu.tar", "dataparallel.cpu.pt", "dataparallel_checkpoint.cpu.pth",
                                       "gpu1_checkpoint.cpu.tar"]
    # the CPU copy of the cuda:1 checkpoint records cpu for every tensor
    from ckptviewer.core import open_checkpoint
    with open_checkpoint(out / "gpu1_checkpoint.cpu.tar") as c:
        assert {t.device for _, t in c.tensor_entries()} == {"cpu"}


def test_a_corrupt_file_fails_alone_and_says_why(qtbot, window, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    data = (inputs / "checkpoint.tar").read_bytes()
    broken = inputs / "broken.pt"
    broken.write_bytes(data[: len(data) // 3])
    panel = panel_of(window, "clean-dataparallel", out)
    drop_on(panel.zone, [inputs / "dataparallel.pt", broken, inputs / "checkpoint.tar",
                         inputs / "dataparallel_checkpoint.pth"])
    qtbot.waitUntil(lambda: len(panel.jobs) == 4, timeout=20_000)
    wait_batch(qtbot, panel)
    status = {os.path.basename(j.source): j for j in panel.jobs}
    assert status["broken.pt"].status == "failed"
    assert "broken.pt" in status["broken.pt"].message
    row = panel.jobs.index(status["broken.pt"])
    text = panel.model.index(row, 1).data()
    assert text.startswith("failed: ") and "broken.pt" in text
    assert [status[n].status for n in ("dataparallel.pt", "checkpoint.tar", "dataparallel_checkpoint.pth")] == ["done"] * 3
    assert sorted(os.listdir(out)) == ["checkpoint.clean.tar", "dataparallel.clean.pt",
                                       "dataparallel_checkpoint.clean.pth"]
    assert not (panel.model.flags(panel.model.index(row, 0)) & Qt.ItemFlag.ItemIsDragEnabled)
    panel.view.setCurrentIndex(panel.model.index(row, 0))          # the whole reason, under the list
    assert status["broken.pt"].message in panel.job_details.text() and panel.job_details.isVisibleTo(panel)


@pytest.fixture
def big_inputs(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    torch.manual_seed(0)
    for i in range(4):
        torch.save({f"module.layer{k}.weight": torch.randn(1024, 1024) for k in range(6)}, folder / f"big{i}.pt")
    return folder


def test_cancel_stops_the_batch_and_leaves_no_partial_outputs(qtbot, window, big_inputs, tmp_path, monkeypatch):
    from ckptviewer.gui.convert import panel as convert_panel_module
    from ckptviewer.gui.convert import work as convert_work

    # A job's worker does not wait for the GUI: without a gate it may write, verify and rename its whole
    # output before the GUI thread handles its first "writing" progress (a busy machine). Hold each job
    # after its first written chunk until its stop event is set (what Cancel does), so the cancel
    # always lands mid-write. A cancel that failed to set the event would let the job finish (after the
    # gate's timeout) and the assertions below would fail.
    real_steps = convert_work.convert_job_steps

    def gated_job_steps(source, recipe, stop):
        gen = real_steps(source, recipe, stop)
        held = False
        try:
            while True:
                step = next(gen)
                yield step
                if not held and step.stage == "writing" and step.done > 0:
                    held = True
                    stop.wait(30)
        except StopIteration as done:
            return done.value
        finally:
            gen.close()

    monkeypatch.setattr(convert_panel_module, "convert_job_steps", gated_job_steps)
    out = tmp_path / "out"
    out.mkdir()
    panel = panel_of(window, "clean-dataparallel", out)
    panel.max_parallel = 2
    writing = []

    def on_change(job):
        if job.status == "converting" and job.stage == "writing" and job.done > 0 and not writing:
            writing.append(job)
            assert leftovers(out), "a running export writes a temporary file first"
            panel.cancel_batch()

    panel.job_changed.connect(on_change)
    drop_on(panel.zone, sorted(big_inputs.iterdir()))
    wait_batch(qtbot, panel)
    assert writing, "no job reached the writing stage"
    statuses = [j.status for j in panel.jobs]
    assert writing[0].status == "cancelled"
    assert statuses.count("cancelled") >= 3          # the one writing, and the queued ones
    for job in panel.jobs:
        if job.status == "cancelled":
            assert job.output is None
            assert not (out / (Path(job.source).stem + ".clean.pt")).exists()
    assert leftovers(out) == []
    assert sorted(os.listdir(out)) == sorted(Path(j.output).name for j in panel.jobs if j.status == "done")
    assert "cancelled" in panel.summary.text()


def test_finished_rows_drag_out_as_file_urls_and_open_in_a_tab(qtbot, window, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    panel = panel_of(window, "clean-dataparallel", out)
    drop_on(panel.zone, [inputs / "dataparallel_checkpoint.pth"])
    qtbot.waitUntil(lambda: len(panel.jobs) == 1, timeout=20_000)
    wait_batch(qtbot, panel)
    job = panel.jobs[0]
    assert job.status == "done"
    index = panel.model.index(0, 0)
    assert panel.model.flags(index) & Qt.ItemFlag.ItemIsDragEnabled
    assert panel.view.dragEnabled()
    assert panel.model.supportedDragActions() == Qt.DropAction.CopyAction
    mime = panel.model.mimeData([index, panel.model.index(0, 3)])
    assert "text/uri-list" in mime.formats()
    assert [u.toLocalFile() for u in mime.urls()] == [job.output]
    uri_list = bytes(mime.data("text/uri-list")).decode()
    assert uri_list.strip() == QUrl.fromLocalFile(job.output).toString()
    # double-click opens the output in a tab
    panel.view.doubleClicked.emit(index)
    tab = window.current_tab()
    assert tab is not None and tab.path == job.output
    wait_loaded(qtbot, tab)
    assert "state_dict" in tab.file.analysis.summary or tab.file.analysis.state_dicts
    wait_idle(qtbot, window)


def test_recipe_editor_steps_round_trip_and_validation(qtbot, window, tmp_path):
    from ckptviewer.core.edit.recipes import load_recipe

    panel = panel_of(window, "fp16", tmp_path)
    ed = panel.editor
    assert [s.kind for s in ed.steps()] == ["select_model", "remap_device", "cast"]
    assert ed.steps_list.count() == 3 and ed.steps_list.item(2).text() == "3. Cast floating tensors to float16"
    # add a drop step after the cast, give it paths, move it up, remove the remap
    ed.steps_list.setCurrentRow(2)
    ed.add_step("drop")
    assert ed.step_stack.currentWidget() is ed.editors["drop"]
    ed.editors["drop"].paths.setPlainText("*.num_batches_tracked\nfc3.bias")
    assert ed.steps()[3].paths == ("*.num_batches_tracked", "fc3.bias")
    assert ed.preset_box.currentData() == "__custom__"
    ed.move_step(-1)
    assert [s.kind for s in ed.steps()] == ["select_model", "remap_device", "drop", "cast"]
    ed.steps_list.setCurrentRow(1)
    ed.remove_step()
    assert [s.kind for s in ed.steps()] == ["select_model", "drop", "cast"]
    ed.steps_list.setCurrentRow(2)
    ed.editors["cast"].dtype.setCurrentText("bfloat16")
    ed.add_step("strip_prefix")
    ed.editors["strip_prefix"].prefix.setText("module.")
    ed.editors["strip_prefix"].prefix.textEdited.emit("module.")
    ed.format_box.setCurrentIndex(ed.format_box.findData("safetensors"))
    ed.name_edit.setText("{stem}.slim{ext}")
    ed.name_edit.textEdited.emit("{stem}.slim{ext}")
    recipe = ed.recipe()
    assert [s.to_json() for s in recipe.steps] == [
        {"op": "select_model", "prefer": None}, {"op": "drop", "paths": ["*.num_batches_tracked", "fc3.bias"]},
        {"op": "cast", "dtype": "bfloat16"}, {"op": "strip_prefix", "prefix": "module.", "at": None}]
    assert recipe.output.format == "safetensors" and recipe.output.name == "{stem}.slim{ext}"
    assert recipe.output.folder == str(tmp_path)
    # save through the panel (written in a worker), load it back
    path = tmp_path / "slim.json"
    panel._on_save_requested(str(path), recipe)
    qtbot.waitUntil(lambda: path.exists() and not panel.runner.is_busy(), timeout=10_000)
    assert load_recipe(str(path)).to_json() == recipe.to_json()
    ed.choose_preset("gpu-to-cpu")
    panel._on_load_requested(str(path))
    qtbot.waitUntil(lambda: ed.preset_box.currentData() == "__custom__", timeout=10_000)
    assert ed.recipe().to_json() == recipe.to_json()
    # a bad parameter is named, and the recipe refuses to run until it is fixed
    ed.choose_preset("gpu-to-cpu")
    ed.steps_list.setCurrentRow(0)
    ed.editors["remap_device"].rules.setPlainText("cuda:1 -> gpu7")
    assert not ed.error.isHidden() and "step 1 (remap_device)" in ed.error.text() and "gpu7" in ed.error.text()
    assert panel.add_paths([str(tmp_path)]) is False and panel.jobs == []
    ed.editors["remap_device"].rules.setPlainText("cuda:1 -> cuda:0\n* -> cpu")
    assert ed.error.isHidden()
    assert ed.steps()[0].mapping == (("cuda:1", "cuda:0"), ("*", "cpu"))
    # a recipe file with a bad step: the message names it
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ckptviewer_recipe": 1, "steps": [{"op": "cast", "dtype": "float16"},
                                                                  {"op": "explode"}]}))
    panel._on_load_requested(str(bad))
    qtbot.waitUntil(lambda: "step 2" in ed.error.text(), timeout=10_000)
    assert "explode" in ed.error.text()


def test_step_dialogs_plug_into_the_editor(qtbot, window, tmp_path):
    from ckptviewer.core.edit.ops import Rename
    from ckptviewer.gui.convert import recipe_editor

    calls = []

    def rename_dialog(parent, step):
        calls.append(step)
        return Rename((("replace", "fc", "head"),))

    recipe_editor.register_step_dialog("rename", rename_dialog)
    try:
        panel = panel_of(window, "gpu-to-cpu", tmp_path)
        ed = panel.editor
        ed.add_step("rename")
        assert calls == [None] and ed.steps()[-1].rules == (("replace", "fc", "head"),)
        assert ed.dialog_button.isVisibleTo(ed)
        ed.dialog_button.click()
        assert len(calls) == 2 and calls[1].rules == (("replace", "fc", "head"),)
        ed.choose_preset("fp16")
        ed.steps_list.setCurrentRow(0)                          # select_model has no dialog
        assert not ed.dialog_button.isVisibleTo(ed)
    finally:
        recipe_editor.STEP_DIALOGS.pop("rename", None)


def test_cleaning_dialogs_edit_recipe_steps_previewed_on_the_current_tab(qtbot, window, ckpts, monkeypatch, tmp_path):
    from ckptviewer.core.edit.ops import RemapDevice, Rename, StripPrefix
    from ckptviewer.gui import dialogs
    from gui_support import open_one

    calls = []
    monkeypatch.setattr(dialogs.RenameDialog, "ask", classmethod(
        lambda cls, parent, root, rules=None: calls.append(("rename", root, rules)) or Rename((("replace", "fc", "head"),))))
    monkeypatch.setattr(dialogs.StripPrefixDialog, "ask", classmethod(
        lambda cls, parent, root, prefix="", at=None: calls.append(("strip", root, prefix)) or StripPrefix("module.")))
    monkeypatch.setattr(dialogs.RemapDevicesDialog, "ask", classmethod(
        lambda cls, parent, devices: calls.append(("remap", devices)) or RemapDevice((("cuda:1", "cpu"),))))
    panel = panel_of(window, "clean-dataparallel", tmp_path)
    ed = panel.editor
    # no tab open: a new rename step starts from its default, with no dialog
    ed.add_step("rename")                                      # after the selected first step
    assert calls == [] and ed.steps()[1].rules == (("remove_prefix", "module."),)
    ed.remove_step()
    assert [s.kind for s in ed.steps()] == ["select_model", "strip_prefix", "remap_device"]
    tab = open_one(qtbot, window, ckpts["gpu1_checkpoint.tar"])
    root = tab.file.checkpoint.root
    ed.steps_list.setCurrentRow(1)                              # Strip prefix (detected)
    assert ed.dialog_button.isVisibleTo(ed)
    ed.dialog_button.click()
    assert calls[-1] == ("strip", root, "") and ed.steps()[1] == StripPrefix("module.")
    ed.steps_list.setCurrentRow(2)                              # Remap devices: * -> cpu
    ed.dialog_button.click()
    assert calls[-1][0] == "remap" and calls[-1][1] == {"cuda:1": 21}
    assert ed.steps()[2].mapping == (("cuda:1", "cpu"),)
    ed.add_step("rename")
    assert calls[-1] == ("rename", root, None) and ed.steps()[3].rules == (("replace", "fc", "head"),)
    ed.steps_list.setCurrentRow(0)                              # select_model: no dialog
    assert not ed.dialog_button.isVisibleTo(ed)
    wait_idle(qtbot, window)


def _cli(*args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "ckptviewer", "convert", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=cwd)


def test_panel_and_command_line_write_byte_identical_outputs(qtbot, window, inputs, tmp_path):
    """The same recipe, once from the panel and once from `ckptviewer convert --recipe`, on copies."""
    recipes = {}
    panel = panel_of(window, "fp16")
    ed = panel.editor
    ed.steps_list.setCurrentRow(0)
    ed.add_step("strip_prefix")
    ed.format_box.setCurrentIndex(ed.format_box.findData("safetensors"))
    ed.name_edit.setText("{stem}.half{ext}")
    ed.name_edit.textEdited.emit("{stem}.half{ext}")
    custom = tmp_path / "custom.json"
    panel._on_save_requested(str(custom), ed.recipe())
    qtbot.waitUntil(lambda: custom.exists() and not panel.runner.is_busy(), timeout=10_000)
    recipes["custom"] = str(custom)
    recipes["clean-dataparallel"] = "clean-dataparallel"
    names = ["dataparallel.pt", "dataparallel_checkpoint.pth", "checkpoint.tar", "gpu1_checkpoint.tar"]
    for label, spec in recipes.items():
        gui_dir, cli_dir = tmp_path / f"gui-{label}", tmp_path / f"cli-{label}"
        for d in (gui_dir, cli_dir):
            d.mkdir()
            for n in names:
                shutil.copyfile(inputs / n, d / n)
        if spec == str(custom):
            panel._on_load_requested(spec)
            qtbot.waitUntil(lambda: not panel.runner.is_busy(), timeout=10_000)
        else:
            ed.choose_preset(spec)
        ed.set_output_folder(None)
        before = len(panel.jobs)
        assert panel.add_paths([str(gui_dir)])
        qtbot.waitUntil(lambda: len(panel.jobs) == before + len(names), timeout=20_000)
        wait_batch(qtbot, panel)
        assert all(j.status == "done" for j in panel.jobs[before:]), [j.message for j in panel.jobs[before:]]
        proc = _cli("--recipe", spec, cli_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs = sorted(set(os.listdir(gui_dir)) - set(names))
        assert len(outputs) == len(names)
        assert sorted(set(os.listdir(cli_dir)) - set(names)) == outputs
        for name in outputs:
            assert sha256(gui_dir / name) == sha256(cli_dir / name), f"{label}: {name} differs"


def test_screenshot_scene_shows_the_panel_and_writes_only_to_a_scratch_folder(inputs, tmp_path):
    before = sorted(os.listdir(inputs))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CKPTVIEWER_SCREENSHOT_SCENE="convert",
               CKPTVIEWER_SCREENSHOT_RECIPE="gpu-to-cpu", CKPTVIEWER_SETTINGS=str(tmp_path / "s.ini"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "convert.png"
    proc = subprocess.run([sys.executable, "-m", "ckptviewer", "--screenshot", str(out), str(inputs / "checkpoint.tar"),
                           str(inputs / "dataparallel.pt")], env=env, capture_output=True, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(inputs)) == before          # nothing written beside the inputs
