"""A long fuzz run of the reader and the scanner (minutes; not part of CI).

    python tests/bench/fuzz_reader.py --minutes 20 [--out /tmp/fuzz] [--engine atheris|random]

Each input is a file (or a pickle wrapped into a zip, a legacy file or a TorchScript archive) that goes
through everything the viewer does: read, list tensors, info report with checksums, the display tree
with every column, export planning, and the scanner. Anything raised that is not a CheckpointError,
any input slower than --slow seconds, is a bug: the input is saved under --out with its traceback,
one per distinct (exception, place), and the run goes on. At the end a summary lists them.

Engines: ``atheris`` (coverage-guided libFuzzer, when ``pip install atheris`` works) mutates the bytes
itself, seeded with torch-made files, and crosses inputs over (splicing opcodes between pickles);
``random`` applies tests/mutate.py's mutations (bit flips, truncation, insertion, deletion, splicing,
duplication) with a time budget. ``--bounds`` instead measures the issue's resource attacks (time and
traced memory, one table) and exits.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import corpus  # noqa: E402
import hostile  # noqa: E402
import mutate  # noqa: E402

FOUND: dict[tuple, Path] = {}
STATS = {"inputs": 0, "ok": 0, "errors": 0, "slow": 0}
MODES = ("file", "zip", "legacy", "torchscript")


def wrap(mode: str, data: bytes) -> bytes:
    if mode == "zip":
        return hostile.torch_zip(data, {str(i): bytes(16) for i in range(3)})
    if mode == "legacy":
        return hostile.torch_legacy(data, ["0", "1"], [b"\x04" + bytes(7) + bytes(16)] * 2)
    if mode == "torchscript":
        return hostile.torchscript(data)
    return data


def exercise_buffer(raw: bytes) -> str:
    """corpus.exercise on bytes (no file), and the scanner. Returns "ok" or the CheckpointError class."""
    from ckptviewer.core.util.errors import CheckpointError
    from ckptviewer.core.write.export import ExportOptions, plan_export
    from ckptviewer.core.read.detect import read_buffer
    from ckptviewer.core.analyze.info import build_report, report_text
    from ckptviewer.core.model.interpret import analyze
    from ckptviewer.core.analyze.scan import scan_buffer, scan_checkpoint
    from ckptviewer.core.model.tree import build_tree

    light = scan_buffer(raw, "fuzz")
    try:
        ck = read_buffer(raw, "fuzz")
    except CheckpointError as e:
        return type(e).__name__
    full = {p.pickle: dict(p.counts) for p in ck.pickles}
    for p in light.pickles:         # differential: the light pass must name what the reader resolved
        computed = any("<computed>" in key for key in p.counts)   # resolved by the reader, unknowable here
        if p.complete and p.name in full and not computed and dict(p.counts) != full[p.name]:
            raise AssertionError(f"scan and reader disagree on {p.name}: {dict(p.counts)} != {full[p.name]}")
    try:
        ck.tensor_entries()
        build_report(ck, checksums=True)
        corpus._walk_tree(build_tree(ck, analyze(ck.root)))
        report_text(ck, depth=3)
        for fmt in ("pt", "safetensors"):
            plan_export(ck.root, ExportOptions(fmt=fmt))
        scan_checkpoint(ck).rows()
    except CheckpointError as e:
        return type(e).__name__
    finally:
        ck.close()
    return "ok"


def run_one(raw: bytes, out: Path, slow: float) -> None:
    STATS["inputs"] += 1
    t0 = time.perf_counter()
    try:
        outcome = exercise_buffer(raw)
        STATS["ok" if outcome == "ok" else "errors"] += 1
    except Exception as e:  # noqa: BLE001 - anything else is a finding
        tb = traceback.extract_tb(e.__traceback__)
        place = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "ckptviewer" in f.filename),
                     "?")
        key = (type(e).__name__, place)
        if key not in FOUND:
            digest = hashlib.sha1(raw).hexdigest()[:12]
            path = out / f"bug-{type(e).__name__}-{place.replace(':', '_')}-{digest}.bin"
            path.write_bytes(raw)
            path.with_suffix(".txt").write_text("".join(traceback.format_exception(e)))
            FOUND[key] = path
            print(f"\nFOUND {key}: {e!s:.200}  -> {path}", flush=True)
        return
    seconds = time.perf_counter() - t0
    if seconds > slow:
        STATS["slow"] += 1
        key = ("slow", f"{seconds:.0f}s")
        digest = hashlib.sha1(raw).hexdigest()[:12]
        path = out / f"slow-{digest}.bin"
        path.write_bytes(raw)
        FOUND.setdefault(key, path)
        print(f"\nSLOW {seconds:.1f} s -> {path}", flush=True)


def fuzz_random(seeds, minutes: float, out: Path, slow: float, rng: random.Random) -> None:
    donors = [s.pickle_bytes() for s in seeds if s.kind in ("zip", "legacy")]
    deadline = time.time() + minutes * 60
    last = 0.0
    while time.time() < deadline:
        seed = rng.choice(seeds)
        ops = []
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["flip", "byte", "truncate", "insert", "interesting", "delete", "splice",
                               "duplicate", "interesting", "splice"])
            f = rng.random()
            ops.append({"flip": (kind, f, rng.randrange(8)), "byte": (kind, f, rng.randrange(256)),
                        "truncate": (kind, f), "insert": (kind, f, rng.randbytes(rng.randint(1, 16))),
                        "interesting": (kind, f, rng.randrange(1000)), "delete": (kind, f, rng.randint(1, 32)),
                        "splice": (kind, f, rng.randrange(100), rng.random(), rng.randint(1, 128),
                                   rng.random() < 0.5),
                        "duplicate": (kind, f, rng.randint(1, 32), rng.randint(1, 200))}[kind])
        level = rng.choice(["pickle", "pickle", "pickle", "file"])
        run_one(mutate.mutate(seed, level, ops, donors), out, slow)
        if time.time() - last > 10:
            last = time.time()
            print(f"\r{STATS} findings={len(FOUND)}", end="", flush=True)


def fuzz_atheris(seeds, minutes: float, out: Path, slow: float) -> None:
    import atheris
    with atheris.instrument_imports(include=["ckptviewer"]):
        import ckptviewer.core.read.detect  # noqa: F401
        import ckptviewer.core.analyze.info  # noqa: F401
        import ckptviewer.core.analyze.scan  # noqa: F401
        import ckptviewer.core.write.export  # noqa: F401
    seed_dir = out / "corpus"
    seed_dir.mkdir(exist_ok=True)
    for s in seeds:         # first byte: how to wrap the rest (raw file, or a pickle in a container)
        (seed_dir / f"{s.name}.raw").write_bytes(b"\x00" + s.raw)
        if s.kind in ("zip", "legacy"):
            for i, mode in enumerate(MODES[1:], 1):
                (seed_dir / f"{s.name}.{mode}").write_bytes(bytes([i]) + s.pickle_bytes())
    for name, data in hostile.payloads(out / "PWNED").items():
        (seed_dir / f"payload_{name}").write_bytes(b"\x01" + data)

    def one(data: bytes) -> None:
        if not data:
            return
        mode = MODES[data[0] % len(MODES)]
        run_one(wrap(mode, data[1:]), out, slow)

    atheris.Setup([sys.argv[0], str(seed_dir), f"-max_total_time={int(minutes * 60)}", "-max_len=400000",
                   "-rss_limit_mb=4096", "-timeout=60", "-print_final_stats=1"], one)
    try:
        atheris.Fuzz()
    except SystemExit:
        pass


def bounds() -> None:
    """The issue's resource attacks: time (no tracing) and peak traced memory of everything the viewer does."""
    from ckptviewer.core.util.errors import CheckpointError
    from ckptviewer.core.analyze.scan import scan_file
    folder = Path(tempfile.mkdtemp())
    files = dict(corpus.resource_attacks())
    print(f"{'file':32s} {'bytes':>10s} {'seconds':>8s} {'peak MB':>8s} {'scan s':>7s}  outcome")
    for name, data in files.items():
        path = folder / f"{name}.pt"
        path.write_bytes(data)
        t0 = time.perf_counter()
        try:
            corpus.exercise(path)
            outcome = "partial/ok"
        except CheckpointError as e:
            outcome = type(e).__name__
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        scan_file(path)
        scan_s = time.perf_counter() - t0
        _, _, peak = corpus.measure(corpus.exercise, path)
        print(f"{name:32s} {len(data):>10,} {seconds:8.3f} {peak / 1e6:8.1f} {scan_s:7.3f}  {outcome}")
    big = folder / "header_100MB.safetensors"
    corpus.big_header_safetensors(big)
    t0 = time.perf_counter()
    corpus.exercise(big)
    seconds = time.perf_counter() - t0
    _, _, peak = corpus.measure(corpus.exercise, big)
    print(f"{'st_header_100MB_real':32s} {big.stat().st_size:>10,} {seconds:8.3f} {peak / 1e6:8.1f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--engine", choices=["atheris", "random"], default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--slow", type=float, default=5.0, help="seconds after which an input counts as a hang")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bounds", action="store_true", help="measure the resource attacks and exit")
    args, _ = p.parse_known_args()
    if args.bounds:
        bounds()
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    seeds = mutate.small_seeds(Path(tempfile.mkdtemp()))
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    print(f"fuzzing with {engine} for {args.minutes} min; findings go to {out}", flush=True)
    t0 = time.time()
    if engine == "atheris":
        fuzz_atheris(seeds, args.minutes, out, args.slow)
    else:
        fuzz_random(seeds, args.minutes, out, args.slow, random.Random(args.seed))
    print(f"\n{STATS} in {time.time() - t0:.0f} s; {len(FOUND)} distinct findings:")
    for key, path in FOUND.items():
        print(f"  {key}: {path}")
    return 1 if FOUND else 0


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.exit(main())
