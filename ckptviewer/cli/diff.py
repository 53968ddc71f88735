"""``ckptviewer diff A B``: two checkpoints compared tensor by tensor, in bounded memory."""
from __future__ import annotations

import argparse
import json
import sys

from .common import drain, err

HELP = "compare two checkpoints tensor by tensor"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer diff",
        description="Compare two checkpoints (or parts of them) tensor by tensor. Lines start with '-' (only in A), "
                    "'+' (only in B) or '!' (changed, with max|a-b|, mean|a-b|, ||a-b||/||a||, cosine similarity "
                    "and the share of elements not close as torch.allclose(atol, rtol) defines it; a single-element "
                    "tensor such as a counter shows old -> new). A training checkpoint compared with a bare "
                    "state_dict compares its one state_dict, and keys that differ only by a wrapper prefix "
                    "(module.) are lined up; the output says when. "
                    "Exit status: 0 when equal, 1 when different, 2 on error.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--select-a", metavar="PATH", help="compare this entry of A (e.g. model_state_dict)")
    p.add_argument("--select-b", metavar="PATH", help="compare this entry of B")
    p.add_argument("--strip-prefix", action="store_true",
                   help="strip wrapper prefixes (module., _orig_mod.) on both sides first")
    p.add_argument("--keep-prefixes", action="store_true",
                   help="compare keys as they are, even when only a wrapper prefix (module.) tells them apart")
    p.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance (default 1e-8, as torch.allclose)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5, as torch.allclose)")
    p.add_argument("--all", action="store_true", help="also list identical entries")
    p.add_argument("--json", action="store_true", help="one JSON object (entries with status and metrics)")
    return p


def run(argv: list[str]) -> int:
    from ..core.analyze.diff import (
        COUNT_TEXT,
        DiffOptions,
        DiffRun,
        align_sides,
        diff_json,
        diff_report,
        select_and_strip,
    )
    from ..core.read.open import open_checkpoint
    from ..core.util.errors import CheckpointError
    from ..core.util.textsafe import safe_text

    args = parser().parse_args(argv)
    try:
        with open_checkpoint(args.a) as a, open_checkpoint(args.b) as b:
            root_a = select_and_strip(a.root, args.select_a, args.strip_prefix)
            root_b = select_and_strip(b.root, args.select_b, args.strip_prefix)
            root_a, root_b, notes = align_sides(root_a, root_b, strip=not (args.keep_prefixes or args.strip_prefix))
            diff_run = DiffRun(root_a, root_b, DiffOptions(atol=args.atol, rtol=args.rtol))
            drain(diff_run.compare(), show=sys.stderr.isatty() and not args.json, label="comparing ")
            if args.json:
                sys.stdout.write(json.dumps({**diff_json(diff_run), "notes": notes}, default=repr) + "\n")
            else:
                print(f"--- {a.path}" + (f" [{args.select_a}]" if args.select_a else ""))
                print(f"+++ {b.path}" + (f" [{args.select_b}]" if args.select_b else ""))
                for note in notes:
                    print(f"note: {safe_text(note, 600)}")
                for line in diff_report(diff_run, show_same=args.all):
                    print(line)
                counts = diff_run.counts()
                pairs = [e for e in diff_run.entries if e.is_tensor and e.status not in ("only_a", "only_b", "value")]
                same = sum(1 for e in pairs if e.status == "same")
                parts = [f"{len(pairs)} tensor pair{'s' if len(pairs) != 1 else ''} compared: {same} identical"]
                for key in ("changed", "dtype", "shape", "value", "only_a", "only_b", "error"):
                    if counts[key]:
                        parts.append(f"{counts[key]} {COUNT_TEXT[key]}")
                print("summary: " + "; ".join(parts))
            return 0 if diff_run.equal else 1
    except CheckpointError as e:
        err(str(e))
        return 2
