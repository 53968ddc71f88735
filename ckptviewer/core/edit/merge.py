"""Merging checkpoints: the weighted average of their floating-point tensors (model soups, SWA, EMA blends).

``merge_plan(roots, weights)`` lines the tensors of several trees up by key path (metadata only) and
reports every key or shape that does not match. ``merge_roots`` returns the merged tree: the first tree's
structure and non-tensor values, each floating-point tensor replaced by a *computed* tensor, and the
first tree's own tensors where nothing is averaged (integers, booleans, counters such as
``num_batches_tracked`` or an optimizer's ``step``, float8 and complex values).

A computed tensor is a :class:`TensorRef` over a :class:`MergedRegion`, a byte source that computes the
bytes it is asked for, block by block, from the same elements of every input: ``sum(w_i * x_i)`` in
float32 (float64 when an input or the output is float64), then rounded once to the output dtype as
``tensor.to(dtype)`` rounds (nearest even; ``core.model.cast``). Nothing is computed before an export
reads it, and memory stays at one block per input. The export treats it as any other storage: it hashes
the bytes while writing them and verification compares the file read back with those hashes, so what is
verified is what was computed. The weights are divided by their sum (a weighted average).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model import keypath
from ..model.cast import CASTABLE, cast_dtype, cast_raw
from ..model.dtypes import BY_NAME, DType, to_numbers
from ..model.tensor import StorageRef, TensorRef, contiguous_strides
from ..model.walk import iter_tensors
from ..source.regions import ByteSource
from ..util.errors import OperationError
from ..write.destination import source_files
from .ops import COUNTER_NAMES, EditLog, map_tensors

# Elements computed at a time inside one read: each input's block and the accumulator stay in cache.
BLOCK = 1 << 18
SHOWN_MISMATCHES = 10
_F32, _F64 = BY_NAME["float32"], BY_NAME["float64"]


class MergeMismatchError(OperationError):
    """The inputs do not line up (keys or shapes differ): nothing can be merged, nothing is written."""

    default_hint = ("Merge checkpoints of one architecture; --select picks the state_dict inside training "
                    "checkpoints, and --strip-prefix / --rename line up renamed keys.")


def input_labels(paths: list[str]) -> list[str]:
    """How messages name the inputs: their file names, or A (name), B (name)... when names repeat."""
    names = [os.path.basename(os.path.normpath(os.fspath(p))) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{chr(ord('A') + i) if i < 26 else '#' + str(i + 1)} ({n})" for i, n in enumerate(names)]


def parse_weights(text: str | None, count: int) -> list[float]:
    """``"0.5,0.3,0.2"`` -> weights for ``count`` inputs (equal weights when ``text`` is empty)."""
    if not text:
        return [1.0 / count] * count
    try:
        weights = [float(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise OperationError(f"cannot read the weights {str(text)[:60]!r}",
                             hint="Write them as numbers separated by commas, e.g. 0.5,0.5.") from None
    check_weights(weights, count)
    return weights


def check_weights(weights: list[float], count: int) -> None:
    if len(weights) != count:
        raise OperationError(f"{len(weights)} weight{'s' if len(weights) != 1 else ''} for {count} checkpoints",
                             hint="Give one weight per checkpoint, in the same order.")
    if not all(math.isfinite(w) for w in weights):
        raise OperationError("the weights must be finite numbers")
    if sum(weights) == 0:
        raise OperationError("the weights add up to 0, so they cannot be averaged",
                             hint="The merged tensor is sum(w_i * x_i) / sum(w_i).")


def normalized(weights: list[float]) -> list[float]:
    total = math.fsum(weights)
    return [w / total for w in weights]


# -- computed tensors -----------------------------------------------------------------------------------
class MergedRegion(ByteSource):
    """The bytes of ``sum(w_i * x_i)`` over same-shaped tensors, C-contiguous in dtype ``out``, computed
    on demand for the range asked (never held whole). ``files`` names the inputs' files, so an export
    refuses to write over one of them."""

    def __init__(self, inputs: list[TensorRef], weights: list[float], out: DType):
        self.inputs = inputs
        self.weights = weights
        self.out = out
        self.compute = np.float64 if out.name == "float64" or any(t.dtype.name == "float64" for t in inputs) \
            else np.float32
        self.numel = inputs[0].numel
        self.size = self.numel * out.itemsize
        self.files = sorted(source_files(inputs))

    def describe(self) -> str:
        return f"weighted average of {len(self.inputs)} tensors, computed in {np.dtype(self.compute).name}"

    # The inputs' checksums stand for this record's: an export refuses a merge of damaged bytes as it
    # refuses a copy of them (unless forced), and checks what in-order reads left unchecked.
    @property
    def crc_error(self) -> str | None:
        return next((t.integrity_error for t in self.inputs if t.integrity_error), None)

    @property
    def verified(self) -> bool:
        return all(t.integrity_checked for t in self.inputs)

    def verify(self, progress=None) -> str | None:
        for t in self.inputs:
            t.check_integrity()
        return self.crc_error

    def values(self, start: int, stop: int) -> np.ndarray:
        """The merged values of elements ``start:stop``, in the compute dtype (before rounding)."""
        acc = None
        for t, w in zip(self.inputs, self.weights):
            x = to_numbers(t.read_flat(start, stop, through=True), t.dtype)
            x = x.astype(self.compute, copy=False)
            term = x * self.compute(w)
            if acc is None:
                acc = term
            else:
                np.add(acc, term, out=acc)
        return acc

    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise OperationError(f"read of bytes {offset}..{offset + length} outside a computed tensor of "
                                 f"{self.size} bytes")
        isz = self.out.itemsize
        e0, e1 = offset // isz, -(-(offset + length) // isz)
        out = np.empty((e1 - e0) * isz, dtype=np.uint8)
        src = _F64 if self.compute is np.float64 else _F32
        for b0 in range(e0, e1, BLOCK):
            b1 = min(e1, b0 + BLOCK)
            raw = cast_raw(self.values(b0, b1), src, self.out)
            out[(b0 - e0) * isz:(b1 - e0) * isz] = np.ascontiguousarray(raw).view(np.uint8)
        skip = offset - e0 * isz
        return memoryview(out)[skip:skip + length]


def merged_tensor(inputs: list[TensorRef], weights: list[float], out: DType, name: str = "") -> TensorRef:
    """A tensor whose values are the weighted sum of ``inputs`` (already normalised weights), in ``out``,
    saved on the first input's device with its kind (parameter or tensor)."""
    a = inputs[0]
    region = MergedRegion(inputs, weights, out)
    st = StorageRef(f"<merged {name}>", out, region.size, a.device, typed=True, source=region)
    return TensorRef(st, 0, tuple(a.shape), contiguous_strides(tuple(a.shape)), out,
                     requires_grad=a.requires_grad, kind=a.kind)


