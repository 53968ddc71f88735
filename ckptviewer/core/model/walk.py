"""Walking the object graph a pickle builds: children of a value, tensors under a root, modules.

A pickle can build any graph: shared subtrees (``{"best": sd, "last": sd}`` is one dict twice),
cycles (a list that contains itself) and exponential DAGs (each level referring twice to the one
below). Walks here are iterative, skip a container that is its own ancestor, stop at a depth cap,
and give up after a node budget with a warning, so no file can hang or overflow them. Listing by
key path (:func:`iter_tensors`) also stops once paths far outnumber the distinct containers (an
exponential DAG has 2**100 paths to one tensor); counting (:func:`iter_distinct_tensors`) visits
each container once, so totals cost what the graph's size costs whatever its sharing.
"""
from __future__ import annotations

from typing import Any, Iterator

from ..util.lazynp import is_generic
from .objects import Buildable, StandIn, TorchSize
from .tensor import TensorRef

MAX_DEPTH = 200
MAX_NODES = 5_000_000
# Path listing stops when it has visited this many values *and* this many times more values than
# distinct containers: real files share a state_dict or two ("best" and "last"), not every level.
SHARED_PATHS_MIN = 20_000
SHARED_PATHS_FACTOR = 8

Key = Any            # a path component: a dict key as it is (str, int, ...) or a list position


def unwrap(value: Any) -> Any:
    """The value a build-time helper stands for (a numpy array being reconstructed, a numpy dtype)."""
    return value.finished() if isinstance(value, Buildable) else value


def is_container(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple, StandIn, set, frozenset))


def module_attrs(value: Any) -> dict | None:
    """The instance dict of a pickled ``nn.Module`` stand-in, or None if ``value`` is not one.

    A module's attribute, submodule, parameter and buffer names are strings; a file can make them
    anything, and everything that builds ``prefix + name`` keys relies on this check. A stand-in that
    fails it is shown as a plain object."""
    if isinstance(value, StandIn):
        attrs = value.attributes
        if attrs is None:
            return None
        modules, params, buffers = attrs.get("_modules"), attrs.get("_parameters"), attrs.get("_buffers")
        if (isinstance(modules, dict) and isinstance(params, dict) and _str_keys(attrs) and _str_keys(modules)
                and _str_keys(params) and (not isinstance(buffers, dict) or _str_keys(buffers))):
            return attrs
    return None


def _str_keys(d: dict) -> bool:
    for k in d:
        if type(k) is not str:
            return False
    return True


def is_module(value: Any) -> bool:
    return module_attrs(value) is not None


def module_state_dict(module: Any, *, keep_non_persistent: bool = False) -> list[tuple[str, TensorRef]]:
    """The names ``module.state_dict()`` would have, in its order, without running the module's code.

    Parameters, then persistent buffers, then each child's entries with ``child.`` in front; ``None``
    entries are skipped as torch does. Tied parameters appear under every name that holds them.
    """
    out: list[tuple[str, Any]] = []
    todo: list[tuple[str, Any, tuple[int, ...]]] = [("", module, ())]
    while todo:
        prefix, mod, ancestors = todo.pop()
        attrs = module_attrs(mod)
        if attrs is None or id(mod) in ancestors or len(ancestors) > MAX_DEPTH:
            continue
        for name, p in attrs.get("_parameters", {}).items():
            if p is not None:
                out.append((f"{prefix}{name}", p))
        skip = attrs.get("_non_persistent_buffers_set")
        skip = skip if isinstance(skip, (set, frozenset)) and not keep_non_persistent else ()
        buffers = attrs.get("_buffers")
        for name, b in (buffers.items() if isinstance(buffers, dict) else ()):
            if b is not None and name not in skip:
                out.append((f"{prefix}{name}", b))
        children = [(f"{prefix}{name}.", m, ancestors + (id(mod),))
                    for name, m in attrs["_modules"].items() if m is not None]
        todo.extend(reversed(children))
    return out


# A pickled module's values outside its state_dict (plain attributes, non-persistent buffers) are listed
# under the module's key path as [submodule, ATTRS, name, ...], or [ATTRS, name, ...] for the module itself:
# torch refuses a submodule, parameter or buffer named "__dict__", and state_dict names never have
# components after them, so these keys cannot be confused with state_dict entries.
ATTRS = "__dict__"
_STATE_DICT_SECTIONS = ("_parameters", "_buffers", "_modules")


def _holds_values(v: Any) -> bool:
    """Worth walking for tensors: a tensor, a stand-in, or a non-empty list, tuple or dict."""
    return (isinstance(v, (TensorRef, StandIn)) or (isinstance(v, (dict, list, tuple)) and len(v) > 0)
            or isinstance(v, Buildable))


