"""The safety report: `ckptviewer scan` and core/analyze/scan.py, on clean fixtures, payloads and broken files."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile

import pytest

import hostile
from ckptviewer.core import open_checkpoint
from ckptviewer.core.read.pickle.danger import danger_reason
from ckptviewer.core.analyze.scan import COMPUTED, categorize, scan_checkpoint, scan_file, walk_pickle

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def by_pickle(result):
    return {p.name: dict(p.counts) for p in result.pickles}


@pytest.mark.parametrize("name", ["state_dict.pt", "checkpoint.tar", "checkpoint_legacy.tar", "whole_model.pt",
                                  "whole_model_legacy.pt", "main_module_legacy.pt", "values.pt", "scripted.pt",
                                  "gan_modules.tar", "dtypes.pt"])
def test_light_pass_names_what_the_reader_resolves(ckpts, name):
    """The opcode walk (no objects built) and the full reader see the same globals in every pickle."""
    light = scan_file(ckpts[name])
    with open_checkpoint(ckpts[name]) as ck:
        full = scan_checkpoint(ck)
    assert light.status == 0 and not light.broken and not light.dangerous
    seen = by_pickle(light)
    for pname, counts in by_pickle(full).items():
        assert seen[pname] == counts
    # The light pass also reads TorchScript's debug pickles, which the reader does not need.
    assert set(seen) - set(by_pickle(full)) <= {n for n in seen if n.endswith("debug_pkl")}


def test_legacy_file_has_five_pickles_and_classes_are_unknown(ckpts):
    res = scan_file(ckpts["whole_model_legacy.pt"])
    assert [p.name for p in res.pickles] == ["magic number", "protocol version", "sys_info", "object pickle",
                                             "storage key list"]
    cats = {g.qualname: g.category for g in res.globals}
    assert cats["models.Net"] == "unknown"
    assert cats["torch._utils._rebuild_tensor_v2"] == "safe"
    assert cats["collections.OrderedDict"] == "safe"


def test_safetensors_has_no_pickles(ckpts):
    res = scan_file(ckpts["state_dict.safetensors"])
    assert res.format == "safetensors" and res.pickles == [] and res.status == 0
    assert "cannot run code" in res.verdict()


def test_rows_give_the_gui_what_it_shows(tmp_path, marker):
    path = tmp_path / "evil.pt"
    path.write_bytes(hostile.torch_zip(hostile.payloads(marker)["global_reduce_os_system"]))
    with open_checkpoint(path) as ck:
        rows = scan_checkpoint(ck).rows()
    assert rows == [("data.pkl", "os.system", 1, "dangerous", danger_reason("os", "system"))]


def test_counts_every_use(tmp_path):
    data = hostile.PROTO2 + b"(" + hostile.glob("os", "system") + hostile.glob("os", "system") \
        + hostile.glob("collections", "OrderedDict") + b"t."
    res = walk_pickle(data)
    assert res.complete and res.counts == {("os", "system"): 2, ("collections", "OrderedDict"): 1}


def test_truncated_after_a_dangerous_call_still_reports_it(tmp_path, marker):
    """A pickle that names os.system and is then cut short: report what was seen, and say it is broken."""
    evil = hostile.PROTO2 + hostile.glob("os", "system") + hostile.s(hostile.touch_cmd(marker)) + b"\x85R"
    path = tmp_path / "cut.pt"
    path.write_bytes(hostile.torch_legacy(evil + b"."))
    raw = path.read_bytes()
    cut_at = raw.index(hostile.touch_cmd(marker).encode()) + len(hostile.touch_cmd(marker)) + 2
    path.write_bytes(raw[:cut_at])
    res = scan_file(path)
    assert res.status == 1 and res.broken
    assert [g.qualname for g in res.dangerous] == ["os.system"]
    assert res.pickles[-1].name == "object pickle" and not res.pickles[-1].complete
    assert any("in the middle of a pickle" in p for p in res.problems)
    assert not marker.exists()


def test_truncated_clean_file_is_status_2(ckpts, tmp_path):
    raw = ckpts["state_dict_legacy.pt"].read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(raw[:300])
    res = scan_file(path)
    assert res.status == 2 and res.broken and not res.dangerous


def test_zip_without_its_directory_is_scanned_from_local_headers(ckpts, tmp_path, marker):
    """Cut before the central directory: data.pkl is still found, walked, and its os.system reported."""
    src = zipfile.ZipFile(ckpts["state_dict.pt"])
    out = tmp_path / "trojan.pt"
    evil = hostile.glob("os", "system") + hostile.s(hostile.touch_cmd(marker)) + b"\x85R"
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = hostile.PROTO2 + b"}(" + hostile.s("payload") + evil + hostile.s("w") + data[2:-1] + b"u."
            z.writestr(info.filename, data)
    raw = out.read_bytes()
    out.write_bytes(raw[:raw.index(b"PK\x01\x02")])          # everything up to the central directory
    res = scan_file(out)
    assert res.status == 1 and res.broken
    assert "os.system" in {g.qualname for g in res.dangerous}
    assert any("local headers" in p for p in res.problems)


def test_plain_pickle_files_are_scanned(tmp_path, marker):
    """Plain pickles (not checkpoints the viewer opens) are scanned, every pickle in the file."""
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2]}) + hostile.payloads(marker)["stack_global_exec"])
    res = scan_file(path)
    assert res.format == "pickle" and [p.name for p in res.pickles] == ["pickle", "pickle 2"]
    assert [g.qualname for g in res.dangerous] == ["builtins.exec"] and res.status == 1
    path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=0))            # protocol 0: no PROTO opcode
    assert scan_file(path).status == 0


def test_numpy_object_arrays_hold_pickles(tmp_path, marker):
    import numpy as np
    path = tmp_path / "a.npy"
    np.save(path, np.array([1, 2], dtype=np.float32))
    assert scan_file(path).status == 0
    head = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    head += b" " * (63 - (10 + len(head)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head
                     + hostile.payloads(marker)["global_reduce_os_system"])
    res = scan_file(path)
    assert res.status == 1 and [g.qualname for g in res.dangerous] == ["os.system"]
    npz = tmp_path / "a.npz"
    with zipfile.ZipFile(npz, "w") as z:
        z.write(path, "x.npy")
    assert [g.qualname for g in scan_file(npz).dangerous] == ["os.system"]


def test_unreadable_and_non_checkpoint_files(tmp_path):
    assert scan_file(tmp_path / "nope.pt").status == 2
    assert scan_file(tmp_path).error and scan_file(tmp_path).status == 2
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    res = scan_file(png)
    assert res.status == 2 and "PNG" in res.error


def test_attribute_chains_are_dangerous():
    """From protocol 4 pickle resolves a dotted name with getattr: harmless modules lead to os.system."""
    assert "os.system" in danger_reason("glob", "os.system")
    assert "os.system" in danger_reason("torch._utils", "os.system")
    assert "sys.modules" in danger_reason("collections", "_sys.modules")       # import sys as _sys
    assert "__init__" in danger_reason("collections", "OrderedDict.__init__.__globals__")
    assert danger_reason("models", "Outer.Inner") is None                      # a nested class is not
    assert categorize(COMPUTED, "system")[0] == "dangerous"
    assert categorize("__builtin__", "eval") == ("dangerous", danger_reason("builtins", "eval"))


# -- the command ------------------------------------------------------------------------------------------------
def test_cli_exit_statuses_and_text(ckpts, tmp_path, marker):
    clean = run("scan", ckpts["checkpoint.tar"])
    assert clean.returncode == 0, clean.stderr
    assert "safe" in clean.stdout and "clean: no dangerous globals" in clean.stdout
    evil = tmp_path / "evil.pt"
    evil.write_bytes(hostile.torch_zip(hostile.payloads(marker)["getattr_chain"]))
    out = run("scan", evil)
    assert out.returncode == 1
    assert "DANGEROUS  builtins.getattr" in out.stdout and "reads any attribute" in out.stdout
    assert "torch.load(weights_only=False)" in out.stdout
    assert run("scan", tmp_path / "missing.pt").returncode == 2
    both = run("scan", ckpts["checkpoint.tar"], evil, tmp_path / "missing.pt")
    assert both.returncode == 1                      # dangerous anywhere wins over an unreadable file
    assert not marker.exists()


def test_cli_json(ckpts, tmp_path, marker):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(hostile.torch_legacy(hostile.payloads(marker)["newobj_ex_popen"]))
    out = run("scan", "--json", evil)
    assert out.returncode == 1
    rep = json.loads(out.stdout)
    assert rep["status"] == 1 and rep["dangerous"] and rep["format"] == "torch-legacy"
    row = next(g for g in rep["globals"] if g["category"] == "dangerous")
    assert row == {"pickle": "object pickle", "module": "subprocess", "name": "Popen",
                   "qualname": "subprocess.Popen", "count": 1, "category": "dangerous",
                   "reason": danger_reason("subprocess", "Popen"), "where": "", "loader": "torch.load"}
    two = json.loads(run("scan", "--json", evil, ckpts["state_dict.pt"]).stdout)
    assert [r["status"] for r in two] == [1, 0]
    assert not marker.exists()


def test_distributed_checkpoint_metadata_and_shard_indexes(tmp_path, marker):
    """torch.distributed.checkpoint pickle.loads a folder's .metadata: the folder scan reads that pickle."""
    folder = tmp_path / "dcp"
    folder.mkdir()
    (folder / ".metadata").write_bytes(hostile.payloads(marker)["subprocess_popen"])
    res = scan_file(folder)
    assert res.status == 1 and res.format == "torch.distributed.checkpoint"
    assert [g.qualname for g in res.dangerous] == ["subprocess.Popen"]
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"metadata": {}, "weight_map": {"w": "model-00001.safetensors"}}')
    res = scan_file(index)
    assert res.status == 2 and "shard files" in res.error


