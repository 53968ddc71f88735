"""`ckptviewer info --verify` (every zip member read once, CRC-32 compared) against `cat FILE > /dev/null`.

    python tests/bench/bench_verify.py [FILE] [--gb 2] [--runs 3] [--cold]

FILE defaults to a generated fp16 state_dict of --gb gigabytes in a temporary folder. Each case runs --runs
times in a fresh process; the medians are printed with the ratio to `cat`, measured in the same run. The
page cache is warm after the first read unless --cold asks to drop it between runs (needs root; writes
/proc/sys/vm/drop_caches), so the warm figures compare CPU cost and the cold ones disk speed. Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_file(path: Path, gb: float) -> None:
    import torch
    n = int(gb * (1 << 30)) // 2 // (4096 * 4096)
    torch.save({f"layer.{i}.weight": torch.empty(4096, 4096, dtype=torch.float16) for i in range(max(n, 1))}, path)


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(cmd: list[str], cold: bool) -> float:
    if cold:
        drop_caches()
    t = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    if rc not in (0, 1):
        raise SystemExit(f"{cmd[:4]} exited {rc}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?")
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.file) if args.file else Path(tmp) / "verify.pt"
        if not args.file:
            make_file(path, args.gb)
        size = path.stat().st_size
        env_py = [sys.executable, "-m", "ckptviewer"]
        cases = {
            "cat FILE > /dev/null": ["sh", "-c", f'cat "{path}" > /dev/null'],
            "python: open() + zlib.crc32 of every 16 MiB block": [
                sys.executable, "-c", "import sys, zlib\nf = open(sys.argv[1], 'rb')\nc = 0\n"
                "while b := f.read(16 << 20): c = zlib.crc32(b, c)", str(path)],
            "ckptviewer info --verify": env_py + ["info", "--verify", str(path)],
            "ckptviewer info (open only)": env_py + ["info", str(path)],
        }
        if args.cold and not drop_caches():
            print("--cold needs root (writing /proc/sys/vm/drop_caches); measuring warm")
            args.cold = False
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL)     # warm the cache once
        results = {}
        for name, cmd in cases.items():
            results[name] = statistics.median(timed(cmd, args.cold) for _ in range(args.runs))
        base = results["cat FILE > /dev/null"]
        print(f"file: {path} ({size / 1e9:.2f} GB), {'cold' if args.cold else 'warm'} page cache, "
              f"median of {args.runs}")
        for name, sec in results.items():
            print(f"  {name:<52} {sec:7.2f} s  {size / sec / 1e9:6.2f} GB/s  {sec / base:5.2f}x cat")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    main()
