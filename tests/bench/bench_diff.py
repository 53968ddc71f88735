"""Diff throughput: `ckptviewer diff` against a plain torch loop on the same two files.

    python tests/bench/bench_diff.py [--mb 500] [--changed 0.3] [--runs 3] [--keep DIR]

Writes two fp32 state_dicts of about --mb MB that share most tensors and differ in a fraction
(--changed) of them, then times in fresh processes:
- ``ckptviewer diff A B`` (reads both lazily, bytes first, metrics for changed tensors);
- the torch loop a user would write: ``torch.load`` both (weights_only=True), then for each key
  ``torch.equal``, and for unequal pairs max|a-b|, mean|a-b|, ||a-b||/||a||, cosine and allclose;
- the same loop with ``torch.load(mmap=True)``.
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
import sys, torch
mmap = sys.argv[3] == "mmap"
a = torch.load(sys.argv[1], weights_only=True, mmap=mmap)
b = torch.load(sys.argv[2], weights_only=True, mmap=mmap)
changed = 0
for k in a:
    x, y = a[k], b.get(k)
    if y is None or x.shape != y.shape:
        continue
    if torch.equal(x, y):
        continue
    changed += 1
    d = (x - y).abs()
    stats = (d.max().item(), d.mean().item(), (d.norm() / x.norm()).item(),
             torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0).item(),
             (~torch.isclose(x, y)).float().mean().item())
print(changed)
"""


def make(folder: Path, mb: float, changed: float) -> tuple[Path, Path]:
    import torch
    torch.manual_seed(0)
    n_tensors = 200
    per = int(mb * 2**20 / 4 / n_tensors)
    rows = 1024
    a = {f"layers.{i}.weight": torch.randn(rows, max(1, per // rows)) for i in range(n_tensors)}
    b = {}
    step = max(1, round(1 / changed)) if changed > 0 else 0
    for i, (k, v) in enumerate(a.items()):
        b[k] = v + 1e-3 * torch.randn_like(v) if step and i % step == 0 else v
    pa, pb = folder / "a.pt", folder / "b.pt"
    torch.save(a, pa)
    torch.save(b, pb)
    return pa, pb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=500)
    ap.add_argument("--changed", type=float, default=0.3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckptdiff-"))
    folder.mkdir(parents=True, exist_ok=True)
    pa, pb = folder / "a.pt", folder / "b.pt"
    if not (pa.exists() and pb.exists()):
        pa, pb = make(folder, args.mb, args.changed)
    cases = {
        "ckptviewer diff": [sys.executable, "-m", "ckptviewer", "diff", str(pa), str(pb)],
        "torch loop (torch.load both)": [sys.executable, "-c", TORCH_LOOP, str(pa), str(pb), "plain"],
        "torch loop (torch.load mmap=True)": [sys.executable, "-c", TORCH_LOOP, str(pa), str(pb), "mmap"],
    }
    size = pa.stat().st_size
    print(f"two files of {size / 2**20:.0f} MiB; {args.runs} runs per case")
    results = {}
    for name, cmd in cases.items():
        run_once(cmd, ok_codes=(0, 1))
        samples = [run_once(cmd, ok_codes=(0, 1)) for _ in range(args.runs)]
        results[name] = (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples))
    base = results["torch loop (torch.load both)"][0]
    print(f"\n{'case':<36} {'median s':>9} {'MiB/s':>8} {'x torch loop':>13} {'peak RSS MiB':>13}")
    for name, (t, rss) in results.items():
        print(f"{name:<36} {t:9.2f} {2 * size / 2**20 / t:8.0f} {t / base:13.2f} {rss:13.0f}")
    if not args.keep:
        pa.unlink()
        pb.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
