"""The command line: ``ckptviewer [FILE...]`` opens the window; ``ckptviewer COMMAND ...`` works headless.

Headless commands import neither Qt nor torch unless they need them (writing a torch file does).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys

from . import __version__

COMMANDS = {}


def command(name: str, help_text: str):
    def register(fn):
        COMMANDS[name] = (fn, help_text)
        return fn
    return register


def _err(msg: str) -> None:
    print(f"ckptviewer: {msg}", file=sys.stderr)


def _single_line(text: str) -> str:
    return " ".join(str(text).split())


# -- info ---------------------------------------------------------------------------------------------
def _info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ckptviewer info",
                                description="Show what a checkpoint holds without loading its tensors.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file (a list for several files)")
    p.add_argument("--checksums", action="store_true", help="add each tensor's sha256 (reads every tensor)")
    p.add_argument("--depth", type=int, default=None, metavar="N", help="fold the tree below N levels")
    return p


@command("info", "show a checkpoint's tree, tensors and summary")
def cmd_info(argv: list[str]) -> int:
    import json

    from .core.errors import CheckpointError
    from .core.formats import open_checkpoint
    from .core.info import build_report, report_text

    args = _info_parser().parse_args(argv)
    status = 0
    reports = []
    for i, path in enumerate(args.files):
        try:
            with open_checkpoint(path) as ckpt:
                if args.json:
                    reports.append(build_report(ckpt, checksums=args.checksums))
                else:
                    if i:
                        print()
                    print(report_text(ckpt, depth=args.depth))
        except CheckpointError as e:
            _err(_single_line(str(e)))
            status = 1
        except BrokenPipeError:
            raise                  # the reader of our output went away (`| head`): not a file problem
        except Exception as e:  # a reader bug: say so in one line, keep going with the other files
            _err(_single_line(f"{os.path.basename(path)}: internal error ({type(e).__name__}: {e}); "
                              f"please report this file's problem"))
            status = 2
    if args.json and reports:
        out = reports[0] if len(args.files) == 1 else reports
        # dumps (one shot, the C encoder) is several times faster than dump's incremental writes.
        sys.stdout.write(json.dumps(out, default=repr) + "\n")
    return status


# -- convert ------------------------------------------------------------------------------------------
def _pair(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise SystemExit(f"ckptviewer: {what} takes OLD=NEW, got {text!r}")
    a, _, b = text.partition("=")
    return a, b


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer convert",
        description="Write a cleaned copy of a checkpoint. Steps run in this order: select, drop, strip prefix, "
                    "rename (add/remove prefix, find/replace, regex), map location, dtype. The output is written "
                    "to a temporary file, read back and checked tensor by tensor, then renamed into place.",
        epilog="examples:\n"
               "  ckptviewer convert ckpt.tar -o model.pt --select model_state_dict --strip-prefix\n"
               "  ckptviewer convert gpu.pt -o cpu.pt --map-location cuda=cpu\n"
               "  ckptviewer convert model.bin -o model.safetensors --dtype bfloat16\n"
               "  ckptviewer convert old.pt -o new.pt --rename encoder.=backbone. --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", metavar="IN", nargs="*",
                   help="the checkpoint to convert (with --recipe: any number of files and folders)")
    p.add_argument("-o", "--output", metavar="OUT", help="where to write (required unless --dry-run or --recipe)")
    p.add_argument("--recipe", metavar="RECIPE",
                   help="run a recipe (a preset id or a recipe .json) on every IN; see --list-recipes")
    p.add_argument("--list-recipes", action="store_true", help="list the built-in recipes and exit")
    p.add_argument("--output-dir", metavar="DIR", help="with --recipe: write outputs here instead of beside inputs")
    p.add_argument("--recursive", action="store_true", help="with --recipe: look into sub-folders too")
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
    p.add_argument("--format", choices=["pt", "pt-legacy", "safetensors"],
                   help="output format (default: from OUT's suffix; .safetensors or the torch zip format)")
    p.add_argument("--shard-size", metavar="SIZE",
                   help="write shards of at most SIZE (e.g. 2GB, 500MB) plus an index; OUT names the index, "
                        "e.g. OUTDIR/model.safetensors.index.json (an OUT ending in .index.json alone means 5GB)")
    p.add_argument("--non-tensors", choices=["error", "drop", "metadata"], default="error",
                   help="safetensors only: what to do with entries that are not tensors")
    p.add_argument("--check-against", metavar="TARGET",
                   help="report how the result would load into TARGET's state_dict (load_state_dict(strict=False))")
    p.add_argument("--target-select", metavar="PATH", help="the state_dict inside TARGET (e.g. model_state_dict)")
    p.add_argument("-f", "--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("-n", "--dry-run", action="store_true", help="show what would change and be written; write nothing")
    return p


def steps_from_args(args) -> list:
    from .core import ops
    steps = []
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
    rules += [("replace", *_pair(r, "--rename")) for r in args.rename]
    rules += [("regex", *_pair(r, "--rename-regex")) for r in args.rename_regex]
    if rules:
        steps.append(ops.Rename(tuple(rules)))
    if args.map_location:
        steps.append(ops.RemapDevice(tuple(_pair(m, "--map-location") for m in args.map_location)))
    if args.dtype:
        steps.append(ops.Cast(args.dtype))
    return steps


def _key_changes(source_root, edited_root) -> list[str]:
    """old -> new lines for state_dict keys that a rename or strip changed (by tensor identity)."""
    from .core.ops import find_state_dicts
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


@command("convert", "write a cleaned copy: select, drop, strip prefix, rename, remap devices, cast")
def cmd_convert(argv: list[str]) -> int:
    from .core.errors import CheckpointError
    from .core.export import ExportOptions, export_iter, format_for_path, plan_export
    from .core.formats import open_checkpoint

    parser = _convert_parser()
    args = parser.parse_args(argv)
    if args.list_recipes:
        return _list_recipes()
    if args.recipe:
        return _convert_with_recipe(args)
    if len(args.inputs) != 1:
        _err("convert takes one IN (or --recipe with any number of files and folders)")
        return 2
    args.input = args.inputs[0]
    if not args.output and not args.dry_run:
        _err("convert needs -o OUT (or --dry-run)")
        return 2
    try:
        with open_checkpoint(args.input) as ckpt:
            steps = steps_from_args(args)
            from .core.ops import apply_steps
            root, log = apply_steps(ckpt.root, steps)
            from .core.shard_export import is_index_path, sharded_format
            sharded = bool(args.shard_size) or is_index_path(args.output or "")
            fmt = args.format or (sharded_format(args.output or "") if sharded else format_for_path(args.output or ""))
            options = ExportOptions(fmt=fmt, non_tensors=args.non_tensors, overwrite=args.force)
            for line in log.lines:
                print(f"- {line}")
            if args.check_against:
                _print_warm_start(root, args.check_against, args.target_select)
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
                    from .core.shard_export import DEFAULT_SHARD_SIZE, parse_size, plan_shards
                    size = parse_size(args.shard_size) if args.shard_size else DEFAULT_SHARD_SIZE
                    print("\n".join(plan_shards(root, args.output, options, size).describe()))
                print("dry run: nothing written")
                return 1 if plan.problems else 0
            if sharded:
                return _convert_sharded(root, args, options, ckpt.path)
            show = sys.stderr.isatty()
            last = -1
            gen = export_iter(root, args.output, options, sources=[ckpt.path])
            try:
                while True:
                    p = next(gen)
                    pct = int(100 * p.done / p.total) if p.total else 100
                    if show and pct != last:
                        sys.stderr.write(f"\r{p.stage} {pct:3d}%")
                        last = pct
            except StopIteration as stop:
                result = stop.value
            if show:
                sys.stderr.write("\r" + " " * 20 + "\r")
            for note in result.notes:
                print(f"note: {note}")
            print(f"wrote {result.path} ({result.size:,} bytes, {result.tensors} tensors, {result.fmt}; "
                  f"verified) in {result.seconds:.2f} s")
            return 0
    except CheckpointError as e:
        _err(_single_line(str(e)))
        return 1


def _convert_sharded(root, args, options, source: str) -> int:
    """convert's sharded output: shards plus an index (see core/shard_export.py)."""
    from .core.shard_export import DEFAULT_SHARD_SIZE, export_sharded_iter, parse_size

    size = parse_size(args.shard_size) if args.shard_size else DEFAULT_SHARD_SIZE
    show = sys.stderr.isatty()
    last = None
    gen = export_sharded_iter(root, args.output, options, size, sources=[source])
    try:
        while True:
            p = next(gen)
            pct = int(100 * p.done / p.total) if p.total else 100
            if show and (pct, p.stage) != last:
                sys.stderr.write(f"\r{p.stage} {pct:3d}%   ")
                last = (pct, p.stage)
    except StopIteration as stop:
        result = stop.value
    if show:
        sys.stderr.write("\r" + " " * 60 + "\r")
    for note in result.notes:
        print(f"note: {note}")
    for path in result.shards:
        print(f"wrote {path}")
    print(f"wrote {result.path} ({len(result.shards)} shard{'s' if len(result.shards) != 1 else ''}, "
          f"{result.size:,} bytes, {result.tensors} tensors, {result.fmt}; each verified) in {result.seconds:.2f} s")
    return 0