# -- lining up ------------------------------------------------------------------------------------------
def averaged(path: tuple, t: TensorRef) -> bool:
    """Whether a tensor is averaged (floating point numpy can round back, not a counter) or taken as is."""
    last = str(path[-1]).rsplit(".", 1)[-1] if path else ""
    return (t.dtype.name in CASTABLE and last not in COUNTER_NAMES and t.kind in ("tensor", "parameter"))


@dataclass
class MergePlan:
    """What a merge would do: mismatches (which stop it) and, when there are none, the counts."""

    labels: list[str]
    weights: list[float]                                  # as given
    mismatches: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)     # unreadable tensors
    notes: list[str] = field(default_factory=list)
    groups: list[tuple[tuple, list[TensorRef]]] = field(default_factory=list)   # (path in the first, inputs)
    members: dict[int, int] = field(default_factory=dict)    # id(a tensor of the first) -> its group
    n_averaged: int = 0
    elements: int = 0
    n_kept: int = 0

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.problems

    def describe(self) -> list[str]:
        lines = []
        if self.mismatches:
            lines.append(f"{len(self.mismatches)} mismatch{'es' if len(self.mismatches) != 1 else ''}:")
            lines += [f"  {m}" for m in self.mismatches[:SHOWN_MISMATCHES]]
            if len(self.mismatches) > SHOWN_MISMATCHES:
                lines.append(f"  ... and {len(self.mismatches) - SHOWN_MISMATCHES} more")
        lines += [f"problem: {p}" for p in self.problems[:SHOWN_MISMATCHES]]
        if not self.mismatches:
            w = ", ".join(f"{x:g}" for x in self.weights)
            kept = f"; takes {self.n_kept:,} other tensors from {self.labels[0]}" if self.n_kept else ""
            lines.append(f"averages {self.n_averaged:,} floating-point tensors ({self.elements:,} elements) of "
                         f"{len(self.labels)} checkpoints with weights {w}{kept}")
        lines += [f"note: {n}" for n in self.notes]
        return lines


