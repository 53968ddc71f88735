"""The display tree: nodes over the object graph, with the grouping and labels people want to read.

``build_tree(checkpoint)`` returns the root :class:`Node`. Children are made on first use, so a
100,000-key state_dict costs nothing until it is expanded. State_dict keys are grouped by module
path (``conv1`` > ``weight``), pickled modules show submodules, parameters, buffers and attributes,
optimizer states are labelled with the parameter names they belong to. The CLI's ``info`` and the
GUI's tree model both read these nodes; neither re-derives what they mean.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from ..util.lazynp import is_generic, is_ndarray, np
from ..util.textsafe import key_text, safe_text
from ..util.units import human_bytes, shape_text
from .interpret import Analysis, OptimizerInfo, StateDictInfo, analyze, is_state_dict
from .objects import GlobalRef, PickledDict, StandIn, TorchDevice, TorchEnum, TorchSize, Unreadable
from .tensor import TensorRef
from .values import is_small, small_value
from .walk import (
    ATTRS,
    MAX_DEPTH,
    is_plain_values,
    iter_distinct_tensors,
    iter_tensors,
    module_attribute_tensors,
    module_attrs,
    module_extra_attrs,
    stand_in_children,
    unwrap,
)

CONTAINER_KINDS = {"mapping", "sequence", "set", "state_dict", "module", "optimizer", "group", "object",
                   "scheduler", "param_state"}


class Node:
    """One row of the tree. ``path`` is the key path of ``value`` from the file's root (conformance
    convention: a state_dict entry is one component, ``("model_state_dict", "conv1.weight")``)."""

    __slots__ = ("parent", "name", "key", "path", "value", "kind", "type_text", "note", "info", "_children",
                 "_totals", "_group", "_module_prefix", "row", "ctx", "__weakref__")

    def __init__(self, parent: Node | None, name: str, key: Any, path: tuple, value: Any, kind: str,
                 type_text: str, *, note: str = "", info: Any = None, ctx: "TreeContext | None" = None):
        self.parent = parent
        self.ctx = ctx if ctx is not None else parent.ctx
        self.name = name
        self.key = key
        self.path = path
        self.value = value
        self.kind = kind
        self.type_text = type_text
        self.note = note
        self.info = info                  # StateDictInfo / OptimizerInfo / param name, by kind
        self._children: list[Node] | None = None
        self._totals: tuple | None = None
        self._group: list[tuple[str, Any]] | None = None     # for "group" and "state_dict" nodes
        self._module_prefix = ""          # dotted prefix of a submodule inside a pickled module
        self.row = 0

    # -- structure ----------------------------------------------------------------------------------
    @property
    def has_children(self) -> bool:
        if self._children is not None:
            return bool(self._children)
        if self.kind in ("group", "state_dict"):
            return True
        if self.kind in CONTAINER_KINDS:
            v = self.value
            if isinstance(v, (dict, list, tuple, set, frozenset)):
                return len(v) > 0
            return True
        return False

    def children(self) -> list[Node]:
        if self._children is None:
            self._children = _make_children(self)
            for i, c in enumerate(self._children):
                c.row = i
        return self._children

    def child_count_hint(self) -> int:
        """Children without building them when cheap (for 'N entries' labels)."""
        if self._children is not None:
            return len(self._children)
        v = self.value
        if isinstance(v, (dict, list, tuple)) and self.kind not in ("state_dict", "group"):
            return len(v)
        return len(self.children())

    @property
    def depth(self) -> int:
        d, n = 0, self.parent
        while n is not None:
            d, n = d + 1, n.parent
        return d

    def ancestors(self):
        n = self.parent
        while n is not None:
            yield n
            n = n.parent

    def find(self, path: tuple) -> Node | None:
        """The node at ``path`` below this one (descending through groups)."""
        node = self
        path = tuple(path)
        while node.path != path:
            nxt = None
            for c in node.children():
                if (c.path == path[:len(c.path)] or (c.kind == "group" and _group_covers(c, path))
                        or (c.kind == "module" and c._module_prefix and _submodule_covers(c, path))):
                    nxt = c
                    break
            if nxt is None:
                return None
            node = nxt
        return node

    # -- numbers ------------------------------------------------------------------------------------
    def tensors(self) -> list[tuple[tuple, TensorRef]]:
        """(path, tensor) for every tensor under this node, tied tensors under each name."""
        if self.kind == "tensor":
            return [(self.path, self.value)]
        if self.kind in ("group", "state_dict") and self._group_entries() is not None:
            base = self._sd_path()
            return [(base + (name,), t) for name, t in self._group_entries() if isinstance(t, TensorRef)]
        if self.kind not in CONTAINER_KINDS:
            return []
        if self.kind == "module" and self._module_prefix:
            # A submodule's entries are keyed from the pickled module at the top: its state_dict names
            # and dotted submodule names carry this submodule's prefix, its own attributes its name.
            base, prefix = self.path[:-1], self._module_prefix
            return [(base + ((prefix[:-1],) + tuple(p) if p[0] == ATTRS else (prefix + str(p[0]),) + tuple(p[1:])), t)
                    for p, t in iter_tensors(self.value)]
        return [(self.path + tuple(p), t) for p, t in iter_tensors(self.value)]

    def totals(self) -> tuple[int, int, int, Counter, set]:
        """(tensor count, elements, bytes, elements by dtype, devices), tied tensors counted once."""
        if self._totals is None:
            seen, n, numel, nbytes, by_dtype, devices = set(), 0, 0, 0, Counter(), set()
            # Totals count each tensor once, so containers are walked once each (not once per path).
            if self.kind in ("group", "state_dict") and self._group_entries() is not None or self.kind == "tensor":
                found = (t for _, t in self.tensors())
            elif self.kind in CONTAINER_KINDS:
                found = iter_distinct_tensors(self.value)
            else:
                found = ()
            for t in found:
                if id(t) in seen:
                    continue
                seen.add(id(t))
                n += 1
                numel += t.numel
                nbytes += t.nbytes
                by_dtype[t.dtype.name] += t.numel
                devices.add(t.device)
            self._totals = (n, numel, nbytes, by_dtype, devices)
        return self._totals

    def attribute_tensor_count(self) -> int:
        """Distinct tensors under a pickled module held only as attributes, outside its state_dict."""
        return len(module_attribute_tensors(self.value)) if self.kind == "module" else 0

    def _group_entries(self) -> list[tuple[str, Any]] | None:
        if self._group is None and self.kind == "state_dict" and isinstance(self.info, StateDictInfo):
            if self.info.kind == "state_dict":
                self._group = list(self.value.items())
        return self._group

    def _sd_path(self) -> tuple:
        n = self
        while n.kind == "group":
            n = n.parent
        return n.path

    # -- columns ------------------------------------------------------------------------------------
    def shape_text(self) -> str:
        v = self.value
        if self.kind == "tensor":
            return shape_text(v.shape)
        if self.kind == "ndarray":
            return shape_text(v.shape)
        return ""

    def dtype_text(self) -> str:
        if self.kind == "tensor":
            return self.value.dtype.name
        if self.kind == "ndarray":
            return str(self.value.dtype)
        if self.kind in CONTAINER_KINDS:
            by = self.totals()[3]
            if len(by) == 1:
                return next(iter(by))
            return "mixed" if by else ""
        return ""

    def numel_text(self) -> str:
        if self.kind == "tensor":
            return f"{self.value.numel:,}"
        if self.kind in CONTAINER_KINDS:
            numel = self.totals()[1]
            return f"{numel:,}" if numel else ""
        return ""

    def size_text(self) -> str:
        if self.kind == "tensor":
            return human_bytes(self.value.nbytes)
        if self.kind == "ndarray":
            return human_bytes(self.value.nbytes)
        if self.kind in CONTAINER_KINDS:
            nbytes = self.totals()[2]
            return human_bytes(nbytes) if self.totals()[0] else ""
        return ""

    def device_text(self) -> str:
        if self.kind == "tensor":
            return self.value.device
        if self.kind in CONTAINER_KINDS:
            devices = self.totals()[4]
            if len(devices) == 1:
                return next(iter(devices))
            return ", ".join(sorted(devices)) if len(devices) <= 3 else "mixed"
        return ""

    def value_text(self) -> str:
        """A short rendering of a leaf value (scalars, strings, small sequences)."""
        return value_text(self.value)

    def small_value(self, read: bool = False) -> tuple[bool, Any]:
        """For a small tensor (``values.is_small``): (known?, its values). With ``read`` the bytes are read
        now if they were not yet; without it nothing is read (what painting a row may do)."""
        if self.kind != "tensor" or not is_small(self.value):
            return True, None
        if read:
            return True, self.ctx.read_value(self.value)
        return self.ctx.known_value(self.value)

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.kind}>"


def _group_covers(node: Node, path: tuple) -> bool:
    base = node._sd_path()
    if path[:len(base)] != base or len(path) <= len(base):
        return False
    key = path[len(base)]
    return isinstance(key, str) and key.startswith(node.key + ".")


def _submodule_covers(node: Node, path: tuple) -> bool:
    """A submodule of a pickled module holds the state_dict names that start with its dotted prefix."""
    base = node.path[:-1]
    if path[:len(base)] != base or len(path) <= len(base):
        return False
    key = path[len(base)]
    return isinstance(key, str) and key.startswith(node._module_prefix)


# -- values as text ---------------------------------------------------------------------------------
def value_text(v: Any, limit: int = 120) -> str:
    v = unwrap(v)
    if v is None:
        return "None"
    if is_generic(v):       # before the int/float tests: numpy.float64 is a float subclass
        return f"{v.item()!r} ({type(v).__name__})"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + safe_text(v, limit) + '"'
    if isinstance(v, (bytes, bytearray)):
        return f"{type(v).__name__} of {len(v):,}"
    if is_ndarray(v):
        if v.size <= 8 and v.ndim <= 1:
            return safe_text(np.array2string(v, separator=", "), limit)
        return f"ndarray {v.dtype} {shape_text(v.shape)}"
    if isinstance(v, (TorchSize, TorchDevice, TorchEnum)):
        return repr(v) if not isinstance(v, TorchDevice) else f"device('{v}')"
    if isinstance(v, TensorRef):
        return f"tensor {v.dtype.name} {shape_text(v.shape)}"
    if isinstance(v, Unreadable):
        return safe_text(f"unreadable {v.what}: {v.reason}", limit)
    if isinstance(v, GlobalRef):
        return safe_text(f"<class {v.qualname}>", limit)
    if isinstance(v, StandIn):
        return safe_text(f"<{v.qualname}>", limit)
    if isinstance(v, (list, tuple)):
        if is_plain_values(v):
            shown = [value_text(x, 30) for x in v[:12]]
            if len(v) > 12:
                shown.append(f"… {len(v):,} items")
            inner = ", ".join(shown)
            text = f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
            return text
        return f"{type(v).__name__} of {len(v):,}"
    if isinstance(v, dict):
        return f"{len(v):,} entries"
    if isinstance(v, (set, frozenset)):
        return f"{type(v).__name__} of {len(v):,}"
    if isinstance(v, (complex, range, slice)):
        return repr(v)
    return type(v).__name__


# -- node construction --------------------------------------------------------------------------------
def _short_class(qualname: str) -> str:
    return qualname.rsplit(".", 1)[-1]


def classify_value(value: Any, an: Analysis | None, path: tuple) -> tuple[str, str, Any]:
    """(kind, type text, info) for a value at ``path``."""
    value = unwrap(value)
    role = an.role_of(path) if an is not None else None
    if isinstance(value, TensorRef):
        label = {"parameter": "parameter"}.get(value.kind, "tensor" if value.kind == "tensor" else value.kind)
        return "tensor", label, None
    if role == "optimizer":
        info = an.optimizer_at(path)
        return "optimizer", info.label if info else "optimizer", info
    if role in ("state_dict", "module"):
        info = an.state_dict_at(path)
        if role == "module":
            return "module", _short_class(value.qualname), info
        return "state_dict", "state_dict" if any("." in k for k, _ in info.entries) else "tensors", info
    if role == "script":
        return "object", value.qualname, an.state_dict_at(path)
    if role == "scheduler":
        return "scheduler", "scheduler state", None
    if isinstance(value, dict):
        if is_state_dict(value):
            return "state_dict", "state_dict", StateDictInfo(path, [(k, v) for k, v in value.items()
                                                                   if isinstance(v, TensorRef)])
        name = value.type_name.rsplit(".", 1)[-1] if isinstance(value, PickledDict) else "dict"
        return "mapping", name, None
    if is_plain_values(value) and value:
        return "values", type(value).__name__, None
    if isinstance(value, list):
        return "sequence", "list", None
    if isinstance(value, tuple) and not isinstance(value, TorchSize):
        return "sequence", "tuple", None
    if isinstance(value, (set, frozenset)):
        return "set", type(value).__name__, None
    if isinstance(value, StandIn):
        if module_attrs(value) is not None:
            return "module", _short_class(value.qualname), None
        return "object", value.qualname, None
    if is_ndarray(value):
        return "ndarray", "ndarray", None
    if isinstance(value, Unreadable):
        return "unreadable", "unreadable", None
    if isinstance(value, str):
        return "string", "str", None
    if value is None:
        return "none", "None", None
    if isinstance(value, (TorchSize, TorchDevice, TorchEnum)):
        return "scalar", {TorchSize: "torch.Size", TorchDevice: "torch.device"}.get(type(value), "torch " + getattr(value, "kind", "")), None
    if is_generic(value):
        return "scalar", f"numpy.{type(value).__name__}", None
    if isinstance(value, GlobalRef):
        return "scalar", "class", None
    return "scalar", type(value).__name__, None


def _node(parent: Node | None, name: str, key: Any, path: tuple, value: Any, an: Analysis | None,
          note: str = "", ctx: "TreeContext | None" = None) -> Node:
    value = unwrap(value)
    if parent is not None and _is_ancestor(parent, value):
        return Node(parent, name, key, path, value, "cycle", "↺ cycle", note="refers to a container above it")
    if len(path) > MAX_DEPTH:
        return Node(parent, name, key, path, None, "truncated", "…", note=f"deeper than {MAX_DEPTH} levels")
    kind, type_text, info = classify_value(value, an, path)
    return Node(parent, name, key, path, value, kind, type_text, note=note, info=info, ctx=ctx)


def _is_ancestor(parent: Node, value: Any) -> bool:
    if not isinstance(value, (dict, list, tuple, StandIn)) or isinstance(value, TorchSize):
        return False
    n = parent
    while n is not None:
        if n.value is value and n.kind != "group":
            return True
        n = n.parent
    return False


def _make_children(node: Node) -> list[Node]:
    if node.kind not in CONTAINER_KINDS:
        return []       # a cycle or truncation marker holds the container it refers to: never expand it
    an = node.ctx.analysis
    v = node.value
    if node.kind in ("state_dict", "group"):
        entries = node._group if node.kind == "group" else node._group_entries()
        if entries is None:
            entries = list(v.items()) if isinstance(v, dict) else []
        return _group_children(node, entries, an)
    if node.kind == "module":
        return _module_children(node, an)
    if node.kind == "optimizer":
        return _optimizer_children(node, an)
    if node.kind == "param_state":
        return [_node(node, key_text(k), k, node.path + (k,), x, an) for k, x in v.items()]
    if isinstance(v, dict):
        return [_node(node, key_text(k), k, node.path + (k,), x, an) for k, x in v.items()]
    if isinstance(v, (list, tuple)):
        return [_node(node, str(i), i, node.path + (i,), x, an) for i, x in enumerate(v)]
    if isinstance(v, (set, frozenset)):
        items = sorted(v, key=lambda x: (type(x).__name__, str(x)))
        return [_node(node, str(i), i, node.path + (i,), x, an) for i, x in enumerate(items)]
    if isinstance(v, StandIn):
        return [_node(node, key_text(k), k, node.path + (k,), x, an) for k, x in stand_in_children(v)]
    return []


def _group_children(node: Node, entries: list[tuple[str, Any]], an: Analysis | None) -> list[Node]:
    """Group dotted keys by their next component. ``entries`` hold full keys relative to the state_dict."""
    base = node._sd_path()
    prefix = (node.key + ".") if node.kind == "group" else ""
    order: list[str] = []
    buckets: dict[str, list[tuple[str, Any]]] = {}
    leaves: dict[str, tuple[str, Any]] = {}
    for full, t in entries:
        rest = full[len(prefix):] if isinstance(full, str) else full
        if isinstance(rest, str) and "." in rest:
            head = rest.split(".", 1)[0]
            if head not in buckets:
                buckets[head] = []
                order.append(head)
            buckets[head].append((full, t))
        else:
            order.append(("leaf", full))
            leaves[full] = (full, t)
    out: list[Node] = []
    for item in order:
        if isinstance(item, tuple):
            full, t = leaves[item[1]]
            name = full[len(prefix):] if isinstance(full, str) else str(full)
            out.append(_node(node, key_text(name), full, base + (full,), t, an))
        else:
            members = buckets[item]
            gkey = prefix + item
            g = Node(node, key_text(item), gkey, base + (gkey,), None, "group", "group")
            g._group = members
            out.append(g)
    return out


def _module_children(node: Node, an: Analysis | None) -> list[Node]:
    attrs = module_attrs(node.value) or {}
    root_path = node.path[:-1] if node._module_prefix else node.path
    prefix = node._module_prefix
    out: list[Node] = []
    for name, m in attrs.get("_modules", {}).items():
        if m is None:
            continue
        child = _node(node, key_text(name), name, root_path + (f"{prefix}{name}",), m, an)
        if child.kind == "module":
            child._module_prefix = f"{prefix}{name}."
            child.note = safe_text(m.qualname)
        out.append(child)
    nonpersistent = attrs.get("_non_persistent_buffers_set")
    if not isinstance(nonpersistent, (set, frozenset)):
        nonpersistent = ()           # a file can put anything here; walk.module_state_dict does the same
    for section, note in (("_parameters", ""), ("_buffers", "buffer")):
        group = attrs.get(section)
        for name, t in (group.items() if isinstance(group, dict) else ()):
            if t is None:
                continue
            hidden = section == "_buffers" and name in nonpersistent
            extra = note + (" (not saved in state_dict)" if hidden else "")
            # A non-persistent buffer is no state_dict entry: its key path goes through the module's __dict__.
            path = node.path + (ATTRS, "_buffers", name) if hidden else root_path + (f"{prefix}{name}",)
            child = _node(node, key_text(name), name, path, t, an, note=extra)
            if child.kind == "tensor" and section == "_buffers":
                child.type_text = "buffer"
            out.append(child)
    extra_attrs = module_extra_attrs(node.value)
    others = {k: x for k, x in attrs.items()
              if (not k.startswith("_") or k in ("_extra_state",) or k in extra_attrs) and k != "_buffers"}
    if others:
        n_tensors = len(iter_tensor_list(others))
        note = f"{len(others)} plain attributes" + (f"; {n_tensors} tensor{'s' if n_tensors != 1 else ''} outside "
                                                    f"the state_dict" if n_tensors else "")
        holder = Node(node, "attributes", ATTRS, node.path + (ATTRS,), others, "mapping", "attributes", note=note)
        out.append(holder)
    return out


def iter_tensor_list(value: Any) -> list:
    return list(iter_tensors(value))


def _optimizer_children(node: Node, an: Analysis | None) -> list[Node]:
    opt: OptimizerInfo | None = node.info
    v = node.value
    out: list[Node] = []
    for key, x in v.items():
        child = _node(node, key_text(key), key, node.path + (key,), x, an)
        if key == "state" and isinstance(x, dict) and opt is not None:
            child._children = []
            for i, (pid, entry) in enumerate(x.items()):
                name = opt.param_names.get(pid)
                note = (name + (" (inferred)" if opt.names_inferred else "")) if name else ""
                kind = "param_state" if isinstance(entry, dict) else None
                c = _node(child, key_text(pid), pid, child.path + (pid,), entry, an, note=note)
                if kind:
                    c.kind, c.type_text, c.info = "param_state", "parameter state", name
                c.row = i
                child._children.append(c)
        if key == "param_groups" and isinstance(x, list):
            child.note = f"{len(x)} group{'s' if len(x) != 1 else ''}"
        out.append(child)
    return out


class TreeContext:
    """What every node of one tree shares: the checkpoint, its analysis, and the values of the small
    tensors read so far (read on demand: ``info`` reads what it prints, the window reads in a worker, so
    that painting a row never touches the file)."""

    __slots__ = ("checkpoint", "analysis", "_values")

    def __init__(self, checkpoint, analysis: Analysis):
        self.checkpoint = checkpoint
        self.analysis = analysis
        self._values: dict[int, tuple[TensorRef, Any]] = {}    # id -> (tensor kept alive, its values)

    def read_value(self, t: TensorRef) -> Any:
        """The values of a small tensor (see ``values.small_value``), read once; None when it has none."""
        got = self._values.get(id(t))
        if got is None:
            got = self._values[id(t)] = (t, small_value(t) if is_small(t) else None)
        return got[1]

    def known_value(self, t: TensorRef) -> tuple[bool, Any]:
        """(read yet?, values) without reading anything."""
        got = self._values.get(id(t))
        return (False, None) if got is None else (True, got[1])


def build_tree(checkpoint, analysis: Analysis | None = None) -> Node:
    """The root node of ``checkpoint`` (analysed here unless an analysis is passed)."""
    ctx = TreeContext(checkpoint, analysis if analysis is not None else analyze(checkpoint.root))
    return _node(None, checkpoint.name, None, (), checkpoint.root, ctx.analysis, ctx=ctx)
