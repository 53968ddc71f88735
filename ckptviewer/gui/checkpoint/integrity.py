"""Checkpoint > Verify Integrity: read every zip member of the tab's file once and check its CRC-32.

The check runs in the tab's worker (progress in the status bar, Cancel Running Work stops it); its
result appears in a strip under the summary, red when a member fails, and tensors whose bytes fail are
marked in the tree and the details from then on (the core records the verdict on their sources).
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

from ...core.analyze.integrity import IntegrityReport
from ...core.util.textsafe import safe_text

OK_STYLE = "#integrity-bar { background: rgba(92, 184, 92, 0.16); border: 1px solid rgba(92, 184, 92, 0.5); " \
           "border-radius: 4px; }"
BAD_STYLE = "#integrity-bar { background: rgba(217, 83, 79, 0.18); border: 1px solid rgba(217, 83, 79, 0.7); " \
            "border-radius: 4px; }"


class IntegrityBar(QFrame):
    """One line (plus the failing members) saying what the last integrity check found; hidden before."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("integrity-bar")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 3, 4, 3)
        self.label = QLabel(self)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label, 1)
        close = QToolButton(self)
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.report: IntegrityReport | None = None
        self.hide()

    def set_running(self) -> None:
        self.report = None
        self.setStyleSheet("")
        self.label.setText("Verifying: reading every member of the file once and checking its CRC-32…")
        self.show()

    def set_report(self, report: IntegrityReport) -> None:
        self.report = report
        self.setStyleSheet(OK_STYLE if report.ok else BAD_STYLE)
        lines = report.lines()
        self.label.setText("\n".join(safe_text(line, 400) for line in lines[:12]))
        self.show()

    def set_cancelled(self) -> None:
        self.setStyleSheet("")
        self.label.setText("Integrity check cancelled.")
        self.show()