def module_extra_attrs(module: StandIn) -> dict:
    """The part of a module's ``__dict__`` outside its state_dict that can hold tensors: plain attributes
    (tensors, lists of tensors, objects...) and, under ``_buffers``, the non-persistent buffers. Computed
    once per module (cached on the stand-in)."""
    cache = module.derived
    if cache is not None and "extra_attrs" in cache:
        return cache["extra_attrs"]
    attrs = module_attrs(module) or {}
    out: dict = {}
    for name, v in attrs.items():
        if name in _STATE_DICT_SECTIONS:
            continue
        if _holds_values(v) and not isinstance(v, (set, frozenset)):
            out[name] = v
    buffers = attrs.get("_buffers")
    skip = attrs.get("_non_persistent_buffers_set")
    if isinstance(buffers, dict) and isinstance(skip, (set, frozenset)):
        hidden = {n: b for n, b in buffers.items() if n in skip and b is not None}
        if hidden:
            out["_buffers"] = hidden
    module.derived = {**(module.derived or {}), "extra_attrs": out, "holder": {ATTRS: out}}
    return out


def module_attribute_entries(module: Any) -> list[tuple[str, Any]]:
    """(key, value) for the values outside the state_dict of ``module`` and its submodules, in
    ``named_modules()`` order: ``(ATTRS, attrs)`` for the module itself and ``(dotted name, {ATTRS: attrs})``
    for each submodule that has any. The dicts are cached on the modules, so walks that key on object
    identity see the same objects every time."""
    out: list[tuple[str, Any]] = []
    todo: list[tuple[str, Any, tuple[int, ...]]] = [("", module, ())]
    while todo:
        name, mod, ancestors = todo.pop()
        attrs = module_attrs(mod)
        if attrs is None or id(mod) in ancestors or len(ancestors) > MAX_DEPTH:
            continue
        extra = module_extra_attrs(mod)
        if extra:
            out.append((ATTRS, extra) if not name else (name, mod.derived["holder"]))
        kids = [(f"{name}.{k}" if name else k, m, ancestors + (id(mod),))
                for k, m in attrs["_modules"].items() if m is not None]
        todo.extend(reversed(kids))
    return out


def module_children(module: Any) -> list[tuple[Key, Any]]:
    """What a pickled module holds, as key paths see it: its state_dict entries, then its attribute entries."""
    return list(module_state_dict(module)) + module_attribute_entries(module)


def module_attribute_tensors(module: Any) -> list[tuple[list, TensorRef]]:
    """(key path from the module, tensor) for each distinct tensor the module and its submodules hold outside
    their state_dict (a tensor that is also a state_dict entry is not counted)."""
    in_sd = {id(t) for _, t in module_state_dict(module)}
    seen: set[int] = set()
    out = []
    for path, t in iter_tensors(module):
        if ATTRS in path[:2] and id(t) not in in_sd and id(t) not in seen:
            seen.add(id(t))
            out.append((path, t))
    return out


def is_attribute_path(root: Any, path) -> bool:
    """Whether the tensor at ``path`` is reached through a pickled module's attributes (outside the
    module's state_dict) rather than through a state_dict name."""
    if ATTRS not in path:
        return False
    value = unwrap(root)
    for i, comp in enumerate(path):
        if module_attrs(value) is not None:
            if comp == ATTRS or (i + 1 < len(path) and path[i + 1] == ATTRS):
                return True
            return False        # a state_dict name ends the path
        if isinstance(value, dict):
            value = value.get(comp) if _hashable(comp) else None
        elif isinstance(value, (list, tuple)) and type(comp) is int and -len(value) <= comp < len(value):
            value = value[comp]
        elif isinstance(value, StandIn):
            value = dict(stand_in_children(value)).get(comp) if _hashable(comp) else None
        else:
            return False
        value = unwrap(value)
    return False


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def children(value: Any) -> list[tuple[Key, Any]]:
    """The (key, child) pairs under ``value`` as the tensor listing sees them."""
    value = unwrap(value)
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    if isinstance(value, StandIn):
        if is_module(value):
            return module_children(value)
        return stand_in_children(value)
    return []


def stand_in_children(value: StandIn) -> list[tuple[Key, Any]]:
    """Attributes, then dict items, then list items of a stand-in (a Namespace, an AttributeDict...)."""
    out: list[tuple[Key, Any]] = []
    attrs = value.attributes
    if attrs is not None:
        out.extend(attrs.items())
    elif value.state is not None:
        out.append(("__state__", value.state))
    if value.items:
        out.extend(value.items)
    if value.list_items:
        out.extend(enumerate(value.list_items))
    if not out and value.args:
        out.extend((f"arg{i}", a) for i, a in enumerate(value.args))
    return out