def _list_recipes() -> int:
    from .core.recipes import presets
    for rid, r in presets().items():
        print(f"{rid:<20} {r.name}")
        print(f"{'':<20} {r.description}")
        print(f"{'':<20} steps: {'; '.join(s.describe() for s in r.steps)}; writes {r.output.name} "
              f"({r.output.format})")
    return 0


def _convert_with_recipe(args) -> int:
    import time

    from .core.batch import convert_iter, expand_inputs, without_outputs
    from .core.errors import CheckpointError
    from .core.recipes import find_recipe

    flags = [f for f in ("output", "select", "strip_prefix", "add_prefix", "remove_prefix", "dtype", "format",
                         "check_against") if getattr(args, f) not in (None, False)]
    flags += [f for f in ("drop", "rename", "rename_regex", "map_location") if getattr(args, f)]
    if flags:
        _err(f"--recipe takes its steps and output from the recipe; drop --{flags[0].replace('_', '-')} "
             f"(use --output-dir to choose the folder)")
        return 2
    if not args.inputs:
        _err("--recipe needs files or folders to convert")
        return 2
    try:
        recipe = find_recipe(args.recipe)
    except CheckpointError as e:
        _err(_single_line(str(e)))
        return 2
    if args.output_dir:
        if not os.path.isdir(args.output_dir):
            _err(f"--output-dir {args.output_dir} is not a folder")
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
    show = sys.stderr.isatty()
    for i, src in enumerate(files, 1):
        label = f"[{i}/{len(files)}] {src}"
        started = time.perf_counter()
        try:
            if args.dry_run:
                from .core.batch import planned_output
                out, why = planned_output(src, recipe)
                print(f"{label} -> {out or 'skip'}{'  (' + why + ')' if why else ''}")
                counts["done" if out else "skipped"] += 1
                continue
            gen = convert_iter(src, recipe)
            try:
                while True:
                    p = next(gen)
                    if show:
                        sys.stderr.write(f"\r{label}: {p.stage} {int(100 * p.done / max(p.total, 1)):3d}%")
            except StopIteration as stop:
                result = stop.value
            if show:
                sys.stderr.write("\r\033[K")
            counts[result.status] += 1
            if result.status == "skipped":
                print(f"{label}: skipped ({result.message})")
            else:
                print(f"{label} -> {result.output} ({result.size:,} bytes, {time.perf_counter() - started:.2f} s)")
        except CheckpointError as e:
            if show:
                sys.stderr.write("\r\033[K")
            counts["failed"] += 1
            print(f"{label}: FAILED: {_single_line(str(e))}")
        except Exception as e:  # a bug must not stop the batch: report it against this file
            counts["failed"] += 1
            print(f"{label}: FAILED (internal error {type(e).__name__}: {e})")
    print(f"summary: {counts['done']} converted, {counts['skipped']} skipped, {counts['failed']} failed"
          + (" (dry run: nothing written)" if args.dry_run else ""))
    return 1 if counts["failed"] else 0


