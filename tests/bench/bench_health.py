"""The health pass against reading the file once: `ckptviewer health FILE` next to `cat FILE > /dev/null`.

    python tests/bench/bench_health.py [FILE] [--runs 3] [--keep DIR] [--gb 6]

FILE defaults to the benchmark suite's 6 GB fp16 state_dict (run_all.py's ``big`` file; made in --keep DIR,
or a temporary folder, when absent). Each run times, in fresh processes and alternating so both see the
same page cache and machine load: ``cat FILE > /dev/null`` (one read of every byte, the baseline),
``ckptviewer health --json FILE`` (every tensor read and checked) and ``ckptviewer info --json FILE``
(opening alone, what health costs before it reads a value). Prints medians, peak RSS, throughputs and
the ratio of health's throughput to cat's (the target is at least 0.5). A first cat warms the page cache:
the comparison is of work per byte, not of the disk. Not a test: figures for notes and regressions.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_open import run_once  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", help="the checkpoint to check (default: the suite's big fp16 file)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gb", type=float, default=6.0, help="size of the generated file when FILE is not given")
    ap.add_argument("--keep", help="folder for the generated file (reused when present)")
    args = ap.parse_args()
    if args.file:
        path = Path(args.file)
    else:
        from run_all import make_files
        folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckpthealth-"))
        path = make_files(folder, args.gb, 8, 10)["big"]
    size = path.stat().st_size
    cases = {
        "cat FILE > /dev/null": ["sh", "-c", f"cat '{path}' > /dev/null"],
        "ckptviewer health --json": [sys.executable, "-m", "ckptviewer", "health", "--json", str(path)],
        "ckptviewer info --json": [sys.executable, "-m", "ckptviewer", "info", "--json", str(path)],
    }
    subprocess.run(cases["cat FILE > /dev/null"], check=True)          # warm the page cache
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, cmd in cases.items():
            results[name].append(run_once(cmd, ok_codes=(0, 1)))
    print(f"file: {path} ({size / 2**30:.2f} GiB), {args.runs} runs, medians")
    print(f"{'case':<28} {'wall s':>8} {'GiB/s':>7} {'peak RSS MiB':>13}")
    med = {}
    for name, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        rss = statistics.median(r[1] for r in rows)
        med[name] = wall
        print(f"{name:<28} {wall:8.2f} {size / wall / 2**30:7.2f} {rss:13.0f}")
    ratio = med["cat FILE > /dev/null"] / med["ckptviewer health --json"]
    print(f"health throughput / cat throughput: {ratio:.2f} (target >= 0.5: {'met' if ratio >= 0.5 else 'missed'})")
    print("runs (wall s): " + "; ".join(f"{name}: " + ", ".join(f"{r[0]:.2f}" for r in rows)
                                        for name, rows in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
