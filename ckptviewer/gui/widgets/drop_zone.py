"""Drop targets for local files: the Convert panel's drop zone and a checkpoint tab's "compare with" zone.

A zone accepts drags that carry local file URLs (``text/uri-list``), shows that it would take them
while the drag is over it, and emits the paths when they are dropped. It never reads the files: what
happens next (a diff, a batch) runs in workers.
"""
from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDragMoveEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import QFileDialog, QFrame, QHBoxLayout, QLabel, QWidget

from ...core.util.textsafe import safe_text


def local_paths(mime) -> list[str]:
    """Local file paths in a drag's MIME data (other URLs are ignored)."""
    if mime is None or not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]


class FileDropZone(QFrame):
    """A framed area that takes dropped files (and folders when ``folders``). ``paths_dropped(list)``."""

    paths_dropped = Signal(list)

    def __init__(self, text: str, parent: QWidget | None = None, *, folders: bool = True, single: bool = False):
        super().__init__(parent)
        self.setObjectName("drop-zone")
        self.setAcceptDrops(True)
        self._folders = folders
        self._single = single
        self._hot = False
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 6)
        self.label = QLabel(text, self)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setWordWrap(True)
        lay.addWidget(self.label, 1)
        self._restyle()

    def set_text(self, text: str) -> None:
        self.label.setText(text)

    def _acceptable(self, paths: list[str]) -> list[str]:
        if not self._folders:
            paths = [p for p in paths if not os.path.isdir(p)]
        return paths[:1] if self._single else paths

    def _restyle(self) -> None:
        border = "palette(highlight)" if self._hot else "palette(mid)"
        self.setStyleSheet(f"#drop-zone {{ border: 2px dashed {border}; border-radius: 6px; }}")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if self._acceptable(local_paths(event.mimeData())):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            self._hot = True
            self._restyle()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt override
        if self._acceptable(local_paths(event.mimeData())):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802 - Qt override
        self._hot = False
        self._restyle()
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        self._hot = False
        self._restyle()
        paths = self._acceptable(local_paths(event.mimeData()))
        if not paths:
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.paths_dropped.emit([os.path.abspath(p) for p in paths])


class CompareZone(FileDropZone):
    """A checkpoint tab's "compare with" strip: drop another checkpoint (or click to choose one) and
    ``file_chosen(path)`` asks the window for a diff tab of this file against it."""

    file_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("⇄  Compare with…  drop another checkpoint here, or click to choose one",
                         parent, folders=False, single=True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Open a diff tab: this file (A) against the one you drop or choose (B)")
        self.setMaximumHeight(40)
        self.paths_dropped.connect(self._on_paths_dropped)

    def _on_paths_dropped(self, paths: list[str]) -> None:
        if paths:
            self.file_chosen.emit(paths[0])

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(event.position().toPoint()):
            path, _ = QFileDialog.getOpenFileName(self, "Compare with", "", "Checkpoints (*.pt *.pth *.tar *.bin "
                                                  "*.ckpt *.safetensors *.pkl);;All files (*)")
            if path:
                self.file_chosen.emit(path)
        super().mouseReleaseEvent(event)


def describe_paths(paths: list[str], limit: int = 3) -> str:
    names = [safe_text(os.path.basename(p) or p, 60) for p in paths[:limit]]
    more = len(paths) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")
