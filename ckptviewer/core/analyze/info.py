"""``ckptviewer info``: what is in a file, as a readable tree or as JSON for scripts.

The JSON follows the conformance contract (``format``, ``tensors`` with ``key``/``dtype``/``shape``/
``device``/``sha256``, ``warnings``) and adds what a script may want (summary, prefixes, globals).
"""
from __future__ import annotations

import json
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..model.checkpoint import Checkpoint
from ..model.interpret import Analysis, analyze
from ..model.objects import GlobalRef, StandIn, TorchDevice, TorchEnum, TorchSize, Unreadable
from ..model.sparse import SparseTensorRef, nested_shapes, quantizer_info, special_facts
from ..model.tensor import TensorRef
from ..model.tree import CONTAINER_KINDS, Node, TreeContext, build_tree, value_text
from ..model.values import is_small, json_number, small_value
from ..model.values import value_text as small_value_text
from ..model.walk import is_attribute_path, iter_leaves
from ..read.pickle.reconstructors import classify
from ..util.errors import CheckpointError
from ..util.lazynp import is_generic, is_ndarray
from ..util.textsafe import key_text, path_text, safe_text
from ..util.units import counted, human_bytes, shape_text

# Default text output stays under a few hundred lines whatever the file holds (a Lightning checkpoint's
# loops and callbacks, 3,596 logged (accuracy, loss) tuples): each mapping, sequence or state_dict shows
# its first DEFAULT_MAX_ITEMS entries, and the tree stops after DEFAULT_MAX_LINES lines (the remaining
# top-level entries still get their one-line summary). ``--max-items N`` and ``--all`` change both.
DEFAULT_MAX_ITEMS = 40
DEFAULT_MAX_LINES = 300
MAX_STRING_VALUE = 10_000       # characters of a string value in the JSON report


def stand_in_classes(ckpt: Checkpoint) -> tuple[list[str], list[tuple[str, str]]]:
    """(unknown class names, [(dangerous name, reason)]) the file's pickles name."""
    from ..read.pickle.danger import danger_reason
    unknown, dangerous = [], []
    for (module, name), _count in sorted(ckpt.globals_named().items()):
        kind = classify(module, name)
        if kind == "unknown":
            unknown.append(f"{module}.{name}")
        elif kind == "dangerous":
            dangerous.append((f"{module}.{name}", danger_reason(module, name) or "dangerous"))
    return unknown, dangerous


def collect_warnings(ckpt: Checkpoint, entries: list[tuple[list, TensorRef]]) -> list[str]:
    """Everything worth flagging: reader warnings, stand-ins, dangerous globals, unreadable tensors."""
    out = list(dict.fromkeys(ckpt.warnings))
    unknown, dangerous = stand_in_classes(ckpt)
    # Classes a reader interprets itself (a DCP folder's metadata records) are the format, not content
    # the user needs to hear about; `ckptviewer scan` still lists them.
    records = set(ckpt.meta.get("record_classes", ()))
    unknown = [name for name in unknown if name not in records]
    for name, reason in dangerous:
        out.append(f"DANGEROUS: the pickle names {name} ({reason}); it was not called")
    if unknown:
        shown = ", ".join(unknown[:12]) + (f", and {len(unknown) - 12} more" if len(unknown) > 12 else "")
        out.append(f"this file names {len(unknown)} class{'es' if len(unknown) != 1 else ''} that "
                   f"{'were' if len(unknown) != 1 else 'was'} not imported (shown as stand-ins): {shown}")
    reported = set()
    for key, t in entries:
        t.validate()
        if t.problem and id(t) not in reported:
            reported.add(id(t))
            out.append(f"tensor {path_text(key)}: {t.problem}")
    return out


def integrity_warnings(entries: list, records: list[dict], warnings: list[str]) -> None:
    """Mark tensors whose bytes were read and fail their zip CRC-32 check (a warning on the tensor and
    one in the file's list; the values stay readable)."""
    for (key, t), rec in zip(entries, records):
        err = t.integrity_error
        if err:
            rec.setdefault("warnings", []).append(err)
            line = f"tensor {path_text(key)}: {err}"
            if line not in warnings:
                warnings.append(line)


