"""Key paths: naming a value inside a checkpoint, on the command line and in recipes.

A path is a tuple of components from the root: dict keys as they are (``"model_state_dict"``, or an
int such as an optimizer parameter id) and list positions as ints. Written as text, components are
joined with ``/``: ``model_state_dict/conv1.weight``, ``optimizer_states/0/state/3``. A component
that is all digits means the int when the container has no such string key. A literal ``/`` or ``\\``
in a key is escaped with a backslash.
"""
from __future__ import annotations

from typing import Any

from ..util.errors import OperationError
from .objects import StandIn
from .walk import module_attrs, module_children, stand_in_children, unwrap


def parse(text: str) -> list[str]:
    """Split ``a/b\\/c/0`` into ``["a", "b/c", "0"]`` (components stay strings until resolved)."""
    if text in ("", "/"):
        return []
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if ch == "/":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def format_path(path) -> str:
    return "/".join(str(p).replace("\\", "\\\\").replace("/", "\\/") for p in path)


def _match_key(container: Any, comp: Any) -> Any:
    """The actual key in ``container`` that the text component ``comp`` names."""
    keys = list(container.keys()) if isinstance(container, dict) else None
    if keys is not None:
        if comp in container:
            return comp
        if isinstance(comp, str) and comp.lstrip("-").isdigit() and int(comp) in container:
            return int(comp)
        raise KeyError(comp)
    if isinstance(container, (list, tuple)):
        idx = int(comp)
        if not -len(container) <= idx < len(container):
            raise KeyError(comp)
        return idx
    raise KeyError(comp)


def children_map(value: Any) -> dict | list | tuple | None:
    """The mapping a path component indexes into: dicts, sequences, a module's state_dict, a stand-in's state."""
    value = unwrap(value)
    if isinstance(value, (dict, list, tuple)):
        return value
    if isinstance(value, StandIn):
        if module_attrs(value) is not None:
            return dict(module_children(value))
        return dict(stand_in_children(value))
    return None


def resolve(root: Any, path) -> tuple[tuple, Any]:
    """Follow ``path`` (text or components) from ``root``: returns (the exact key path, the value)."""
    comps = parse(path) if isinstance(path, str) else list(path)
    value, exact = root, []
    for i, comp in enumerate(comps):
        container = children_map(value)
        try:
            if container is None:
                raise KeyError(comp)
            key = _match_key(container, comp)
        except (KeyError, ValueError):
            where = format_path(exact) or "the root"
            available = _sample_keys(container)
            raise OperationError(f"no entry {comp!r} under {where}" + (f" (it has: {available})" if available else ""),
                                 hint="Run `ckptviewer info FILE` to see the key paths.") from None
        exact.append(key)
        value = container[key]
    return tuple(exact), unwrap(value)


def _sample_keys(container: Any) -> str:
    if isinstance(container, dict):
        keys = [str(k) for k in list(container)[:8]]
        return ", ".join(keys) + (", ..." if len(container) > 8 else "")
    if isinstance(container, (list, tuple)):
        return f"positions 0..{len(container) - 1}" if container else "nothing"
    return ""
