"""The checkpoint tab's Health check: the pass in a worker, the findings in the panel, marks in the tree.

The check runs over the tensors the tab shows (the edited view once there are edits), in the "health"
channel of the tab's runner, with progress in the status bar and the panel, and can be cancelled like any of
the tab's work. Clicking a finding or a chart point selects its tensor; rows with findings are marked in the
tree (through the tree model's health marks) until the view is edited.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from ...core.analyze.health import HealthReport, health_steps, parameter_breakdown
from ...core.model.walk import iter_tensors
from ...core.util.progress import Progress
from ...core.util.textsafe import path_text
from ...core.util.units import counted
from ..panels.health import HealthPanel
from ..widgets.messages import error_text
from ..widgets.workers import WorkerError

if TYPE_CHECKING:
    from .tab import CheckpointTab


def check_steps(entries, analysis):
    """The health pass, then the breakdown at three depths (for the chart's depth selector)."""
    report = yield from health_steps(entries, analysis)
    by_depth = {d: parameter_breakdown(report.tensors, analysis, d) for d in (1, 2, 3)}
    return report, by_depth


class HealthController(QObject):
    def __init__(self, tab: CheckpointTab, panel: HealthPanel):
        super().__init__(tab)
        self.tab = tab
        self.panel = panel
        self.report: HealthReport | None = None
        self.started = False
        panel.run_requested.connect(self.start)
        panel.finding_activated.connect(self._on_activated)

    def start(self) -> None:
        tab = self.tab
        if tab.file is None:
            return
        self.started = True
        if tab.is_edited:
            entries = list(iter_tensors(tab.session.state.root))
        else:
            entries = tab.file.checkpoint.tensor_entries()
        self.panel.set_running(True)
        tab.runner.submit("health", check_steps, entries, tab.view_analysis, on_progress=self._on_progress,
                          on_result=self._on_done, on_error=self._on_error)

    def _on_progress(self, p) -> None:
        if isinstance(p, Progress):
            self.panel.set_progress(p)
            self.tab.work_progressed.emit(Progress(p.done, p.total, f"{p.what} (health check)"))

    def _on_done(self, out) -> None:
        self.tab.work_progressed.emit(None)
        if out is None:                      # cancelled
            self.panel.set_failed("cancelled")
            return
        report, by_depth = out
        self.report = report
        self.panel.set_report(report, by_depth)
        self.apply_marks()
        c = report.counts()
        self.tab.status_message.emit(f"Health check: {counted(c['error'], 'error')}, "
                                     f"{counted(c['warning'], 'warning')}, {c['info']} info")

    def _on_error(self, err: WorkerError) -> None:
        self.panel.set_failed(error_text(err.exc))
        self.tab.status_message.emit(f"Health check failed: {error_text(err.exc)}")

    def apply_marks(self) -> None:
        """Mark the tree rows of tensors with findings (call again after the tree model was rebuilt)."""
        model = self.tab.model
        if model is None:
            return
        if self.report is None or self.tab.is_edited:
            model.set_health_marks({})
            return
        marks = {}
        order = {"error": 0, "warning": 1, "info": 2}
        for key, findings in self.report.by_key().items():
            worst = min(findings, key=lambda f: order[f.severity])
            text = "; ".join(dict.fromkeys(f.kind.replace("_", " ") for f in findings))
            marks[tuple(key)] = (worst.severity, text, "\n".join(f"{f.severity}: {f.message}" for f in findings[:6]))
        model.set_health_marks(marks)

    def view_changed(self) -> None:
        """The tab's view was edited: the findings describe the old one."""
        if self.report is not None:
            self.panel.set_stale()
        self.apply_marks()

    def _on_activated(self, key) -> None:
        if not self.tab.select_path(tuple(key), "tensor"):
            self.tab.status_message.emit(f"{path_text(key)} is not in the tree (the view was edited?)")