def _print_warm_start(root, target_path: str, target_select: str | None) -> None:
    from .core import keypath
    from .core.formats import open_checkpoint
    from .core.ops import find_state_dicts
    from .core.walk import module_attrs, module_state_dict
    from .core.warmstart import compare, suggest

    sds = find_state_dicts(root)
    if len(sds) != 1:
        from .core.errors import OperationError
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


# -- diff ---------------------------------------------------------------------------------------------
def _diff_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ckptviewer diff",
        description="Compare two checkpoints (or parts of them) tensor by tensor. Lines start with '-' (only in A), "
                    "'+' (only in B) or '!' (changed, with max|a-b|, mean|a-b|, ||a-b||/||a||, cosine similarity "
                    "and the share of elements not close as torch.allclose(atol, rtol) defines it). "
                    "Exit status: 0 when equal, 1 when different, 2 on error.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--select-a", metavar="PATH", help="compare this entry of A (e.g. model_state_dict)")
    p.add_argument("--select-b", metavar="PATH", help="compare this entry of B")
    p.add_argument("--strip-prefix", action="store_true",
                   help="strip wrapper prefixes (module., _orig_mod.) on both sides first")
    p.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance (default 1e-8, as torch.allclose)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5, as torch.allclose)")
    p.add_argument("--all", action="store_true", help="also list identical entries")
    p.add_argument("--json", action="store_true", help="one JSON object (entries with status and metrics)")
    return p


