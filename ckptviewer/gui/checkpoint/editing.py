"""What the window shows of an edited checkpoint, computed off the GUI thread. Qt-free.

A :class:`ViewState` is one point of a tab's edit history: the edited object graph (from
``Document.preview``), its analysis, its display tree with the first levels built, and the marks
that tell which entries an edit changed ("renamed from …", "cast float32 → float16", "device
cuda:1 → cpu", "dropped …"). ``edit_steps`` makes the state after one more step in a worker: on a
100,000-key state_dict, applying a step, analysing the result and building its tree take seconds.
The undo stack keeps the states it moves between, so undo and redo show the exact earlier view
without computing anything.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Generator

from ...core.edit.document import Document
from ...core.edit.ops import EditLog, Step
from ...core.model import keypath
from ...core.model.interpret import Analysis, analyze
from ...core.model.tensor import TensorRef
from ...core.model.tree import Node, build_tree
from ...core.model.walk import iter_tensors, unwrap
from ...core.util.progress import Progress
from ...core.util.textsafe import key_text, safe_text
from ..widgets.gc_pause import gc_paused
from .loading import LoadedFile, prebuild_steps

MAX_DROP_NAMES = 5


class EditedCheckpoint:
    """What the display tree needs of a checkpoint (its name and root), for an edited root.

    Anything else (``path``, ``format``, ``meta``...) is the source file's: the edited view has not
    been written anywhere.
    """

    def __init__(self, source: Any, root: Any):
        self._source = source
        self.root = root
        self.name = source.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


@dataclass
class ViewMemory:
    """How the view looked when the user left a state (restored when undo/redo returns to it)."""

    expanded: set[tuple] = field(default_factory=set)    # (path, is_group) of expanded rows
    current: tuple | None = None                         # (path, is_group) of the current row
    current_tensor: TensorRef | None = None              # its tensor, to follow it through a rename
    scroll: int = 0


@dataclass
class ViewState:
    steps: tuple[Step, ...]
    root: Any                       # the edited object graph
    log: EditLog
    analysis: Analysis
    tree: Node                      # display tree root
    warmed: set[int]
    marks: dict[tuple, str] = field(default_factory=dict)       # path -> what the edits changed there
    containing: dict[tuple, int] = field(default_factory=dict)  # path of a container -> edited entries below
    devices: Counter | None = None          # recorded device -> distinct tensors (see device_counts)
    seconds: float = 0.0
    memory: ViewMemory | None = None

    @property
    def edited(self) -> tuple[Any, EditLog]:
        return self.root, self.log

    def device_counts(self) -> Counter:
        """Distinct tensors per recorded device (computed in the edit worker, or on first use for the
        file as opened: one pass over the tensor handles, no bytes read)."""
        if self.devices is None:
            self.devices = tensor_devices(self.root)
        return self.devices


def tensor_devices(root: Any) -> Counter:
    """Distinct tensors per recorded device (what Remap Devices offers)."""
    seen: set[int] = set()
    out: Counter = Counter()
    for _, t in iter_tensors(root):
        if id(t) not in seen:
            seen.add(id(t))
            out[t.device] += 1
    return out


def base_state(f: LoadedFile) -> ViewState:
    """The state of a freshly opened file: no steps, the tree built while loading."""
    return ViewState((), f.checkpoint.root, EditLog(), f.analysis, f.root, set(f.warmed))


def source_paths(document: Document) -> dict[int, list[tuple]]:
    """id(tensor of the file) -> every key path it has in the file."""
    out: dict[int, list[tuple]] = {}
    for path, t in document.checkpoint.tensor_entries():
        out.setdefault(id(t), []).append(tuple(path))
    return out


def tensor_note(path: tuple, t: TensorRef, sources: dict[int, list[tuple]]) -> str:
    """What the edits did to the tensor at ``path`` ("" when nothing)."""
    origin = t.origin or t
    notes = []
    was = sources.get(id(origin))
    if was and path:
        key = path[-1]
        if all(not p or p[-1] != key for p in was):
            notes.append(f"renamed from {key_text(was[0][-1])}")
    if t.cast_from is not None and t.cast_from.name != t.dtype.name:
        notes.append(f"cast {t.cast_from.name} → {t.dtype.name}")
    if t.device_override and t.device_override != origin.device:
        notes.append(f"device {safe_text(origin.device, 30)} → {safe_text(t.device, 30)}")
    return "; ".join(notes)


def change_marks(root: Any, log: EditLog, sources: dict[int, list[tuple]]) -> dict[tuple, str]:
    """Path -> note for every entry the edits changed.

    Tensors are compared with the file's tensor they derive from (so a mark survives a later
    Select, which moves every path); entries the log names that no longer exist were dropped and
    are noted on their parent.
    """
    marks: dict[tuple, str] = {}
    for path, t in iter_tensors(root):
        note = tensor_note(tuple(path), t, sources)
        if note:
            marks[tuple(path)] = note
    dropped: dict[tuple, list[Any]] = {}
    containers: dict[tuple, Any] = {}
    for path in log.changed:
        path = tuple(path)
        if not path or path in marks:
            continue
        parent = path[:-1]
        if parent not in containers:            # state_dict keys share a parent: resolved once
            containers[parent] = _container_at(root, parent)
        holder = containers[parent]
        if holder is not None and not _has_key(holder, path[-1]):
            dropped.setdefault(parent, []).append(path[-1])
    for parent, keys in dropped.items():
        keys.sort(key=lambda k: (type(k).__name__, str(k)))       # the log is a set: name them in a stable order
        names = ", ".join(key_text(k) for k in keys[:MAX_DROP_NAMES])
        more = f" and {len(keys) - MAX_DROP_NAMES} more" if len(keys) > MAX_DROP_NAMES else ""
        note = f"dropped {names}{more}"
        marks[parent] = f"{marks[parent]}; {note}" if parent in marks else note
    return marks


_MISSING = object()


def _child(value: Any, key: Any) -> Any:
    """``value[key]`` as key paths mean it (dict key, list position, a module's state_dict name), or _MISSING.
    Constant time for dicts and lists, whatever their size."""
    value = unwrap(value)
    if isinstance(value, dict):
        return value[key] if key in value else _MISSING
    if isinstance(value, (list, tuple)):
        return value[key] if isinstance(key, int) and -len(value) <= key < len(value) else _MISSING
    mapping = keypath.children_map(value)
    if isinstance(mapping, dict) and key in mapping:
        return mapping[key]
    return _MISSING


def _container_at(root: Any, path: tuple) -> dict | list | tuple | None:
    """The mapping or sequence at ``path`` (a module or object as the mapping of its children), or None."""
    value = root
    for key in path:
        value = _child(value, key)
        if value is _MISSING:
            return None
    value = unwrap(value)
    return value if isinstance(value, (dict, list, tuple)) else keypath.children_map(value)


def _has_key(container: Any, key: Any) -> bool:
    return _child(container, key) is not _MISSING


def containing_counts(marks: dict[tuple, str]) -> dict[tuple, int]:
    """Path of every row above a marked entry (containers and key groups) -> marked entries below it.

    Key groups of a state_dict have paths like ``(sd, "layer1.0")`` for the keys ``layer1.0.*``.
    """
    out: Counter = Counter()
    for path in marks:
        for i in range(len(path)):
            out[path[:i]] += 1
        last = path[-1] if path else None
        if isinstance(last, str) and "." in last:
            parts = last.split(".")
            base = path[:-1]
            for j in range(1, len(parts)):
                out[base + (".".join(parts[:j]),)] += 1
    return dict(out)


def make_state(document: Document, steps: tuple[Step, ...], root: Any, log: EditLog,
               sources: dict[int, list[tuple]]) -> Generator[Progress, None, ViewState]:
    t0 = time.perf_counter()
    name = document.checkpoint.name
    yield Progress(1, 5, f"Analysing the edited {name}")
    an = analyze(unwrap(root))
    yield Progress(2, 5, f"Building the tree of the edited {name}")
    tree = build_tree(EditedCheckpoint(document.checkpoint, root), an)
    warmed = yield from prebuild_steps(tree, f"the edited {name}", 2, 5)
    yield Progress(4, 5, f"Marking the edited entries of {name}")
    marks = change_marks(root, log, sources)
    return ViewState(steps, root, log, an, tree, warmed, marks, containing_counts(marks), tensor_devices(root),
                     time.perf_counter() - t0)


def edit_steps(document: Document, step: Step, cache: dict) -> Generator[Progress, None, ViewState]:
    """The state after ``step`` (a worker task). Raises OperationError when the step cannot apply;
    the document itself is not changed (the caller pushes the step with the result).

    ``cache`` is the session's: the file's tensor paths are indexed once, by the first edit. Only
    one edit task runs at a time, and nothing else touches the document while it runs.
    """
    steps = tuple(document.steps) + (step,)
    yield Progress(0, 5, f"Applying: {safe_text(step.describe(), 120)}")
    with gc_paused():
        root, log = document.preview(step)
        sources = cache.get("sources")
        if sources is None:
            sources = cache["sources"] = source_paths(document)
        state = yield from make_state(document, steps, root, log, sources)
    return state


