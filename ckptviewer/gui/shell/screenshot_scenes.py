"""Screenshot scenes beyond the default one (``--screenshot OUT.png FILE...`` with
``$CKPTVIEWER_SCREENSHOT_SCENE`` set), for looking at the diff tab and the Convert panel headless:

* ``diff``: FILE_A FILE_B open in a diff tab; once compared, the key that changed most is selected and
  the PNG is taken when its histograms are drawn.
* ``health``: FILE open with its Health tab: the check runs, the tree is expanded to the first finding's
  tensor and the PNG is taken once everything is drawn.
* ``convert``: the Convert panel converts the files (recipe ``$CKPTVIEWER_SCREENSHOT_RECIPE``, default
  ``clean-dataparallel``) into a scratch folder, never beside them; the PNG is taken mid-batch, when
  one file is done and another is being written (or at the end if the batch is too quick for that).
* ``run``: FILE... (checkpoints, or one folder of them) in a Run tab; once every tensor is read, the one
  that moved most is selected at the last checkpoint and the PNG is taken.
"""
from __future__ import annotations

import sys
import time

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication

SCENE_ENV = "CKPTVIEWER_SCREENSHOT_SCENE"
RECIPE_ENV = "CKPTVIEWER_SCREENSHOT_RECIPE"
SCENES = ("diff", "convert", "health", "run")
TIMEOUT_S = 180.0


class _SceneDriver(QObject):
    def __init__(self, window, out: str, app: QApplication):
        super().__init__(window)
        self._window = window
        self._out = out
        self._app = app
        self._start = time.monotonic()
        self.ok = False
        self._timer = QTimer(self)
        self._timer.setInterval(20)
        self._timer.timeout.connect(self._on_tick)

    def _timed_out(self) -> bool:
        return time.monotonic() - self._start > TIMEOUT_S

    def _shoot(self) -> None:
        self._timer.stop()
        self.ok = self._window.grab().save(self._out)
        if self._timed_out():
            print(f"ckptviewer: screenshot taken after {TIMEOUT_S:.0f} s with work still pending", file=sys.stderr)
        self._app.exit(0 if self.ok else 1)

    def _on_tick(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class DiffScene(_SceneDriver):
    def __init__(self, window, files: list[str], out: str, app: QApplication):
        super().__init__(window, out, app)
        if len(files) != 2:
            raise ValueError("the diff scene compares two files: --screenshot OUT.png A B")
        self._tab = window.open_diff(files[0], files[1])
        self._selected = False
        self._quiet = 0
        self._timer.start()

    def _on_tick(self) -> None:
        tab = self._tab
        if self._timed_out():
            self._shoot()
            return
        if tab.error is not None:
            self._shoot()
            return
        if not tab.compare_done or tab.has_pending_work():
            self._quiet = 0
            return
        if not self._selected:
            self._selected = True
            best = tab.biggest_change()
            if best is not None:
                tab.select_entry(best)
            return
        self._quiet += 1
        if self._quiet >= 5:
            self._shoot()


class ConvertScene(_SceneDriver):
    def __init__(self, window, files: list[str], out: str, app: QApplication, folder: str, recipe: str):
        super().__init__(window, out, app)
        self._panel = window.show_convert_panel()
        self._panel.editor.choose_preset(recipe)
        self._panel.editor.set_output_folder(folder)
        if not self._panel.add_paths(files):
            raise ValueError("the convert scene needs files to convert")
        self._timer.start()

    def _on_tick(self) -> None:
        jobs = self._panel.jobs
        statuses = [j.status for j in jobs]
        mid = ("done" in statuses and any(j.status == "converting" and j.fraction > 0.2 for j in jobs))
        if mid or self._timed_out() or (jobs and not self._panel.has_pending_work()):
            self._shoot()


class HealthScene(_SceneDriver):
    def __init__(self, window, files: list[str], out: str, app: QApplication):
        super().__init__(window, out, app)
        if not files:
            raise ValueError("the health scene needs a file: --screenshot OUT.png FILE")
        self._tab = window.open_paths(files[:1])[0]
        self._stage = 0
        self._quiet = 0
        self._timer.start()

    def _on_tick(self) -> None:
        tab = self._tab
        if self._timed_out() or tab.error is not None:
            self._shoot()
            return
        if not tab.is_loaded or tab.has_pending_work():
            self._quiet = 0
            return
        if self._stage == 0:
            self._stage = 1
            tab.show_health()
            return
        if self._stage == 1:
            self._stage = 2
            report = tab.health_ctl.report
            if report is not None and report.findings:
                tab.select_path(tuple(report.findings[0].key), "tensor")
                tab.side_tabs.setCurrentWidget(tab.health_panel)
            return
        self._quiet += 1
        if self._quiet >= 5:
            self._shoot()


class RunScene(_SceneDriver):
    def __init__(self, window, files: list[str], out: str, app: QApplication):
        super().__init__(window, out, app)
        self._tab = window.open_paths(files, run=True)[0]
        self._selected = False
        self._quiet = 0
        self._timer.start()

    def _on_tick(self) -> None:
        tab = self._tab
        if self._timed_out() or tab.error is not None:
            self._shoot()
            return
        if not tab.read_done or tab.has_pending_work():
            self._quiet = 0
            return
        if not self._selected:
            self._selected = True
            checked = tab.layers.checked
            if checked:
                tab.select(checked[0], len(tab.run.files) - 1)
            return
        self._quiet += 1
        if self._quiet >= 5:
            self._shoot()


def start_scene(name: str, window, files: list[str], out: str, app: QApplication, scratch: str,
                recipe: str = "clean-dataparallel") -> _SceneDriver:
    if name == "diff":
        return DiffScene(window, files, out, app)
    if name == "convert":
        return ConvertScene(window, files, out, app, scratch, recipe)
    if name == "health":
        return HealthScene(window, files, out, app)
    if name == "run":
        return RunScene(window, files, out, app)
    raise ValueError(f"unknown screenshot scene {name!r}; use one of {', '.join(SCENES)}")