@command("diff", "compare two checkpoints tensor by tensor")
def cmd_diff(argv: list[str]) -> int:
    import json

    from .core.diff import COUNT_TEXT, DiffOptions, DiffRun, diff_json, diff_report, select_and_strip
    from .core.errors import CheckpointError
    from .core.formats import open_checkpoint

    args = _diff_parser().parse_args(argv)
    try:
        with open_checkpoint(args.a) as a, open_checkpoint(args.b) as b:
            root_a = select_and_strip(a.root, args.select_a, args.strip_prefix)
            root_b = select_and_strip(b.root, args.select_b, args.strip_prefix)
            run = DiffRun(root_a, root_b, DiffOptions(atol=args.atol, rtol=args.rtol))
            show = sys.stderr.isatty() and not args.json
            last = -1
            for p in run.compare():
                pct = int(100 * p.done / p.total) if p.total else 100
                if show and pct != last:
                    sys.stderr.write(f"\rcomparing {pct:3d}%")
                    last = pct
            if show:
                sys.stderr.write("\r" + " " * 20 + "\r")
            if args.json:
                sys.stdout.write(json.dumps(diff_json(run), default=repr) + "\n")
            else:
                print(f"--- {a.path}" + (f" [{args.select_a}]" if args.select_a else ""))
                print(f"+++ {b.path}" + (f" [{args.select_b}]" if args.select_b else ""))
                for line in diff_report(run, show_same=args.all):
                    print(line)
                counts = run.counts()
                pairs = [e for e in run.entries if e.is_tensor and e.status not in ("only_a", "only_b", "value")]
                same = sum(1 for e in pairs if e.status == "same")
                parts = [f"{len(pairs)} tensor pair{'s' if len(pairs) != 1 else ''} compared: {same} identical"]
                for key in ("changed", "dtype", "shape", "value", "only_a", "only_b", "error"):
                    if counts[key]:
                        parts.append(f"{counts[key]} {COUNT_TEXT[key]}")
                print("summary: " + "; ".join(parts))
            return 0 if run.equal else 1
    except CheckpointError as e:
        _err(_single_line(str(e)))
        return 2


# -- scan ---------------------------------------------------------------------------------------------
def _scan_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="ckptviewer scan",
        description="List every global each pickle in a file names (what torch.load(weights_only=False) or "
                    "pickle.load would import and call), classified as safe (rebuilt by ckptviewer's own code), "
                    "unknown (shown as a stand-in) or dangerous (process, file, network and code-execution entry "
                    "points). Nothing is loaded: the pickles are walked opcode by opcode, tensors are never read, "
                    "and a broken file still reports what was seen before the break. "
                    "Exit status: 1 when anything dangerous is found, 0 when every pickle was read to its end and "
                    "nothing is dangerous, 2 when a file could not be read or could be read only in part.")


