"""The Merge dialog's work, run as worker tasks (Qt-free): the preview of what a merge would do, and the
merge itself (the core's merge, written by the core's verified exporter)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Generator

from ...core.edit.merge import MergePlan, input_labels, merge_from_plan, merge_plan
from ...core.edit.ops import SelectModel, Step, StripPrefix, apply_steps
from ...core.util.progress import Progress
from ...core.util.textsafe import safe_text


def input_steps(model_only: bool, strip_prefix: bool) -> list[Step]:
    """The cleaning applied to every input before merging: its model weights, wrapper prefixes stripped."""
    steps: list[Step] = []
    if model_only:
        steps.append(SelectModel())
    if strip_prefix:
        steps.append(StripPrefix(None))
    return steps


@dataclass
class MergeRequest:
    """What the Merge dialog asks for: the inputs and their weights, the steps applied to each, the
    output dtype (None: the inputs'), and where and how to write."""

    paths: list[str]
    weights: list[float]
    steps: list[Step]
    dest: str
    options: Any                         # core.write.export.ExportOptions
    dtype: str | None = None
    notes: list[str] = field(default_factory=list)


def _roots(stack: contextlib.ExitStack, paths: list[str], steps: list[Step]) -> list[Any]:
    from ...core.read.open import open_checkpoint
    roots = []
    for p in paths:
        ckpt = stack.enter_context(open_checkpoint(p))
        roots.append(apply_steps(ckpt.root, steps)[0])
    return roots


def preview_task(paths: list[str], steps: list[Step], weights: list[float]) -> Generator[Progress, None, MergePlan]:
    """Open the inputs (metadata only), clean each, and line them up: the plan lists the mismatches."""
    with contextlib.ExitStack() as stack:
        yield Progress(0, len(paths), "Opening the checkpoints")
        roots = _roots(stack, paths, steps)
        yield Progress(len(paths), len(paths), "Lining up the tensors")
        return merge_plan(roots, weights, input_labels(paths))


def merge_task(request: MergeRequest) -> Generator[Progress, None, Any]:
    """Merge and write as a worker task: each step reports progress and is a cancel point. Closing it (a
    cancel) closes the export, which removes its temporary file."""
    from ...core.write import export as core_export
    from ...core.write.shards import DEFAULT_SHARD_SIZE, export_sharded_iter, is_index_path
    name = safe_text(os.path.basename(request.dest), 80)
    with contextlib.ExitStack() as stack:
        yield Progress(0, 0, f"Merging into {name}: opening the checkpoints")
        roots = _roots(stack, request.paths, request.steps)
        plan = merge_plan(roots, request.weights, input_labels(request.paths))
        merged = merge_from_plan(roots[0], plan, dtype=request.dtype)
        if is_index_path(request.dest):
            gen = export_sharded_iter(merged, request.dest, request.options, DEFAULT_SHARD_SIZE,
                                      sources=request.paths)
        else:
            gen = core_export.export_iter(merged, request.dest, request.options, sources=request.paths)
        try:
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    return stop.value
                yield Progress(p.done, p.total, f"Merging into {name}: {p.stage}")
        finally:
            gen.close()
