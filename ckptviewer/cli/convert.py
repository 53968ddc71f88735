"""``ckptviewer convert``: a cleaned, verified copy of a checkpoint, or a recipe over many files."""
from __future__ import annotations

import argparse
import os
import time

from .common import drain, err, single_line

HELP = "write a cleaned copy: select, drop, strip prefix, rename, remap devices, cast"


def split_pair(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise SystemExit(f"ckptviewer: {what} takes OLD=NEW, got {text!r}")
    a, _, b = text.partition("=")
    return a, b


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer convert",
        description="Write a cleaned copy of a checkpoint. Steps run in this order: weights-only-safe, select, drop, "
                    "strip prefix, "
                    "rename (add/remove prefix, find/replace, regex), map location, dtype. The output is written "
                    "to a temporary file, read back and checked tensor by tensor, then renamed into place.",
        epilog="examples:\n"
               "  ckptviewer convert ckpt.tar -o model.pt --select model_state_dict --strip-prefix\n"
               "  ckptviewer convert gpu.pt -o cpu.pt --map-location cuda=cpu\n"
               "  ckptviewer convert model.bin -o model.safetensors --dtype bfloat16\n"
               "  ckptviewer convert old.pt -o new.pt --rename encoder.=backbone. --dry-run\n"
               "  ckptviewer convert --weights-only-safe ckpt.pt -o ckpt.weights-only.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", metavar="IN", nargs="*",
                   help="the checkpoint to convert (with --recipe: any number of files and folders)")
    p.add_argument("-o", "--output", metavar="OUT", help="where to write (required unless --dry-run or --recipe)")
    p.add_argument("--recipe", metavar="RECIPE",
                   help="run a recipe (a preset id or a recipe .json) on every IN; see --list-recipes")
    p.add_argument("--list-recipes", action="store_true", help="list the built-in recipes and exit")
    p.add_argument("--output-dir", metavar="DIR", help="with --recipe: write outputs here instead of beside inputs")
    p.add_argument("--recursive", action="store_true", help="with --recipe: look into sub-folders too")
    add_cleaning_options(p)
    add_output_options(p)
    return p


def add_cleaning_options(p: argparse.ArgumentParser) -> None:
    """The cleaning steps (weights-only-safe, select, drop, strip prefix, rename, map location, dtype), shared
    with ``merge``."""
    p.add_argument("--weights-only-safe", action="store_true",
                   help="write a copy plain torch.load opens with its defaults: objects become dicts of their fields, "
                        "pickled modules their state_dicts, numpy values numbers and tensors (see ckptviewer doctor)")
    p.add_argument("--select", metavar="PATH", help="keep only this entry, e.g. model_state_dict (a/b/0 for nested)")
    p.add_argument("--drop", metavar="PATH", nargs="+", action="extend", default=[],
                   help="remove entries, e.g. optimizer_state_dict or '*.num_batches_tracked'")
    p.add_argument("--strip-prefix", metavar="PREFIX", nargs="?", const="", default=None,
                   help="strip a prefix all keys share (without PREFIX: detect module. / _orig_mod.)")
    p.add_argument("--add-prefix", metavar="PREFIX", help="put PREFIX in front of every key")
    p.add_argument("--remove-prefix", metavar="PREFIX", help="remove PREFIX where a key starts with it")
    p.add_argument("--rename", metavar="OLD=NEW", nargs="+", action="extend", default=[],
                   help="replace the text OLD with NEW in every key")
    p.add_argument("--rename-regex", metavar="PATTERN=REPL", nargs="+", action="extend", default=[],
                   help="re.sub(PATTERN, REPL, key) on every key (groups as \\1)")
    p.add_argument("--map-location", metavar="SRC=DST", nargs="+", action="extend", default=[],
                   help="rewrite saved devices like map_location: cuda:1=cuda:0, cuda=cpu, '*=cpu'")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32", "float64"],
                   help="cast floating-point tensors (counters and integers stay)")