def test_deflated_pickle_in_a_zip_without_directory(tmp_path, marker):
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/data.pkl", hostile.payloads(marker)["global_reduce_os_system"])
        z.writestr("a/version", "3")
    raw = buf.getvalue()
    path = tmp_path / "cut.pt"
    path.write_bytes(raw[:raw.index(b"PK\x01\x02")])
    res = scan_file(path)
    assert res.status == 1 and [g.qualname for g in res.dangerous] == ["os.system"] and res.broken


def test_skip_leaves_out_members_the_caller_has_read(tmp_path, marker):
    """The window passes the pickles the reader walked; the light pass walks only the other members."""
    import io
    buf = io.BytesIO(hostile.torchscript(hostile.CLEAN_DICT))
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("archive/code/__torch__/m.py.debug_pkl", hostile.payloads(marker)["global_reduce_os_system"])
    path = tmp_path / "scripted.pt"
    path.write_bytes(buf.getvalue())
    assert {p.name for p in scan_file(path).pickles} == {"data.pkl", "code/__torch__/m.py.debug_pkl",
                                                         "constants.pkl"}
    res = scan_file(path, skip=frozenset({"data.pkl", "constants.pkl"}))
    assert [p.name for p in res.pickles] == ["code/__torch__/m.py.debug_pkl"]
    assert [g.qualname for g in res.dangerous] == ["os.system"]
