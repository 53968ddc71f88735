"""`ckptviewer info`: the JSON contract, the readable tree, errors, and what it must not import."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import makers

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args, check=False):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120, check=check)


def test_info_json_follows_the_conformance_contract(ckpts):
    out = run("info", "--json", "--checksums", ckpts["checkpoint.tar"], check=True)
    report = json.loads(out.stdout)
    assert report["format"] == "torch-zip"
    got = {json.dumps(t["key"]): {k: t[k] for k in ("dtype", "shape", "sha256")} for t in report["tensors"]}
    assert got == makers.expected_tensors(ckpts.objects["checkpoint.tar"])
    assert all(t["device"] == "cpu" for t in report["tensors"])
    assert report["summary"].startswith("training checkpoint: epoch 7")
    assert report["optimizers"][0]["parameter_names"]["0"] == "conv1.weight"


def test_info_text_lists_state_dict_names_and_shapes_like_torch(ckpts):
    out = run("info", ckpts["state_dict.pt"], check=True).stdout
    sd = ckpts.objects["state_dict.pt"]
    lines = [line.split() for line in out.splitlines() if line.startswith("  ")]
    listed = {parts[0]: " ".join(parts[1:]).split("]")[0] + "]" for parts in lines}
    for name, t in sd.items():        # the tutorial prints: "conv1.weight   torch.Size([6, 3, 5, 5])"
        assert listed[name] == str(list(t.shape))


def test_info_depth_folds(ckpts):
    full = run("info", ckpts["checkpoint.tar"], check=True).stdout
    folded = run("info", "--depth", "0", ckpts["checkpoint.tar"], check=True).stdout
    assert "momentum_buffer" in full and "momentum_buffer" not in folded
    assert "folded" in folded


def test_info_bad_file_exits_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "photo.pt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    out = run("info", "--json", bad)
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "PNG image" in out.stderr


def test_info_warns_about_stand_ins(ckpts):
    report = json.loads(run("info", "--json", ckpts["whole_model.pt"], check=True).stdout)
    assert "models.Net" in report["stand_in_classes"]
    assert any("not imported" in w for w in report["warnings"])


def test_info_imports_neither_torch_nor_qt(ckpts):
    code = ("import sys\nfrom ckptviewer.cli.main import main\n"
            f"rc = main(['info', '--json', '--checksums', {str(ckpts['checkpoint.tar'])!r}])\n"
            "heavy = [m for m in ('torch', 'PySide6', 'pyqtgraph', 'shiboken6') if m in sys.modules]\n"
            "sys.stderr.write(repr((rc, heavy)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "(0, [])"
    code = "import sys, ckptviewer, ckptviewer.core; print([m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_listing_a_file_does_not_import_numpy(ckpts):
    """numpy is most of what `info` costs on a big file; it loads only when values are needed."""
    code = ("import sys\nfrom ckptviewer.cli.main import main\n"
            f"rc = main(['info', '--json', {str(ckpts['checkpoint.tar'])!r}])\n"
            "sys.stderr.write(repr((rc, 'numpy' in sys.modules)))\n"
            f"main(['info', '--json', {str(ckpts['values.pt'])!r}])\n"
            "sys.stderr.write(repr('numpy' in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # a file that holds numpy scalars and arrays needs numpy to rebuild them, and gets it
    assert out.stderr.strip().splitlines()[-1] == "(0, False)True"


def test_core_imports_with_qt_blocked():
    """The layering rule, made mechanical: every core module imports with PySide6/pyqtgraph unavailable."""
    code = (
        "import sys, pkgutil, importlib\n"
        "for m in ('PySide6', 'pyqtgraph', 'shiboken6'): sys.modules[m] = None\n"
        "import ckptviewer.core as core\n"
        "names = [m.name for m in pkgutil.walk_packages(core.__path__, 'ckptviewer.core.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "print(len(names))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 10


def test_conformance_kit_passes(conformance_dir):
    from conftest import SHARED
    out = subprocess.run([sys.executable, str(SHARED / "conformance" / "check.py"), str(conformance_dir),
                          "--cmd", f"{sys.executable} -m ckptviewer"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith("conformance: ")
