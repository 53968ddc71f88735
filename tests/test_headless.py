"""Starting the window where there is no display (an SSH session, a container, CI)."""
from __future__ import annotations

import os
import subprocess
import sys

from ckptviewer.cli.main import _prepare_display

PNG = b"\x89PNG\r\n\x1a\n"


def _no_display_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return env


def test_prepare_display_decisions():
    env = {}
    assert _prepare_display(True, env, "linux") is None and env["QT_QPA_PLATFORM"] == "offscreen"
    env = {}
    reason = _prepare_display(False, env, "linux")
    assert "no display" in reason and "--screenshot" in reason and "QT_QPA_PLATFORM" not in env
    for env in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"QT_QPA_PLATFORM": "xcb"}):
        before = dict(env)
        assert _prepare_display(False, env, "linux") is None and env == before
    assert _prepare_display(False, {}, "darwin") is None          # macOS and Windows always have a screen
    assert _prepare_display(False, {}, "win32") is None


def test_screenshot_renders_without_a_display(tmp_path):
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, "-m", "ckptviewer", "--screenshot", str(out), "--demo"],
                          env=_no_display_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == PNG
    assert "This plugin does not support" not in proc.stderr      # the offscreen plugin's noise is filtered


def test_window_without_a_display_says_why_instead_of_aborting(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ckptviewer", "--new-window", "--demo"],
                          env=_no_display_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no display to open a window on" in proc.stderr
    assert "Aborted" not in proc.stderr and "could not load the Qt platform plugin" not in proc.stderr.lower()
