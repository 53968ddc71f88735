"""Launch to first painted window, measured from outside the process, next to ``import torch``.

    python tests/bench/bench_first_paint.py [--mb 500] [--runs 7] [--file PATH] [--keep DIR]

Makes a training checkpoint of about --mb megabytes in a temporary folder (or uses --file), then
starts ``python -m ckptviewer --new-window FILE`` --runs times. The app writes the wall-clock time of
its first paint to the file named by $CKPTVIEWER_FIRST_PAINT_FILE and the time its first tab finished
loading to $CKPTVIEWER_LOADED_FILE; this script records its own clock just before starting the process
and reports the medians. It also times ``python -c "import torch"`` (what any tool that loads the file
with torch pays before it can show anything). Uses Qt's offscreen platform unless $DISPLAY is set.
Not a test: figures for notes and for spotting regressions.
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

REPO = Path(__file__).resolve().parents[2]


def make_checkpoint(path: Path, mb: int) -> None:
    import torch
    n = max(1, mb // 4)                       # 1M float32 = 4 MiB per tensor
    model = {f"layers.{i}.weight": torch.randn(1024, 1024) for i in range(n)}
    torch.save({"epoch": 3, "model_state_dict": model, "loss": torch.tensor(0.25)}, path)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> float | None:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.stat().st_size:
            return float(path.read_text().strip())
        if proc.poll() is not None:
            return None
        time.sleep(0.002)
    return None


def one_launch(file: Path, scratch: Path, i: int) -> tuple[float | None, float | None]:
    paint, loaded = scratch / f"paint{i}", scratch / f"loaded{i}"
    env = dict(os.environ, CKPTVIEWER_FIRST_PAINT_FILE=str(paint), CKPTVIEWER_LOADED_FILE=str(loaded),
               CKPTVIEWER_SETTINGS=str(scratch / f"settings{i}.ini"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if not env.get("DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "ckptviewer", "--new-window", str(file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t_paint = wait_for(paint, proc, 60)
        t_loaded = wait_for(loaded, proc, 60)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return (None if t_paint is None else t_paint - t0, None if t_loaded is None else t_loaded - t0)


def time_cmd(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--file", type=Path)
    ap.add_argument("--keep", type=Path, help="make the checkpoint in this folder and keep it")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_open import compile_package
    print(f"{compile_package()} with its bytecode compiled (as installed)")
    with tempfile.TemporaryDirectory(prefix="ckptviewer-bench-") as tmp:
        scratch = Path(tmp)
        file = args.file
        if file is None:
            folder = args.keep or scratch
            folder.mkdir(parents=True, exist_ok=True)
            file = folder / f"train_{args.mb}mb.pt"
            if not file.exists():
                print(f"making {file} ...", flush=True)
                make_checkpoint(file, args.mb)
        size = file.stat().st_size
        print(f"file: {file} ({size / 2**20:.0f} MiB); python {sys.version.split()[0]}; "
              f"platform {'offscreen' if not os.environ.get('DISPLAY') else 'X11'}")
        one_launch(file, scratch, -1)              # warm the page cache and Python's bytecode cache
        paints, loads = [], []
        for i in range(args.runs):
            p, l = one_launch(file, scratch, i)
            paints.append(p)
            loads.append(l)
            print(f"  run {i + 1}: first paint {p:.3f} s, first tab loaded {l:.3f} s"
                  if p is not None and l is not None else f"  run {i + 1}: no marker (paint {p}, loaded {l})")
        torch_times = [time_cmd([sys.executable, "-c", "import torch"]) for _ in range(args.runs)]
        ok_p = [p for p in paints if p is not None]
        ok_l = [x for x in loads if x is not None]
        print(f"median launch -> first painted window : {statistics.median(ok_p):.3f} s  ({len(ok_p)} runs)")
        print(f"median launch -> first tab loaded     : {statistics.median(ok_l):.3f} s  ({len(ok_l)} runs)")
        print(f"median python -c 'import torch'       : {statistics.median(torch_times):.3f} s  ({args.runs} runs)")


if __name__ == "__main__":
    main()
