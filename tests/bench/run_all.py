"""The benchmark suite: every case of issue 8 against what a user would run instead, in one command.

    python tests/bench/run_all.py [--big-gb 6] [--mid-mb 500] [--keys 100000] [--runs 3]
                                  [--keep DIR] [--only 1,2,3,4,5,6,7]

Generates its files in a temporary folder (or --keep DIR, reused across runs), runs each case --runs
times in fresh processes and prints a table of medians with the ratio to the baseline measured in the
same run, and whether the target holds. Sizes default to what fits a 2-core, 24 GB machine with ~20 GB
of free disk. The cases:

1. open (`ckptviewer info --json`) a ~6 GB fp16 and a ~500 MB fp32 state_dict, against
   ``torch.load(mmap=True, weights_only=True)`` and default ``torch.load``: time and peak RSS;
2. a 100,000-key checkpoint: ``ckptviewer info --json`` against ``torch.load(mmap=True, weights_only=True)``;
3. launch to first painted window with the 500 MB file (from outside the process) against
   ``python -c "import torch"``;
4. histogram of a 100M-element tensor: time to the sampled histogram and to the exact one;
5. diff of two ~500 MB state_dicts against a torch loop (load both, compare each tensor);
6. export of the ~6 GB and the ~500 MB file (strip prefix + write + verify) against ``cp`` and ``cp && sync``:
   time and peak RSS;
8. a valid safetensors header of 300,000 empty entries: ``ckptviewer info --json`` time and peak RSS (issue 17:
   <= 400 MB) against ``safetensors.safe_open(...).keys()``;
7. GUI responsiveness: the longest event-loop stall (a 5 ms QTimer probe) while opening the big file,
   computing the histogram of its largest tensor, opening the 100,000-key file, running a diff and filling a
   Run tab over three 100,000-key checkpoints (see bench_gui_stall.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_open import compile_package, run_once  # noqa: E402

PY = sys.executable
TORCH_MMAP = ("import torch, sys; sd = torch.load(sys.argv[1], mmap=True, weights_only=True, map_location='cpu'); "
              "print(len(sd))")
TORCH_LOAD = "import torch, sys; sd = torch.load(sys.argv[1], weights_only=True, map_location='cpu'); print(len(sd))"


# -- files -------------------------------------------------------------------------------------------------
def make_files(folder: Path, big_gb: float, mid_mb: float, keys: int) -> dict[str, Path]:
    import torch
    folder.mkdir(parents=True, exist_ok=True)
    files = {"big": folder / f"big_{big_gb:g}gb_fp16.pt", "mid": folder / f"mid_{mid_mb:g}mb_fp32.pt",
             "mid_b": folder / f"mid_{mid_mb:g}mb_fp32_tuned.pt", "keys": folder / f"keys_{keys}.pt",
             "hist": folder / "hist_100m.pt", "st300k": folder / "st_300000_empty.safetensors"}
    if not files["big"].exists():
        print(f"making {files['big'].name} ...", flush=True)
        hidden = 4096
        per_layer = 4 * hidden * hidden * 2           # four fp16 projections
        n = max(1, int(big_gb * 2**30) // per_layer)
        sd = {}
        gen = torch.Generator().manual_seed(0)
        for i in range(n):
            for name in ("q", "k", "v", "o"):
                sd[f"module.layers.{i}.attn.{name}.weight"] = torch.randn(hidden, hidden, generator=gen,
                                                                          dtype=torch.float16)
            sd[f"module.layers.{i}.norm.weight"] = torch.ones(hidden, dtype=torch.float16)
        torch.save(sd, files["big"])
        del sd
    if not files["mid"].exists() or not files["mid_b"].exists():
        print(f"making {files['mid'].name} and its fine-tuned copy ...", flush=True)
        gen = torch.Generator().manual_seed(1)
        n = max(1, int(mid_mb * 2**20) // (1024 * 1024 * 4))
        a = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=gen) for i in range(n)}
        b = {k: (v + 1e-3 * torch.randn(v.shape, generator=gen) if i >= n * 2 // 3 else v)
             for i, (k, v) in enumerate(a.items())}
        torch.save(a, files["mid"])
        torch.save(b, files["mid_b"])
    if not files["keys"].exists():
        print(f"making {files['keys'].name} ...", flush=True)
        torch.save({f"blocks.{i // 10}.sub{i % 10}.weight": torch.zeros(4) for i in range(keys)}, files["keys"])
    if not files["st300k"].exists():
        print(f"making {files['st300k'].name} ...", flush=True)
        head = {f"layers.{i // 10}.sub{i % 10}.weight": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                for i in range(300_000)}
        raw = json.dumps(head, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        files["st300k"].write_bytes(len(raw).to_bytes(8, "little") + raw)
    if not files["hist"].exists():
        print(f"making {files['hist'].name} ...", flush=True)
        torch.save({"embedding.weight": torch.randn(100_000, 1000, generator=torch.Generator().manual_seed(2))},
                   files["hist"])
    # A run of three checkpoints of the many-key file's keys, whose values change from one to the next.
    files["keys_run"] = [folder / f"keys_{keys}_step{i}.pt" for i in range(3)]
    for i, path in enumerate(files["keys_run"]):
        if not path.exists():
            print(f"making {path.name} ...", flush=True)
            torch.save({f"blocks.{j // 10}.sub{j % 10}.weight": torch.full((4,), 1.0 + i * (j % 7))
                        for j in range(keys)}, path)
    return files


# -- helpers -------------------------------------------------------------------------------------------------
def median_of(cmd: list[str], runs: int, ok_codes=(0,)) -> tuple[float, float]:
    run_once(cmd, ok_codes)                       # warm caches
    samples = [run_once(cmd, ok_codes) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


ROWS: list[tuple] = []


def row(case: str, what: str, ours: float, base_name: str, base: float, unit: str = "s",
        target: str = "", ok: bool | None = None, extra: str = "") -> None:
    ROWS.append((case, what, ours, base_name, base, unit, target, ok, extra))
    ratio = ours / base if base else float("nan")
    verdict = "" if ok is None else ("MET" if ok else "MISSED")
    print(f"  {what}: {ours:.3f} {unit} vs {base_name} {base:.3f} {unit} (x{ratio:.2f}) {target} {verdict} {extra}",
          flush=True)


# -- cases ---------------------------------------------------------------------------------------------------
def case1(files, runs):
    res = {}
    for key in ("mid", "big"):
        f = str(files[key])
        res[key] = {
            "info": median_of([PY, "-m", "ckptviewer", "info", "--json", f], runs),
            "mmap": median_of([PY, "-c", TORCH_MMAP, f], runs),
            "load": median_of([PY, "-c", TORCH_LOAD, f], max(1, runs - 1)),
        }
    for key in ("mid", "big"):
        r = res[key]
        row("1", f"info {files[key].name}", r["info"][0], "torch.load(mmap)", r["mmap"][0],
            extra=f"RSS {r['info'][1]:.0f} vs {r['mmap'][1]:.0f} MiB")
        row("1", f"info {files[key].name}", r["info"][0], "torch.load", r["load"][0],
            target=">=50x faster" if key == "big" else "",
            ok=(r["load"][0] / r["info"][0] >= 50) if key == "big" else None,
            extra=f"RSS {r['info'][1]:.0f} vs {r['load'][1]:.0f} MiB")
    row("1", "info big vs info mid", res["big"]["info"][0], "info mid", res["mid"]["info"][0],
        target="within 2x", ok=res["big"]["info"][0] <= 2 * res["mid"]["info"][0])


def case2(files, runs):
    f = str(files["keys"])
    ours = median_of([PY, "-m", "ckptviewer", "info", "--json", f], runs)
    base = median_of([PY, "-c", TORCH_MMAP, f], runs)
    row("2", "100,000 keys: info --json", ours[0], "torch.load(mmap)", base[0], target="<= 1/10",
        ok=ours[0] <= base[0] / 10, extra=f"RSS {ours[1]:.0f} vs {base[1]:.0f} MiB")
    row("2", "100,000 keys: info --json peak RSS", ours[1], "target", 250, unit="MiB", target="<= 250 MB",
        ok=ours[1] * 2**20 <= 250e6)


def case3(files, runs):
    from bench_first_paint import one_launch
    scratch = Path(tempfile.mkdtemp(prefix="ckpt-paint-"))
    one_launch(files["mid"], scratch, -1)
    paints = [one_launch(files["mid"], scratch, i)[0] for i in range(max(runs, 3))]
    paints = [p for p in paints if p is not None]
    torch_t = []
    for _ in range(max(runs, 3)):
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", "import torch"], check=True)
        torch_t.append(time.perf_counter() - t0)
    p = statistics.median(paints) if paints else float("nan")
    row("3", "launch -> first painted window (500 MB file)", p, "python -c 'import torch'",
        statistics.median(torch_t), target="< 1.5 s", ok=p < 1.5)


HIST = r"""
import sys, time, json
t0 = time.perf_counter()
from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.analyze import stats
ck = open_checkpoint(sys.argv[1])
t = ck.root["embedding.weight"]
t1 = time.perf_counter()
h = stats.sampled_histogram(t)
t2 = time.perf_counter()
summary = stats.run_steps(stats.tensor_steps(t))
t3 = time.perf_counter()
print(json.dumps({"open": t1 - t0, "sampled": t2 - t1, "exact": t3 - t1}))
"""


def case4(files, runs):
    out = []
    for _ in range(runs):
        r = subprocess.run([PY, "-c", HIST, str(files["hist"])], capture_output=True, text=True, check=True)
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    sampled = statistics.median(o["sampled"] for o in out)
    exact = statistics.median(o["exact"] for o in out)
    row("4", "100M-element histogram: sampled first", sampled, "exact", exact)


def case5(files, runs):
    from bench_diff import TORCH_LOOP
    a, b = str(files["mid"]), str(files["mid_b"])
    ours = median_of([PY, "-m", "ckptviewer", "diff", a, b], runs, ok_codes=(0, 1))
    base = median_of([PY, "-c", TORCH_LOOP, a, b, "plain"], runs)
    row("5", "diff of two 500 MB state_dicts", ours[0], "torch loop", base[0], target="<= 1x",
        ok=ours[0] <= base[0], extra=f"RSS {ours[1]:.0f} vs {base[1]:.0f} MiB")


def case6(files, runs):
    """Export (strip prefix, write, fsync, verify) against `cp` and `cp && sync` of the same file, measured
    in the same rounds (each round writes new files, as a user's would), for the big and the mid file."""
    for key in ("big", "mid"):
        src = files[key]
        out = src.with_name("export_out.pt")
        copy = Path(str(out) + ".cp")
        commands = {
            "cp": ["cp", str(src), str(copy)],
            "cp + sync": ["sh", "-c", f"cp '{src}' '{copy}' && sync '{copy}'"],
            "convert": [PY, "-m", "ckptviewer", "convert", str(src), "-o", str(out), "--strip-prefix"],
        }
        samples: dict[str, list] = {k: [] for k in commands}
        for i in range(runs + 1):                    # the first round warms caches and is not counted
            for name, cmd in commands.items():
                for p in (out, copy):
                    p.unlink(missing_ok=True)
                subprocess.run(["sync"], check=True)
                result = run_once(cmd)
                if i:
                    samples[name].append(result)
        med = {k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v)) for k, v in samples.items()}
        size = src.stat().st_size / 2**30
        ours = med["convert"]
        load = os.getloadavg()[0]
        for base in ("cp", "cp + sync"):
            synced = base == "cp + sync"
            row("6", f"export {src.name} {size:.2f} GiB (strip prefix, write, fsync, verify)", ours[0], base,
                med[base][0], target="<= 1.5x" if synced else "", ok=(ours[0] <= 1.5 * med[base][0]) if synced else None,
                extra=f"{size / ours[0]:.2f} GiB/s vs {size / med[base][0]:.2f} GiB/s; load {load:.2f}")
        row("6", f"export {src.name} peak RSS", ours[1], "target", 1536, unit="MiB", target="< 1.5 GB",
            ok=ours[1] < 1536)
        for p in (out, copy):
            p.unlink(missing_ok=True)


