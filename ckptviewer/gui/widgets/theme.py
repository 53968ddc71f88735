"""Light and dark palettes that follow the system, and the colours and icons that tell node kinds apart.

The app uses the Fusion style with a palette of its own for each scheme, chosen from
``QStyleHints.colorScheme()`` and switched when the system switches. Kind icons are drawn at runtime
(a rounded badge with a letter), so they follow the scheme and need no image files.
"""
from __future__ import annotations

import html
import os
from functools import lru_cache

from PySide6.QtCore import QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QIcon, QPainter, QPalette, QPixmap, QPolygonF
from PySide6.QtWidgets import QApplication, QLabel, QWidget

# kind -> (letter, light colour, dark colour, label)
_KINDS: dict[str, tuple[str, str, str, str]] = {
    "module": ("M", "#1f6fd1", "#5aa2ff", "model (pickled module)"),
    "state_dict": ("M", "#1f6fd1", "#5aa2ff", "model weights (state_dict)"),
    "group": ("", "#6b7f99", "#8fa3bd", "group of keys"),
    "optimizer": ("O", "#c7631a", "#ff9f4a", "optimizer state"),
    "param_state": ("S", "#c7631a", "#ff9f4a", "parameter state"),
    "scheduler": ("L", "#b08800", "#e0b93a", "scheduler state"),
    "tensor": ("T", "#1f8a4c", "#4cc27e", "tensor"),
    "ndarray": ("A", "#1f8a4c", "#4cc27e", "numpy array"),
    "mapping": ("{}", "#6a6a6a", "#a0a0a0", "mapping"),
    "sequence": ("[]", "#6a6a6a", "#a0a0a0", "list / tuple"),
    "set": ("{}", "#6a6a6a", "#a0a0a0", "set"),
    "values": ("[]", "#7a6a9a", "#b0a0d0", "list of values"),
    "scalar": ("#", "#7a6a9a", "#b0a0d0", "scalar"),
    "string": ("\"", "#7a6a9a", "#b0a0d0", "string"),
    "none": ("∅", "#8a8a8a", "#8a8a8a", "None"),
    "object": ("?", "#a8328f", "#e070c8", "stand-in object (class not imported)"),
    "unreadable": ("!", "#c0392b", "#ff6b5b", "unreadable"),
    "cycle": ("↺", "#c0392b", "#ff6b5b", "cycle"),
    "truncated": ("…", "#c0392b", "#ff6b5b", "truncated"),
}


THEME_ENV = "CKPTVIEWER_THEME"      # "dark" or "light" overrides the system's scheme


def is_dark(palette: QPalette | None = None) -> bool:
    forced = os.environ.get(THEME_ENV, "").lower()
    if forced in ("dark", "light"):
        return forced == "dark"
    hints = QGuiApplication.styleHints()
    scheme = hints.colorScheme() if hints is not None else Qt.ColorScheme.Unknown
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    pal = palette or QGuiApplication.palette()
    return pal.color(QPalette.ColorRole.Window).lightness() < 128


def kind_color(kind: str, dark: bool | None = None) -> QColor:
    dark = is_dark() if dark is None else dark
    spec = _KINDS.get(kind)
    if spec is None:
        return QColor("#808080")
    return QColor(spec[2] if dark else spec[1])


def kind_label(kind: str) -> str:
    spec = _KINDS.get(kind)
    return spec[3] if spec else kind


@lru_cache(maxsize=128)
def _icon(kind: str, dark: bool, size: int = 16) -> QIcon:
    spec = _KINDS.get(kind, ("·", "#808080", "#808080", kind))
    letter = spec[0]
    color = QColor(spec[2] if dark else spec[1])
    icon = QIcon()
    for scale in (1, 2):
        px = QPixmap(size * scale, size * scale)
        px.fill(Qt.GlobalColor.transparent)
        p = QPainter(px)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(1 * scale, 1 * scale, (size - 2) * scale, (size - 2) * scale)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        if kind == "group":
            p.drawRoundedRect(r.adjusted(0, 3 * scale, 0, -3 * scale), 2 * scale, 2 * scale)
        else:
            p.drawRoundedRect(r, 3.5 * scale, 3.5 * scale)
        if letter:
            f = QFont()
            f.setBold(True)
            f.setPixelSize(int((9 if len(letter) == 1 else 7) * scale))
            p.setFont(f)
            p.setPen(QColor("#ffffff"))
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, letter)
        p.end()
        icon.addPixmap(px)
    return icon


# Safety levels (see safety_report.py) -> (light colour, dark colour): the verdict's icon and tint.
_LEVELS: dict[str, tuple[str, str]] = {
    "dangerous": ("#c0392b", "#ff6b5b"),
    "incomplete": ("#b7791f", "#f0b43c"),
    "unknown": ("#a8328f", "#e070c8"),
    "clean": ("#1f8a4c", "#4cc27e"),
    "safe": ("#1f8a4c", "#4cc27e"),
}


def level_color(level: str, dark: bool | None = None) -> QColor:
    dark = is_dark() if dark is None else dark
    spec = _LEVELS.get(level, ("#808080", "#a0a0a0"))
    return QColor(spec[1] if dark else spec[0])


