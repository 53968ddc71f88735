"""Opening a big checkpoint: `ckptviewer info` against torch.load on the same file.

    python tests/bench/bench_open.py [--gb 4] [--dtype float16] [--runs 5] [--keep DIR]

Generates a state_dict of about --gb gigabytes (a transformer-like stack of layers) in a temporary
folder, then runs each case --runs times in a fresh process and prints the median wall time and
the median peak RSS of the process, with ratios to ``torch.load(mmap=True, weights_only=True)``
measured in the same run. Not a test: figures for notes and for spotting regressions.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def compile_package() -> str:
    """Write the bytecode of the ckptviewer the cases will run (the one ``python -m ckptviewer`` finds), as
    ``pip install`` does when it installs a wheel. A source checkout run with PYTHONDONTWRITEBYTECODE set
    (this project's machines set it) compiles ~150 modules in every process instead: measured here in the
    same runs, ``info --json`` of the 500 MB file 0.22 s instead of 0.08 s and the first window 0.92 s
    instead of 0.62 s, which no installed copy pays (torch, the baseline, is installed, so it never did).
    Returns the package's folder."""
    import compileall
    import importlib.util
    spec = importlib.util.find_spec("ckptviewer")
    folder = Path(spec.origin).parent
    compileall.compile_dir(str(folder), quiet=1)
    return str(folder)


CASES = {
    "ckptviewer info": [sys.executable, "-m", "ckptviewer", "info", "{path}"],
    "ckptviewer info --json": [sys.executable, "-m", "ckptviewer", "info", "--json", "{path}"],
    "torch.load(mmap=True, weights_only=True)": [
        sys.executable, "-c",
        "import torch, sys; sd = torch.load(sys.argv[1], mmap=True, weights_only=True, map_location='cpu'); "
        "print(len(sd))", "{path}"],
    "torch.load(weights_only=True) (default, reads all)": [
        sys.executable, "-c",
        "import torch, sys; sd = torch.load(sys.argv[1], weights_only=True, map_location='cpu'); print(len(sd))",
        "{path}"],
}


def make_state_dict(path: Path, gb: float, dtype: str, layers_hint: int = 48) -> tuple[int, int]:
    import torch
    dt = getattr(torch, dtype)
    itemsize = torch.empty((), dtype=dt).element_size()
    target = int(gb * (1 << 30))
    hidden = 2048
    per_layer = (4 * hidden * hidden + 2 * 4 * hidden * hidden) * itemsize  # attention + MLP
    layers = max(1, target // per_layer)
    sd = {"embed.weight": torch.empty(32000, hidden, dtype=dt)}
    for i in range(layers):
        p = f"layers.{i}."
        for name in ("q", "k", "v", "o"):
            sd[p + f"attn.{name}.weight"] = torch.empty(hidden, hidden, dtype=dt)
        sd[p + "mlp.up.weight"] = torch.empty(4 * hidden, hidden, dtype=dt)
        sd[p + "mlp.down.weight"] = torch.empty(hidden, 4 * hidden, dtype=dt)
        sd[p + "norm.weight"] = torch.ones(hidden, dtype=dt)
        sd[p + "norm.bias"] = torch.zeros(hidden, dtype=dt)
    torch.save(sd, path)
    return len(sd), path.stat().st_size


def run_once(cmd: list[str], ok_codes: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh process (exit codes in ``ok_codes`` count as success)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               f"rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
               "dt = time.perf_counter() - t; "
               f"assert rc in {ok_codes!r}, rc; "
               "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", wrapper] + cmd, capture_output=True, text=True, check=True)
    wall, rss = out.stdout.split()
    return float(wall), float(rss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-default-load", action="store_true", help="skip plain torch.load (slow, RAM hungry)")
    ap.add_argument("--keep", help="write the file here and keep it")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckptbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"state_dict_{args.gb:g}gb_{args.dtype}.pt"
    if not path.exists():
        t = time.perf_counter()
        n, size = make_state_dict(path, args.gb, args.dtype)
        print(f"wrote {path} ({size / 2**30:.2f} GiB, {n} tensors) in {time.perf_counter() - t:.1f} s")
    size = path.stat().st_size
    print(f"file: {size / 2**30:.2f} GiB; runs per case: {args.runs}; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs")
    results = {}
    for name, template in CASES.items():
        if args.skip_default_load and "default" in name:
            continue
        cmd = [a.replace("{path}", str(path)) for a in template]
        run_once(cmd)  # warm the page cache and imports once
        samples = [run_once(cmd) for _ in range(args.runs)]
        results[name] = (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
    base_t, base_m = results["torch.load(mmap=True, weights_only=True)"]
    print(f"\n{'case':<52} {'median s':>9} {'x mmap load':>12} {'peak RSS MiB':>13} {'x mmap load':>12}")
    for name, (t, m) in results.items():
        print(f"{name:<52} {t:9.3f} {t / base_t:12.2f} {m:13.0f} {m / base_m:12.2f}")
    if not args.keep:
        path.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
