"""The Safety panel's "Loading in PyTorch" section: will ``torch.load`` open this file, and the fix.

Draws a :class:`~ckptviewer.gui.panels.torch_load_report.TorchLoadReport` made in the loading worker: the
verdict, the reasons, the code that loads the file (with a Copy button) and a button that asks for the
weights-only-safe export (``export_requested``; the tab opens the Export dialog with that step on).
All text is plain text.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from ...core.util.textsafe import safe_text
from ..widgets.theme import plain_tooltip
from .torch_load_report import TorchLoadReport

MAX_REASONS = 4
MAX_CLASSES = 3


def _label(parent: QWidget, text: str = "") -> QLabel:
    lab = QLabel(parent)
    lab.setTextFormat(Qt.TextFormat.PlainText)
    lab.setText(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


class TorchLoadSection(QGroupBox):
    """``export_requested`` when the user asks for a copy that plain torch.load opens."""

    export_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Loading in PyTorch", parent)
        self.setObjectName("torch-load")
        self.report: TorchLoadReport | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 6)
        lay.setSpacing(4)
        self.verdict = _label(self)
        f = self.verdict.font()
        f.setBold(True)
        self.verdict.setFont(f)
        lay.addWidget(self.verdict)
        self.reasons = _label(self)
        lay.addWidget(self.reasons)
        self.snippet = QPlainTextEdit(self)
        self.snippet.setObjectName("torch-load-snippet")
        self.snippet.setReadOnly(True)
        self.snippet.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.snippet.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        lines = self.snippet.fontMetrics().lineSpacing()
        self.snippet.setMinimumHeight(lines * 6 + 12)
        self.snippet.setMaximumHeight(lines * 11 + 12)
        lay.addWidget(self.snippet)
        self.convert = _label(self)
        self.convert.setObjectName("torch-load-convert")
        lay.addWidget(self.convert)
        row = QHBoxLayout()
        self.copy_button = QPushButton("Copy Code", self)
        self.copy_button.setToolTip("Copy the code that loads this file with the weights-only unpickler kept on")
        self.copy_button.clicked.connect(self._on_copy_clicked)
        row.addWidget(self.copy_button)
        self.export_button = QPushButton("Export a Copy That Loads…", self)
        self.export_button.setToolTip("Export with the weights-only-safe step: objects become dicts, pickled "
                                      "modules state_dicts, numpy values numbers and tensors; tensors are kept")
        self.export_button.clicked.connect(self.export_requested)
        row.addWidget(self.export_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.notes = _label(self)
        self.notes.setObjectName("torch-load-notes")
        lay.addWidget(self.notes)
        lay.addStretch(1)
        self.set_report(None)

    def set_report(self, report: TorchLoadReport | None) -> None:
        self.report = report
        if report is None:
            self.verdict.setText("Not checked for this file.")
            for w in (self.reasons, self.snippet, self.convert, self.copy_button, self.export_button, self.notes):
                w.hide()
            return
        self.verdict.setText(report.verdict)
        self.verdict.setToolTip(plain_tooltip(report.text()))
        lines = report.reasons[:MAX_REASONS] + [f"   {c}" for c in report.classes[:MAX_CLASSES]]
        hidden = max(0, len(report.reasons) - MAX_REASONS) + max(0, len(report.classes) - MAX_CLASSES)
        if hidden:
            lines.append(f"   …and {hidden} more (in the tooltip)")
        self.reasons.setText("\n".join(lines))
        self.reasons.setToolTip(plain_tooltip(report.text()))
        self.reasons.setVisible(bool(lines))
        self.snippet.setPlainText(report.snippet or "")
        self.snippet.setVisible(bool(report.snippet))
        self.copy_button.setVisible(bool(report.snippet))
        self.convert.setText(("Or from a terminal: " if report.snippet else "From a terminal: ")
                             + safe_text(report.convert, 600) if report.convert else "")
        self.convert.setVisible(bool(report.convert))
        self.export_button.setVisible(report.can_export)
        self.notes.setText(f"Checked with {report.source}")
        self.notes.setToolTip(plain_tooltip("\n".join(report.notes)) if report.notes else "")
        self.notes.show()

    def _on_copy_clicked(self) -> None:
        if self.report is not None and self.report.snippet:
            QGuiApplication.clipboard().setText(self.report.snippet)