def merge_plan(roots: list[Any], weights: list[float] | None = None, labels: list[str] | None = None) -> MergePlan:
    """Line the tensors of ``roots`` up by key path and list what does not match (metadata only)."""
    if len(roots) < 2:
        raise OperationError("a merge needs at least two checkpoints")
    labels = labels or [chr(ord("A") + i) if i < 26 else f"#{i + 1}" for i in range(len(roots))]
    weights = list(weights) if weights is not None else [1.0 / len(roots)] * len(roots)
    check_weights(weights, len(roots))
    plan = MergePlan(list(labels), weights)
    maps: list[dict[tuple, TensorRef]] = []
    for root in roots:
        warnings: list[str] = []
        entries: dict[tuple, TensorRef] = {}
        for p, t in iter_tensors(root, warnings=warnings):
            entries.setdefault(tuple(p), t)
        if warnings:
            plan.problems.extend(warnings)
        maps.append(entries)
    first = maps[0]
    for i, m in enumerate(maps[1:], 1):
        for p in first:
            if p not in m:
                plan.mismatches.append(f"{_where(p)}: only in {labels[0]}, not in {labels[i]}")
        for p in m:
            if p not in first:
                plan.mismatches.append(f"{_where(p)}: only in {labels[i]}, not in {labels[0]}")
    seen: dict[tuple, int] = {}
    for p, a in first.items():
        inputs = [a] + [m[p] for m in maps[1:] if p in m]
        if len(inputs) != len(maps):
            continue
        shapes = [tuple(t.shape) for t in inputs]
        if len(set(shapes)) > 1:
            plan.mismatches.append(f"{_where(p)}: shapes differ: " + ", ".join(
                f"{list(s)} in {labels[i]}" for i, s in enumerate(shapes)))
            continue
        flags = [averaged(p, t) for t in inputs]
        if any(flags) and not all(flags):
            plan.mismatches.append(f"{_where(p)}: dtypes differ: " + ", ".join(
                f"{t.dtype.name} in {labels[i]}" for i, t in enumerate(inputs)))
            continue
        # The same values under another key in every input (tied weights, "best" and "last"): one output
        # tensor for both, so that they stay tied.
        region = tuple(_region(t) for t in inputs)
        if region in seen:
            if seen[region] >= 0:
                plan.members[id(a)] = seen[region]
            continue
        seen[region] = len(plan.groups) if all(flags) else -1
        if all(flags):
            for i, t in enumerate(inputs):
                if not t.readable:
                    plan.problems.append(f"{_where(p)} in {labels[i]}: {t.problem or 'no stored values'}")
            dtypes = {t.dtype.name for t in inputs}
            if len(dtypes) > 1:
                plan.notes.append(f"{_where(p)} and maybe others: dtypes differ ({', '.join(sorted(dtypes))}); "
                                  f"written as {a.dtype.name}, as in {labels[0]}")
            plan.members[id(a)] = len(plan.groups)
            plan.groups.append((p, inputs))
            plan.n_averaged += 1
            plan.elements += a.numel
        else:
            plan.n_kept += 1
    plan.notes = list(dict.fromkeys(plan.notes))[:5]
    if plan.n_kept:
        plan.notes.append(f"integer, boolean and counter tensors (num_batches_tracked, step) and values that are "
                          f"not tensors (epoch, loss, hyperparameters) come from {labels[0]}")
    return plan


def _region(t: TensorRef) -> tuple:
    """What makes two handles the same values: one view of one storage (or one handle)."""
    if t.storage is None or t.cast_from is not None:
        return (id(t),)
    return (id(t.storage), t.offset, tuple(t.shape), tuple(t.stride), t.dtype.name, t.device)


def _where(path: tuple) -> str:
    return keypath.format_path(path) or "the root"


def merge_roots(roots: list[Any], weights: list[float] | None = None, *, labels: list[str] | None = None,
                dtype: str | None = None, log: EditLog | None = None) -> Any:
    """The merged tree (see the module docstring). Raises :class:`MergeMismatchError` naming the first
    mismatches when keys or shapes differ, and OperationError for unreadable tensors."""
    plan = merge_plan(roots, weights, labels)
    return merge_from_plan(roots[0], plan, dtype=dtype, log=log)


def merge_from_plan(first_root: Any, plan: MergePlan, *, dtype: str | None = None,
                    log: EditLog | None = None) -> Any:
    if plan.mismatches:
        shown = "; ".join(plan.mismatches[:SHOWN_MISMATCHES])
        more = f"; and {len(plan.mismatches) - SHOWN_MISMATCHES} more" if len(plan.mismatches) > SHOWN_MISMATCHES \
            else ""
        raise MergeMismatchError(f"the checkpoints do not match ({len(plan.mismatches)} mismatch"
                                 f"{'es' if len(plan.mismatches) != 1 else ''}): {shown}{more}")
    if plan.problems:
        raise OperationError("cannot merge: " + "; ".join(plan.problems[:6]))
    out_dtype = cast_dtype(dtype) if dtype else None
    w = normalized(plan.weights)
    made = [merged_tensor(inputs, w, out_dtype or inputs[0].dtype, _where(path)) for path, inputs in plan.groups]
    replace = {ident: made[g] for ident, g in plan.members.items()}

    def fn(path: tuple, t: TensorRef) -> TensorRef:
        new = replace.get(id(t))
        if new is not None and log is not None:
            log.changed.add(path)
        return new if new is not None else t

    root = map_tensors(first_root, fn)
    if log is not None:
        for line in plan.describe():
            log.say(line)
        if out_dtype is not None:
            log.say(f"merged tensors written as {out_dtype.name}")
    return root
