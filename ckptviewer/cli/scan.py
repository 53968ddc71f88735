"""``ckptviewer scan FILE...``: every global each pickle of a file names, and which would run code."""
from __future__ import annotations

import argparse
import json
import sys

from .common import err, internal_error

HELP = "list the globals a file's pickles name; flag dangerous ones (exit 1)"


def _scan_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="ckptviewer scan",
        description="List every global each pickle in a file names (what torch.load(weights_only=False) or "
                    "pickle.load would import and call), classified as safe (rebuilt by ckptviewer's own code), "
                    "unknown (shown as a stand-in) or dangerous (process, file, network and code-execution entry "
                    "points). Nothing is loaded: the pickles are walked opcode by opcode, tensors are never read, "
                    "and a broken file still reports what was seen before the break. "
                    "Exit status: 1 when anything dangerous is found, 0 when every pickle was read to its end and "
                    "nothing is dangerous, 2 when a file could not be read or could be read only in part. "
                    "Zip, tar, gzip/bzip2/xz and 7-Zip archives (7-Zip with the optional py7zr: pip install "
                    "'ckptviewer[7z]') are searched for pickles by content, whatever their members are called, "
                    "reading zips both through their central directory and their local headers; TorchScript "
                    "code that torch.jit.load runs at load (__setstate__) is read, never run, and listed with "
                    "what it calls.")


def _scan_args(argv: list[str]):
    p = _scan_parser()
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file (a list for several files)")
    return p.parse_args(argv)


def _scan_text(res) -> list[str]:
    from ..core.util.textsafe import safe_text
    kind = res.format or "unknown format"
    names = ", ".join(safe_text(p.name, 60) for p in res.pickles[:8]) + (", ..." if len(res.pickles) > 8 else "")
    lines = [f"{safe_text(res.path)}: {kind}, {len(res.pickles)} pickle{'s' if len(res.pickles) != 1 else ''}"
             + (f" ({names})" if res.pickles else "")]
    rows = res.globals
    if rows:
        width = min(max(len(safe_text(g.qualname, 70)) for g in rows), 70)
        for g in rows:
            label = {"dangerous": "DANGEROUS", "unknown": "unknown", "safe": "safe"}[g.category]
            reason = f"  {g.reason}" if g.category == "dangerous" else ""
            where = f"  [{safe_text(g.pickle, 40)}]" if len(res.pickles) > 1 else ""
            lines.append(f"  {label:<9}  {safe_text(g.qualname, 70):<{width}}  x{g.count:<5}{where}{reason}")
    elif res.pickles:
        lines.append("  (the pickles name no globals)")
    for c in res.code:
        label = "DANGEROUS" if c.category == "dangerous" else "runs"
        lines.append(f"  {label:<9}  {safe_text(c.title, 160)}  [{safe_text(c.member, 60)}]  "
                     f"{safe_text(c.reason, 300)}")
    # Where each pickle that names something dangerous sat, and who would load it.
    bad = {g.pickle for g in res.dangerous}
    for p in res.pickles:
        if p.name in bad and (p.where or p.loader):
            where = f"{safe_text(p.where, 200)}; " if p.where else ""
            loader = safe_text(p.loader or "torch.load", 120)
            lines.append(f"  found in {safe_text(p.name, 60)}: {where}loaded by {loader}")
    for anomaly in res.anomalies:
        lines.append(f"  anomaly: {safe_text(anomaly, 300)}")
    cut = not res.pickles or any(not p.complete for p in res.pickles)
    for problem in res.problems:
        lines.append(f"  {'broken' if cut else 'problem'}: {safe_text(problem, 300)}"
                     + (" (the globals above were seen before the break)" if rows and cut else ""))
    for note in res.notes:
        lines.append(f"  note: {safe_text(note, 300)}")
    lines.append(f"  {res.verdict()}")
    return lines


def run(argv: list[str]) -> int:
    from ..core.analyze.scan import scan_file
    from ..core.util.locations import location_name

    args = _scan_args(argv)
    statuses = []
    reports = []
    for i, path in enumerate(args.files):
        try:
            res = scan_file(path)
        except Exception as e:  # a scanner bug: say so, and never call the file clean
            err(internal_error(path, e))
            statuses.append(2)
            continue
        statuses.append(res.status)
        if res.error is not None:
            err(f"{location_name(path)}: {res.error}")
        if args.json:
            reports.append(res.to_json())
        elif res.error is None:
            if i:
                print()
            print("\n".join(_scan_text(res)))
    if args.json:
        out = reports[0] if len(args.files) == 1 and reports else reports
        sys.stdout.write(json.dumps(out) + "\n")
    # Dangerous anywhere wins; otherwise an unreadable or partly read file makes the run a 2.
    return 1 if 1 in statuses else max(statuses, default=0)
