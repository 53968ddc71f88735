"""Python code that loads one entry of a checkpoint, as safely as the file allows.

``load_snippet(node)`` walks from the tree's root to ``node`` and writes the expression that reaches it:
``torch.load(PATH, map_location="cpu", weights_only=True)["model_state_dict"]["conv1.weight"]`` for an
ordinary file, ``safe_open(...).get_tensor(...)`` for safetensors. Where ``weights_only=True`` cannot load
the file (a pickled whole model, classes outside torch's allowlist, a TorchScript archive) the snippet says
so in a comment and shows the unsafe call with a warning instead of silently switching to it.

Keys are written as Python literals that are safe to paste: strings with ASCII-only escapes (so a
bidirectional override in a key cannot reorder the pasted code), ints as ints.
"""
from __future__ import annotations

import json
from typing import Any

from ..model.tree import Node
from .info import stand_in_classes


def py_literal(key: Any) -> str | None:
    """A Python literal for a dict key, or None when the key has no literal (an object, a tensor...)."""
    if isinstance(key, bool) or key is None:
        return repr(key)
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=True)
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float) and key == key and key not in (float("inf"), float("-inf")):
        return repr(key)
    if isinstance(key, tuple):
        parts = [py_literal(k) for k in key]
        if any(p is None for p in parts):
            return None
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    return None


def _attr(name: Any) -> str:
    if isinstance(name, str) and name.isidentifier() and name.isascii():
        return f".{name}"
    lit = py_literal(name)
    return f"  # attribute {lit or '?'} has no Python name" if lit is None else f".__dict__[{lit}]"


def _chain(node: Node) -> list[Node]:
    out = [node]
    while out[-1].parent is not None:
        out.append(out[-1].parent)
    return list(reversed(out))


def load_snippet(node: Node) -> str:
    """The snippet for ``node`` (see the module docstring). Uses the node's checkpoint path and format."""
    ckpt = node.ctx.checkpoint
    path = json.dumps(str(ckpt.path), ensure_ascii=True)
    chain = _chain(node)
    if ckpt.format == "safetensors":
        return _safetensors_snippet(path, node)

    notes: list[str] = []
    expr = ""
    group_prefix: str | None = None
    unreachable = ""
    for parent, child in zip(chain, chain[1:]):
        pk = parent.kind
        if child.kind == "group":
            group_prefix = child.key + "."
            continue
        group_prefix = None
        if pk in ("module", "object"):
            # A pickled nn.Module (or TorchScript module, or other object): attributes, not keys.
            if child.key == "__dict__":
                continue
            expr += _attr(str(child.key).rsplit(".", 1)[-1] if pk == "module" else child.key)
        elif pk == "mapping" and parent.key == "__dict__":
            expr += _attr(child.key)
        elif pk in ("mapping", "state_dict", "group", "optimizer", "param_state", "scheduler"):
            lit = py_literal(child.key)
            if lit is None:
                unreachable = "a key without a Python literal"
                break
            expr += f"[{lit}]"
        elif pk in ("sequence", "values"):
            expr += f"[{child.key}]"
        elif pk == "set":
            unreachable = "an item of a set (sets have no order or index)"
            break
        else:
            unreachable = f"a part of a {parent.kind}"
            break

    if ckpt.format == "torchscript":
        notes.append("# A TorchScript archive: torch.jit.load runs the code stored in it, and")
        notes.append("# torch.load(..., weights_only=True) cannot read it. Load it only if you trust the file.")
        call = 'torch.jit.load(PATH, map_location="cpu")'
    else:
        unknown, dangerous = stand_in_classes(ckpt)
        modules = [sd.class_name for sd in node.ctx.analysis.state_dicts if sd.kind == "module"]
        if modules or unknown or dangerous:
            if modules:
                why = f"it pickles a whole model object ({modules[0]})"
            else:
                shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
                why = f"it names classes outside torch's allowlist ({shown})"
            notes.append(f"# weights_only=True cannot load this file: {why}.")
            notes.append("# weights_only=False runs code the file names and needs those classes importable:")
            notes.append("# do that only for a file you trust.")
            if dangerous:
                notes.append("# WARNING: this file names dangerous callables (" +
                             ", ".join(n for n, _ in dangerous[:3]) + "); never load it with weights_only=False.")
            call = 'torch.load(PATH, map_location="cpu", weights_only=False)'
        else:
            call = 'torch.load(PATH, map_location="cpu", weights_only=True)'

    lines = ["import torch", "", f"PATH = {path}"] + notes
    if group_prefix is not None:
        lines.append(f"state = {call}{expr}")
        lines.append(f"value = {{k: v for k, v in state.items() if k.startswith({py_literal(group_prefix)})}}")
    else:
        lines.append(f"value = {call}{expr}")
    if unreachable:
        lines.append(f"# (the entry lies inside {unreachable}; this loads the nearest container)")
    return "\n".join(lines) + "\n"


def _safetensors_snippet(path: str, node: Node) -> str:
    lines = ["from safetensors import safe_open", "", f"PATH = {path}",
             'with safe_open(PATH, framework="pt", device="cpu") as f:']
    if node.kind == "tensor":
        lines.append(f"    value = f.get_tensor({py_literal(node.key)})")
    elif node.kind == "group":
        lines.append(f"    value = {{k: f.get_tensor(k) for k in f.keys() if k.startswith({json.dumps(node.key + '.')})}}")
    else:
        lines.append("    value = {k: f.get_tensor(k) for k in f.keys()}")
    return "\n".join(lines) + "\n"


def key_path_text(node: Node) -> str:
    """The key path as Python subscripts, e.g. ``["model_state_dict"]["conv1.weight"]``."""
    parts = []
    for k in node.path:
        lit = py_literal(k)
        parts.append(f"[{lit}]" if lit is not None else f"[<{type(k).__name__}>]")
    return "".join(parts)
