"""Checkpoint > Verify Integrity: a worker reads every member once; damaged tensors are marked in the tree and
the details, and the result stays in a strip under the summary."""
from __future__ import annotations

import pytest
import torch

from ckptviewer.gui.checkpoint.tree_model import COL_VALUE
from gui_support import QT_STRICT, isolated_settings, no_workers_left, open_one, window  # noqa: F401

pytestmark = QT_STRICT


@pytest.fixture
def damaged(tmp_path):
    big = torch.arange(4096.)
    path = tmp_path / "damaged.pt"
    torch.save({"a": big, "b": torch.ones(10)}, path)
    data = bytearray(path.read_bytes())
    data[bytes(data).find(big[1000:1002].numpy().tobytes())] ^= 0x01
    path.write_bytes(data)
    return path


def test_window_verify_action_marks_the_damaged_tensor(qtbot, window, damaged):  # noqa: F811
    tab = open_one(qtbot, window, damaged)
    window.actions_by_id["checkpoint.verify"].trigger()
    qtbot.waitUntil(lambda: tab.integrity_bar.report is not None, timeout=20_000)
    assert not tab.integrity_bar.report.ok
    assert "FAIL" in tab.integrity_bar.label.text() and tab.integrity_bar.isVisible()
    node = tab.model.root.find(("a",))
    assert tab.model.cell_text(node, COL_VALUE).startswith("CRC-32 mismatch")
    assert tab.select_path(("a",))
    qtbot.waitUntil(lambda: "Integrity" in tab.details.facts, timeout=20_000)
    assert "fails its CRC-32 check" in tab.details.facts["Integrity"]


def test_verify_runs_in_a_worker_that_cancel_stops(qtbot, window, damaged, monkeypatch):  # noqa: F811
    import threading

    from ckptviewer.core.util.progress import Progress
    from ckptviewer.gui.checkpoint import tab as tab_module

    started = threading.Event()

    def endless(ckpt):
        while True:                  # every yield is a cancel point
            started.set()
            yield Progress(1, 2, "verifying")

    monkeypatch.setattr(tab_module, "verify_steps", endless)
    tab = open_one(qtbot, window, damaged)
    window.actions_by_id["checkpoint.verify"].trigger()
    assert started.wait(10)
    assert "Verifying" in tab.integrity_bar.label.text() and tab.has_pending_work()
    window.actions_by_id["view.cancel"].trigger()
    qtbot.waitUntil(lambda: not tab.runner.is_busy(), timeout=10_000)
    assert tab.integrity_bar.label.text() == "Integrity check cancelled."
