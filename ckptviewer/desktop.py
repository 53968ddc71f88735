"""Registering ckptviewer with the desktop (XDG): the .desktop entry, MIME types and icons, per user.

``install(report)`` copies ``resources/`` files to the user's XDG data folder and refreshes the
caches with the tools that are present (``update-mime-database``, ``update-desktop-database``,
``gtk-update-icon-cache``, ``xdg-mime default``); ``uninstall(report)`` removes exactly those files.
``report`` receives one line per thing done. No Qt here: this runs from a terminal.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Callable

Report = Callable[[str], None]

DESKTOP_ID = "ckptviewer.desktop"
MIME_TYPES = ("application/x-pytorch-checkpoint", "application/x-safetensors")
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)


def resource_dir() -> Path:
    """The folder holding the .desktop file, MIME XML and icons (installed package or checkout)."""
    try:
        base = Path(str(importlib_resources.files("ckptviewer.resources")))
        if (base / DESKTOP_ID).is_file():
            return base
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "resources"


def data_home() -> Path:
    env = os.environ.get("XDG_DATA_HOME")
    return Path(env) if env else Path.home() / ".local" / "share"


def planned_files(home: Path | None = None) -> list[tuple[str, Path]]:
    """(resource name, destination) for every file install() writes."""
    home = home or data_home()
    out = [(DESKTOP_ID, home / "applications" / DESKTOP_ID),
           ("ckptviewer-mime.xml", home / "mime" / "packages" / "ckptviewer.xml"),
           ("icons/ckptviewer.svg", home / "icons" / "hicolor" / "scalable" / "apps" / "ckptviewer.svg")]
    for size in ICON_SIZES:
        out.append((f"icons/ckptviewer-{size}.png",
                    home / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "ckptviewer.png"))
    return out


def _exec_line() -> str:
    """``Exec=`` for the entry: the ckptviewer on PATH, else this interpreter running the module."""
    found = shutil.which("ckptviewer")
    if found:
        return "ckptviewer %F"
    return f"{_quote(sys.executable)} -m ckptviewer %F"


def _quote(arg: str) -> str:
    if all(c.isalnum() or c in "/._-+" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$") + '"'


def _run(cmd: list[str], report: Report) -> None:
    tool = shutil.which(cmd[0])
    if tool is None:
        report(f"skipped: {cmd[0]} is not installed")
        return
    try:
        proc = subprocess.run([tool] + cmd[1:], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        report(f"failed: {' '.join(cmd)} ({e})")
        return
    if proc.returncode == 0:
        report(f"ran: {' '.join(cmd)}")
    else:
        report(f"failed: {' '.join(cmd)} (exit {proc.returncode}: {proc.stderr.strip()[:200]})")


def _refresh(home: Path, report: Report, *, set_default: bool) -> None:
    _run(["update-mime-database", str(home / "mime")], report)
    _run(["update-desktop-database", str(home / "applications")], report)
    _run(["gtk-update-icon-cache", "-f", "-t", str(home / "icons" / "hicolor")], report)
    if set_default:
        _run(["xdg-mime", "default", DESKTOP_ID, *MIME_TYPES], report)


def install(report: Report = print) -> int:
    """Install the entry, MIME types and icons for the current user; returns an exit code."""
    src = resource_dir()
    home = data_home()
    missing = [name for name, _ in planned_files(home) if not (src / name).is_file()]
    if missing:
        report(f"error: resources missing from {src}: {', '.join(missing)}")
        return 1
    for name, dest in planned_files(home):
        dest.parent.mkdir(parents=True, exist_ok=True)
        if name == DESKTOP_ID:
            text = (src / name).read_text(encoding="utf-8")
            exec_line = _exec_line()
            text = text.replace("Exec=ckptviewer %F", f"Exec={exec_line}")
            if not exec_line.startswith("ckptviewer "):
                text = text.replace("TryExec=ckptviewer\n", "")
            tmp = dest.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, dest)
        else:
            shutil.copyfile(src / name, dest)
        report(f"installed {dest}")
    _refresh(home, report, set_default=True)
    report("ckptviewer is registered for .pt, .pth, .ckpt and .safetensors files "
           "(and torch files named .bin/.tar, by content).")
    return 0


def uninstall(report: Report = print) -> int:
    """Remove what :func:`install` wrote; returns an exit code (0 even when nothing was installed)."""
    home = data_home()
    removed = 0
    for _name, dest in planned_files(home):
        if dest.exists() or dest.is_symlink():
            dest.unlink()
            removed += 1
            report(f"removed {dest}")
    if removed:
        _refresh(home, report, set_default=False)
    else:
        report("nothing to remove: ckptviewer's desktop files were not installed")
    return 0
