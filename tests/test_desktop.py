"""Desktop integration: the files --install-desktop writes, the MIME rules, and --uninstall-desktop."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from ckptviewer import desktop

NS = {"m": "http://www.freedesktop.org/standards/shared-mime-info"}


def test_resources_are_complete_and_the_entry_is_valid():
    src = desktop.resource_dir()
    for name, _dest in desktop.planned_files(Path("/nowhere")):
        assert (src / name).is_file(), name
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(src / "ckptviewer.desktop")
    e = entry["Desktop Entry"]
    assert e["Exec"] == "ckptviewer %F" and e["Type"] == "Application" and e["Icon"] == "ckptviewer"
    assert set(desktop.MIME_TYPES) <= set(filter(None, e["MimeType"].split(";")))
    for size in desktop.ICON_SIZES:
        png = (src / f"icons/ckptviewer-{size}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(png[16:20], "big") == size and int.from_bytes(png[20:24], "big") == size


def _unescape(value: str) -> bytes:
    return value.encode("latin-1").decode("unicode_escape").encode("latin-1")


def _magic_matches(match: ET.Element, head: bytes) -> bool:
    value = _unescape(match.get("value"))
    offset = match.get("offset")
    lo, _, hi = offset.partition(":")
    lo, hi = int(lo), int(hi or lo)
    found = any(head[i:i + len(value)] == value for i in range(lo, hi + 1))
    subs = match.findall("m:match", NS)
    return found and (not subs or any(_magic_matches(s, head) for s in subs))


def test_mime_rules_recognise_real_torch_files_by_glob_and_by_content(ckpts, tmp_path):
    root = ET.parse(desktop.resource_dir() / "ckptviewer-mime.xml").getroot()
    types = {t.get("type"): t for t in root.findall("m:mime-type", NS)}
    pt = types["application/x-pytorch-checkpoint"]
    globs = {g.get("pattern") for g in pt.findall("m:glob", NS)}
    assert {"*.pt", "*.pth", "*.ckpt"} <= globs
    assert {g.get("pattern") for g in types["application/x-safetensors"].findall("m:glob", NS)} == {"*.safetensors"}
    rules = [m for magic in pt.findall("m:magic", NS) for m in magic.findall("m:match", NS)]
    for name in ("checkpoint.tar", "state_dict.pt", "whole_model.pt", "state_dict_legacy.pt", "checkpoint_legacy.tar"):
        head = Path(ckpts[name]).read_bytes()[:512]
        assert any(_magic_matches(r, head) for r in rules), name
    # A plain zip or tar (not torch) must not be claimed by content.
    import tarfile
    import zipfile
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("readme.txt", "hello")
    tar = tmp_path / "plain.tar"
    with tarfile.open(tar, "w") as t:
        t.add(plain, arcname="x.zip")
    for p in (plain, tar):
        assert not any(_magic_matches(r, p.read_bytes()[:512]) for r in rules), p.name


def test_install_and_uninstall_for_the_current_user(tmp_path, monkeypatch):
    home = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    lines: list[str] = []
    assert desktop.install(lines.append) == 0
    for _name, dest in desktop.planned_files(home):
        assert dest.is_file(), dest
    entry = (home / "applications" / "ckptviewer.desktop").read_text()
    assert re.search(r"^Exec=.*ckptviewer %F$", entry, re.M)
    assert any(line.startswith("installed ") for line in lines)
    if shutil.which("update-mime-database"):
        assert f"ran: update-mime-database {home / 'mime'}" in lines
        globs = (home / "mime" / "globs2").read_text()
        assert "application/x-pytorch-checkpoint:*.pth" in globs
    lines.clear()
    assert desktop.uninstall(lines.append) == 0
    for _name, dest in desktop.planned_files(home):
        assert not dest.exists(), dest
    assert sum(line.startswith("removed ") for line in lines) == len(desktop.planned_files(home))
    lines.clear()
    desktop.uninstall(lines.append)
    assert lines == ["nothing to remove: ckptviewer's desktop files were not installed"]


def test_cli_flags_reach_the_desktop_module_without_qt(tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path / "share"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = ("import sys; from ckptviewer.cli.main import main; rc = main(['--install-desktop']); "
            "assert 'PySide6' not in sys.modules; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "installed" in proc.stdout
    # ckptviewer is not on this PATH: the entry runs this interpreter instead.
    entry = (tmp_path / "share" / "applications" / "ckptviewer.desktop").read_text()
    assert f"Exec={sys.executable} -m ckptviewer %F" in entry