def _json_key(k: Any) -> Any:
    if type(k) is str or type(k) is int:
        return k
    if isinstance(k, (str, int, float, bool)) or k is None:
        return k
    if isinstance(k, tuple):
        return [_json_key(x) for x in k]
    return repr(k)


def tensor_record(key: list, t: TensorRef, shared: dict[str, list]) -> dict:
    # Runs once per tensor (100,000 times for a big state_dict): plain reads, no helper calls on the common path.
    storage = t.storage
    dtype = t.dtype
    if type(t) is TensorRef:        # subclasses (sparse) compute these their own way
        device = t.device_override or (storage.location if storage is not None else "meta")
        nbytes = dtype.storage_bytes(t.numel)
    else:
        device, nbytes = t.device, t.nbytes
    rec = {
        "key": [k if type(k) is str else _json_key(k) for k in key],
        "dtype": dtype.name,
        "shape": list(t.shape),
        "device": device,
        "stride": list(t.stride),
        "storage_offset": t.offset,
        "numel": t.numel,
        "nbytes": nbytes,
        "requires_grad": t.requires_grad,
        "kind": t.kind,
    }
    if storage is not None:
        rec["storage"] = storage.key
        if shared and storage.key in shared:
            others = [k for k in shared[storage.key] if k != rec["key"]]
            if others:
                rec["shares_storage_with"] = others[:8]
    if t.subclass:
        rec["subclass"] = t.subclass
    if t.extra is not None or t.kind not in ("tensor", "parameter") or t.dtype.lanes > 1:
        if t.logical_shape != t.shape:
            rec["logical_shape"] = list(t.logical_shape)
        rec.update(special_record(t))
    if t.problem:
        rec["problem"] = t.problem
    elif not t.shape and is_small(t):
        value = small_value(t)       # a 0-d tensor (a loss, a counter): its number, read on demand
        if value is not None:
            rec["value"] = json_number(value)
    return rec


def special_record(t: TensorRef) -> dict:
    """JSON fields for sparse, nested and quantized tensors (their components and parameters)."""
    rec: dict = {}
    if isinstance(t, SparseTensorRef):
        rec["layout"] = t.layout
        rec["nnz"] = t.nnz
        rec["dense_nbytes"] = t.dense_nbytes
        rec["components"] = {name: {"dtype": p.dtype.name, "shape": list(p.shape), "storage": p.storage_key}
                             for name, p in t.parts.items()}
        if t.coalesced is not None:
            rec["coalesced"] = t.coalesced
    elif t.kind == "nested":
        rec["layout"] = "nested_" + (t.extra or {}).get("nested_layout", "strided")
        shapes = nested_shapes(t)
        if shapes is not None:
            rec["component_shapes"] = [list(s) for s in shapes]
    q = quantizer_info(t)
    if q is not None:
        rec["quantizer"] = q
    return rec


def _type_name(v: Any) -> str:
    if v is None:
        return "None"
    if is_generic(v):
        return f"numpy.{type(v).__name__}"
    if is_ndarray(v):
        return "numpy.ndarray"
    if isinstance(v, TorchSize):
        return "torch.Size"
    if isinstance(v, TorchDevice):
        return "torch.device"
    if isinstance(v, TorchEnum):
        return f"torch.{v.kind}" if getattr(v, "kind", "") else "torch"
    if isinstance(v, StandIn):
        return v.qualname
    if isinstance(v, GlobalRef):
        return "class"
    if isinstance(v, Unreadable):
        return "unreadable"
    return type(v).__name__


def _json_value(v: Any) -> Any:
    """The JSON value for numbers, strings, booleans, null and lists of them; a short text for the rest."""
    if v is None or isinstance(v, bool) or type(v) is int:
        return v
    if is_generic(v):
        item = v.item()
        return item if isinstance(item, (bool, int, float, str)) else repr(item)
    if isinstance(v, (int, float)):
        return float(v) if isinstance(v, float) else int(v)
    if isinstance(v, str):
        return v if len(v) <= MAX_STRING_VALUE else v[:MAX_STRING_VALUE] + f"… ({len(v):,} characters)"
    if isinstance(v, (list, tuple)) and not isinstance(v, TorchSize):
        return [_json_value(x) for x in v] if len(v) <= 10_000 else value_text(v, 200)
    if isinstance(v, TorchSize):
        return list(v)
    return value_text(v, 200)


