"""Files from ``resources/`` (icons): from the installed package, else from the source checkout."""
from __future__ import annotations

from importlib import resources as importlib_resources
from pathlib import Path

from PySide6.QtGui import QIcon, QPixmap

ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)


def resource_path(name: str) -> Path | None:
    try:
        candidate = importlib_resources.files("ckptviewer.resources") / name
        if candidate.is_file():
            return Path(str(candidate))
    except (ModuleNotFoundError, TypeError):
        pass
    repo = Path(__file__).resolve().parents[2] / "resources" / name
    return repo if repo.is_file() else None


def app_icon() -> QIcon:
    icon = QIcon()
    for size in ICON_SIZES:
        p = resource_path(f"icons/ckptviewer-{size}.png")
        if p is not None:
            icon.addFile(str(p))
    return icon


def icon_pixmap(size: int) -> QPixmap | None:
    p = resource_path(f"icons/ckptviewer-{size}.png")
    return QPixmap(str(p)) if p is not None else None
