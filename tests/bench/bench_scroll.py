"""Scrolling a 100,000-key checkpoint: time to repaint the tree after each page of scrolling.

    python tests/bench/bench_scroll.py [--keys 100000] [--file PATH] [--pages 300]

Makes a flat state_dict of --keys small tensors (or uses --file), opens it in the window (offscreen
unless $DISPLAY is set), then pages down --pages times, each time repainting the tree's viewport
synchronously, and prints the median, 95th percentile and worst frame time, plus the time the model
took to reach the last row (batches fetched on the way). Not a test: figures for notes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--file", type=Path)
    ap.add_argument("--pages", type=int, default=300)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="ckptviewer-scroll-")
    file = args.file
    if file is None:
        import torch
        file = Path(tmp.name) / "many_keys.pt"
        torch.save({f"encoder.param_{i}": torch.zeros(3) for i in range(args.keys)}, file)

    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from ckptviewer.gui.shell.main_window import MainWindow
    from ckptviewer.gui.widgets.settings import Settings

    win = MainWindow(Settings(Path(tmp.name) / "s.ini"))
    win.resize(1280, 900)
    win.show()
    t0 = time.perf_counter()
    tab = win.open_paths([file])[0]
    while not tab.is_loaded and tab.error is None:
        app.processEvents()
    print(f"{file.name}: loaded in {time.perf_counter() - t0:.2f} s (worker), "
          f"{tab.file.n_tensors:,} tensors")
    view = tab.view
    # Expand the one big container if the keys sit below one.
    model = view.model()
    if model.rowCount() == 1:
        view.expand(model.index(0, 0))
    app.processEvents()
    bar = view.verticalScrollBar()
    frames = []
    t_start = time.perf_counter()
    for _ in range(args.pages):
        bar.setValue(bar.value() + bar.pageStep())
        t = time.perf_counter()
        app.processEvents()            # lets the view fetch the next batch when the end is reached
        view.viewport().repaint()
        frames.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t_start
    frames.sort()
    p95 = frames[int(0.95 * (len(frames) - 1))]
    rows = model.rowCount(model.index(0, 0)) if model.rowCount() == 1 else model.rowCount()
    print(f"{len(frames)} pages: median frame {statistics.median(frames):.1f} ms, p95 {p95:.1f} ms, "
          f"worst {frames[-1]:.1f} ms; {rows:,} rows exposed after scrolling; {total:.2f} s in all")
    win.shutdown()
    win.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