def case7(files, runs):
    script = HERE / "bench_gui_stall.py"
    if not script.exists():
        print("  case 7 skipped: bench_gui_stall.py is missing")
        return
    r = subprocess.run([PY, str(script), "--big", str(files["big"]), "--a", str(files["mid"]),
                        "--b", str(files["mid_b"]), "--keys", str(files["keys"]), "--json",
                        "--keys-run", *map(str, files["keys_run"])], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        print(f"  case 7 failed: {r.stderr[-500:]}")
        return
    data = json.loads(r.stdout.strip().splitlines()[-1])
    for what, ms in data.items():
        row("7", f"longest stall while {what}", ms, "target", 100, unit="ms", target="<= 100 ms", ok=ms <= 100)


SAFE_OPEN = ("import sys; from safetensors import safe_open\n"
             "with safe_open(sys.argv[1], 'numpy') as f: print(len(list(f.keys())))")


def case8(files, runs):
    f = str(files["st300k"])
    ours = median_of([PY, "-m", "ckptviewer", "info", "--json", f], runs)
    base = median_of([PY, "-c", SAFE_OPEN, f], runs)
    row("8", "300,000-entry safetensors header: info --json", ours[0], "safe_open().keys()", base[0],
        extra=f"RSS {ours[1]:.0f} vs {base[1]:.0f} MiB")
    row("8", "300,000-entry safetensors header: peak RSS", ours[1], "target", 400, unit="MiB", target="<= 400 MB",
        ok=ours[1] * 2**20 <= 400e6)


CASES = {1: case1, 2: case2, 3: case3, 4: case4, 5: case5, 6: case6, 7: case7, 8: case8}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-gb", type=float, default=6.0)
    ap.add_argument("--mid-mb", type=float, default=500)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="folder for the generated files, kept and reused")
    ap.add_argument("--only", default="1,2,3,4,5,6,7")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ckptviewer-bench-"))
    files = make_files(folder, args.big_gb, args.mid_mb, args.keys)
    package = compile_package()
    print(f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; files in {folder}; {args.runs} runs per case; "
          f"{package} with its bytecode compiled (as installed)")
    for n in (int(x) for x in args.only.split(",")):
        print(f"case {n}:", flush=True)
        CASES[n](files, args.runs)
    print("\n| case | measurement | ours | baseline | ratio | target | result |")
    print("|---|---|---|---|---|---|---|")
    for case, what, ours, base_name, base, unit, target, ok, extra in ROWS:
        ratio = f"{ours / base:.2f}" if base else ""
        res = "" if ok is None else ("met" if ok else "missed")
        print(f"| {case} | {what} | {ours:.3f} {unit} | {base_name}: {base:.3f} {unit} | {ratio} | {target} | {res}"
              f"{' (' + extra + ')' if extra else ''} |")
    if not args.keep:
        for p in files.values():
            for one in (p if isinstance(p, list) else [p]):
                one.unlink(missing_ok=True)
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
