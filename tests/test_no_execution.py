"""Opening a file never runs code from it: payloads that would create a marker file, in every container.

Each payload is first checked to be live: Python's own ``pickle.loads`` on it does create the marker
(in a subprocess), so a test that passes here proves our reader refused a working exploit.
"""
from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import hostile
from ckptviewer.core import open_checkpoint
from ckptviewer.core.util.errors import CheckpointError
from ckptviewer.core.analyze.info import build_report

NAMES = sorted(hostile.payloads(Path("/x")))
# Payloads whose plain-pickle execution creates the marker (the others only name dangerous globals).
LIVE = hostile.LIVE


@pytest.mark.parametrize("name", sorted(LIVE))
def test_payload_is_live_under_plain_pickle(tmp_path, name):
    """Guard against testing a dud: plain pickle.loads must create the marker."""
    marker = tmp_path / "PWNED"
    data = hostile.payloads(marker)[name]
    # A payload may start the command without waiting for it (subprocess.Popen): reap every child
    # before exiting, so the marker check below never races a `touch` still starting up.
    code = (f"import os, pickle\n"
            f"try:\n"
            f"    pickle.loads({data!r})\n"
            "finally:\n"
            "    while True:\n"
            "        try:\n"
            "            os.wait()\n"
            "        except ChildProcessError:\n"
            "            break\n")
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, cwd=tmp_path)
    assert marker.exists(), f"{name} is not a working payload"


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("name", NAMES)
def test_reader_never_executes(tmp_path, marker, container, name):
    data = hostile.payloads(marker)[name]
    path = tmp_path / "evil.pt"
    path.write_bytes(hostile.torch_zip(data) if container == "zip" else hostile.torch_legacy(data))
    try:
        with open_checkpoint(path) as ck:
            report = build_report(ck, checksums=True)
            flagged = report["dangerous_globals"]
            assert flagged, f"{name}: nothing reported as dangerous"
    except CheckpointError:
        pass
    assert not marker.exists()


def test_dangerous_globals_are_named_in_warnings(tmp_path, marker):
    path = tmp_path / "evil.pt"
    path.write_bytes(hostile.torch_zip(hostile.payloads(marker)["global_reduce_os_system"]))
    with open_checkpoint(path) as ck:
        report = build_report(ck)
    assert report["dangerous_globals"] == ["os.system"]
    assert any(w.startswith("DANGEROUS: the pickle names os.system") for w in report["warnings"])


def test_payload_inside_a_real_state_dict_still_shows_the_weights(ckpts, tmp_path, marker):
    """A trojaned checkpoint: real weights plus an os.system call. The weights still show."""
    import zipfile
    src = zipfile.ZipFile(ckpts["state_dict.pt"])
    out = tmp_path / "trojan.pt"
    evil = hostile.glob("os", "system") + hostile.s(hostile.touch_cmd(marker)) + b"\x85R"
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                # new root: {"payload": os.system(...), "weights": <the original state_dict>}
                assert data.startswith(hostile.PROTO2) and data.endswith(b".")
                data = (hostile.PROTO2 + b"}(" + hostile.s("payload") + evil + hostile.s("weights") + data[2:-1]
                        + b"u.")
            z.writestr(info.filename, data)
    with open_checkpoint(out) as ck:
        assert "conv1.weight" in ck.root["weights"]
        assert ck.root["payload"].qualname == "os.system"
        report = build_report(ck, checksums=True)
        assert report["dangerous_globals"] == ["os.system"]
        assert all(t["sha256"] for t in report["tensors"])
    assert not marker.exists()


def test_huge_memo_index_does_not_allocate(tmp_path):
    """LONG_BINPUT 0xFFFFFFF0 makes CPython's C unpickler grow its memo to 2**33 slots; ours is a dict."""
    data = hostile.PROTO2 + b"N" + b"r\xf0\xff\xff\xff" + b"."
    path = tmp_path / "memo.pt"
    path.write_bytes(hostile.torch_zip(data))
    with open_checkpoint(path) as ck:
        assert ck.root is None


FORBIDDEN = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("_pickle", "load"), ("_pickle", "loads"),
    ("torch", "load"), ("jit", "load"), ("export", "load"), ("numpy", "load"), ("np", "load"), ("joblib", "load"),
    ("dill", "load"), ("dill", "loads"), ("marshal", "loads"),
}


def test_package_never_calls_unsafe_loaders():
    """A static search of the package for calls that unpickle: pickle.load(s), torch.load, jit.load, ..."""
    root = Path(__file__).resolve().parents[1] / "ckptviewer"
    offenders = []
    for py in root.rglob("*.py"):
        tree = ast.parse(py.read_text(), filename=str(py))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                owner_name = owner.id if isinstance(owner, ast.Name) else (
                    owner.attr if isinstance(owner, ast.Attribute) else None)
                if (owner_name, node.func.attr) in FORBIDDEN and not _weights_only_true(node):
                    offenders.append(f"{py.relative_to(root)}:{node.lineno} {owner_name}.{node.func.attr}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                mod = getattr(node, "module", None) or ""
                if mod in ("pickle", "_pickle", "dill", "joblib", "marshal") or any(
                        n in ("pickle", "_pickle", "dill", "joblib", "marshal") for n in names):
                    offenders.append(f"{py.relative_to(root)}:{node.lineno} imports {mod or names}")
    assert offenders == []


def _weights_only_true(call: ast.Call) -> bool:
    """torch.load(..., weights_only=True) is torch's restricted loader; we use it only on files we wrote."""
    return (isinstance(call.func, ast.Attribute) and call.func.attr == "load"
            and any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in call.keywords))


def test_loaders_in_forbidden_list_are_detected_by_the_scan(tmp_path):
    """The static search above must catch what it claims to (a scan that finds nothing proves nothing)."""
    sample = "import torch\nx = torch.load(p, weights_only=False)\nimport pickle\npickle.loads(b)\n"
    tree = ast.parse(sample)
    calls = [(n.func.value.id, n.func.attr) for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert set(calls) <= FORBIDDEN and len(calls) == 2


def test_plain_pickle_is_not_used_even_for_our_own_bytes():
    assert pickle  # the test module itself may use pickle to *make* payloads; the package may not