def iter_tensors(root: Any, *, warnings: list[str] | None = None,
                 max_nodes: int = MAX_NODES) -> Iterator[tuple[list[Key], TensorRef]]:
    """Every tensor reachable from ``root`` with its key path (the conformance contract's ``key``).

    Shared subtrees are listed under each path that reaches them; cycles are cut.
    """
    stack: list[tuple[tuple, Any, tuple[int, ...]]] = [((), root, ())]
    visited = 0
    distinct: set[int] = set()
    while stack:
        path, value, ancestors = stack.pop()
        visited += 1
        if visited > max_nodes:
            if warnings is not None:
                warnings.append(f"stopped listing tensors after {max_nodes:,} values (the object graph is huge "
                                f"or built to explode)")
            return
        if isinstance(value, TensorRef):
            yield list(path), value
            continue
        if not is_container(value) and not isinstance(value, Buildable):
            continue
        if id(value) in ancestors:
            continue
        distinct.add(id(value))
        if visited > SHARED_PATHS_MIN and visited > SHARED_PATHS_FACTOR * len(distinct):
            if warnings is not None:
                warnings.append(f"stopped listing tensors after {visited:,} key paths through only "
                                f"{len(distinct):,} containers: the file shares the same values under more "
                                f"paths than can be listed (an exponential object graph)")
            return
        if len(path) >= MAX_DEPTH:
            if warnings is not None:
                warnings.append(f"stopped at depth {MAX_DEPTH} under {path[:3]}...")
            continue
        inner = ancestors + (id(value),)
        kids = children(value)
        for key, child in reversed(kids):
            if isinstance(child, TensorRef) or is_container(child):
                stack.append((path + (key,), child, inner))


def iter_distinct_tensors(root: Any, *, max_nodes: int = MAX_NODES) -> Iterator[TensorRef]:
    """Every distinct tensor under ``root``, once, visiting each container once (cost: the graph's size).

    What totals need: a tensor shared under many paths is counted once, so shared containers need not
    be entered again, and an exponential DAG costs no more than its few distinct levels.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 0)]
    visited = 0
    while stack and visited < max_nodes:
        value, depth = stack.pop()
        visited += 1
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, TensorRef):
            yield value
            continue
        if depth >= MAX_DEPTH:
            continue
        for _key, child in reversed(children(value)):
            if isinstance(child, TensorRef) or is_container(child) or isinstance(child, Buildable):
                stack.append((child, depth + 1))


def numel_of(value: Any) -> int:
    """Elements in all tensors under ``value`` (shared tensors counted once)."""
    return sum(t.numel for t in iter_distinct_tensors(value))


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, complex, str, bytes)) or is_generic(value)


def is_plain_values(v: Any) -> bool:
    """A list/tuple of plain scalars: shown (and compared, and reported) as one value, not as a subtree."""
    return (isinstance(v, (list, tuple)) and not isinstance(v, TorchSize)
            and all(x is None or type(x) in (int, float, bool, str) and (type(x) is not str or len(x) < 40)
                    for x in v))


def iter_leaves(root: Any, max_nodes: int = MAX_NODES, *, tensors: bool = True) -> Iterator[tuple[tuple, Any]]:
    """(key path, leaf) for tensors and plain values under ``root``, in tree order, with the key paths
    :func:`iter_tensors` uses. Lists of plain values count as one leaf, an empty container is a leaf,
    pickled modules contribute their state_dict; cycles are cut. ``tensors=False`` leaves tensors out
    (cheaper than filtering them: a 100,000-key state_dict is not walked entry by entry)."""
    stack: list[tuple[tuple, Any, tuple]] = [((), root, ())]
    seen = 0
    distinct: set[int] = set()
    while stack:
        path, value, anc = stack.pop()
        seen += 1
        if seen > max_nodes:
            return
        value = unwrap(value)
        container = (isinstance(value, (dict, list, tuple, StandIn)) and not isinstance(value, TorchSize)
                     and not is_plain_values(value))
        if not container:
            yield path, value
            continue
        if id(value) in anc or len(path) > MAX_DEPTH:
            continue
        distinct.add(id(value))
        if seen > SHARED_PATHS_MIN and seen > SHARED_PATHS_FACTOR * len(distinct):
            return       # an exponential object graph: as many paths as iter_tensors lists, no more
        kids = children(value)
        if not kids:
            yield path, value
            continue
        inner = anc + (id(value),)
        if tensors:
            stack.extend((path + (k,), v, inner) for k, v in reversed(kids))
        else:
            stack.extend((path + (k,), v, inner) for k, v in reversed(kids) if type(v) is not TensorRef)
