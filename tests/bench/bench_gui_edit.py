"""Editing a 100,000-key checkpoint in the window: how long each edit takes and how long the GUI thread
could not react meanwhile.

    python tests/bench/bench_gui_edit.py [--keys 100000] [--file PATH]

Makes a DataParallel-style state_dict of --keys small tensors (``module.layerN.weight``; or uses
--file), opens it in the window (offscreen unless $DISPLAY is set), then applies Strip prefix, Cast to
float16 and a regex Rename as the Checkpoint menu does (the edited tree is built in a worker), then
undo, undo, redo. For each it prints the total time, the time the GUI thread spent swapping in the
edited model, and the longest gap between ticks of a 5 ms QTimer on the GUI thread. Last it opens the
Rename Keys dialog and types a regex rule into it, a character every 120 ms. Not a test.
"""
from __future__ import annotations

import argparse
import os
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
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="ckptviewer-edit-")
    file = args.file
    if file is None:
        import torch
        file = Path(tmp.name) / "dataparallel_100k.pt"
        torch.save({f"module.layer{i}.weight": torch.zeros(2) for i in range(args.keys)}, file)

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from ckptviewer.core.edit.ops import Cast, Rename, StripPrefix
    from ckptviewer.gui.checkpoint import tab_edits
    from ckptviewer.gui.shell.main_window import MainWindow
    from ckptviewer.gui.widgets.settings import Settings

    win = MainWindow(Settings(Path(tmp.name) / "s.ini"))
    win.resize(1440, 900)
    win.show()
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    probe = QTimer()
    probe.timeout.connect(tick)
    probe.start(5)

    def wait(cond, limit: float = 300.0) -> None:
        end = time.monotonic() + limit
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    tab = win.open_paths([file])[0]
    wait(lambda: tab.is_loaded or tab.error is not None)
    wait(lambda: not win.has_pending_work())
    print(f"{file.name}: {tab.file.n_tensors:,} tensors")

    swaps: list[float] = []
    original = tab_edits.TabEditsMixin._on_state_changed

    def timed(self, new, old):
        t0 = time.perf_counter()
        original(self, new, old)
        swaps.append(time.perf_counter() - t0)

    tab_edits.TabEditsMixin._on_state_changed = timed
    tab.session.state_changed.disconnect()
    tab.session.state_changed.connect(tab._on_state_changed)

    def reset_probe() -> None:
        # Let the window paint what the last step showed before measuring the next one, as a person
        # would see it before choosing the next edit (that paint is not part of the next edit).
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)
        gaps.clear()
        last[0] = time.perf_counter()

    for step in (StripPrefix(), Cast("float16"), Rename((("regex", r"^layer(\d+)\.", r"block.\1."),))):
        reset_probe()
        t0 = time.perf_counter()
        tab.apply_steps(step)
        wait(lambda: not tab.session.busy)
        total = time.perf_counter() - t0
        print(f"{step.describe()[:44]:44s} total {total:5.2f} s  GUI-thread swap {swaps[-1] * 1000:4.0f} ms  "
              f"longest event-loop gap {max(gaps) * 1000:4.0f} ms")
    for name in ("undo", "undo", "redo"):
        reset_probe()
        t0 = time.perf_counter()
        getattr(tab, name)()
        app.processEvents()
        print(f"{name}: {(time.perf_counter() - t0) * 1000:.0f} ms")

    # The Rename Keys dialog: opening it, then typing a regex rule one character at a time.
    from ckptviewer.gui.dialogs import RenameDialog
    reset_probe()
    t0 = time.perf_counter()
    dlg = RenameDialog(win, tab.session.root)
    dlg.show()
    opened = time.perf_counter() - t0
    wait(lambda: not dlg._computing)
    reset_probe()
    dlg.add_rule("regex")
    for text, edit in ((r"^layer(\d+)\.", dlg.pattern_edit), (r"block.\1.", dlg.repl_edit)):
        for i in range(1, len(text) + 1):
            edit.setText(text[:i])
            edit.textEdited.emit(edit.text())
            end = time.monotonic() + 0.12           # a person typing
            while time.monotonic() < end:
                app.processEvents()
                time.sleep(0.002)
    t0 = time.perf_counter()
    wait(lambda: not dlg._computing and not dlg._timer.isActive())
    ready = time.perf_counter() - t0
    print(f"Rename Keys dialog: opened in {opened * 1000:.0f} ms; preview ready {ready * 1000:.0f} ms after the "
          f"last keystroke ({dlg.count_label.text()}); longest event-loop gap while typing {max(gaps) * 1000:.0f} ms")
    dlg.done(0)
    win.shutdown()


if __name__ == "__main__":
    main()