def add_output_options(p: argparse.ArgumentParser) -> None:
    """Where and how the result is written (format, shards, non-tensors, checks, force, dry run)."""
    p.add_argument("--format", choices=["pt", "pt-legacy", "safetensors"],
                   help="output format (default: from OUT's suffix; .safetensors or the torch zip format)")
    p.add_argument("--shard-size", metavar="SIZE",
                   help="write shards of at most SIZE (e.g. 2GB, 500MB) plus an index; OUT names the index, "
                        "e.g. OUTDIR/model.safetensors.index.json (an OUT ending in .index.json alone means 5GB)")
    p.add_argument("--non-tensors", choices=["error", "drop", "metadata"], default="error",
                   help="safetensors only: what to do with entries that are not tensors (by default a training "
                        "checkpoint's one model state_dict is selected)")
    p.add_argument("--metadata", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="safetensors only: add to the file's __metadata__ (which always has format=pt)")
    p.add_argument("--check-against", metavar="TARGET",
                   help="report how the result would load into TARGET's state_dict (load_state_dict(strict=False))")
    p.add_argument("--fit-to", metavar="TARGET",
                   help="fit the model's state_dict to TARGET's model for a warm start: apply the suggested renames, "
                        "drop unexpected keys and keys of another shape (a new classifier head), report what stays "
                        "missing; the output is the fitted state_dict (see `ckptviewer warmstart`)")
    p.add_argument("--target-select", metavar="PATH",
                   help="the state_dict inside TARGET (e.g. model_state_dict) for --check-against and --fit-to")
    p.add_argument("-f", "--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--force-bad-crc", action="store_true",
                   help="write tensors even when their bytes fail the source zip's CRC-32 check (a damaged file)")
    p.add_argument("-n", "--dry-run", action="store_true", help="show what would change and be written; write nothing")


def steps_from_args(args) -> list:
    from ..core.edit import ops
    steps = []
    if args.weights_only_safe:
        steps.append(ops.WeightsOnlySafe())
    if args.select:
        steps.append(ops.Select(args.select))
    if args.drop:
        steps.append(ops.Drop(tuple(args.drop)))
    if args.strip_prefix is not None:
        steps.append(ops.StripPrefix(args.strip_prefix or None))
    rules = []
    if args.add_prefix:
        rules.append(("add_prefix", args.add_prefix))
    if args.remove_prefix:
        rules.append(("remove_prefix", args.remove_prefix))
    rules += [("replace", *split_pair(r, "--rename")) for r in args.rename]
    rules += [("regex", *split_pair(r, "--rename-regex")) for r in args.rename_regex]
    if rules:
        steps.append(ops.Rename(tuple(rules)))
    if args.map_location:
        steps.append(ops.RemapDevice(tuple(split_pair(m, "--map-location") for m in args.map_location)))
    if args.dtype:
        steps.append(ops.Cast(args.dtype))
    return steps


def _key_changes(source_root, edited_root) -> list[str]:
    """old -> new lines for state_dict keys that a rename or strip changed (by tensor identity)."""
    from ..core.edit.ops import find_state_dicts
    before = {}
    for path, sd in find_state_dicts(source_root):
        for k, v in sd.items():
            before.setdefault(id(getattr(v, "origin", None) or v), f"{'/'.join(map(str, path + (k,)))}")
    lines = []
    for path, sd in find_state_dicts(edited_root):
        for k, v in sd.items():
            old = before.get(id(getattr(v, "origin", None) or v))
            new = "/".join(map(str, path + (k,)))
            if old is not None and old != new:
                lines.append(f"  {old} -> {new}")
    return lines