def value_records(root: Any) -> list[dict]:
    """One record per non-tensor leaf (``epoch``, ``best_acc``, an ``args`` Namespace's fields):
    ``{"key": [...], "type": "int", "value": 7}``. A list of plain values is one leaf (its JSON list); key
    paths are those of the tensor records."""
    out = []
    for path, v in iter_leaves(root, tensors=False):
        if isinstance(v, (dict, list, tuple)) and not isinstance(v, TorchSize) and not v:
            value: Any = [] if not isinstance(v, dict) else {}
        else:
            value = _json_value(v)
        out.append({"key": [_json_key(k) for k in path], "type": _type_name(v), "value": value})
    return out


def checksums_of(entries: list[tuple[list, TensorRef]],
                 progress: Callable[[int, int], None] | None = None) -> tuple[dict[int, str | None], list[str]]:
    """sha256 of each distinct tensor (by ``id``; None when it cannot be computed) and, for each that
    cannot, a line saying why."""
    cache: dict[int, str | None] = {}
    failures: list[str] = []
    total = len(entries)
    for i, (key, t) in enumerate(entries):
        if id(t) not in cache:
            try:
                t.validate()
                if t.problem:
                    raise CheckpointError(t.problem)
                cache[id(t)] = t.sha256()
            except CheckpointError as e:
                cache[id(t)] = None
                failures.append(f"tensor {path_text(key)}: no checksum ({e.message})")
        if progress:
            progress(i + 1, total)
    return cache, failures


