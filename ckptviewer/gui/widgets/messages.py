"""Non-blocking error messages at the top of the window, each with details on demand.

A file that cannot be opened must not stop the others or the app: its message appears here (what
happened and what to do), the technical details stay folded until asked for, and a close button
dismisses it. No modal dialog, so drag-and-drop of many files never stacks pop-ups.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from ...core.util.errors import CheckpointError
from ...core.util.textsafe import safe_text
from .theme import level_icon

ERROR_STYLE = ("#message-item { background: rgba(217, 83, 79, 0.16); border: 1px solid rgba(217, 83, 79, 0.6); "
               "border-radius: 4px; }")
# A refused file that names dangerous globals: as strong as a tab's safety banner.
DANGER_STYLE = ("#message-item { background: #c0392b; border: 2px solid #8e1b10; border-radius: 4px; }"
                "#message-item QLabel { color: #ffffff; }")


class MessageItem(QFrame):
    def __init__(self, text: str, details: str = "", parent: QWidget | None = None, *, danger: bool = False):
        super().__init__(parent)
        self.setObjectName("message-item")
        self.danger = danger
        self.setStyleSheet(DANGER_STYLE if danger else ERROR_STYLE)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        row = QHBoxLayout()
        if danger:
            icon = QLabel(self)
            icon.setPixmap(level_icon("dangerous", 20, on_color=True).pixmap(20, 20))
            row.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        self.text = QLabel(self)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setText(text)
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.text, 1)
        self.details_button = QToolButton(self)
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setVisible(bool(details))
        row.addWidget(self.details_button)
        close = QToolButton(self)
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self._on_close_clicked)
        row.addWidget(close)
        lay.addLayout(row)
        self.details = QPlainTextEdit(self)
        self.details.setReadOnly(True)
        self.details.setPlainText(details)
        self.details.setMaximumHeight(160)
        self.details.hide()
        self.details_button.toggled.connect(self.details.setVisible)
        lay.addWidget(self.details)

    def _on_close_clicked(self) -> None:
        self.dismissed()

    def dismissed(self) -> None:
        """Replaced by the bar that holds this item."""
        self.hide()
        self.deleteLater()


class MessageBar(QWidget):
    MAX_SHOWN = 6

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(6, 4, 6, 0)
        self._lay.setSpacing(4)
        self._items: list[MessageItem] = []
        self.hide()

    def add_error(self, text: str, details: str = "", *, danger: bool = False) -> MessageItem:
        """Show ``text`` (plain); ``danger`` for a file that names dangerous globals (strong red)."""
        item = MessageItem(safe_text(text, 800), details, self, danger=danger)
        item.dismissed = lambda it=item: self._remove(it)
        self._items.append(item)
        self._lay.addWidget(item)
        while len(self._items) > self.MAX_SHOWN:
            self._remove(self._items[0])
        self.show()
        return item

    def items(self) -> list[MessageItem]:
        return list(self._items)

    def texts(self) -> list[str]:
        return [w.text.text() for w in self._items]

    def clear(self) -> None:
        for w in list(self._items):
            self._remove(w)

    def _remove(self, item: MessageItem) -> None:
        if item in self._items:
            self._items.remove(item)
            self._lay.removeWidget(item)
            item.hide()
            item.deleteLater()
        if not self._items:
            self.hide()


def error_text(error: BaseException) -> str:
    """One readable line for an error a worker raised: a :class:`CheckpointError` says it all itself;
    anything else is a bug, named by its type. A wrapper that carries the reader's error as ``error``
    (the tab's refused-file error) is shown as that error."""
    inner = getattr(error, "error", None)
    if isinstance(inner, BaseException):
        error = inner
    if isinstance(error, CheckpointError):
        return str(error)
    return f"{type(error).__name__}: {error}"
