"""``ckptviewer merge A B [C...]``: the weighted average of several checkpoints, written like ``convert``."""
from __future__ import annotations

import argparse
import contextlib
import sys

from .common import drain, err
from .convert import (add_cleaning_options, add_output_options, convert_sharded, fit_to, print_warm_start, split_pair,
                      steps_from_args)

HELP = "average checkpoints (model soups, SWA): weighted mean of their floating-point tensors"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer merge",
        description="Write the weighted average of checkpoints of one model. Floating-point tensors are averaged "
                    "(computed in float32, or float64 for float64 tensors, and written in the input dtype or "
                    "--dtype); integer and boolean tensors, counters (num_batches_tracked, step) and values that "
                    "are not tensors come from the first file. The cleaning steps (select, drop, strip prefix, "
                    "rename, map location) apply to every input before the merge. Keys or shapes that do not "
                    "match stop the merge with exit status 2 and a list of the first mismatches; nothing is "
                    "written. The output is written like `convert` writes: to a temporary file, read back and "
                    "checked against the computed values tensor by tensor, then renamed into place.",
        epilog="examples:\n"
               "  ckptviewer merge a.pt b.pt c.pt -o soup.pt\n"
               "  ckptviewer merge ema.pt last.pt --weights 0.9,0.1 -o blend.safetensors\n"
               "  ckptviewer merge epoch_8.tar epoch_9.tar epoch_10.tar --select model_state_dict -o swa.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", metavar="IN", nargs="+", help="two or more checkpoints (A B [C...])")
    p.add_argument("-o", "--output", metavar="OUT", help="where to write (required unless --dry-run)")
    p.add_argument("--weights", metavar="W1,W2,...",
                   help="one weight per input, in order (default: equal); divided by their sum")
    add_cleaning_options(p)
    add_output_options(p)
    return p


def run(argv: list[str]) -> int:
    from ..core.edit.merge import (
        MergeMismatchError,
        input_labels,
        merge_from_plan,
        merge_plan,
        parse_weights,
    )
    from ..core.edit.ops import Cast, EditLog, apply_steps
    from ..core.read.open import open_checkpoint
    from ..core.util.errors import CheckpointError
    from ..core.write.export import (
        ExportOptions,
        export_iter,
        format_for_path,
        plan_export,
    )
    from ..core.write.shards import is_index_path, sharded_format

    args = parser().parse_args(argv)
    if len(args.inputs) < 2:
        err("merge needs at least two checkpoints (A B [C...])")
        return 2
    if not args.output and not args.dry_run:
        err("merge needs -o OUT (or --dry-run)")
        return 2
    try:
        weights = parse_weights(args.weights, len(args.inputs))
    except CheckpointError as e:
        err(str(e))
        return 2
    # The dtype is applied by the merge itself (one rounding of the average), not by a Cast step after it.
    steps = [s for s in steps_from_args(args) if not isinstance(s, Cast)]
    labels = input_labels(args.inputs)
    try:
        with contextlib.ExitStack() as stack:
            ckpts = [stack.enter_context(open_checkpoint(p)) for p in args.inputs]
            roots = []
            for i, ckpt in enumerate(ckpts):
                root, log = apply_steps(ckpt.root, steps)
                roots.append(root)
                if i == 0:
                    for line in log.lines:
                        print(f"- {line} (in each input)")
            plan = merge_plan(roots, weights, labels)
            if plan.mismatches:
                print("\n".join(plan.describe()), file=sys.stderr)
            log = EditLog()
            merged = merge_from_plan(roots[0], plan, dtype=args.dtype, log=log)
            for line in log.lines:
                print(f"- {line}")
            sharded = bool(args.shard_size) or is_index_path(args.output or "")
            fmt = args.format or (sharded_format(args.output or "") if sharded else format_for_path(args.output or ""))
            options = ExportOptions(fmt=fmt, non_tensors=args.non_tensors, overwrite=args.force,
                                    metadata=dict(split_pair(m, "--metadata") for m in args.metadata),
                                    force_bad_crc=args.force_bad_crc)
            if args.fit_to:
                merged = fit_to(merged, args.fit_to, args.target_select)
            if args.check_against:
                print_warm_start(merged, args.check_against, args.target_select)
            if args.dry_run:
                export_plan = plan_export(merged, options)
                print("\n".join(export_plan.describe()))
                print("dry run: nothing written")
                return 1 if export_plan.problems else 0
            sources = [c.path for c in ckpts]
            if sharded:
                return convert_sharded(merged, args, options, sources)
            result = drain(export_iter(merged, args.output, options, sources=sources), label="merging ")
            for note in result.notes:
                print(f"note: {note}")
            for warning in result.warnings:
                err(f"warning: {warning}")
            print(f"wrote {result.path} ({result.size:,} bytes, {result.tensors} tensors, {result.fmt}; "
                  f"verified) in {result.seconds:.2f} s")
            return 0
    except MergeMismatchError as e:
        err(f"{e.message.split(':', 1)[0]}; nothing written")
        return 2
    except CheckpointError as e:
        err(str(e))
        return 1