def build_report(ckpt: Checkpoint, *, checksums: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """The JSON report (a dict for ``json.dumps(..., default=repr)``). ``write_report_json`` writes the same
    text without holding every tensor record."""
    entries = ckpt.tensor_entries()
    _validate(entries)
    an = analyze(ckpt.root)
    shared = _shared_keys(entries)
    tensors = [tensor_record(key, t, shared) for key, t in entries]
    attribute_ids: set[int] = set()
    for (key, t), rec in zip(entries, tensors):
        if is_attribute_path(ckpt.root, key):
            rec["attribute"] = True          # held by a pickled module outside its state_dict
            attribute_ids.add(id(t))
    warnings = collect_warnings(ckpt, entries)
    failures: list[str] = []
    if checksums:
        cache, failures = checksums_of(entries, progress)
        for (key, t), rec in zip(entries, tensors):
            rec["sha256"] = cache[id(t)]
        warnings.extend(failures)
    integrity_warnings(entries, tensors, warnings)
    attributes_only = len(attribute_ids - {id(t) for (k, t), r in zip(entries, tensors) if not r.get("attribute")})
    checksums_missing = sum(1 for rec in tensors if rec.get("sha256", "") is None) if checksums else 0
    return _report(ckpt, an, tensors, attributes_only, checksums_missing, warnings)


def _validate(entries: list) -> None:
    """Settle every tensor's ``problem`` before any record is made, so a record always shows it (a tensor
    without a storage was validated only after its record, and the head of a streamed report validates all)."""
    for _key, t in entries:
        t.validate()


def _shared_keys(entries: list) -> dict[str, list]:
    shared: dict[str, list] = {}
    for key, t in entries:
        if t.storage is not None and len(t.storage.users) > 1:
            shared.setdefault(t.storage.key, []).append([_json_key(k) for k in key])
    return shared


def _report(ckpt: Checkpoint, an: Analysis, tensors: Any, attributes_only: int, checksums_missing: int,
            warnings: Any) -> dict:
    distinct = ckpt.all_tensors()
    by_dtype: Counter = Counter()
    for t in distinct:
        by_dtype[t.dtype.name] += t.numel
    unknown, dangerous = stand_in_classes(ckpt)
    missing = ckpt.missing_bytes()
    return {
        "file": ckpt.path,
        "format": ckpt.format,
        "file_size": ckpt.file_size,
        "missing_bytes": missing.to_json() if missing is not None else None,
        "meta": _jsonable(ckpt.meta),
        "summary": an.summary,
        "tensor_count": len(distinct),
        "numel": sum(t.numel for t in distinct),
        "nbytes": sum(t.nbytes for t in distinct),
        "numel_by_dtype": dict(by_dtype),
        "attribute_tensor_count": attributes_only,
        "state_dicts": [{"key": [_json_key(k) for k in sd.path], "kind": sd.kind, "class": sd.class_name,
                         "tensors": sd.n_tensors, "parameters": sd.n_parameters,
                         "prefix": sd.prefix[0] if sd.prefix else None,
                         "prefix_from": sd.prefix[1] if sd.prefix else None} for sd in an.state_dicts],
        "optimizers": [{"key": [_json_key(k) for k in o.path], "type": o.type_name, "param_groups": _jsonable(o.groups),
                        "parameter_states": o.n_states,
                        "parameter_names": {str(k): v for k, v in o.param_names.items()},
                        "names_inferred": o.names_inferred} for o in an.optimizers],
        "stand_in_classes": unknown,
        "dangerous_globals": [name for name, _ in dangerous],
        "tensors": tensors,
        "values": value_records(ckpt.root),
        "checksums_missing": checksums_missing,
        "warnings": warnings,
    }


STREAM_BATCH = 2000


def write_report_json(ckpt: Checkpoint, write: Callable[[str], Any], *, checksums: bool = False,
                      extra: dict | None = None) -> int:
    """Write ``json.dumps(build_report(ckpt) | extra, default=repr)`` through ``write``: the same text, without
    holding every tensor record (a dict of ~1 KB each) or the whole text: the parts before the tensors are
    written first, then the records, encoded in batches as they are made. Returns ``checksums_missing``.

    With checksums the report is built whole (they are computed over every tensor before the records)."""
    if checksums:
        report = build_report(ckpt, checksums=True)
        if extra:
            report.update(extra)
        write(json.dumps(report, default=repr))
        return report["checksums_missing"]
    entries = ckpt.tensor_entries()
    _validate(entries)
    root = ckpt.root
    an = analyze(root)
    shared = _shared_keys(entries)
    # Which entries are module attributes, before any record (the count is written before the records).
    flags = [is_attribute_path(root, key) for key, _t in entries]
    attribute_ids = {id(t) for (_k, t), flag in zip(entries, flags) if flag}
    if attribute_ids:
        attribute_ids -= {id(t) for (_k, t), flag in zip(entries, flags) if not flag and id(t) in attribute_ids}
    # The text around the records and the warnings, split at markers a file cannot guess.
    marks = [f"@report-{secrets.token_hex(16)}-{i}@" for i in (0, 1)]
    report = _report(ckpt, an, marks[0], len(attribute_ids), 0, marks[1])
    if extra:
        report.update(extra)
    text = json.dumps(report, default=repr)
    head, _, rest = text.partition(json.dumps(marks[0]))
    middle, _, tail = rest.partition(json.dumps(marks[1]))
    write(head)
    write("[")
    # The unstreamed path checks CRC-32 results after every record is made, and a record reads the value of
    # a 0-d tensor (which may settle the CRC of a storage an earlier tensor shares): read those first, so
    # each record's check below sees what the unstreamed one would.
    for _key, t in entries:
        if not t.shape and not t.problem and is_small(t):
            small_value(t)
    integrity: list[str] = []
    batch: list[dict] = []
    first = True
    for (key, t), flag in zip(entries, flags):
        rec = tensor_record(key, t, shared)
        if flag:
            rec["attribute"] = True
        err = t.integrity_error
        if err:
            rec.setdefault("warnings", []).append(err)
            integrity.append(f"tensor {path_text(key)}: {err}")
        batch.append(rec)
        if len(batch) >= STREAM_BATCH:
            write(json.dumps(batch, default=repr)[1:-1] if first else ", " + json.dumps(batch, default=repr)[1:-1])
            first = False
            batch = []
    if batch:
        write(json.dumps(batch, default=repr)[1:-1] if first else ", " + json.dumps(batch, default=repr)[1:-1])
    write("]")
    write(middle)
    warnings = collect_warnings(ckpt, entries)
    for line in integrity:
        if line not in warnings:
            warnings.append(line)
    write(json.dumps(warnings, default=repr))
    write(tail)
    return 0


def _jsonable(v: Any, depth: int = 0) -> Any:
    if depth > 20:
        return "..."
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x, depth + 1) for k, x in list(v.items())[:1000]}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, depth + 1) for x in list(v)[:1000]]
    if is_generic(v):
        return v.item()
    return repr(v)


