"""Running a recipe over many files: the same path for the CLI and the window's Convert panel.

``convert_iter(source, recipe)`` converts one file as a generator (each yield is progress and a point
where the caller may stop; stopping leaves no partial output, as every export is atomic).
``expand_inputs`` turns files and folders into the list of checkpoints to convert. One bad file fails
alone: its error is reported and the others go on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Generator, Iterable

from ..read.open import open_checkpoint
from ..util.errors import CheckpointError, OperationError
from ..util.locations import is_url
from ..write.export import ExportOptions, ExportProgress, export_iter
from .ops import apply_steps
from .recipes import Recipe

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt", ".safetensors", ".pkl")


@dataclass
class ConvertResult:
    source: str
    output: str | None
    status: str             # "done", "skipped", "failed"
    message: str = ""
    size: int = 0
    seconds: float = 0.0


def expand_inputs(paths: Iterable[str], recursive: bool = False) -> tuple[list[str], list[str]]:
    """(checkpoint files to convert, paths passed over) from files and folders, in a stable order."""
    files, skipped = [], []
    for p in paths:
        p = os.fspath(p)
        if not is_url(p) and os.path.isdir(p):
            walker = os.walk(p) if recursive else [(p, [], sorted(os.listdir(p)))]
            for folder, _, names in walker:
                for n in sorted(names):
                    full = os.path.join(folder, n)
                    if not os.path.isfile(full) or n.startswith("."):
                        continue
                    (files if n.lower().endswith(CHECKPOINT_SUFFIXES) else skipped).append(full)
        else:
            files.append(p)
    seen, unique = set(), []
    for f in files:
        key = f if is_url(f) else os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, skipped


def without_outputs(files: list[str], recipe: Recipe) -> tuple[list[str], list[str]]:
    """Leave out inputs that are this recipe's outputs of other inputs (a second run over a folder
    must not convert ``a.clean.pt`` into ``a.clean.clean.pt``)."""
    outputs = {os.path.realpath(recipe.output.output_path(f)) for f in files}
    keep = [f for f in files if os.path.realpath(f) not in outputs]
    return keep, [f for f in files if os.path.realpath(f) in outputs]


def planned_output(source: str, recipe: Recipe) -> tuple[str | None, str]:
    """(output path or None to skip, why) under the recipe's exists rule; raises if it must fail. Under the
    default rule ("error") an output at least as new as its source counts as already converted: skipped."""
    out = recipe.output.output_path(source)
    if os.path.realpath(out) == os.path.realpath(source):
        raise OperationError(f"the output name {os.path.basename(out)} is the input itself; change the recipe's "
                             f"name pattern")
    if not os.path.exists(out):
        return out, ""
    rule = recipe.output.exists
    if rule == "skip":
        return None, f"{os.path.basename(out)} exists; skipped"
    if rule == "overwrite":
        return out, "replacing the existing output"
    if rule == "rename":
        stem, ext = os.path.splitext(out)
        for i in range(1, 10_000):
            candidate = f"{stem}-{i}{ext}"
            if not os.path.exists(candidate):
                return candidate, f"{os.path.basename(out)} exists; writing {os.path.basename(candidate)}"
    # "error": a second run over the same files finds its own outputs. One at least as new as its source
    # is that file already converted (skipped, not failed); an older one may be stale and stops that file.
    if _mtime(out) >= _mtime(source):
        return None, f"already converted: {os.path.basename(out)} exists (--force, or the recipe's 'exists' rule " \
                     f"\"overwrite\", replaces it)"
    raise OperationError(f"{os.path.basename(out)} already exists and is older than its source",
                         hint="Pass --force on the command line (or set the recipe's 'exists' rule) to replace it.")


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def convert_iter(source: str, recipe: Recipe) -> Generator[ExportProgress, None, ConvertResult]:
    """Convert one file with ``recipe``. Errors about this file are raised as CheckpointError."""
    out, why = planned_output(source, recipe)
    if out is None:
        return ConvertResult(source, None, "skipped", why)
    with open_checkpoint(source) as ckpt:
        root, log = apply_steps(ckpt.root, recipe.steps)
        options = ExportOptions(fmt=recipe.output.format, non_tensors=recipe.output.non_tensors,
                                overwrite=recipe.output.exists == "overwrite")
        try:
            result = yield from export_iter(root, out, options, sources=[ckpt.path])
        except CheckpointError as e:
            raise export_failure(ckpt, e) from None
    message = "; ".join(log.lines + [f"warning: {w}" for w in result.warnings] + result.notes + ([why] if why else []))
    return ConvertResult(source, result.path, "done", message, result.size, result.seconds)


def export_failure(ckpt, error: CheckpointError) -> CheckpointError:
    """The error to report when exporting from ``ckpt`` failed: named after the file, and, when the file's
    tensors lack bytes (a download cut short), saying that first rather than listing each tensor."""
    missing = ckpt.missing_bytes()
    if missing is not None and isinstance(error, OperationError):
        return OperationError(f"{missing.headline()}, so it cannot be converted", path=ckpt.path,
                              hint=missing.advice())
    return error.with_path(ckpt.path)


def convert_file(source: str, recipe: Recipe, progress=None) -> ConvertResult:
    """Run ``convert_iter`` to the end; a failure comes back as a "failed" result, not an exception."""
    gen = convert_iter(source, recipe)
    try:
        while True:
            p = next(gen)
            if progress:
                progress(p)
    except StopIteration as stop:
        return stop.value
    except CheckpointError as e:
        return ConvertResult(source, None, "failed", str(e))
