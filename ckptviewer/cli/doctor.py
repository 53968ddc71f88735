"""``ckptviewer doctor FILE...``: will ``torch.load(FILE)`` work here, and if not, the exact fix."""
from __future__ import annotations

import argparse
import json
import sys

from .common import err, internal_error

HELP = "will torch.load(FILE) work here? every reason it fails and the exact fix (exit 1 if not)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer doctor",
        description="For each file, the verdict for torch.load(FILE) with torch's default arguments on this "
                    "machine (weights_only=True since torch 2.6): whether it loads; every reason it does not (globals "
                    "the weights-only unpickler refuses, pickle protocols it cannot read, storages saved on devices "
                    "this machine lacks, a file that is not a checkpoint or is cut short); what each blocked class is; "
                    "and the fix: a snippet that loads the file with the weights-only unpickler kept on, or the "
                    "convert command that writes a copy torch opens with its defaults. Nothing in the file is run. "
                    "Without --torch, the installed torch's own allowlist is used when torch is importable "
                    "(ckptviewer's table otherwise). "
                    "Exit status: 0 when every file loads with the defaults, 1 when one does not, 2 when one cannot "
                    "be read at all.",
        epilog="examples:\n"
               "  ckptviewer doctor checkpoint.pt\n"
               "  ckptviewer doctor --torch 2.5 *.pt\n"
               "  ckptviewer doctor --json model.ckpt | jq .fix.snippet -r",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file (a list for several files)")
    p.add_argument("--torch", metavar="VERSION",
                   help="answer for another torch release (2.4 to 2.14), from ckptviewer's table of allowlists")
    return p


def run(argv: list[str]) -> int:
    from ..core.analyze.doctor import diagnose, probe_machine, target_for

    args = _parser().parse_args(argv)
    try:
        target = target_for(args.torch) if args.torch else None
    except ValueError as e:
        err(str(e))
        return 2
    machine = probe_machine(import_torch=True)
    target = target or target_for(machine=machine, import_torch=True)
    statuses, reports = [], []
    for i, path in enumerate(args.files):
        try:
            d = diagnose(path, target=target, machine=machine)
        except Exception as e:  # a bug of ours: say so, and never call the file fine
            err(internal_error(path, e))
            statuses.append(2)
            continue
        statuses.append(d.status)
        if d.loads is None:
            err(f"{d.path}: {d.error}")
        if args.json:
            reports.append(d.to_json())
        else:
            if i:
                print()
            print("\n".join(d.text_lines()))
    if args.json:
        out = reports[0] if len(args.files) == 1 and reports else reports
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return max(statuses, default=0)
