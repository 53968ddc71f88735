"""Export throughput and peak memory against `cp` of the same file.

    python tests/bench/bench_export.py [--gb 4] [--runs 3] [--keep DIR] [--src FILE ...]

Generates (or reuses, with --keep) a state_dict of about --gb GB with keys under ``module.`` (or takes
existing files with --src, e.g. /work/benchdata/big_6gb_fp16.pt), then times in fresh processes, in
the same rounds: ``cp``; ``cp && sync``; ``ckptviewer convert`` to .pt; the same to .safetensors; and
a cast to bfloat16. Each conversion writes, fsyncs, reads back and verifies every record (CRC-32).
Prints median wall time, throughput (source bytes / s) and peak RSS, with ratios to ``cp && sync``
(the fair baseline: an export is durable when it returns) and the load average.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open import run_once  # noqa: E402


def make(path: Path, gb: float) -> None:
    import torch
    hidden = 2048
    per_layer = 6 * hidden * hidden * 2     # fp16
    layers = max(1, int(gb * (1 << 30)) // per_layer)
    sd = {}
    for i in range(layers):
        for name in ("q", "k", "v", "o"):
            sd[f"module.layers.{i}.attn.{name}.weight"] = torch.empty(hidden, hidden, dtype=torch.float16).normal_()
        sd[f"module.layers.{i}.mlp.weight"] = torch.empty(2 * hidden, hidden, dtype=torch.float16).normal_()
    torch.save(sd, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", help="folder to keep the generated file in (reused when present)")
    ap.add_argument("--src", action="append", default=[], help="an existing checkpoint to export (repeatable)")
    args = ap.parse_args()
    if args.src:
        for src in args.src:
            bench(Path(src), Path(tempfile.mkdtemp(prefix="ckptexport-", dir=Path(src).parent)), args.runs)
        return 0
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckptexport-"))
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / f"dp_state_dict_{args.gb:g}gb.pt"
    if not src.exists():
        t = time.perf_counter()
        make(src, args.gb)
        print(f"wrote {src} in {time.perf_counter() - t:.1f} s")
    bench(src, folder, args.runs)
    if not args.keep:
        src.unlink()
        folder.rmdir()
    return 0


def bench(src: Path, folder: Path, runs: int) -> None:
    size = src.stat().st_size
    out = folder / "out"
    ckpt = [sys.executable, "-m", "ckptviewer", "convert", str(src), "--force"]
    cases = {
        "cp": ["cp", str(src), str(out) + ".cp"],
        "cp + sync": ["sh", "-c", f"cp '{src}' '{out}.cp' && sync '{out}.cp'"],
        "convert -> .pt": ckpt + ["-o", str(out) + ".pt"],
        "convert --strip-prefix -> .safetensors": ckpt + ["-o", str(out) + ".safetensors", "--strip-prefix"],
        "convert --dtype bfloat16 -> .pt": ckpt + ["-o", str(out) + ".bf16.pt", "--dtype", "bfloat16"],
    }
    print(f"source: {src.name}, {size / 2**30:.2f} GiB; {runs} runs per case (after one warm-up round); "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    samples: dict[str, list] = {name: [] for name in cases}
    for i in range(runs + 1):               # rounds: every case once per round, so load hits all alike
        for name, cmd in cases.items():
            for suffix in (".cp", ".pt", ".safetensors", ".bf16.pt"):
                Path(str(out) + suffix).unlink(missing_ok=True)     # each run writes a new file
            subprocess.run(["sync"], check=True)
            result = run_once(cmd)
            if i:
                samples[name].append(result)
    results = {name: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
               for name, v in samples.items()}
    base = results["cp + sync"][0]
    print(f"\n{'case':<42} {'median s':>9} {'GiB/s':>7} {'x cp+sync':>10} {'peak RSS MiB':>13}")
    for name, (t, rss) in results.items():
        print(f"{name:<42} {t:9.2f} {size / 2**30 / t:7.2f} {t / base:10.2f} {rss:13.0f}")
    print(f"load after: {os.getloadavg()[0]:.2f}; target: convert -> .pt <= 1.5x cp + sync, peak RSS < 1536 MiB")
    for suffix in (".cp", ".pt", ".safetensors", ".bf16.pt"):
        Path(str(out) + suffix).unlink(missing_ok=True)
    if folder.name.startswith("ckptexport-"):
        try:
            folder.rmdir()
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
