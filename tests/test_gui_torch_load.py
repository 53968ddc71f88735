"""The Safety panel's "Loading in PyTorch" section (issue 14): verdict, reasons, the snippet with Copy, and the
weights-only-safe export through the Export dialog; the recipe editor's weights_only_safe step."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from gui_support import QT_STRICT, isolated_settings, no_workers_left, open_one, wait_idle, window  # noqa: F401
from PySide6.QtWidgets import QApplication

pytestmark = QT_STRICT


@pytest.fixture
def training_file(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "train.pt"
    torch.save({"epoch": 5, "model_state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.01, batch=32),
                "best_acc": np.float64(0.91), "hist": np.arange(4, dtype=np.float32)}, path)
    return path, net.state_dict()


def test_section_shows_the_verdict_and_the_snippet_and_copies_it(qtbot, window, training_file):
    from ckptviewer.gui.panels.torch_load_report import FIXABLE
    path, _ = training_file
    tab = open_one(qtbot, window, path)
    report = tab.safety.torch_load
    assert report is not None and report.level == FIXABLE
    section = tab.safety_panel.torch_load
    assert section.verdict.text().startswith("Does not load with torch.load(path)")
    assert "argparse.Namespace" in section.reasons.text()
    assert "numpy.dtypes.Float64DType" in section.reasons.text()
    assert section.snippet.toPlainText() == report.snippet
    assert "safe_globals([" in report.snippet and "argparse.Namespace" in report.snippet
    assert section.copy_button.isVisibleTo(section) and section.export_button.isVisibleTo(section)
    assert "--weights-only-safe" in section.convert.text()
    assert "torch not imported" in section.notes.text()
    section.copy_button.click()
    assert QApplication.clipboard().text() == report.snippet
    # The snippet really loads the file.
    r = subprocess.run([sys.executable, "-c", report.snippet + "\nassert checkpoint['epoch'] == 5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_file_that_loads_says_so_without_buttons(qtbot, window, tmp_path):
    from ckptviewer.gui.panels.torch_load_report import LOADS
    path = tmp_path / "sd.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    tab = open_one(qtbot, window, path)
    section = tab.safety_panel.torch_load
    assert tab.safety.torch_load.level == LOADS
    assert section.verdict.text().startswith("Loads:")
    assert not section.snippet.isVisibleTo(section) and not section.export_button.isVisibleTo(section)


def test_export_button_opens_the_export_dialog_with_the_step_and_the_copy_loads(qtbot, window, training_file,
                                                                                 tmp_path, monkeypatch):
    from ckptviewer.gui.dialogs import ExportDialog
    path, state_dict = training_file
    tab = open_one(qtbot, window, path)
    asked = {}

    def ask(cls, parent, source, root, analysis, subtree=None, *, weights_only_safe=False):
        asked.update(source=source, subtree=subtree, weights_only_safe=weights_only_safe)
        return None

    monkeypatch.setattr(ExportDialog, "ask", classmethod(ask))
    tab.safety_panel.torch_load.export_button.click()
    assert asked == {"source": tab.path, "subtree": None, "weights_only_safe": True}
    monkeypatch.undo()

    dlg = ExportDialog(tab, tab.path, tab.session.root, tab.session.state.analysis, weights_only_safe=True)
    qtbot.addWidget(dlg)
    assert dlg.safe_check.isChecked() and dlg.state.subtree == 0
    assert dlg.state.dest.endswith("train-weights-only.pt")
    out = tmp_path / "out" / "train-loads.pt"
    out.parent.mkdir()
    dlg.set_destination(str(out))
    qtbot.waitUntil(lambda: dlg.ok_button.isEnabled(), timeout=20_000)
    plan = dlg.plan_text.toPlainText()
    assert "numpy arrays written" not in plan          # the step made them tensors before the plan
    request = dlg.request()
    dlg.reject()
    tab.session.export(request)
    wait_idle(qtbot, tab)
    assert out.exists(), window.messages.texts()
    code = textwrap.dedent(f"""
        import torch
        c = torch.load({str(out)!r})
        assert c["args"] == {{"lr": 0.01, "batch": 32}} and c["best_acc"] == 0.91 and c["epoch"] == 5
        assert torch.equal(c["hist"], torch.arange(4, dtype=torch.float32))
        print("OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    loaded = torch.load(out, weights_only=True)
    for k, v in state_dict.items():
        assert torch.equal(loaded["model_state_dict"][k], v)
    # Unchecking the box gives the plain export plan back.
    dlg2 = ExportDialog(tab, tab.path, tab.session.root, tab.session.state.analysis, weights_only_safe=True)
    qtbot.addWidget(dlg2)
    dlg2.safe_check.setChecked(False)
    assert all(s.kind != "weights_only_safe" for s in dlg2.state.steps())
    dlg2.reject()


def test_recipe_editor_offers_the_weights_only_safe_step(qtbot, window, tmp_path):
    from ckptviewer.core.edit.recipes import find_recipe
    from ckptviewer.gui.convert.recipe_editor import STEP_LABELS
    window.actions_by_id["file.convert"].trigger()
    ed = window.convert_dock.panel.editor
    ed.choose_preset("gpu-to-cpu")
    assert "weights_only_safe" in STEP_LABELS
    ed.add_step("weights_only_safe")
    assert ed.step_stack.currentWidget() is ed.editors["weights_only_safe"]
    assert [s.to_json() for s in ed.recipe().steps][-1] == {"op": "weights_only_safe"}
    ed.choose_preset("weights-only-safe")
    assert json.dumps(ed.recipe().to_json()["steps"]) == json.dumps(
        [s.to_json() for s in find_recipe("weights-only-safe").steps])


def test_the_section_is_made_without_importing_torch(tmp_path, training_file):
    """Opening a file never imports torch: the report comes from the table, in a process where torch is absent."""
    path, _ = training_file
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None           # any import of torch now fails
        from ckptviewer.core.read.open import open_checkpoint
        from ckptviewer.gui.panels.torch_load_report import build_torch_load_report
        with open_checkpoint({str(path)!r}) as ckpt:
            r = build_torch_load_report(ckpt)
        print(r.level, r.snippet is not None)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["fixable", "True"]
