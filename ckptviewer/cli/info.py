"""``ckptviewer info FILE...``: what a checkpoint holds, as text or as the conformance JSON."""
from __future__ import annotations

import argparse
import sys

from .common import drain, err, internal_error

HELP = "show a checkpoint's tree, tensors, values and summary"


def parser() -> argparse.ArgumentParser:
    from ..core.analyze.info import DEFAULT_MAX_ITEMS, DEFAULT_MAX_LINES
    p = argparse.ArgumentParser(
        prog="ckptviewer info",
        description="Show what a checkpoint holds without loading its tensors. A folder that is not itself a "
                    "sharded or distributed checkpoint shows each checkpoint in it. The text is bounded: each "
                    f"mapping, list or state_dict shows its first {DEFAULT_MAX_ITEMS} entries and the tree stops "
                    f"after {DEFAULT_MAX_LINES} lines (--max-items, --all). Exit status: 0, or 1 when a file cannot "
                    "be read or (with --checksums) a tensor's checksum cannot be computed.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file (a list for several files)")
    p.add_argument("--checksums", action="store_true", help="add each tensor's sha256 (reads every tensor)")
    p.add_argument("--depth", type=int, default=None, metavar="N", help="fold the tree below N levels")
    p.add_argument("--verify", action="store_true",
                   help="read every zip member once and check its CRC-32 (exit status 1 if one fails)")
    p.add_argument("--max-items", type=int, default=None, metavar="N",
                   help=f"entries shown per mapping, list or state_dict (default {DEFAULT_MAX_ITEMS}); the line "
                        f"limit grows with it")
    p.add_argument("--all", action="store_true", help="print everything: no entry or line limit")
    return p


def _limits(args):
    from ..core.analyze.info import DEFAULT_MAX_LINES, TextLimits
    if args.all:
        return TextLimits.everything(args.depth)
    if args.max_items is not None:
        n = max(1, args.max_items)
        return TextLimits(args.depth, n, max(DEFAULT_MAX_LINES, 8 * n))
    return TextLimits(args.depth)


def run(argv: list[str]) -> int:
    from ..core.analyze.info import checksums_of, report_text, write_report_json
    from ..core.read.open import checkpoint_paths, open_checkpoint
    from ..core.util.errors import CheckpointError

    args = parser().parse_args(argv)
    limits = _limits(args)
    paths = [p for given in args.files for p in checkpoint_paths(given)]
    status = 0
    reports = []
    for i, path in enumerate(paths):
        try:
            with open_checkpoint(path) as ckpt:
                integrity = None
                if args.verify:
                    from ..core.analyze.integrity import verify_steps
                    integrity = drain(verify_steps(ckpt))
                    if not integrity.ok:
                        status = max(status, 1)
                if args.json:
                    # The report's text in pieces, its tensor records encoded in batches as they are made (see
                    # write_report_json): straight to stdout for one file (its text is never held whole), kept
                    # until every file is done for several (one list of the files that could be read).
                    pieces: list[str] = []
                    failed = write_report_json(ckpt, sys.stdout.write if len(paths) == 1 else pieces.append,
                                               checksums=args.checksums,
                                               extra=None if integrity is None else {"integrity": integrity.as_json()})
                    if len(paths) == 1:
                        sys.stdout.write("\n")
                    else:
                        reports.append(pieces)
                else:
                    failures = checksums_of(ckpt.tensor_entries())[1] if args.checksums else None
                    failed = len(failures or ())
                    if i:
                        print()
                    print(report_text(ckpt, limits=limits, checksum_failures=failures))
                    if integrity is not None:
                        print()
                        print("\n".join(integrity.lines()))
                if failed:
                    err(f"{ckpt.name}: {failed:,} tensor checksum{'s' if failed != 1 else ''} cannot be computed "
                        f"(their bytes are missing or unreadable)")
                    status = max(status, 1)
        except CheckpointError as e:
            err(str(e))
            status = max(status, 1)
        except BrokenPipeError:
            raise                  # the reader of our output went away (`| head`): not a file problem
        except Exception as e:  # a reader bug: say so in one line, keep going with the other files
            err(internal_error(path, e))
            status = 2
    if args.json and reports:
        # As json.dumps would write the list of the reports.
        write = sys.stdout.write
        write("[")
        for i, pieces in enumerate(reports):
            if i:
                write(", ")
            for piece in pieces:
                write(piece)
            reports[i] = []
        write("]\n")
    return status
