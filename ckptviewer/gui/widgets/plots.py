"""pyqtgraph, imported on first use (never before the first paint), and the look all charts share."""
from __future__ import annotations

from PySide6.QtGui import QPalette


def pyqtgraph():
    """The pyqtgraph module, configured once. Import it only here, after PySide6 (the app sets
    ``PYQTGRAPH_QT_LIB``); the window preloads it on a background thread after its first paint."""
    import pyqtgraph as pg
    pg.setConfigOptions(antialias=False)
    return pg


def style_plot(plot, palette: QPalette, *, axes=None) -> None:
    """Colour a chart from the widget palette (light or dark): ``plot`` (a PlotWidget or
    GraphicsLayoutWidget) gets the Base colour behind it, the left and bottom axes of ``axes`` (a PlotItem;
    ``plot`` itself by default) the Text colour."""
    plot.setBackground(palette.color(QPalette.ColorRole.Base))
    fg = palette.color(QPalette.ColorRole.Text)
    for name in ("left", "bottom"):
        axis = (axes or plot).getAxis(name)
        axis.setTextPen(fg)
        axis.setPen(fg)