def run(argv: list[str]) -> int:
    from ..core.read.open import open_checkpoint
    from ..core.util.errors import CheckpointError
    from ..core.write.export import ExportOptions, export_iter, format_for_path, plan_export

    args = parser().parse_args(argv)
    if args.list_recipes:
        return _list_recipes()
    if args.recipe:
        return _convert_with_recipe(args)
    if len(args.inputs) != 1:
        err("convert takes one IN (or --recipe with any number of files and folders)")
        return 2
    args.input = args.inputs[0]
    if not args.output and not args.dry_run:
        err("convert needs -o OUT (or --dry-run)")
        return 2
    try:
        with open_checkpoint(args.input) as ckpt:
            from ..core.edit.ops import apply_steps, tensors_only_selection
            from ..core.write.shards import is_index_path, sharded_format
            sharded = bool(args.shard_size) or is_index_path(args.output or "")
            fmt = args.format or (sharded_format(args.output or "") if sharded else format_for_path(args.output or ""))
            options = ExportOptions(fmt=fmt, non_tensors=args.non_tensors, overwrite=args.force,
                                    metadata=dict(split_pair(m, "--metadata") for m in args.metadata),
                                    force_bad_crc=args.force_bad_crc)
            steps = steps_from_args(args)
            pick, why = None, ""
            if fmt == "safetensors" and not args.select and args.non_tensors == "error" and not args.fit_to:
                # A training checkpoint to safetensors: its one state_dict, said first (several: an error
                # naming the --select for each).
                pick, why = tensors_only_selection(ckpt.root)
            root, log = apply_steps(ckpt.root, ([pick] if pick is not None else []) + steps)
            if pick is not None:
                log.lines[0] = why          # the selection's own line, with its reason
            for line in log.lines:
                print(f"- {line}")
            if args.fit_to:
                root = fit_to(root, args.fit_to, args.target_select)
            if args.check_against:
                print_warm_start(root, args.check_against, args.target_select)
            if args.dry_run:
                changes = _key_changes(ckpt.root, root)
                if changes:
                    print(f"key changes ({len(changes)}):")
                    print("\n".join(changes[:200]))
                    if len(changes) > 200:
                        print(f"  ... and {len(changes) - 200} more")
                plan = plan_export(root, options)
                print("\n".join(plan.describe()))
                if sharded and not plan.problems and args.output:
                    from ..core.write.shards import DEFAULT_SHARD_SIZE, parse_size, plan_shards
                    size = parse_size(args.shard_size) if args.shard_size else DEFAULT_SHARD_SIZE
                    print("\n".join(plan_shards(root, args.output, options, size).describe()))
                print("dry run: nothing written")
                return 1 if plan.problems else 0
            if sharded:
                return convert_sharded(root, args, options, [ckpt.path])
            try:
                result = drain(export_iter(root, args.output, options, sources=[ckpt.path]))
            except CheckpointError as e:
                from ..core.edit.batch import export_failure
                raise export_failure(ckpt, e) from None
            for note in result.notes:
                print(f"note: {note}")
            for warning in result.warnings:
                err(f"warning: {warning}")
            print(f"wrote {result.path} ({result.size:,} bytes, {result.tensors} tensors, {result.fmt}; "
                  f"verified) in {result.seconds:.2f} s")
            return 0
    except CheckpointError as e:
        err(str(e))
        return 1


def convert_sharded(root, args, options, sources: list[str]) -> int:
    """convert's (and merge's) sharded output: shards plus an index (see core/write/shards.py)."""
    from ..core.write.shards import DEFAULT_SHARD_SIZE, export_sharded_iter, parse_size

    size = parse_size(args.shard_size) if args.shard_size else DEFAULT_SHARD_SIZE
    result = drain(export_sharded_iter(root, args.output, options, size, sources=sources))
    for note in result.notes:
        print(f"note: {note}")
    for path in result.shards:
        print(f"wrote {path}")
    print(f"wrote {result.path} ({len(result.shards)} shard{'s' if len(result.shards) != 1 else ''}, "
          f"{result.size:,} bytes, {result.tensors} tensors, {result.fmt}; each verified) in {result.seconds:.2f} s")
    return 0


def _list_recipes() -> int:
    from ..core.edit.recipes import presets
    for rid, r in presets().items():
        print(f"{rid:<20} {r.name}")
        print(f"{'':<20} {r.description}")
        print(f"{'':<20} steps: {'; '.join(s.describe() for s in r.steps)}; writes {r.output.name} "
              f"({r.output.format})")
    return 0


