"""``ckptviewer info FILE...``: what a checkpoint holds, as text or as the conformance JSON."""
from __future__ import annotations

import argparse
import json
import sys

from .common import drain, err, internal_error

HELP = "show a checkpoint's tree, tensors and summary"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ckptviewer info",
                                description="Show what a checkpoint holds without loading its tensors.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file (a list for several files)")
    p.add_argument("--checksums", action="store_true", help="add each tensor's sha256 (reads every tensor)")
    p.add_argument("--depth", type=int, default=None, metavar="N", help="fold the tree below N levels")
    p.add_argument("--verify", action="store_true",
                   help="read every zip member once and check its CRC-32 (exit status 1 if one fails)")
    return p


def run(argv: list[str]) -> int:
    from ..core.analyze.info import build_report, report_text
    from ..core.read.open import open_checkpoint
    from ..core.util.errors import CheckpointError

    args = parser().parse_args(argv)
    status = 0
    reports = []
    for i, path in enumerate(args.files):
        try:
            with open_checkpoint(path) as ckpt:
                integrity = None
                if args.verify:
                    from ..core.analyze.integrity import verify_steps
                    integrity = drain(verify_steps(ckpt))
                    if not integrity.ok:
                        status = max(status, 1)
                if args.json:
                    report = build_report(ckpt, checksums=args.checksums)
                    if integrity is not None:
                        report["integrity"] = integrity.as_json()
                    reports.append(report)
                else:
                    if i:
                        print()
                    print(report_text(ckpt, depth=args.depth))
                    if integrity is not None:
                        print()
                        print("\n".join(integrity.lines()))
        except CheckpointError as e:
            err(str(e))
            status = 1
        except BrokenPipeError:
            raise                  # the reader of our output went away (`| head`): not a file problem
        except Exception as e:  # a reader bug: say so in one line, keep going with the other files
            err(internal_error(path, e))
            status = 2
    if args.json and reports:
        out = reports[0] if len(args.files) == 1 else reports
        # dumps (one shot, the C encoder) is several times faster than dump's incremental writes.
        sys.stdout.write(json.dumps(out, default=repr) + "\n")
    return status