def _scan_args(argv: list[str]):
    p = _scan_parser()
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file (a list for several files)")
    return p.parse_args(argv)


def _scan_text(res) -> list[str]:
    from .core.textsafe import safe_text
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
    for problem in res.problems:
        lines.append(f"  broken: {safe_text(problem, 300)}"
                     + (" (the globals above were seen before the break)" if rows else ""))
    for note in res.notes:
        lines.append(f"  note: {safe_text(note, 300)}")
    lines.append(f"  {res.verdict()}")
    return lines


@command("scan", "list the globals a file's pickles name; flag dangerous ones (exit 1)")
def cmd_scan(argv: list[str]) -> int:
    import json

    from .core.scan import scan_file

    args = _scan_args(argv)
    statuses = []
    reports = []
    for i, path in enumerate(args.files):
        try:
            res = scan_file(path)
        except Exception as e:  # a scanner bug: say so, and never call the file clean
            _err(_single_line(f"{os.path.basename(path)}: internal error ({type(e).__name__}: {e}); "
                              f"please report this file's problem"))
            statuses.append(2)
            continue
        statuses.append(res.status)
        if res.error is not None:
            _err(_single_line(f"{os.path.basename(path)}: {res.error}"))
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


# -- the window ---------------------------------------------------------------------------------------
def _gui_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="ckptviewer",
        description="Browse PyTorch checkpoints safely: nothing in a file is ever executed.",
        epilog=f"commands (run 'ckptviewer COMMAND --help'):\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", metavar="FILE", help="checkpoints to open, one tab each")
    p.add_argument("--demo", action="store_true", help="open a demo checkpoint generated on the fly")
    p.add_argument("--new-window", action="store_true", help="do not hand files to a running window")
    p.add_argument("--screenshot", metavar="OUT.png", help="render the window to a PNG once loaded, then exit")
    p.add_argument("--install-desktop", action="store_true", help="register the .desktop entry and MIME types")
    p.add_argument("--uninstall-desktop", action="store_true", help="remove what --install-desktop added")
    p.add_argument("--version", action="version", version=f"ckptviewer {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        fn, _ = COMMANDS[argv[0]]
        # A headless command is one short pass over data that has almost no reference cycles; the
        # cyclic collector would rescan millions of live objects (it tripled `info` on 100k keys).
        gc.disable()
        try:
            return fn(argv[1:])
        except KeyboardInterrupt:
            _err("interrupted")
            return 130
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    args = _gui_parser().parse_args(argv)
    if args.install_desktop or args.uninstall_desktop:
        from .desktop import install, uninstall
        return (install if args.install_desktop else uninstall)(print)
    problem = _prepare_display(bool(args.screenshot))
    if problem:
        _err(problem)
        return 2
    from .gui.app import run
    return run(args)


def _prepare_display(screenshot: bool, env=os.environ, platform: str = sys.platform) -> str | None:
    """Make sure Qt will have somewhere to draw, before Qt is imported. On Linux without a display (an
    SSH session, a container, CI): a screenshot renders offscreen, which needs none; opening a window
    says why it cannot instead of letting Qt abort the interpreter. Returns the reason, or None."""
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    if screenshot:
        env["QT_QPA_PLATFORM"] = "offscreen"
        return None
    return ("no display to open a window on (DISPLAY and WAYLAND_DISPLAY are not set). Run it in a desktop "
            "session, use the commands that need none (ckptviewer info / scan / diff / convert), or render "
            "the window to a file with --screenshot OUT.png")


def entry() -> None:
    """The console script. After a headless command, exit without tearing down every object the
    command built (freeing a 100,000-tensor tree one object at a time costs a tenth of its run)."""
    argv = sys.argv[1:]
    rc = main(argv)
    if argv and argv[0] in COMMANDS:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    entry()