def _convert_with_recipe(args) -> int:

    from ..core.edit.batch import convert_iter, expand_inputs, without_outputs
    from ..core.edit.recipes import find_recipe
    from ..core.util.errors import CheckpointError
    from ..core.util.locations import shown_location

    flags = [f for f in ("output", "select", "strip_prefix", "add_prefix", "remove_prefix", "dtype", "format",
                         "check_against", "fit_to", "weights_only_safe") if getattr(args, f) not in (None, False)]
    flags += [f for f in ("drop", "rename", "rename_regex", "map_location", "metadata") if getattr(args, f)]
    if flags:
        err(f"--recipe takes its steps and output from the recipe; drop --{flags[0].replace('_', '-')} "
             f"(use --output-dir to choose the folder)")
        return 2
    if not args.inputs:
        err("--recipe needs files or folders to convert")
        return 2
    try:
        recipe = find_recipe(args.recipe)
    except CheckpointError as e:
        err(str(e))
        return 2
    if args.output_dir:
        if not os.path.isdir(args.output_dir):
            err(f"--output-dir {args.output_dir} is not a folder")
            return 2
        recipe.output.folder = os.path.abspath(args.output_dir)
    if args.force:
        recipe.output.exists = "overwrite"
    files, passed = expand_inputs(args.inputs, recursive=args.recursive)
    files, own = without_outputs(files, recipe)
    print(f"recipe: {recipe.name} ({'; '.join(s.describe() for s in recipe.steps)}); {len(files)} file(s)"
          + (f"; {len(passed)} other file(s) in the folders left alone" if passed else "")
          + (f"; {len(own)} earlier output(s) of this recipe left alone" if own else ""))
    counts = {"done": 0, "skipped": 0, "failed": 0}
    for i, src in enumerate(files, 1):
        label = f"[{i}/{len(files)}] {shown_location(src)}"
        started = time.perf_counter()
        try:
            if args.dry_run:
                from ..core.edit.batch import planned_output
                out, why = planned_output(src, recipe)
                print(f"{label} -> {out or 'skip'}{'  (' + why + ')' if why else ''}")
                counts["done" if out else "skipped"] += 1
                continue
            result = drain(convert_iter(src, recipe), label=f"{label}: ")
            counts[result.status] += 1
            if result.status == "skipped":
                print(f"{label}: skipped ({result.message})")
            else:
                print(f"{label} -> {result.output} ({result.size:,} bytes, {time.perf_counter() - started:.2f} s)")
        except CheckpointError as e:
            counts["failed"] += 1
            print(f"{label}: FAILED: {single_line(str(e))}")
        except Exception as e:  # a bug must not stop the batch: report it against this file
            counts["failed"] += 1
            print(f"{label}: FAILED (internal error {type(e).__name__}: {e})")
    print(f"summary: {counts['done']} converted, {counts['skipped']} skipped, {counts['failed']} failed"
          + (" (dry run: nothing written)" if args.dry_run else ""))
    return 1 if counts["failed"] else 0


def fit_to(root, target_path: str, target_select: str | None):
    """--fit-to: the fitted state_dict, with what was renamed, dropped and stays missing said."""
    from ..core.analyze.warmstart import fit_root, pick_state_dict
    from ..core.read.open import open_checkpoint
    from ..core.util.textsafe import safe_text
    with open_checkpoint(target_path) as target:
        _, target_sd, note = pick_state_dict(target.root, target_select)
        root, plan, lines = fit_root(root, target_sd)
    for line in lines:
        print(f"- {safe_text(line, 600)}")
    print(f"fit to {safe_text(target_path)} ({safe_text(note, 200)}): {plan.before.summary()} before")
    for line in plan.describe():
        print(f"  {safe_text(line, 1000)}")
    return root


def print_warm_start(root, target_path: str, target_select: str | None) -> None:
    from ..core.analyze.warmstart import compare, suggest
    from ..core.edit.ops import find_state_dicts
    from ..core.model import keypath
    from ..core.model.walk import module_attrs, module_state_dict
    from ..core.read.open import open_checkpoint

    sds = find_state_dicts(root)
    if len(sds) != 1:
        from ..core.util.errors import OperationError
        raise OperationError(f"--check-against needs exactly one state_dict in the result, found {len(sds)}; "
                             f"use --select")
    with open_checkpoint(target_path) as target:
        if target_select:
            _, value = keypath.resolve(target.root, target_select)
        else:
            found = find_state_dicts(target.root)
            value = found[0][1] if len(found) == 1 else target.root
        if module_attrs(value) is not None:
            value = dict(module_state_dict(value))
        rep = compare(sds[0][1], value)
        print(f"warm start against {target_path}: {rep.summary()}")
        for title, items in (("missing_keys", rep.missing_keys), ("unexpected_keys", rep.unexpected_keys)):
            print(f"  {title} ({len(items)}): {', '.join(items[:20])}{' ...' if len(items) > 20 else ''}")
        for k, a, b in rep.shape_mismatches[:20]:
            print(f"  shape mismatch: {k}: {list(a)} here, {list(b)} in the target")
        for s in suggest(rep):
            print(f"  suggestion: {s.reason}")