def report_json(ckpt: Checkpoint, *, checksums: bool = False) -> str:
    def default(o):
        return repr(o)
    return json.dumps(build_report(ckpt, checksums=checksums), default=default, allow_nan=True)


# -- text ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextLimits:
    """How much of the tree ``report_text`` prints. ``None`` means no limit (``--all``)."""

    depth: int | None = None                        # fold containers below this depth
    max_items: int | None = DEFAULT_MAX_ITEMS       # entries shown per mapping, sequence or state_dict
    max_lines: int | None = DEFAULT_MAX_LINES       # tree lines before the rest is summarised

    @classmethod
    def everything(cls, depth: int | None = None) -> "TextLimits":
        return cls(depth, None, None)


def _tensor_line(t: TensorRef, ctx: TreeContext | None = None) -> str:
    """A state_dict row's text: shape, dtype, device, and the values of a small tensor (``= 6``)."""
    parts = [shape_text(t.shape), t.dtype.name, t.device]
    if t.kind not in ("tensor", "parameter", "nested") and not t.kind.startswith("sparse_"):
        parts.append(t.kind)
    for label, text in special_facts(t):
        if label != "Dense size":
            parts.append(text)
    if t.problem:
        parts.append(f"UNREADABLE: {t.problem}")
    elif ctx is not None and is_small(t):
        value = ctx.read_value(t)
        if value is not None:
            parts.append(f"= {small_value_text(value)}")
    if t.integrity_error:
        parts.append("CRC-32 MISMATCH: the file is damaged here")
    return "  ".join(parts)


def _tensor_value(t: TensorRef, ctx: TreeContext | None) -> str:
    """A tensor shown as a value of its own (``loss: 0.0063 (float32 tensor)``), as torch prints it; a
    bigger one by its shape, dtype and device."""
    value = ctx.read_value(t) if ctx is not None and is_small(t) and not t.problem else None
    if value is None:
        return _tensor_line(t)
    shape = f" {shape_text(t.shape)}" if t.shape else ""
    where = f" on {t.device}" if t.device != "cpu" else ""
    return f"{small_value_text(value)} ({t.dtype.name} tensor{shape}{where})"


def _node_line(node: Node) -> str:
    if node.kind == "tensor":
        return _tensor_value(node.value, node.ctx)
    if node.kind in ("mapping", "sequence", "set", "object", "scheduler"):
        n, numel, *_ = node.totals()
        count = node.child_count_hint()
        text = f"{node.type_text}, {count:,} entr{'ies' if count != 1 else 'y'}"
        if n:
            text += f", {n:,} tensor{'s' if n != 1 else ''}"
        return text
    if node.kind in ("state_dict", "module"):
        info = node.info
        n, numel, nbytes, _, devices = node.totals()
        params = f", {info.n_parameters:,} parameters" if info is not None else ""
        label = node.type_text if node.kind == "state_dict" else f"module {safe_text(node.value.qualname)}"
        attrs = node.attribute_tensor_count() if node.kind == "module" else 0
        where = f" ({n - attrs:,} in its state_dict, {attrs:,} held as attributes)" if attrs else ""
        text = f"{label}: {counted(n, 'tensor')}{where}{params}, {human_bytes(nbytes)}"
        if info is not None and info.prefix:
            text += f"; keys start with '{info.prefix[0]}' ({info.prefix[1]})"
        return text
    if node.kind == "optimizer":
        opt = node.info
        return f"{opt.label}: {opt.n_states} parameter states, {len(opt.groups)} param group(s)"
    if node.kind == "param_state":
        # The note already names the parameter (and says when the name is inferred).
        return f"state of {safe_text(node.note or node.info)}" if (node.note or node.info) else "parameter state"
    if node.kind == "group":
        n, numel, *_ = node.totals()
        return f"{counted(numel, 'parameter')} in {counted(n, 'tensor')}"
    return node.value_text()


def _more(indent: str, n: int, what: str = "entries") -> str:
    return f"{indent}… {n:,} more {what} (--max-items N or --all to see them)"


def _rows_as_state_dict(node: Node, depth: int) -> bool:
    return node.kind == "state_dict" or (node.kind == "module" and depth == 0)


