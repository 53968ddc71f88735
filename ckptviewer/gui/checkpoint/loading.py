"""Opening a file for a tab: everything slow happens here, in a worker, before the GUI sees the tree.

``load_steps(path)`` opens the checkpoint (metadata only), analyses it, builds the display tree's first
levels and warms the totals of the rows shown first, so the GUI thread only draws. It is a generator:
each ``yield`` reports a :class:`~ckptviewer.core.util.progress.Progress` and is a cancel point. Qt-free.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Generator

from ...core.analyze.info import collect_warnings, stand_in_classes
from ...core.model.checkpoint import Checkpoint, MissingBytes
from ...core.model.interpret import Analysis, analyze
from ...core.model.tree import Node, build_tree
from ...core.read.open import checkpoints_in_folder, open_checkpoint
from ...core.util.errors import RemoteError
from ...core.util.locations import location_name, normalize_location
from ...core.util.progress import Progress
from ..panels.safety_report import SafetyReport, build_report, file_scan, refused_scan
from ..panels.torch_load_report import build_torch_load_report
from ..widgets.gc_pause import gc_paused

# Build at most this many nodes ahead of time (the rest is built when rows are expanded).
PREBUILD_NODES = 60_000
PREBUILD_LEVELS = 3
# Values of small tensors read ahead for the rows shown first (the rest when their rows are painted).
PREBUILD_VALUES = 500


@dataclass
class LoadedFile:
    path: str
    checkpoint: Checkpoint
    analysis: Analysis
    root: Node
    unknown_classes: list[str]
    dangerous: list[tuple[str, str]]
    warnings: list[str]
    n_tensors: int
    numel: int
    nbytes: int
    numel_by_dtype: dict[str, int]
    safety: SafetyReport                               # the imports report (banner and Safety panel)
    warmed: set[int] = field(default_factory=set)     # ids of nodes whose totals are computed
    seconds: float = 0.0
    missing: MissingBytes | None = None                # tensors whose bytes the file lacks (said first)

    def close(self) -> None:
        self.checkpoint.close()


class RefusedFile(Exception):
    """The reader refused a file. ``error`` is why; ``safety`` is what the light pass saw in the file's
    pickles (or None), so that the message about a refused file still says when it is dangerous."""

    def __init__(self, error: BaseException, safety: SafetyReport | None):
        super().__init__(str(error))
        self.error = error
        self.safety = safety


def load_steps(path: str) -> Generator[Progress, None, LoadedFile]:
    # The collector stays off until the loaded objects are frozen (see gc_paused): left on, its full
    # passes over the freshly read file ran on this worker with the GIL held and froze the window for
    # 0.2-0.4 s at a time while a 100,000-key file was analysed.
    with gc_paused():
        return (yield from _load_steps(path))


def _load_steps(path: str) -> Generator[Progress, None, LoadedFile]:
    t0 = time.perf_counter()
    path = normalize_location(path)
    name = location_name(path)
    yield Progress(0, 5, f"Reading {name}")
    try:
        ckpt = open_checkpoint(path)
    except Exception as e:
        if isinstance(e, RemoteError):          # the network failed, not the file: nothing to scan
            raise RefusedFile(e, None) from e
        yield Progress(0, 5, f"Scanning what {name} would import")
        raise RefusedFile(e, refused_scan(path)) from e
    try:
        yield Progress(1, 5, f"Analysing {name}")
        entries = ckpt.tensor_entries()
        an = analyze(ckpt.root)
        yield Progress(2, 5, f"Building the tree of {name}")
        root = build_tree(ckpt, an)
        warmed = yield from prebuild_steps(root, name, 2, 5)
        yield Progress(4, 5, f"Checking {name}")
        unknown, dangerous = stand_in_classes(ckpt)
        safety = build_report(file_scan(ckpt))
        safety.torch_load = build_torch_load_report(ckpt)
        warnings = collect_warnings(ckpt, entries)
        distinct = ckpt.all_tensors()
        by_dtype: dict[str, int] = {}
        for t in distinct:
            by_dtype[t.dtype.name] = by_dtype.get(t.dtype.name, 0) + t.numel
        missing = ckpt.missing_bytes()
        yield Progress(5, 5, f"Opened {name}")
        return LoadedFile(path, ckpt, an, root, unknown, dangerous, warnings, len(distinct),
                          sum(t.numel for t in distinct), sum(t.nbytes for t in distinct),
                          dict(sorted(by_dtype.items(), key=lambda kv: -kv[1])), safety, warmed,
                          time.perf_counter() - t0, missing)
    except BaseException:
        ckpt.close()
        raise


def prebuild_steps(root: Node, name: str, stage: int, stages: int) -> Generator[Progress, None, set[int]]:
    """Build the tree's first levels and the totals of the rows shown first, so the GUI thread only
    draws (used when a file is opened and when an edit rebuilds the tree). Returns the ids of the
    nodes whose totals are known."""
    warmed: set[int] = set()
    built = 0
    level = [root]
    for depth in range(PREBUILD_LEVELS):
        nxt = []
        for node in level:
            if node.has_children:
                kids = node.children()
                built += len(kids)
                nxt.extend(kids)
            if built > PREBUILD_NODES:
                break
        yield Progress(stage, stages, f"Building the tree of {name}")
        level = nxt
        if built > PREBUILD_NODES:
            break
    yield Progress(stage + 1, stages, f"Counting parameters in {name}")
    # Totals of the root and of the rows visible first (top level and one below).
    top = root.children() if root.has_children else [root]
    warm = [root] + top + [c for n in top[:200] if n.has_children and n.row < 200
                           for c in n.children()[:200]]
    values_read = 0
    for i, node in enumerate(warm):
        if node.has_children:
            node.totals()
            warmed.add(id(node))
        elif node.kind == "tensor" and values_read < PREBUILD_VALUES:
            node.small_value(read=True)      # the Value column of the rows shown first: no "…" flash
            values_read += 1
        if i % 50 == 0:
            yield Progress(stage + 1, stages, f"Counting parameters in {name}")
    return warmed


def totals_steps(nodes: list[Node]) -> Generator[None, None, list[Node]]:
    """Compute ``totals()`` of ``nodes`` (metadata only) for the heavy columns, and read the values of the
    small tensors among them for the Value column; returns the nodes."""
    done = []
    for node in nodes:
        if node.kind == "tensor":
            node.small_value(read=True)
        else:
            node.totals()
        done.append(node)
        yield None
    return done


def value_steps(node: Node) -> Generator[None, None, Any]:
    """The values of a small tensor (``Node.small_value``): a few bytes, read off the GUI thread."""
    yield None
    return node.small_value(read=True)[1]


def folder_steps(folder: str) -> Generator[Progress, None, list[str]]:
    """The checkpoints in a folder that is not itself one (each file sniffed by its first bytes: reads,
    so off the GUI thread)."""
    yield Progress(0, 1, f"Looking for checkpoints in {os.path.basename(folder.rstrip(os.sep)) or folder}")
    return checkpoints_in_folder(folder)


def demo_steps(folder: str) -> Generator[Progress, None, str]:
    yield Progress(0, 2, "Writing the demo checkpoint (importing torch)")
    from ...core.demo import write_demo
    path = write_demo(folder)
    yield Progress(2, 2, "Demo checkpoint written")
    return str(path)


