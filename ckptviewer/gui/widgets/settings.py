"""The one way the app reads and writes its settings.

Everything persistent (recent files, window geometry, splitter sizes, log-count toggle) goes through
:class:`Settings`. The backing file is an INI file: ``$CKPTVIEWER_SETTINGS`` when set (tests point it
at a temporary file, so no test ever touches a user's settings), else Qt's per-user location.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

from ...core.util.locations import is_url, normalize_location, shown_location

MAX_RECENT = 10
ENV_VAR = "CKPTVIEWER_SETTINGS"


def default_settings_path() -> str:
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)
    return str(Path(base or Path.home() / ".config") / "ckptviewer" / "ckptviewer.ini")


class Settings:
    """Typed access to the app's settings (an INI file)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else default_settings_path()
        self._q = QSettings(self.path, QSettings.Format.IniFormat)

    # -- recent files ---------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        """Recent files (and checkpoint folders), newest first, at most MAX_RECENT; gone ones dropped."""
        raw = self._q.value("recent/files", [])
        if isinstance(raw, str):
            raw = [raw]
        files = [str(p) for p in (raw or []) if isinstance(p, str) and p]
        # URLs are kept (there is no cheap way to know one is gone); local files that are gone are dropped.
        kept = [p for p in dict.fromkeys(files) if is_url(p) or os.path.exists(p)][:MAX_RECENT]
        if kept != files:
            self._set_recent(kept)
        return kept

    def add_recent_file(self, path: str | os.PathLike) -> list[str]:
        # A URL is stored redacted: no user:password@, no signature or token in its query.
        path = shown_location(normalize_location(path))
        files = [path] + [p for p in self.recent_files() if p != path]
        self._set_recent(files[:MAX_RECENT])
        return files[:MAX_RECENT]

    def clear_recent_files(self) -> None:
        self._set_recent([])

    def _set_recent(self, files: list[str]) -> None:
        self._q.setValue("recent/files", list(files))
        self._q.sync()

    # -- window state ---------------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        v = self._q.value("window/geometry")
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def set_window_geometry(self, data: QByteArray) -> None:
        self._q.setValue("window/geometry", data)

    def window_state(self) -> QByteArray | None:
        v = self._q.value("window/state")
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def set_window_state(self, data: QByteArray) -> None:
        self._q.setValue("window/state", data)

    def splitter_state(self, name: str) -> QByteArray | None:
        v = self._q.value(f"splitters/{name}")
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def set_splitter_state(self, name: str, data: QByteArray) -> None:
        self._q.setValue(f"splitters/{name}", data)

    # -- preferences ----------------------------------------------------------------------------
    def log_counts(self) -> bool:
        return str(self._q.value("histogram/log_counts", "false")).lower() == "true"

    def set_log_counts(self, on: bool) -> None:
        self._q.setValue("histogram/log_counts", "true" if on else "false")

    def sync(self) -> None:
        self._q.sync()
