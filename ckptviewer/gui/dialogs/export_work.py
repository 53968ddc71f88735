"""The export the Export dialog asks for, run as a worker task (Qt-free)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Generator

from ...core.edit.ops import Step
from ...core.util.progress import Progress
from ...core.util.textsafe import safe_text


@dataclass
class ExportRequest:
    """What the Export dialog asks for: the tree to write (the edited view, with the dialog's subtree
    and cast applied), where, and how."""

    root: Any
    dest: str
    options: Any                     # core.write.export.ExportOptions
    source: str                      # the file being read (never the destination)
    what: str = ""                   # "model_state_dict as float16", for messages


def export_task(request: ExportRequest) -> Generator[Progress, None, Any]:
    """Run the core export as a worker task: each step reports progress and is a cancel point.

    Closing this generator (a cancel) closes the core's, which removes its temporary file: the
    destination is then either untouched or, after the last step, the complete verified file.
    """
    from ...core.write import export as core_export
    name = os.path.basename(request.dest)
    gen = core_export.export_iter(request.root, request.dest, request.options, sources=[request.source])
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            yield Progress(p.done, p.total, f"Exporting {safe_text(name, 80)}: {p.stage}")
    finally:
        gen.close()


def plan_task(root: Any, steps: list[Step], options: Any) -> Generator[None, None, tuple[Any, Any]]:
    """The export dialog's plan: the subtree/cast steps applied to the edited root, then what the
    export would write (notes and problems). Metadata only, but a pass over every tensor: a worker."""
    from ...core.edit.ops import apply_steps
    from ...core.write.export import plan_export
    yield None
    out = apply_steps(root, steps)[0] if steps else root
    yield None
    return out, plan_export(out, options)
