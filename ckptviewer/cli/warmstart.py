"""``ckptviewer warmstart SOURCE TARGET``: would SOURCE's weights load into the model TARGET holds?"""
from __future__ import annotations

import argparse
import json
import sys

from .common import err

HELP = "check a warm start: missing, unexpected and mismatched keys, suggested renames"
LISTED = 20


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer warmstart",
        description="Check whether SOURCE's weights load into the model whose state_dict TARGET holds, as "
                    "model.load_state_dict(strict=...) would: missing keys (the model has them, SOURCE does not), "
                    "unexpected keys (the other way round), keys whose shapes differ, and renames that would make "
                    "more keys match (prefixes such as module., known renamings). A training checkpoint's model "
                    "state_dict is found by itself. Exit status: 0 when load_state_dict(strict=True) would "
                    "succeed, 1 when it would not, 2 when a file cannot be read.",
        epilog="example:\n  ckptviewer warmstart pretrained.pth my_model_init.pt\n"
               "  ckptviewer convert pretrained.pth -o fitted.pt --fit-to my_model_init.pt   # apply the fit",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="the checkpoint whose weights you want to load")
    p.add_argument("target", metavar="TARGET", help="a checkpoint of the model to load them into (its state_dict)")
    p.add_argument("--select", metavar="PATH", help="the state_dict in SOURCE (default: the model's)")
    p.add_argument("--target-select", metavar="PATH", help="the state_dict in TARGET (default: the model's)")
    p.add_argument("--json", action="store_true", help="one JSON object: missing, unexpected, shape_mismatch, renames")
    p.add_argument("--all", action="store_true", help=f"list every key (the text lists {LISTED} of each kind)")
    return p


def _listed(title: str, keys: list[str], everything: bool) -> list[str]:
    from ..core.util.textsafe import key_text
    if not keys:
        return []
    shown = keys if everything else keys[:LISTED]
    lines = [f"{title} ({len(keys):,}):"] + [f"  {key_text(k)}" for k in shown]
    if len(keys) > len(shown):
        lines.append(f"  … {len(keys) - len(shown):,} more (--all lists them)")
    return lines


def run(argv: list[str]) -> int:
    from ..core.analyze.warmstart import compare, pick_state_dict, plan_fit, report_json, suggest
    from ..core.read.open import open_checkpoint
    from ..core.util.errors import CheckpointError
    from ..core.util.textsafe import key_text, safe_text
    from ..core.util.units import shape_text

    args = parser().parse_args(argv)
    try:
        with open_checkpoint(args.source) as src, open_checkpoint(args.target) as tgt:
            src_path, src_sd, src_note = pick_state_dict(src.root, args.select)
            tgt_path, tgt_sd, tgt_note = pick_state_dict(tgt.root, args.target_select)
            rep = compare(src_sd, tgt_sd)
            suggestions = suggest(rep)
            fit = plan_fit(src_sd, tgt_sd) if not rep.loads_strictly else None
            if args.json:
                out = report_json(rep, suggestions, fit)
                out["source"] = {"file": src.path, "state_dict": list(src_path), "chosen": src_note}
                out["target"] = {"file": tgt.path, "state_dict": list(tgt_path), "chosen": tgt_note}
                sys.stdout.write(json.dumps(out, default=repr) + "\n")
                return 0 if rep.loads_strictly else 1
            print(f"source: {safe_text(src.path)}: {safe_text(src_note, 200)}, {len(src_sd):,} tensors")
            print(f"target: {safe_text(tgt.path)}: {safe_text(tgt_note, 200)}, {len(tgt_sd):,} tensors")
            counts = rep.check_keys()
            print(f"Missing keys: {counts['missing']:,}   Unused checkpoint keys: {counts['unused']:,}   "
                  f"Used keys: {counts['used']:,}")
            if rep.loads_strictly:
                print("load_state_dict(strict=True) would succeed: every key matches, with the same shape.")
                return 0
            print(f"load_state_dict(strict=True) would fail: {rep.summary()}.")
            if counts["used"] == 0:
                print("Nothing in common: load_state_dict(strict=False) would load NONE of these weights.")
            lines = _listed("missing_keys", rep.missing_keys, args.all)
            lines += _listed("unexpected_keys", rep.unexpected_keys, args.all)
            mismatches = [f"{key_text(k)}: {shape_text(a)} in SOURCE, {shape_text(b)} in TARGET"
                          for k, a, b in rep.shape_mismatches]
            lines += _listed("shape mismatches (load_state_dict raises on these even with strict=False)",
                             mismatches, args.all)
            print("\n".join(lines))
            for s in suggestions:
                print(f"suggestion: {safe_text(s.reason, 300)}")
            if fit is not None:
                print(f"fit (`ckptviewer convert {args.source} -o OUT --fit-to {args.target}`):")
                for line in fit.describe():
                    print(f"  {safe_text(line, 600)}")
            return 1
    except CheckpointError as e:
        err(str(e))
        return 2
