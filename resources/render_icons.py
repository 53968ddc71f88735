"""Render icons/ckptviewer.svg to the PNG sizes the desktop needs (run once after editing the SVG):

    QT_QPA_PLATFORM=offscreen python resources/render_icons.py
"""
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

SIZES = (16, 24, 32, 48, 64, 128, 256)


def main() -> None:
    app = QGuiApplication([])  # noqa: F841 - QPainter on images needs an application for fonts
    here = Path(__file__).resolve().parent / "icons"
    renderer = QSvgRenderer(str(here / "ckptviewer.svg"))
    for size in SIZES:
        img = QImage(size, size, QImage.Format.Format_ARGB32)
        img.fill(Qt.GlobalColor.transparent)
        p = QPainter(img)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(p)
        p.end()
        img.save(str(here / f"ckptviewer-{size}.png"))


if __name__ == "__main__":
    main()
