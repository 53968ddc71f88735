"""The About dialog (non-modal): version, libraries, and the promise that nothing in a file runs."""
from __future__ import annotations

import platform

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from ... import __version__


def about_text() -> str:
    return (f"ckptviewer {__version__}\n\n"
            "A browser for PyTorch checkpoints (.pt, .pth, .tar, .bin, .ckpt, .safetensors).\n\n"
            "Opening a file runs nothing from it: ckptviewer reads the pickle with its own interpreter and "
            "shows classes it does not know as inert stand-ins. Tensor values are read only when you look "
            "at them.\n\n"
            f"Python {platform.python_version()} · Qt {qVersion()} · PySide6 {pyside_version}\n"
            "MIT licence.")


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About ckptviewer")
        lay = QVBoxLayout(self)
        self.text = QLabel(about_text(), self)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setWordWrap(True)
        self.text.setMinimumWidth(380)
        lay.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.close)
        lay.addWidget(buttons)
