"""``ckptviewer info``: what is in a file, as a readable tree or as JSON for scripts.

The JSON follows the conformance contract (``format``, ``tensors`` with ``key``/``dtype``/``shape``/
``device``/``sha256``, ``warnings``) and adds what a script may want (summary, prefixes, globals).
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable, Iterator

from ..model.checkpoint import Checkpoint
from ..model.interpret import analyze
from ..model.sparse import SparseTensorRef, nested_shapes, quantizer_info, special_facts
from ..model.tensor import TensorRef
from ..model.tree import Node, build_tree
from ..model.walk import is_attribute_path
from ..read.pickle.reconstructors import classify
from ..util.errors import CheckpointError
from ..util.lazynp import is_generic
from ..util.textsafe import key_text, path_text, safe_text
from ..util.units import counted, human_bytes, shape_text


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
    rec = {
        "key": [_json_key(k) for k in key],
        "dtype": t.dtype.name,
        "shape": list(t.shape),
        "device": t.device,
        "stride": list(t.stride),
        "storage_offset": t.offset,
        "numel": t.numel,
        "nbytes": t.nbytes,
        "requires_grad": t.requires_grad,
        "kind": t.kind,
    }
    if t.storage is not None:
        rec["storage"] = t.storage.key
        others = [k for k in shared.get(t.storage.key, []) if k != rec["key"]]
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


def build_report(ckpt: Checkpoint, *, checksums: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    entries = ckpt.tensor_entries()
    an = analyze(ckpt.root)
    shared: dict[str, list] = {}
    for key, t in entries:
        if t.storage is not None and len(t.storage.users) > 1:
            shared.setdefault(t.storage.key, []).append([_json_key(k) for k in key])
    tensors = [tensor_record(key, t, shared) for key, t in entries]
    attribute_ids: set[int] = set()
    for (key, t), rec in zip(entries, tensors):
        if is_attribute_path(ckpt.root, key):
            rec["attribute"] = True          # held by a pickled module outside its state_dict
            attribute_ids.add(id(t))
    warnings = collect_warnings(ckpt, entries)
    if checksums:
        cache: dict[int, str | None] = {}
        total = len(entries)
        for i, ((key, t), rec) in enumerate(zip(entries, tensors)):
            if id(t) not in cache:
                try:
                    cache[id(t)] = t.sha256() if t.readable else None
                except CheckpointError as e:
                    cache[id(t)] = None
                    warnings.append(f"tensor {path_text(key)}: {e.message}")
            rec["sha256"] = cache[id(t)]
            if progress:
                progress(i + 1, total)
    integrity_warnings(entries, tensors, warnings)
    distinct = ckpt.all_tensors()
    by_dtype: Counter = Counter()
    for t in distinct:
        by_dtype[t.dtype.name] += t.numel
    unknown, dangerous = stand_in_classes(ckpt)
    return {
        "file": ckpt.path,
        "format": ckpt.format,
        "file_size": ckpt.file_size,
        "meta": _jsonable(ckpt.meta),
        "summary": an.summary,
        "tensor_count": len(distinct),
        "numel": sum(t.numel for t in distinct),
        "nbytes": sum(t.nbytes for t in distinct),
        "numel_by_dtype": dict(by_dtype),
        "attribute_tensor_count": len(attribute_ids - {id(t) for (k, t), r in zip(entries, tensors)
                                                       if not r.get("attribute")}),
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
        "warnings": warnings,
    }


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
def _tensor_line(t: TensorRef) -> str:
    parts = [shape_text(t.shape), t.dtype.name, t.device]
    if t.kind not in ("tensor", "parameter", "nested") and not t.kind.startswith("sparse_"):
        parts.append(t.kind)
    for label, text in special_facts(t):
        if label != "Dense size":
            parts.append(text)
    if t.problem:
        parts.append(f"UNREADABLE: {t.problem}")
    if t.integrity_error:
        parts.append("CRC-32 MISMATCH: the file is damaged here")
    return "  ".join(parts)


def _node_line(node: Node) -> str:
    if node.kind == "tensor":
        return _tensor_line(node.value)
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
        return f"state of {node.info}" if node.info else "parameter state"
    if node.kind == "group":
        n, numel, *_ = node.totals()
        return f"{counted(numel, 'parameter')} in {counted(n, 'tensor')}"
    return node.value_text()


def iter_text_lines(root: Node, max_depth: int | None = None) -> Iterator[str]:
    """The tree, one line per node: state_dict entries by full key, other levels nested."""
    stack: list[tuple[Node, int]] = [(c, 0) for c in reversed(root.children())]
    while stack:
        node, depth = stack.pop()
        indent = "  " * depth
        note = f"  ({safe_text(node.note)})" if node.note else ""
        if node.kind == "state_dict" or (node.kind == "module" and depth == 0):
            yield f"{indent}{node.name}: {_node_line(node)}"
            if max_depth is not None and depth + 1 > max_depth:
                n = len(node.tensors())
                yield f"{indent}  … {n:,} entries folded (raise --depth to see them)"
                continue
            rows, attr_rows = [], []
            for p, t in node.tensors():
                rel = p[len(node.path):]
                if node.kind == "module" and len(rel) > 1:
                    attr_rows.append((path_text(rel), t))     # outside the state_dict: the whole path
                else:
                    rows.append((key_text(p[-1]), t))
            width = min(max((len(k) for k, _ in rows + attr_rows), default=0), 60)
            for k, t in rows:
                yield f"{indent}  {k:<{width}}  {_tensor_line(t)}"
            if attr_rows:
                yield (f"{indent}  {counted(len(attr_rows), 'tensor')} held as attributes, outside the "
                       f"state_dict:")
                for k, t in attr_rows:
                    yield f"{indent}  {k:<{width}}  {_tensor_line(t)}"
            continue
        line = f"{indent}{node.name}: {_node_line(node)}{note}"
        yield line
        if node.has_children and node.kind not in ("group",):
            if max_depth is not None and depth + 1 > max_depth:
                yield f"{indent}  … {node.child_count_hint():,} entries folded (raise --depth to see them)"
                continue
            stack.extend((c, depth + 1) for c in reversed(node.children()))


def report_text(ckpt: Checkpoint, *, depth: int | None = None) -> str:
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
    lines = [
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
    lines.append("")
    if root.kind in ("state_dict", "module", "tensor"):
        lines.extend(iter_text_lines(_Wrapper(root), depth))
    else:
        lines.extend(iter_text_lines(root, depth))
    warnings = collect_warnings(ckpt, entries)
    if warnings:
        lines.append("")
        lines.append(f"Warnings ({len(warnings)}):")
        lines.extend(f"  - {safe_text(w, 400)}" for w in warnings)
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
