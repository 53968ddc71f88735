"""The window's long jobs: a diff tab and a Convert panel batch, timed, with the GUI thread watched.

    QT_QPA_PLATFORM=offscreen python tests/bench/bench_gui_work.py [--mb 400] [--files 6] [--file-mb 48] [--keep DIR]

Diff: two fp32 state_dicts of about --mb MB (a fifth of the tensors changed) are compared in a diff tab;
reports the time until the tree shows, the time until every pair is compared, and ``ckptviewer diff`` on
the same files in a fresh process for reference.
Convert: --files DataParallel checkpoints of about --file-mb MB go through the Convert panel with the
``clean-dataparallel`` recipe, and through ``ckptviewer convert --recipe clean-dataparallel`` on copies.
For both, a 5 ms timer on the GUI thread records the longest gap between its ticks: how long the window
could not repaint or react.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")


def make_diff_pair(folder: Path, mb: float) -> tuple[Path, Path]:
    import torch
    torch.manual_seed(0)
    n = 100
    per = int(mb * 2**20 / 4 / n)
    a = {f"layers.{i // 2}.{'attn' if i % 2 else 'mlp'}.weight": torch.randn(1024, max(1, per // 1024))
         for i in range(n)}
    b = {k: (v + 1e-2 * torch.randn_like(v) if i % 5 == 0 else v) for i, (k, v) in enumerate(a.items())}
    torch.save(a, folder / "a.pt")
    torch.save(b, folder / "b.pt")
    return folder / "a.pt", folder / "b.pt"


def make_batch(folder: Path, files: int, mb: float) -> list[Path]:
    import torch
    torch.manual_seed(0)
    per = int(mb * 2**20 / 4 / 6)
    out = []
    for i in range(files):
        sd = {f"module.block{k}.weight": torch.randn(1024, max(1, per // 1024)) for k in range(6)}
        path = folder / f"run{i}.pth"
        torch.save({"epoch": i, "model_state_dict": sd}, path)
        out.append(path)
    return out


class StallProbe:
    """Longest gap between ticks of a 5 ms timer on the GUI thread."""

    def __init__(self):
        from PySide6.QtCore import QTimer
        self.worst = 0.0
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tick(self):
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last)
        self._last = now

    def stop(self):
        self._timer.stop()


def wait(app, cond, timeout=600.0):
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=400)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--file-mb", type=float, default=48)
    ap.add_argument("--keep", metavar="DIR")
    args = ap.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="ckptviewer-bench-gui-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        a, b = (folder / "a.pt", folder / "b.pt") if (folder / "b.pt").exists() else make_diff_pair(folder, args.mb)
        batch_dir = folder / "batch"
        if not batch_dir.exists():
            batch_dir.mkdir()
            make_batch(batch_dir, args.files, args.file_mb)
        inputs = sorted(batch_dir.glob("run*.pth"))

        from PySide6.QtWidgets import QApplication

        from ckptviewer.gui.shell.main_window import MainWindow
        from ckptviewer.gui.widgets.settings import Settings

        app = QApplication.instance() or QApplication([])
        win = MainWindow(Settings(str(folder / "settings.ini")))
        win.resize(1440, 900)
        win.show()
        app.processEvents()

        # -- diff ----------------------------------------------------------------------------------
        size = a.stat().st_size / 2**20
        probe = StallProbe()
        t0 = time.perf_counter()
        tab = win.open_diff(str(a), str(b))
        wait(app, lambda: tab.is_ready or tab.error is not None)
        t_ready = time.perf_counter() - t0
        wait(app, lambda: tab.compare_done and not tab.has_pending_work())
        t_done = time.perf_counter() - t0
        probe.stop()
        counts = tab.session.run.counts()
        print(f"diff tab, 2 x {size:.0f} MiB: tree shown after {t_ready:.2f} s, all compared after "
              f"{t_done:.2f} s ({2 * size / t_done:.0f} MiB/s read); {counts['changed']} changed, "
              f"{counts['same']} identical; longest GUI stall {1000 * probe.worst:.0f} ms")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ckptviewer", "diff", str(a), str(b)], capture_output=True)
        print(f"ckptviewer diff (fresh process, same files): {time.perf_counter() - t0:.2f} s")

        # -- convert -------------------------------------------------------------------------------
        gui_dir, cli_dir = folder / "gui", folder / "cli"
        for d in (gui_dir, cli_dir):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            for p in inputs:
                shutil.copyfile(p, d / p.name)
        total = sum(p.stat().st_size for p in inputs) / 2**20
        panel = win.show_convert_panel()
        panel.editor.choose_preset("clean-dataparallel")
        app.processEvents()
        probe = StallProbe()
        t0 = time.perf_counter()
        panel.add_paths([str(gui_dir)])
        wait(app, lambda: panel.jobs and not panel.has_pending_work())
        t_panel = time.perf_counter() - t0
        probe.stop()
        statuses = [j.status for j in panel.jobs]
        print(f"convert panel, {len(inputs)} files, {total:.0f} MiB, {panel.max_parallel} at a time: {t_panel:.2f} s "
              f"({total / t_panel:.0f} MiB/s); {statuses.count('done')} done; longest GUI stall "
              f"{1000 * probe.worst:.0f} ms")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ckptviewer", "convert", "--recipe", "clean-dataparallel",
                               str(cli_dir)], capture_output=True, text=True)
        t_cli = time.perf_counter() - t0
        print(f"ckptviewer convert --recipe (fresh process, one file at a time): {t_cli:.2f} s, rc {proc.returncode}")
        same = all((gui_dir / n).read_bytes() == (cli_dir / n).read_bytes()
                   for n in os.listdir(gui_dir) if n.endswith(".clean.pth"))
        print(f"outputs byte-identical: {same}")
        win.shutdown()
        win.close()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
