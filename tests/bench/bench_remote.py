"""Reading checkpoints over HTTP: opening, a 100,000-key file, one tensor's values; against the same files read
from disk in the same run.

    python tests/bench/bench_remote.py [--keep /work/benchdata] [--runs 3] [--latency-ms 50]

Serves the benchmark files from a loopback server of our own (tests/netservers.py) that honours ranges and,
for the latency cases, waits before every answer; it counts the bytes it sends. Each open runs
``ckptviewer info --json URL`` in a fresh process with an empty cache folder (cold) or the folder the cold
run filled (warm), and prints the median wall time and the bytes moved, next to ``info --json`` on the local
file. Targets (issue 16): the ~6 GB file opens moving at most 16 MB, within 10 s on localhost and under 2 s
with 50 ms added per request; 100,000 keys in at most 3x the local time (+2 s); one tensor's values move
at most its own bytes plus a few MB. Not a test: figures for notes and for spotting regressions.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))
from netservers import DiskFile, FileServer  # noqa: E402

MB = 1_000_000


def run_info(target: str, cache: str | None) -> float:
    env = dict(os.environ)
    if cache:
        env["CKPTVIEWER_CACHE_DIR"] = cache
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "ckptviewer", "info", "--json", target], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"info failed on {target}: {run.stderr.strip()[-500:]}")
    return took


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def open_case(label: str, path: Path, runs: int, latency: float, scratch: Path) -> dict:
    """Cold and warm opens over HTTP (fresh processes), and the local open, ``runs`` times each."""
    local = [run_info(str(path), str(scratch / "unused")) for _ in range(runs)]
    cold, warm, cold_bytes, cold_requests, warm_bytes, warm_requests = [], [], [], [], [], []
    with FileServer({f"/{path.name}": DiskFile(path)}, latency=latency) as srv:
        url = srv.url(f"/{path.name}")
        for i in range(runs):
            cache = str(scratch / f"{label}-{i}")
            srv.reset()
            cold.append(run_info(url, cache))
            cold_bytes.append(srv.bytes_sent)
            cold_requests.append(srv.requests)
            srv.reset()
            warm.append(run_info(url, cache))
            warm_bytes.append(srv.bytes_sent)
            warm_requests.append(srv.requests)
    return {"local": median(local), "cold": median(cold), "warm": median(warm),
            "cold_bytes": max(cold_bytes), "cold_requests": max(cold_requests),
            "warm_bytes": max(warm_bytes), "warm_requests": max(warm_requests)}


def tensor_case(path: Path, scratch: Path) -> dict:
    """The largest tensor's sha256 over HTTP (in this process): bytes moved against its own size."""
    os.environ["CKPTVIEWER_CACHE_DIR"] = str(scratch / "tensor-cache")
    from ckptviewer.core.read.open import open_checkpoint
    with open_checkpoint(str(path)) as ckpt:
        name, t = max(((p, t) for p, t in ckpt.tensor_entries()), key=lambda e: e[1].nbytes)
        started = time.perf_counter()
        local_sha = t.sha256()
        local_s = time.perf_counter() - started
    with FileServer({f"/{path.name}": DiskFile(path)}) as srv:
        with open_checkpoint(srv.url(f"/{path.name}")) as ckpt:
            remote_t = dict((tuple(p), x) for p, x in ckpt.tensor_entries())[tuple(name)]
            srv.reset()
            started = time.perf_counter()
            remote_sha = remote_t.sha256()
            remote_s = time.perf_counter() - started
            moved = srv.bytes_sent
    assert remote_sha == local_sha, "the tensor's values differ over HTTP"
    return {"key": "/".join(map(str, name)), "nbytes": t.nbytes, "moved": moved, "local": local_s,
            "remote": remote_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", default="/work/benchdata", help="folder with big_*gb_fp16.pt and keys_100000.pt "
                                                              "(run_all.py --keep DIR makes them)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    args = ap.parse_args()
    keep = Path(args.keep)
    big = next(iter(sorted(keep.glob("big_*gb_fp16.pt"))), None)
    keys = next(iter(sorted(keep.glob("keys_*.pt"))), None)
    if big is None or keys is None:
        raise SystemExit(f"{keep} lacks big_*gb_fp16.pt or keys_*.pt: run tests/bench/run_all.py --keep {keep}")
    lat = args.latency_ms / 1000
    print(f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; {args.runs} runs per case; "
          f"server on 127.0.0.1 (ranges honoured)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ckptviewer-bench-remote-") as tmp:
        scratch = Path(tmp)
        size = big.stat().st_size / 1e9
        r = open_case("big", big, args.runs, 0.0, scratch)
        rows.append((f"open {big.name} ({size:.1f} GB) over HTTP, cold", r["cold"], r["local"],
                     f"<= 16 MB and < 10 s: {'MET' if r['cold_bytes'] <= 16 * MB and r['cold'] < 10 else 'MISSED'}",
                     f"{r['cold_bytes'] / MB:.1f} MB in {r['cold_requests']} requests"))
        rows.append((f"reopen {big.name} (cache)", r["warm"], r["local"], "",
                     f"{r['warm_bytes'] / MB:.2f} MB in {r['warm_requests']} requests"))
        r = open_case("big-lat", big, args.runs, lat, scratch)
        rows.append((f"open {big.name}, +{args.latency_ms:g} ms per request, cold", r["cold"], r["local"],
                     f"< 2 s: {'MET' if r['cold'] < 2 else 'MISSED'}",
                     f"{r['cold_bytes'] / MB:.1f} MB in {r['cold_requests']} requests"))
        rows.append((f"reopen {big.name}, +{args.latency_ms:g} ms per request (cache)", r["warm"], r["local"], "",
                     f"{r['warm_bytes'] / MB:.2f} MB in {r['warm_requests']} requests"))
        r = open_case("keys", keys, args.runs, 0.0, scratch)
        limit = 3 * r["local"] + 2
        rows.append((f"open {keys.name} over HTTP, cold", r["cold"], r["local"],
                     f"<= 3x local + 2 s ({limit:.1f} s): {'MET' if r['cold'] <= limit else 'MISSED'}",
                     f"{r['cold_bytes'] / MB:.1f} MB of {keys.stat().st_size / MB:.1f} MB in "
                     f"{r['cold_requests']} requests"))
        rows.append((f"reopen {keys.name} (cache)", r["warm"], r["local"], "",
                     f"{r['warm_bytes'] / MB:.2f} MB in {r['warm_requests']} requests"))
        t = tensor_case(big, scratch)
        extra = (t["moved"] - t["nbytes"]) / MB
        rows.append((f"sha256 of {t['key']} ({t['nbytes'] / MB:.0f} MB) over HTTP", t["remote"], t["local"],
                     f"its bytes + a few MB: {'MET' if extra <= 4 else 'MISSED'}",
                     f"moved {t['moved'] / MB:.1f} MB ({extra:+.1f} MB)"))
    print()
    print("| measurement | over HTTP | local file | ratio | target | bytes |")
    print("|---|---|---|---|---|---|")
    for what, remote, local, target, moved in rows:
        print(f"| {what} | {remote:.2f} s | {local:.2f} s | {remote / local:.1f}x | {target} | {moved} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
