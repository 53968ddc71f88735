"""`ckptviewer scan` against picklescan on the hostile corpus (and clean files made by torch); timing too.

    pip install picklescan        # in this environment only: not a dependency of the project
    python tests/bench/bench_scan.py [--containers zip,legacy,...] [--timing]

Prints one row per corpus file: ours (dangerous yes/no and the names), picklescan's verdict (its
"infected" count and the dangerous globals it lists) and whether the two agree on "dangerous".
picklescan is optional: without it only our column is printed. ``--timing`` also times a scan of a
large generated state_dict against opening it.
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


def timing(folder: Path) -> None:
    import collections

    import torch

    from ckptviewer.core import open_checkpoint
    sd = collections.OrderedDict((f"layer{i}.weight", torch.zeros(2)) for i in range(100_000))
    path = folder / "big.pt"
    torch.save(sd, path)
    t0 = time.perf_counter()
    res = scan_file(path)
    scan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_checkpoint(path) as ck:
        ck.tensor_entries()
    open_s = time.perf_counter() - t0
    print(f"100,000-tensor state_dict ({path.stat().st_size / 1e6:.1f} MB): scan {scan_s:.2f} s "
          f"({sum(res.pickles[0].counts.values()):,} globals), open + list tensors {open_s:.2f} s")
    try:
        from picklescan.scanner import scan_file_path
        t0 = time.perf_counter()
        scan_file_path(str(path))
        print(f"picklescan on the same file: {time.perf_counter() - t0:.2f} s")
    except ImportError:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--containers", default=",".join(sorted(hostile.containers())))
    p.add_argument("--timing", action="store_true")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    files = build_corpus(folder, args.containers.split(",")) + clean_files(folder)
    disagree = table(files)
    if args.timing:
        timing(folder)
    assert not (folder / "PWNED").exists()
    return 0 if disagree == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
