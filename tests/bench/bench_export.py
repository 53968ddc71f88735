"""Export throughput and peak memory against `cp` of the same file.

    python tests/bench/bench_export.py [--gb 4] [--runs 3] [--keep DIR]

Generates (or reuses, with --keep) a state_dict of about --gb GB with keys under ``module.``, then
times in fresh processes: ``cp``; ``ckptviewer convert --strip-prefix`` to .pt; the same to
.safetensors; and a cast to bfloat16. Each conversion writes, fsyncs, re-reads and verifies every
tensor. Prints median wall time, throughput (source bytes / s) and peak RSS, with ratios to ``cp``.
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
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckptexport-"))
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / f"dp_state_dict_{args.gb:g}gb.pt"
    if not src.exists():
        t = time.perf_counter()
        make(src, args.gb)
        print(f"wrote {src} in {time.perf_counter() - t:.1f} s")
    size = src.stat().st_size
    out = folder / "out"
    ckpt = [sys.executable, "-m", "ckptviewer", "convert", str(src), "--force"]
    cases = {
        "cp": ["cp", str(src), str(out) + ".cp"],
        "cp + sync": ["sh", "-c", f"cp '{src}' '{out}.cp' && sync '{out}.cp'"],
        "convert --strip-prefix -> .pt": ckpt + ["-o", str(out) + ".pt", "--strip-prefix"],
        "convert --strip-prefix -> .safetensors": ckpt + ["-o", str(out) + ".safetensors", "--strip-prefix"],
        "convert --dtype bfloat16 -> .pt": ckpt + ["-o", str(out) + ".bf16.pt", "--dtype", "bfloat16"],
    }
    print(f"source: {size / 2**30:.2f} GiB; {args.runs} runs per case; {os.cpu_count()} CPUs")
    results = {}
    for name, cmd in cases.items():
        samples = []
        for _ in range(args.runs):
            samples.append(run_once(cmd))
        results[name] = (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
    base = results["cp"][0]
    print(f"\n{'case':<42} {'median s':>9} {'GiB/s':>7} {'x cp time':>10} {'peak RSS MiB':>13}")
    for name, (t, rss) in results.items():
        print(f"{name:<42} {t:9.2f} {size / 2**30 / t:7.2f} {t / base:10.2f} {rss:13.0f}")
    for suffix in (".cp", ".pt", ".safetensors", ".bf16.pt"):
        Path(str(out) + suffix).unlink(missing_ok=True)
    if not args.keep:
        src.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
