"""GUI responsiveness: the longest event-loop stall while the window works on big files.

    QT_QPA_PLATFORM=offscreen python tests/bench/bench_gui_stall.py --big BIG.pt --a A.pt --b B.pt [--json]

A 5 ms QTimer on the GUI thread records the longest gap between its ticks (how long the window could
not repaint or react) during three jobs, one after the other: opening BIG (until its tab is loaded),
computing the statistics and exact histogram of BIG's largest tensor (selected in the tree), and a
diff tab comparing A with B (until every pair is compared); with --keys FILE, also opening FILE (a
checkpoint of many small tensors, where the work is Python objects rather than bytes); with --keys-diff A
B, also a diff tab of two such files; with --keys-run FILE..., also a Run tab over such files
(until every tensor of every file is read). Prints one line
per job, or one JSON object
(job -> milliseconds) with --json. Issue 8's target: no stall over 100 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gui_work import StallProbe, wait  # noqa: E402


def largest_tensor(tab):
    from ckptviewer.core.model.tensor import TensorRef
    best = None
    for path, t in tab.file.checkpoint.tensor_entries():
        if isinstance(t, TensorRef) and (best is None or t.numel > best[1].numel):
            best = (tuple(path), t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", required=True)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--keys", help="also open this many-key checkpoint (e.g. 100,000 tensors)")
    ap.add_argument("--keys-diff", nargs=2, metavar=("A", "B"),
                    help="also diff two many-key checkpoints (prefixes stripped on both sides)")
    ap.add_argument("--keys-run", nargs="+", metavar="FILE",
                    help="also open a Run tab over these many-key checkpoints (until every tensor is read)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from PySide6.QtWidgets import QApplication

    from ckptviewer.gui.shell.main_window import MainWindow
    from ckptviewer.gui.widgets.settings import Settings

    app = QApplication.instance() or QApplication([])
    settings_dir = tempfile.mkdtemp(prefix="ckptviewer-stall-")
    win = MainWindow(Settings(os.path.join(settings_dir, "settings.ini")))
    win.resize(1440, 900)
    win.show()
    app.processEvents()
    # Warm what a user's second action would find warm (pyqtgraph, the histogram widget).
    time.sleep(0.2)
    app.processEvents()
    result: dict[str, float] = {}

    probe = StallProbe()
    (tab,) = win.open_paths([args.big])
    wait(app, lambda: tab.is_loaded)
    probe.stop()
    result["opening the big file"] = 1000 * probe.worst

    path, t = largest_tensor(tab)
    app.processEvents()
    probe = StallProbe()
    tab.select_path(path, "tensor")
    wait(app, lambda: not tab.has_pending_work())
    probe.stop()
    result[f"computing the histogram of a {t.numel:,}-element tensor"] = 1000 * probe.worst

    if args.keys:
        probe = StallProbe()
        (many,) = win.open_paths([args.keys])
        wait(app, lambda: many.is_loaded and not many.has_pending_work())
        probe.stop()
        result[f"opening a {many.file.n_tensors:,}-key file"] = 1000 * probe.worst

    probe = StallProbe()
    diff = win.open_diff(args.a, args.b)
    wait(app, lambda: diff.compare_done and not diff.has_pending_work())
    probe.stop()
    result["running a diff"] = 1000 * probe.worst

    if args.keys_diff:
        from ckptviewer.gui.diff.work import DiffSetup
        ka, kb = args.keys_diff
        probe = StallProbe()
        kdiff = win.open_diff(ka, kb, DiffSetup(ka, kb, strip_prefix=True))
        wait(app, lambda: kdiff.compare_done and not kdiff.has_pending_work())
        probe.stop()
        result[f"diffing two many-key files ({len(kdiff.session.run.entries):,} keys in all)"] = 1000 * probe.worst

    if args.keys_run:
        probe = StallProbe()
        run = win.runs.open_run(args.keys_run)
        wait(app, lambda: run.read_done and not run.has_pending_work())
        probe.stop()
        n = len(run.run.entries) if run.run is not None else 0
        result[f"filling a Run tab over {len(args.keys_run)} files ({n:,} keys)"] = 1000 * probe.worst

    win.shutdown()
    win.close()
    if args.json:
        print(json.dumps(result))
    else:
        for what, ms in result.items():
            print(f"longest stall while {what}: {ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