@lru_cache(maxsize=64)
def _level_icon(level: str, dark: bool, size: int, on_color: bool) -> QIcon:
    """A warning triangle (dangerous, incomplete) or a round badge (unknown ?, clean ✓)."""
    color = QColor("#ffffff") if on_color else level_color(level, dark)
    mark = QColor("#c0392b" if level == "dangerous" else "#8a5a00") if on_color else QColor("#ffffff")
    icon = QIcon()
    for scale in (1, 2):
        s = size * scale
        px = QPixmap(s, s)
        px.fill(Qt.GlobalColor.transparent)
        p = QPainter(px)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        f = QFont()
        f.setBold(True)
        if level in ("dangerous", "incomplete"):
            tri = QPolygonF([QPointF(s / 2, s * 0.06), QPointF(s * 0.97, s * 0.92), QPointF(s * 0.03, s * 0.92)])
            p.drawPolygon(tri)
            f.setPixelSize(max(int(s * 0.62), 6))
            p.setFont(f)
            p.setPen(mark)
            p.drawText(QRectF(0, s * 0.26, s, s * 0.66), Qt.AlignmentFlag.AlignCenter, "!")
        else:
            p.drawEllipse(QRectF(s * 0.06, s * 0.06, s * 0.88, s * 0.88))
            f.setPixelSize(max(int(s * 0.6), 6))
            p.setFont(f)
            p.setPen(mark if on_color else QColor("#ffffff"))
            p.drawText(QRectF(0, 0, s, s), Qt.AlignmentFlag.AlignCenter, "?" if level == "unknown" else "✓")
        p.end()
        icon.addPixmap(px)
    return icon


def level_icon(level: str, size: int = 16, *, on_color: bool = False) -> QIcon:
    """The icon of a safety level; ``on_color`` draws it white, for a strongly coloured background."""
    return _level_icon(level, is_dark(), size, on_color)


def plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` literally. Qt renders a tooltip as rich text whenever it merely
    looks like HTML, so file-provided text is escaped and wrapped instead of passed as it is."""
    return "<p style='white-space:pre-wrap'>" + html.escape(text, quote=False) + "</p>"


def kind_icon(kind: str) -> QIcon:
    return _icon(kind, is_dark())


def _light_palette() -> QPalette:
    p = QPalette()
    c = QPalette.ColorRole
    for role, col in ((c.Window, "#f3f3f3"), (c.WindowText, "#1d1d1d"), (c.Base, "#ffffff"),
                      (c.AlternateBase, "#f5f7fa"), (c.Text, "#1d1d1d"), (c.Button, "#ececec"),
                      (c.ButtonText, "#1d1d1d"), (c.Highlight, "#2f7bd8"), (c.HighlightedText, "#ffffff"),
                      (c.ToolTipBase, "#ffffe1"), (c.ToolTipText, "#1d1d1d"), (c.PlaceholderText, "#8a8a8a"),
                      (c.Link, "#1f6fd1"), (c.Mid, "#c8c8c8"), (c.Dark, "#a0a0a0"), (c.Light, "#ffffff")):
        p.setColor(role, QColor(col))
    p.setColor(QPalette.ColorGroup.Disabled, c.Text, QColor("#9a9a9a"))
    p.setColor(QPalette.ColorGroup.Disabled, c.WindowText, QColor("#9a9a9a"))
    p.setColor(QPalette.ColorGroup.Disabled, c.ButtonText, QColor("#9a9a9a"))   # a disabled OK must look it
    return p


def _dark_palette() -> QPalette:
    p = QPalette()
    c = QPalette.ColorRole
    for role, col in ((c.Window, "#26282b"), (c.WindowText, "#e6e6e6"), (c.Base, "#1c1d1f"),
                      (c.AlternateBase, "#232528"), (c.Text, "#e6e6e6"), (c.Button, "#313338"),
                      (c.ButtonText, "#e6e6e6"), (c.Highlight, "#3d7fd6"), (c.HighlightedText, "#ffffff"),
                      (c.ToolTipBase, "#313338"), (c.ToolTipText, "#e6e6e6"), (c.PlaceholderText, "#8a8a8a"),
                      (c.Link, "#6fb0ff"), (c.Mid, "#45484d"), (c.Dark, "#18191b"), (c.Light, "#3a3c40")):
        p.setColor(role, QColor(col))
    p.setColor(QPalette.ColorGroup.Disabled, c.Text, QColor("#707070"))
    p.setColor(QPalette.ColorGroup.Disabled, c.WindowText, QColor("#707070"))
    p.setColor(QPalette.ColorGroup.Disabled, c.ButtonText, QColor("#707070"))
    return p


class ThemeWatcher(QObject):
    """Applies the palette for the system's colour scheme, now and whenever it changes."""

    def __init__(self, app: QApplication):
        super().__init__(app)
        self._app = app
        app.setStyle("Fusion")
        self.apply()
        hints = QGuiApplication.styleHints()
        if hints is not None and hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self._on_scheme_changed)

    def apply(self) -> None:
        dark = is_dark(self._app.style().standardPalette())
        self._app.setPalette(_dark_palette() if dark else _light_palette())

    def _on_scheme_changed(self, _scheme) -> None:
        self.apply()


def plain_label(text: str = "", parent: QWidget | None = None, *, wrap: bool = True, select: bool = False) -> QLabel:
    """A label that shows ``text`` as plain text, never as rich text (file-provided names pass through
    labels; a ``<b>`` in a key must stay two characters), word-wrapped unless ``wrap=False``, and
    selectable with the mouse when ``select``."""
    lab = QLabel(parent)
    lab.setTextFormat(Qt.TextFormat.PlainText)
    lab.setText(text)
    lab.setWordWrap(wrap)
    if select:
        lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab
