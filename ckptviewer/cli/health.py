"""``ckptviewer health FILE...``: NaN, Inf, zeroed or constant weights, dead rows, duplicates and outliers."""
from __future__ import annotations

import argparse
import json
import sys

from .common import drain, err, internal_error

HELP = "check every tensor's values: NaN/Inf, all-zero, constant, dead rows, duplicates, outliers"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer health",
        description="Read every tensor once (streaming, in bounded memory) and report what looks wrong: NaN and "
                    "Inf (errors), weight matrices and kernels that are all zero or constant, rows or filters that "
                    "are all zero, identical tensors stored twice, tensors whose norm or std is far from their "
                    "peers of the same role, and values a float16 export would overflow. Exit status: 0 when no "
                    "finding is an error, 1 when one is, 2 when a file cannot be read.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per file with a findings list (a list of them for several files)")
    p.add_argument("--stats", action="store_true",
                   help="with --json: add every tensor's measurements (absmax, mean, std, norm, zeros, ...)")
    p.add_argument("--quiet", "-q", action="store_true", help="print errors and warnings only (not info)")
    return p


def run(argv: list[str]) -> int:
    from ..core.analyze.health import check_steps
    from ..core.read.open import open_checkpoint
    from ..core.util.errors import CheckpointError
    from ..core.util.locations import shown_location
    from ..core.util.units import human_bytes

    args = parser().parse_args(argv)
    status = 0
    outputs = []
    show = sys.stderr.isatty()
    for i, path in enumerate(args.files):
        try:
            with open_checkpoint(path) as ckpt:
                label = f"{shown_location(path)}: " if len(args.files) > 1 else ""
                report = drain(check_steps(ckpt), show=show, label=label)
                if report.has_errors:
                    status = max(status, 1)
                if args.json:
                    out = {"file": shown_location(ckpt.path), "format": ckpt.format}
                    out.update(report.to_json())
                    if args.stats:
                        out["stats"] = [th.to_json() for th in report.tensors]
                    outputs.append(out)
                    continue
                if i:
                    print()
                counts = report.counts()
                print(f"{shown_location(ckpt.path)}: {len(report.tensors):,} tensors, {human_bytes(report.nbytes)} checked in "
                      f"{report.seconds:.2f} s: {counts['error']} error{'s' * (counts['error'] != 1)}, "
                      f"{counts['warning']} warning{'s' * (counts['warning'] != 1)}, {counts['info']} info")
                for f in report.findings:
                    if args.quiet and f.severity == "info":
                        continue
                    print("  " + f.text())
        except CheckpointError as e:
            err(str(e))
            status = 2
            if args.json:
                outputs.append({"file": shown_location(path), "error": e.message})
        except BrokenPipeError:
            raise
        except Exception as e:  # a bug of ours: say so in one line, keep going with the other files
            err(internal_error(path, e))
            status = 2
            if args.json:
                outputs.append({"file": shown_location(path), "error": internal_error(path, e)})
    if args.json and outputs:
        out = outputs[0] if len(args.files) == 1 else outputs
        sys.stdout.write(json.dumps(out, default=repr) + "\n")
    return status
