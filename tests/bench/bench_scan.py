"""`ckptviewer scan` against picklescan on the hostile corpus (and clean files made by torch); timing too.

    pip install picklescan        # in this environment only: not a dependency of the project
    python tests/bench/bench_scan.py [--containers zip,legacy,...] [--vectors] [--timing]

Prints one row per corpus file: ours (dangerous yes/no and the names), picklescan's verdict (its
"infected" count and the dangerous globals it lists) and whether the two agree on "dangerous".
picklescan is optional: without it only our column is printed. ``--vectors`` adds the container and
pickle-level tricks of issue 20 (tests/scanvectors.py: zip views, tar, 7-Zip, deny-list bypasses) around
an os.system payload; there "agree" is expected to be "NO" where picklescan is bypassed. ``--timing``
times scans of normal checkpoints (a 100,000-tensor state_dict, 400 large tensors, a legacy file, a
TorchScript module), each next to a baseline measured in the same run: the walk of its object pickle
alone, the least any scan must do (and, for the first, opening it).
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))        # the checkout this script is in, not an installed copy

import hostile  # noqa: E402

from ckptviewer.core.analyze.scan import scan_file  # noqa: E402


def picklescan_verdict(path: Path) -> tuple[bool | None, list[str], str]:
    """(dangerous?, dangerous globals, note) from picklescan, or (None, [], why) when it is absent/fails."""
    try:
        from picklescan.scanner import SafetyLevel, scan_file_path
    except ImportError:
        return None, [], "picklescan not installed"
    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    try:
        res = scan_file_path(str(path))
    except Exception as e:  # noqa: BLE001 - picklescan raises on files it cannot parse
        return None, [], f"picklescan error: {type(e).__name__}: {str(e)[:60]}"
    names = sorted({f"{g.module}.{g.name}" for g in res.globals if g.safety == SafetyLevel.Dangerous})
    note = "scan error" if res.scan_err else ""
    return res.issues_count > 0, names, note


def build_corpus(folder: Path, containers: list[str]) -> list[tuple[str, Path]]:
    marker = folder / "PWNED"
    files = []
    builders = hostile.containers()
    for cname in containers:
        for name, data in sorted(hostile.payloads(marker).items()):
            # picklescan picks its parser by suffix: give each file the suffix users would see.
            suffix = ".pkl" if cname in ("plain_pickle", "after_a_pickle") else ".pt"
            path = folder / f"{cname}__{name}{suffix}"
            path.write_bytes(builders[cname](data))
            files.append((f"{cname}/{name}", path))
    return files


def clean_files(folder: Path) -> list[tuple[str, Path]]:
    import collections

    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    out = []
    for name, obj, kw in (("clean/state_dict.pt", net.state_dict(), {}),
                          ("clean/state_dict_legacy.pt", net.state_dict(), {"_use_new_zipfile_serialization": False}),
                          ("clean/whole_module.pt", net, {}),
                          ("clean/shared.pt", collections.OrderedDict(a=net.state_dict()), {})):
        path = folder / name.replace("/", "__")
        torch.save(obj, path, **kw)
        out.append((name, path))
    return out


def vector_files(folder: Path) -> list[tuple[str, Path]]:
    """The issue 20 vectors around an os.system payload (7-Zip ones when py7zr is installed)."""
    import scanvectors
    marker = folder / "PWNED"
    cmd = hostile.touch_cmd(marker)
    payload = hostile.payloads(marker)["global_reduce_os_system"]
    fragment = hostile.glob("os", "system") + hostile.s(cmd) + b"\x85R"
    try:
        import py7zr  # noqa: F401
        with_7z = True
    except ImportError:
        with_7z = False
    vecs = scanvectors.vectors(payload, fragment, with_7z=with_7z)
    vecs.update(scanvectors.pickle_level(hostile.py_touch(marker)))
    out = []
    for vid, data in sorted(vecs.items()):
        path = folder / f"vector_{vid}.bin"
        path.write_bytes(data)
        out.append((f"issue20/{vid}", path))
    return out


def table(files: list[tuple[str, Path]]) -> int:
    rows, disagree = [], 0
    for label, path in files:
        ours = scan_file(path)
        ours_d = bool(ours.dangerous)
        ours_names = sorted({g.qualname for g in ours.dangerous})
        theirs_d, theirs_names, note = picklescan_verdict(path)
        agree = "n/a" if theirs_d is None else ("yes" if theirs_d == ours_d else "NO")
        disagree += agree == "NO"
        rows.append((label, f"{'yes' if ours_d else 'no'} {','.join(ours_names)}".strip(),
                     "n/a" if theirs_d is None else f"{'yes' if theirs_d else 'no'} {','.join(theirs_names)}".strip()
                     + (f" ({note})" if note else ""), agree))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"| {'file':<{w[0]}} | {'ours: dangerous':<{w[1]}} | {'picklescan: dangerous':<{w[2]}} | agree |")
    print(f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|-------|")
    for r in rows:
        print(f"| {r[0]:<{w[0]}} | {r[1]:<{w[1]}} | {r[2]:<{w[2]}} | {r[3]:<5} |")
    print(f"\n{len(rows)} files, {disagree} disagreement(s) on 'dangerous'")
    return disagree


def _best(fn, repeat: int = 5) -> float:
    """The least CPU time of ``repeat`` runs (other processes on a shared machine stretch wall-clock time)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def timing(folder: Path) -> None:
    import collections
    import warnings
    import zipfile

    import torch

    from ckptviewer.core import open_checkpoint
    from ckptviewer.core.analyze.scan import walk_pickle
    torch.manual_seed(0)
    cases = []
    path = folder / "big.pt"
    torch.save(collections.OrderedDict((f"layer{i}.weight", torch.zeros(2)) for i in range(100_000)), path)
    cases.append(("100,000-tensor state_dict", path))
    path = folder / "large_tensors.pt"
    torch.save({f"l{i}.w": torch.randn(256, 256) for i in range(400)}, path)
    cases.append(("400 tensors of 256x256 float32", path))
    path = folder / "legacy.pt"
    torch.save({f"l{i}.w": torch.randn(64, 64) for i in range(2000)}, path, _use_new_zipfile_serialization=False)
    cases.append(("legacy format, 2,000 tensors", path))
    path = folder / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(50)])), str(path))
    cases.append(("TorchScript, 50 Linear layers", path))
    print("| checkpoint | size | scan (CPU s) | baseline: walk of its object pickle alone | scan / baseline |")
    print("|---|---|---|---|---|")
    for label, path in cases:
        raw = path.read_bytes()
        if raw[:2] == b"PK":
            z = zipfile.ZipFile(path)
            data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
            base = _best(lambda: walk_pickle(data))
        else:
            def five(raw=raw):                            # the legacy file's five pickles, one after another
                pos = 0
                for _ in range(5):
                    pos = walk_pickle(raw, start=pos).end
            base = _best(five)
        scan = _best(lambda: scan_file(path))
        print(f"| {label} | {len(raw) / 1e6:.1f} MB | {scan:.3f} | {base:.3f} | {scan / max(base, 1e-9):.2f} |")
    path = cases[0][1]
    t0 = time.perf_counter()
    with open_checkpoint(path) as ck:
        ck.tensor_entries()
    print(f"\n100,000-tensor state_dict: open + list tensors {time.perf_counter() - t0:.2f} s (wall)")
    try:
        from picklescan.scanner import scan_file_path
        t0 = time.perf_counter()
        scan_file_path(str(path))
        print(f"picklescan on the same file: {time.perf_counter() - t0:.2f} s (wall)")
    except ImportError:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--containers", default=",".join(sorted(hostile.containers())))
    p.add_argument("--vectors", action="store_true", help="add issue 20's container and pickle-level tricks")
    p.add_argument("--timing", action="store_true")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    files = build_corpus(folder, args.containers.split(",")) + clean_files(folder)
    if args.vectors:
        files += vector_files(folder)
    disagree = table(files)
    if args.timing:
        timing(folder)
    assert not (folder / "PWNED").exists()
    return 0 if disagree == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
