"""The Safety panel shows what `ckptviewer scan` finds in a file's containers (issue 20) and its TorchScript code
(issue 13): which member and which view of the archive held each pickle, who would load it, the archive's
anomalies, and the code torch.jit.load runs at load. Files are built at test time; nothing is unpickled.
"""
from __future__ import annotations

import io
import zipfile

import hostile
import scanvectors as sv
from ckptviewer.core.analyze.scanning.report import TORCH_LOAD, UNPACKING
from gui_support import QT_STRICT, isolated_settings, no_workers_left, open_one, wait_idle, window  # noqa: F401

pytestmark = QT_STRICT


def _rows(tab):
    model = tab.safety_panel.model
    return [model.row_at(r) for r in range(model.rowCount())]


def test_a_pickle_in_a_stray_member_shows_where_and_who(qtbot, window, tmp_path, marker):
    payload = hostile.payloads(marker)["global_reduce_os_system"]
    path = tmp_path / "stray.pt"
    path.write_bytes(sv.vectors(payload, b"N")["Z02"])
    tab = open_one(qtbot, window, path)
    wait_idle(qtbot, tab)
    assert tab.safety.is_dangerous
    (row,) = [r for r in _rows(tab) if r.category == "dangerous"]
    assert row.qualname == "os.system" and row.pickle == "extra.bin"
    assert "archive/extra.bin" in row.where and "central directory" in row.where and row.loader == UNPACKING
    panel = tab.safety_panel
    assert not panel.table.isColumnHidden(panel.model.LOADER)            # two loaders: the column is shown
    assert "central directory" in panel.row_detail.text() and UNPACKING in panel.row_detail.text()
    assert "a person unpacking" in tab.safety_banner.texts()["names"]
    assert any(r.loader == TORCH_LOAD for r in _rows(tab) if r.pickle == "data.pkl")
    assert not marker.exists()


def test_archive_anomalies_are_listed(qtbot, window, tmp_path):
    b = bytearray(sv.torch_save())
    c, lo, n = sv.find(b, b"data.pkl")
    b[lo + 30 + len(n) - 8:lo + 30 + len(n)] = b"datX.pkl"
    path = tmp_path / "renamed.pt"
    path.write_bytes(bytes(b))
    tab = open_one(qtbot, window, path)
    wait_idle(qtbot, tab)
    assert not tab.safety.is_dangerous and tab.safety.anomalies
    text = tab.safety_panel.issues.text()
    assert "Anomaly:" in text and "datX.pkl" in text
    assert "anomaly:" in tab.safety.text()


def test_torchscript_code_that_runs_at_load_gets_the_banner(qtbot, window, tmp_path, marker):
    """A scripted module whose __setstate__ calls torch.save: the code is read, never run."""
    code = ("class Printer(Module):\n  n : int\n  def __setstate__(self: __torch__.Printer, state: Tuple[int, bool])"
            " -> NoneType:\n    torch.save(self.n, \"" + str(marker) + "\")\n    return None\n")
    data = hostile.PROTO2 + hostile.glob("__torch__", "Printer") + b")\x81" + b"(K\x01\x88tb."
    buf = io.BytesIO(hostile.torchscript(data))
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("archive/code/__torch__.py", code)
    path = tmp_path / "scripted.pt"
    path.write_bytes(buf.getvalue())
    tab = open_one(qtbot, window, path)
    wait_idle(qtbot, tab)
    assert tab.safety.is_dangerous
    (row,) = [r for r in _rows(tab) if r.code]
    assert row.category == "dangerous" and "Printer.__setstate__" in row.qualname and "torch.save" in row.qualname
    assert row.pickle == "code/__torch__.py"
    assert "TorchScript" in tab.safety_banner.texts()["title"]
    assert "torch.jit.load" in tab.safety_panel.verdict.text()
    assert not marker.exists()
