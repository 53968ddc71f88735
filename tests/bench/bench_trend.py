"""Trend over a run: `ckptviewer trend` against a torch loop doing the same computation.

    python tests/bench/bench_trend.py [--base /work/benchdata/mid_500mb_fp32.pt] [--files 10] [--runs 3]
                                      [--keep DIR]

Writes --files perturbed copies of a state_dict (--base, or a generated 500 MB fp32 one): copy i is
``base + 1e-3 * i * randn`` for every floating tensor, saved as ``step_<i>.pt`` with a ``global_step``.
Then times in fresh processes, each over the whole folder:
- ``ckptviewer trend DIR --json`` (each file read once, two tensors in memory);
- the torch loop a user would write: ``torch.load`` each file in turn (weights_only=True), and per tensor
  norm, mean, std(correction=0) and ||x - prev|| / ||prev|| against the previous file's state_dict
  (kept in memory);
- the same loop with ``torch.load(mmap=True)``, and with one torch thread (``torch.set_num_threads(1)``).
Prints median wall time, peak RSS and the ratio to the plain torch loop.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open import run_once  # noqa: E402

TORCH_LOOP = r"""
import os, re, sys, torch
folder, mmap = sys.argv[1], sys.argv[2] == "mmap"
if len(sys.argv) > 3:
    torch.set_num_threads(int(sys.argv[3]))
names = sorted((n for n in os.listdir(folder) if n.endswith(".pt")), key=lambda n: int(re.findall(r"\d+", n)[-1]))
prev, out = None, {}
for name in names:
    ckpt = torch.load(os.path.join(folder, name), weights_only=True, mmap=mmap)
    sd = ckpt["model"] if "model" in ckpt else ckpt
    for k, x in sd.items():
        if not torch.is_tensor(x):
            continue
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        row = [x.norm().item(), x.mean().item(), x.std(correction=0).item()]
        p = prev.get(k) if prev is not None else None
        if p is not None and p.shape == x.shape:
            pn = p.norm().item()
            row.append((x - p).norm().item() / pn if pn else None)
        else:
            row.append(None)
        out.setdefault(k, []).append(row)
    prev = {k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v) for k, v in sd.items()
            if torch.is_tensor(v)}
    if mmap:   # the mapped file's values must outlive this iteration
        prev = {k: v.clone() for k, v in prev.items()}
print(len(out))
"""


def make(folder: Path, base: str | None, files: int) -> None:
    import torch
    torch.manual_seed(0)
    if base:
        sd = torch.load(base, weights_only=True, mmap=True)
    else:
        sd = {f"layers.{i}.weight": torch.randn(1024, 1024) for i in range(125)}
    for i in range(files):
        out = {k: (v + 1e-3 * i * torch.randn_like(v) if v.is_floating_point() else v) for k, v in sd.items()}
        torch.save({"global_step": 1000 * i, "model": out}, folder / f"step_{i}.pt")
        del out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="/work/benchdata/mid_500mb_fp32.pt",
                    help="a state_dict to perturb (generated when the file does not exist)")
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckpttrend-"))
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("step_*.pt"))) != args.files:
        for old in folder.glob("step_*.pt"):
            old.unlink()
        make(folder, args.base if Path(args.base).exists() else None, args.files)
    files = sorted(folder.glob("step_*.pt"))
    total = sum(f.stat().st_size for f in files)
    cases = {
        "ckptviewer trend --json": [sys.executable, "-m", "ckptviewer", "trend", str(folder), "--json"],
        "torch loop (torch.load each)": [sys.executable, "-c", TORCH_LOOP, str(folder), "plain"],
        "torch loop (torch.load mmap=True)": [sys.executable, "-c", TORCH_LOOP, str(folder), "mmap"],
        # On a loaded machine torch's intra-op threads can spin against other processes: one thread too.
        "torch loop (torch.load, 1 thread)": [sys.executable, "-c", TORCH_LOOP, str(folder), "plain", "1"],
    }
    print(f"{len(files)} files, {total / 2**20:.0f} MiB in all; {args.runs} runs per case")
    results = {}
    for name, cmd in cases.items():
        run_once(cmd)
        samples = [run_once(cmd) for _ in range(args.runs)]
        results[name] = (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
    base = results["torch loop (torch.load each)"][0]
    print(f"\n{'case':<36} {'median s':>9} {'MiB/s':>8} {'x torch loop':>13} {'peak RSS MiB':>13}")
    for name, (t, rss) in results.items():
        print(f"{name:<36} {t:9.2f} {total / 2**20 / t:8.0f} {t / base:13.2f} {rss:13.0f}")
    if not args.keep:
        for f in files:
            f.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