def _node_lines(node: Node, depth: int, limits: TextLimits) -> Iterator[str]:
    """The lines of ``node`` and what is under it: state_dict entries by full key, other levels nested.
    Long containers show their first ``max_items`` entries and say how many more there are."""
    cap = limits.max_items
    stack: list[tuple[Node | str, int]] = [(node, depth)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        node = item
        indent = "  " * d
        if _rows_as_state_dict(node, d):
            yield f"{indent}{node.name}: {_node_line(node)}"
            rows = node.tensors()
            if limits.depth is not None and d + 1 > limits.depth:
                yield f"{indent}  … {len(rows):,} entries folded (raise --depth to see them)"
                continue
            # A pickled module's tensors outside its state_dict come after its entries, with their path.
            attrs = [(p, t) for p, t in rows if node.kind == "module" and len(p) - len(node.path) > 1]
            rows = [(p, t) for p, t in rows if not (node.kind == "module" and len(p) - len(node.path) > 1)]
            shown = rows if cap is None else rows[:cap]
            shown_attrs = attrs if cap is None else attrs[:cap]
            keys = [key_text(p[-1]) for p, _ in shown]
            attr_keys = [path_text(p[len(node.path):]) for p, _ in shown_attrs]
            width = min(max((len(k) for k in keys + attr_keys), default=0), 60)
            for k, (_, t) in zip(keys, shown):
                yield f"{indent}  {k:<{width}}  {_tensor_line(t, node.ctx)}"
            if len(rows) > len(shown):
                yield _more(indent + "  ", len(rows) - len(shown), "keys")
            if attrs:
                yield f"{indent}  {counted(len(attrs), 'tensor')} held as attributes, outside the state_dict:"
                for k, (_, t) in zip(attr_keys, shown_attrs):
                    yield f"{indent}  {k:<{width}}  {_tensor_line(t, node.ctx)}"
                if len(attrs) > len(shown_attrs):
                    yield _more(indent + "  ", len(attrs) - len(shown_attrs), "attributes")
            continue
        note = node.note if node.note and node.kind != "param_state" else ""
        yield f"{indent}{node.name}: {_node_line(node)}" + (f"  ({safe_text(note)})" if note else "")
        if not node.has_children or node.kind == "group" or node.kind not in CONTAINER_KINDS:
            continue
        if limits.depth is not None and d + 1 > limits.depth:
            yield f"{indent}  … {node.child_count_hint():,} entries folded (raise --depth to see them)"
            continue
        kids = node.children()
        shown = kids if cap is None else kids[:cap]
        if len(kids) > len(shown):
            stack.append((_more(indent + "  ", len(kids) - len(shown)), d + 1))
        stack.extend((c, d + 1) for c in reversed(shown))


def _role_prefixes(an: Analysis | None) -> set[tuple]:
    out: set[tuple] = set()
    for path in (an.roles if an is not None else {}):
        for i in range(len(path) + 1):
            out.add(tuple(path[:i]))
    return out


def order_top(nodes: list[Node], an: Analysis | None) -> list[Node]:
    """Top-level entries in reading order: one-line values first (``epoch``, ``loss``), then models,
    optimizers and schedulers (and containers holding them), then bulky extras (logs, loops, callbacks),
    each group in file order."""
    roles = _role_prefixes(an)

    def rank(n: Node) -> int:
        if n.kind not in CONTAINER_KINDS:
            return 0
        if n.kind in ("state_dict", "module", "optimizer", "scheduler") or tuple(n.path) in roles:
            return 1
        return 2
    return sorted(nodes, key=rank)


def iter_text_lines(root: Node, max_depth: int | None = None, limits: TextLimits | None = None) -> Iterator[str]:
    """The tree, one line per node, within ``limits`` (all of it when None). When the line budget runs
    out, the remaining top-level entries are still listed, one summary line each."""
    limits = limits or TextLimits.everything(max_depth)
    if max_depth is not None and limits.depth is None:
        limits = TextLimits(max_depth, limits.max_items, limits.max_lines)
    top = order_top(root.children(), root.ctx.analysis if isinstance(root, Node) else None) \
        if isinstance(root, Node) else root.children()
    cap, budget = limits.max_items, limits.max_lines
    # The top level is what a reader most needs (a smaller --max-items trims what is inside each entry).
    shown_top = top if cap is None else top[:max(cap, DEFAULT_MAX_ITEMS)]
    lines = 0
    cut: str | None = None
    for node in shown_top:
        if cut is not None:
            yield f"{node.name}: {_node_line(node)}"
            continue
        for line in _node_lines(node, 0, limits):
            yield line
            lines += 1
            if budget is not None and lines >= budget:
                cut = node.name
                break
        else:
            continue
        yield (f"  … the rest of {cut} and what follows it are summarised: the output stopped at {budget:,} "
               f"lines (--all shows everything)")
    if len(top) > len(shown_top):
        yield _more("", len(top) - len(shown_top), "top-level entries")


def report_text(ckpt: Checkpoint, *, depth: int | None = None, limits: TextLimits | None = None,
                checksum_failures: list[str] | None = None) -> str:
    """``ckptviewer info``'s text: what is missing first, then the file, the summary, the tree (bounded by
    ``limits``: the defaults keep any file under a few hundred lines) and the warnings."""
    limits = limits or TextLimits(depth)
    an = analyze(ckpt.root)
    root = build_tree(ckpt, an)
    entries = ckpt.tensor_entries()
    distinct = ckpt.all_tensors()
    by_dtype: Counter = Counter()
    for t in distinct:
        by_dtype[t.dtype.name] += t.numel
    meta_bits = [ckpt.format]
    for k in ("version", "format_version", "byteorder"):
        if k in ckpt.meta and not (k == "byteorder" and ckpt.meta[k] == "little"):
            meta_bits.append(f"{k.replace('_', ' ')} {ckpt.meta[k]}")
    if isinstance(ckpt.meta.get("torch_version"), str):
        meta_bits.append(f"saved by torch {safe_text(ckpt.meta['torch_version'], 40)}")
    lines = []
    missing = ckpt.missing_bytes()
    if missing is not None:        # said first: every number below describes tensors that are not there
        lines.append(f"{missing.headline()}. {missing.advice()}")
    lines += [
        f"File      {safe_text(ckpt.path)}  ({human_bytes(ckpt.file_size)}; {', '.join(meta_bits)})",
        f"Summary   {safe_text(an.summary)}",
        f"Tensors   {len(distinct):,} ({sum(t.numel for t in distinct):,} elements, "
        f"{human_bytes(sum(t.nbytes for t in distinct))})"
        + (": " + ", ".join(f"{k} {v:,}" for k, v in by_dtype.most_common()) if by_dtype else "")
        + _attribute_note(ckpt, entries),
    ]
    if "metadata" in ckpt.meta:
        lines.append("Metadata  " + ", ".join(f"{safe_text(k)}={safe_text(v, 60)}"
                                              for k, v in list(ckpt.meta["metadata"].items())[:10]))
    layout = ckpt.meta.get("layout")       # sharded and distributed checkpoints: which files hold what
    if isinstance(layout, list):
        lines.extend(f"{'Layout' if i == 0 else '':<10}{safe_text(line, 300)}" for i, line in enumerate(layout[:16]))
    if checksum_failures is not None:
        n = len(distinct)
        lines.append(f"Checksums {n - len(checksum_failures):,} of {n:,} tensors hashed"
                     + (f"; {len(checksum_failures):,} cannot be (see the warnings)" if checksum_failures else ""))
    lines.append("")
    if root.kind in ("state_dict", "module", "tensor"):
        lines.extend(iter_text_lines(_Wrapper(root), limits=limits))
    else:
        lines.extend(iter_text_lines(root, limits=limits))
    warnings = collect_warnings(ckpt, entries) + list(checksum_failures or [])
    if warnings:
        lines.append("")
        lines.append(f"Warnings ({len(warnings)}):")
        shown = warnings if limits.max_items is None else warnings[:limits.max_items]
        lines.extend(f"  - {safe_text(w, 400)}" for w in shown)
        if len(warnings) > len(shown):
            lines.append(_more("  ", len(warnings) - len(shown), "warnings"))
    return "\n".join(lines)


def _attribute_note(ckpt: Checkpoint, entries) -> str:
    attr, other = set(), set()
    for key, t in entries:
        (attr if is_attribute_path(ckpt.root, key) else other).add(id(t))
    n = len(attr - other)
    return f"; {n:,} held as module attributes outside any state_dict" if n else ""


class _Wrapper:
    """Lets a root that is itself a state_dict or module print as a top-level entry."""

    def __init__(self, node: Node):
        self.node = node

    def children(self):
        return [self.node]
