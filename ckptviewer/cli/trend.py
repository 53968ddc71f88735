"""``ckptviewer trend FILE...``: how each tensor moved across the checkpoints of a training run."""
from __future__ import annotations

import argparse
import json
import sys

from .common import drain, err

HELP = "trends across a run's checkpoints: per tensor norm, mean, std and relative change"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer trend",
        description="For every tensor of a run's checkpoints: its L2 norm, mean and standard deviation in each "
                    "file, and the relative change from the file before, ||x_i - x_(i-1)|| / ||x_(i-1)||. A folder "
                    "stands for the checkpoints in it. Files are ordered by the epoch or step recorded in each when "
                    "every file records one, otherwise by name in natural order (epoch_2 before epoch_10). "
                    "Optimizer state is listed under its parameter names. Each file is read once, and memory "
                    "stays at two tensors. Exit status: 0, 1 when some files could not be read (left out), "
                    "2 when none could.",
        epilog="examples:\n"
               "  ckptviewer trend runs/exp1/\n"
               "  ckptviewer trend epoch_*.tar --json > trend.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", metavar="FILE", nargs="+", help="checkpoints, or folders of checkpoints")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"files": [...], "entries": [{"key", "norm", "mean", "std", '
                        '"rel_change"}], "order", "series", "warnings"} (null where undefined)')
    p.add_argument("--order", choices=["auto", "name", "given"], default="auto",
                   help="auto: by the recorded epoch/step when every file has one, else by name (default); "
                        "name: natural name order; given: as listed")
    p.add_argument("--limit", type=int, metavar="N", help="text output: show the first N tensors only")
    return p


def run(argv: list[str]) -> int:
    from ..core.analyze.trend import open_run, trend_json, trend_report, trend_steps
    from ..core.util.errors import CheckpointError

    args = parser().parse_args(argv)
    show = sys.stderr.isatty()
    try:
        run_ = drain(open_run(args.files, args.order), show=show, label="")
    except CheckpointError as e:
        err(str(e))
        return 2
    with run_:
        for w in run_.warnings:
            err(f"warning: {w}")
        try:
            drain(trend_steps(run_), show=show, label="reading ")
        except CheckpointError as e:
            err(str(e))
            return 2
        if args.json:
            sys.stdout.write(json.dumps(trend_json(run_), allow_nan=False) + "\n")
        else:
            for line in trend_report(run_, args.limit):
                print(line)
        return 1 if run_.warnings else 0
