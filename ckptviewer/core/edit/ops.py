"""Edits to a checkpoint as data-in, data-out steps: select, drop, strip prefix, rename, remap, cast.

Each step is a small frozen dataclass with ``apply(root, log) -> root``: it returns a new object graph
and never changes its input (containers on the way to a change are copied; everything else is
shared, so a dict saved twice stays one dict). ``log`` collects what the step did, in words, and the
key paths it touched, so a dialog can preview a step and the tree can mark changed keys. The GUI
wraps steps in undo commands; the CLI and recipes run them directly; ``to_json``/``from_json`` give
recipes a stable form.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generator

from ..model import keypath
from ..model.cast import CASTABLE, cast_dtype
from ..model.interpret import WRAPPER_PREFIXES, detect_prefix, is_optimizer_state, is_state_dict
from ..model.objects import PickledDict, StandIn, TorchSize
from ..model.tensor import TensorRef
from ..model.walk import MAX_DEPTH, module_attrs, module_state_dict, unwrap
from ..util.errors import OperationError


@dataclass
class EditLog:
    """What steps did: one line each, and the output paths they changed."""

    lines: list[str] = field(default_factory=list)
    changed: set[tuple] = field(default_factory=set)

    def say(self, text: str) -> None:
        self.lines.append(text)


# -- copy-on-write helpers ------------------------------------------------------------------------------
def copy_container(value: Any) -> Any:
    """A shallow copy that keeps the container's kind (OrderedDict with its attributes, tuple, list...)."""
    if isinstance(value, PickledDict):
        out = PickledDict(value)
        out.type_name = value.type_name
        if value.__dict__.get("_pickle_attrs"):
            out.pickle_attrs.update(value.pickle_attrs)
        return out
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, TorchSize):
        return value
    if isinstance(value, tuple):
        return tuple(value)
    if isinstance(value, StandIn):
        out = StandIn(value.cls, value.args, value.kwargs, value.via)
        out.state = dict(value.state) if isinstance(value.state, dict) else value.state
        out.items = list(value.items) if value.items else value.items
        out.list_items = list(value.list_items) if value.list_items else value.list_items
        return out
    return value


def map_tensors(root: Any, fn) -> Any:
    """Apply ``fn(path, tensor) -> tensor`` to every tensor, rebuilding only containers that change.

    Shared containers stay shared in the output; cycles are cut (the container is kept as it was).
    Pickled modules are walked through their attribute dicts.
    """
    memo: dict[int, Any] = {}
    active: set[int] = set()

    def visit(value: Any, path: tuple) -> Any:
        value = unwrap(value)
        if isinstance(value, TensorRef):
            return fn(path, value)
        if not isinstance(value, (dict, list, tuple, StandIn)) or isinstance(value, TorchSize):
            return value
        key = id(value)
        if key in memo:
            return memo[key]
        if key in active or len(path) > MAX_DEPTH:
            return value
        active.add(key)
        try:
            if isinstance(value, dict):
                new_items = [(k, visit(v, path + (k,))) for k, v in value.items()]
                changed = any(nv is not ov for (_, nv), ov in zip(new_items, value.values()))
                out = value
                if changed:
                    out = copy_container(value)
                    for k, v in new_items:
                        out[k] = v
            elif isinstance(value, (list, tuple)):
                new = [visit(v, path + (i,)) for i, v in enumerate(value)]
                changed = any(n is not o for n, o in zip(new, value))
                out = (type(value)(new) if isinstance(value, list) else tuple(new)) if changed else value
            else:  # StandIn
                out = value
                state = value.state
                if isinstance(state, dict):
                    new_state = {k: visit(v, path + (k,)) for k, v in state.items()}
                    if any(new_state[k] is not state[k] for k in state):
                        out = copy_container(value)
                        out.state = new_state
        finally:
            active.discard(key)
        memo[key] = out
        return out

    return visit(root, ())


def find_state_dicts(root: Any, at: str | None = None) -> list[tuple[tuple, dict]]:
    """State_dicts to edit: the one at ``at``, or every state_dict in the tree (not inside optimizers)."""
    if at is not None:
        path, value = keypath.resolve(root, at)
        if module_attrs(value) is not None:
            raise OperationError(f"{keypath.format_path(path)} is a pickled module; select its state_dict first "
                                 f"(--select {keypath.format_path(path)})")
        if not isinstance(value, dict):
            raise OperationError(f"{keypath.format_path(path) or 'the root'} is not a mapping of names to tensors")
        return [(path, value)]
    found: list[tuple[tuple, dict]] = []
    todo = [((), unwrap(root))]
    seen: set[int] = set()
    while todo:
        path, value = todo.pop(0)
        if id(value) in seen or len(path) > 8:
            continue
        seen.add(id(value))
        if is_optimizer_state(value):
            continue
        if is_state_dict(value):
            found.append((path, value))
            continue
        if isinstance(value, dict):
            todo.extend((path + (k,), unwrap(v)) for k, v in value.items() if isinstance(unwrap(v), (dict, list, tuple)))
        elif isinstance(value, (list, tuple)) and not isinstance(value, TorchSize):
            todo.extend((path + (i,), unwrap(v)) for i, v in enumerate(value) if isinstance(unwrap(v), (dict, list, tuple)))
    return found


def replace_at(root: Any, path: tuple, new_value: Any) -> Any:
    """A copy of ``root`` with the value at ``path`` replaced (containers along the path copied)."""
    if not path:
        return new_value
    root = unwrap(root)
    head, rest = path[0], path[1:]
    out = copy_container(root)
    if isinstance(out, tuple):
        items = list(out)
        items[head] = replace_at(items[head], rest, new_value)
        return tuple(items)
    if isinstance(out, StandIn) and isinstance(out.state, dict):
        out.state[head] = replace_at(out.state[head], rest, new_value)
        return out
    out[head] = replace_at(out[head], rest, new_value)
    return out


def _rename_metadata(sd: Any, new_sd: PickledDict | dict, key_fn) -> str | None:
    """Carry a state_dict's ``_metadata`` (module path -> version info) through a key rename.

    ``key_fn(module_path) -> new path or None``; returns a note when the metadata had to be dropped.
    """
    if not isinstance(sd, PickledDict) or not isinstance(new_sd, PickledDict):
        return None
    meta = sd.__dict__.get("_pickle_attrs", {}).get("_metadata")
    if not isinstance(meta, dict):
        return None
    new_meta = PickledDict()
    for k, v in meta.items():
        nk = key_fn(k) if isinstance(k, str) else None
        if nk is None:
            new_sd.pickle_attrs.pop("_metadata", None)
            return "the state_dict's _metadata (per-module version numbers) no longer fits the keys and was dropped"
        new_meta[nk] = v
    new_sd.pickle_attrs["_metadata"] = new_meta
    return None


# -- steps ----------------------------------------------------------------------------------------------
class Step:
    kind: ClassVar[str] = ""

    def apply(self, root: Any, log: EditLog) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def to_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        return {"op": self.kind, **_jsonable(data)}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclass(frozen=True)
class Select(Step):
    """Make the value at ``path`` the new root (a pickled module becomes its state_dict)."""

    path: str
    kind: ClassVar[str] = "select"

    def apply(self, root, log):
        path, value = keypath.resolve(root, self.path)
        if module_attrs(value) is not None:
            module = value
            value = PickledDict(module_state_dict(module))
            log.say(f"selected {keypath.format_path(path) or 'the root'}: the state_dict of pickled module "
                    f"{module.qualname} ({len(value)} entries)")
        else:
            log.say(f"selected {keypath.format_path(path) or 'the root'}")
        return value

    def describe(self):
        return f"Select {self.path}"


@dataclass(frozen=True)
class Drop(Step):
    """Remove entries (key paths; the last component may be a glob such as ``*.num_batches_tracked``)."""

    paths: tuple[str, ...]
    kind: ClassVar[str] = "drop"

    def apply(self, root, log):
        # Resolve every path against the input first, then copy each parent once: dropping the 500 keys a
        # warm-start fit names costs one copy of the state_dict, not 500.
        groups: dict[tuple, tuple[Any, list]] = {}
        lines: list[str] = []
        for text in self.paths:
            comps = keypath.parse(text)
            if not comps:
                raise OperationError("cannot drop the root; use select to keep a part of it")
            parent_path, parent = keypath.resolve(root, comps[:-1])
            if module_attrs(parent) is not None:
                raise OperationError(f"cannot drop inside pickled module {keypath.format_path(parent_path)}; "
                                     f"select its state_dict first")
            last = comps[-1]
            if isinstance(parent, dict):
                if any(ch in last for ch in "*?[") and last not in parent:
                    keys = [k for k in parent if isinstance(k, str) and fnmatch.fnmatchcase(k, last)]
                else:
                    keys = [keypath._match_key(parent, last)] if _has(parent, last) else []
                if not keys:
                    where = keypath.format_path(parent_path) or "the root"
                    raise OperationError(f"nothing named {last!r} under {where}")
            elif isinstance(parent, (list, tuple)):
                keys = [keypath._match_key(parent, last) % max(len(parent), 1)]
            else:
                raise OperationError(f"{keypath.format_path(parent_path)} has no entries to drop")
            groups.setdefault(parent_path, (parent, []))[1].extend(keys)
            lines.append(f"dropped {len(keys)} entries matching {text!r}" if len(keys) > 1
                         else f"dropped {keypath.format_path(parent_path + (keys[0],))}")
        for parent_path, (parent, keys) in groups.items():
            keys = list(dict.fromkeys(keys))
            if isinstance(parent, dict):
                new_parent = copy_container(parent)
                for k in keys:
                    del new_parent[k]
                    log.changed.add(parent_path + (k,))
            else:
                gone = set(keys)
                items = [x for i, x in enumerate(parent) if i not in gone]
                new_parent = type(parent)(items) if isinstance(parent, list) else tuple(items)
            root = replace_at(root, parent_path, new_parent)
            if len(lines) > 8:
                where = keypath.format_path(parent_path) or "the root"
                shown = ", ".join(str(k) for k in keys[:5]) + (f", and {len(keys) - 5} more" if len(keys) > 5 else "")
                log.say(f"dropped {len(keys)} entr{'y' if len(keys) == 1 else 'ies'} of {where}: {shown}")
        if len(lines) <= 8:
            for line in lines:
                log.say(line)
        return root

    def describe(self):
        return "Drop " + ", ".join(self.paths)


def _has(parent: dict, comp: str) -> bool:
    try:
        keypath._match_key(parent, comp)
        return True
    except (KeyError, ValueError):
        return False


# Rename rules: ("add_prefix", p) ("remove_prefix", p) ("replace", old, new) ("regex", pattern, repl)
# ("map", {old: new}). They apply in order to each key.
RULE_KINDS = {"add_prefix": 1, "remove_prefix": 1, "replace": 2, "regex": 2, "map": 1}


def check_rule(rule: tuple) -> tuple:
    if not isinstance(rule, (tuple, list)) or not rule or rule[0] not in RULE_KINDS:
        raise OperationError(f"unknown rename rule {rule!r}; use one of {', '.join(RULE_KINDS)}")
    if len(rule) - 1 != RULE_KINDS[rule[0]]:
        raise OperationError(f"rename rule {rule[0]} takes {RULE_KINDS[rule[0]]} argument(s)")
    if rule[0] == "regex":
        try:
            re.compile(rule[1])
        except re.error as e:
            raise OperationError(f"bad regular expression {rule[1]!r}: {e}") from None
    if rule[0] == "map" and not isinstance(rule[1], dict):
        raise OperationError("a mapping rule needs a table of old -> new names")
    return tuple(rule) if rule[0] != "map" else (rule[0], dict(rule[1]))


def apply_rules(key: str, rules: tuple) -> str:
    for rule in rules:
        kind = rule[0]
        if kind == "add_prefix":
            key = rule[1] + key
        elif kind == "remove_prefix":
            if key.startswith(rule[1]):
                key = key[len(rule[1]):]
        elif kind == "replace":
            key = key.replace(rule[1], rule[2])
        elif kind == "regex":
            key = re.sub(rule[1], rule[2], key)
        elif kind == "map":
            key = rule[1].get(key, key)
    return key


@dataclass
class RenameRow:
    old: str
    new: str
    collision: bool = False

    @property
    def changed(self) -> bool:
        return self.old != self.new


def rename_preview(keys: list, rules: tuple) -> list[RenameRow]:
    """old -> new for every key, with collisions (two keys becoming one, or one taking an untouched key's
    name) flagged before anything is written."""
    steps = rename_preview_steps(keys, rules)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def rename_preview_steps(keys: list, rules: tuple, chunk: int = 8192) -> Generator[None, None, list[RenameRow]]:
    """:func:`rename_preview` that yields between chunks of keys (cancel points for a worker)."""
    rows: list[RenameRow] = []
    for start in range(0, len(keys), chunk):
        rows.extend(RenameRow(k, apply_rules(k, rules) if isinstance(k, str) else k)
                    for k in keys[start:start + chunk])
        yield None
    seen: dict[Any, list[RenameRow]] = {}
    for r in rows:
        seen.setdefault(r.new, []).append(r)
    for group in seen.values():
        if len(group) > 1:
            for r in group:
                r.collision = True
    return rows


def _rename_state_dict(sd: dict, key_fn, what: str, log: EditLog, path: tuple, rules_for_meta=None) -> dict:
    rows = [RenameRow(k, key_fn(k) if isinstance(k, str) else k) for k in sd]
    news: dict[Any, list[str]] = {}
    for r in rows:
        news.setdefault(r.new, []).append(r.old)
    clashes = {n: olds for n, olds in news.items() if len(olds) > 1}
    if clashes:
        n, olds = next(iter(clashes.items()))
        raise OperationError(f"{what} would give {len(clashes)} name collision(s), e.g. {', '.join(map(str, olds[:3]))}"
                             f" -> {n}; nothing was changed", hint="Adjust the rules (the preview marks collisions).")
    out = PickledDict() if isinstance(sd, PickledDict) else {}
    if isinstance(sd, PickledDict):
        out.type_name = sd.type_name
        if sd.__dict__.get("_pickle_attrs"):
            out.pickle_attrs.update(sd.pickle_attrs)
    for r in rows:
        out[r.new] = sd[r.old]
        if r.changed:
            log.changed.add(path + (r.new,))
    if rules_for_meta is not None:
        note = _rename_metadata(sd, out, rules_for_meta)
        if note:
            log.say(note)
    return out


def _rename_param_names(root: Any, key_fn, log: EditLog) -> Any:
    """Optimizers that saved ``param_names`` follow the rename, so names and weights stay paired."""
    todo = [((), root)]
    while todo:
        path, value = todo.pop()
        value = unwrap(value)
        if is_optimizer_state(value):
            groups = value["param_groups"]
            if any(isinstance(g.get("param_names"), list) for g in groups):
                new_groups = []
                for g in groups:
                    g2 = dict(g)
                    if isinstance(g.get("param_names"), list):
                        g2["param_names"] = [key_fn(n) if isinstance(n, str) else n for n in g["param_names"]]
                    new_groups.append(g2)
                root = replace_at(root, path + ("param_groups",), new_groups)
                log.say(f"renamed the saved param_names of the optimizer at {keypath.format_path(path) or 'the root'}")
        elif isinstance(value, dict) and len(path) < 6:
            todo.extend((path + (k,), v) for k, v in value.items() if isinstance(unwrap(v), (dict, list)))
        elif isinstance(value, list) and len(path) < 6:
            todo.extend((path + (i,), v) for i, v in enumerate(value) if isinstance(unwrap(v), dict))
    return root


@dataclass(frozen=True)
class StripPrefix(Step):
    """Remove a prefix every key shares: ``module.`` (DataParallel/DDP), ``_orig_mod.`` (torch.compile)...

    ``prefix=None`` detects the wrapper prefixes; ``at`` limits the step to one state_dict.
    """

    prefix: str | None = None
    at: str | None = None
    kind: ClassVar[str] = "strip_prefix"

    def apply(self, root, log):
        targets = find_state_dicts(root, self.at)
        if not targets:
            raise OperationError("there is no state_dict to strip a prefix from")
        did = False
        for path, sd in targets:
            keys = [k for k in sd if isinstance(k, str)]
            prefix = self.prefix
            if prefix is None:
                wrapper, _ = detect_prefix(keys)
                if wrapper is None:
                    continue
                prefix, label = wrapper
            else:
                label = dict(WRAPPER_PREFIXES).get(prefix, "chosen prefix")
            having = [k for k in keys if k.startswith(prefix)]
            if not having:
                log.say(f"no key of {keypath.format_path(path) or 'the root'} starts with {prefix!r}")
                continue
            left = len(sd) - len(having)
            new_sd = _rename_state_dict(
                sd, lambda k: k[len(prefix):] if isinstance(k, str) and k.startswith(prefix) else k,
                f"stripping {prefix!r}", log, path,
                rules_for_meta=lambda m: _strip_module_path(m, prefix))
            root = replace_at(root, path, new_sd)
            root = _rename_param_names(root, lambda k: k[len(prefix):] if k.startswith(prefix) else k, log)
            did = True
            where = keypath.format_path(path) or "the root"
            log.say(f"stripped {prefix!r} ({label}) from {len(having)} keys of {where}"
                    + (f"; {left} key{'s' if left != 1 else ''} without it left as {'they are' if left != 1 else 'it is'}: "
                       + ", ".join(str(k) for k in list(k for k in sd if k not in having)[:5])
                       if left else ""))
        if not did and self.prefix is None:
            log.say("no wrapper prefix (module., _orig_mod., ...) is shared by all keys; nothing was stripped")
        return root

    def describe(self):
        return f"Strip prefix {self.prefix or '(detected)'}" + (f" in {self.at}" if self.at else "")


def _strip_module_path(module_path: str, prefix: str) -> str | None:
    bare = prefix.rstrip(".")
    if module_path == bare:
        return ""
    if module_path.startswith(prefix):
        return module_path[len(prefix):]
    if module_path == "":
        return ""
    return module_path


@dataclass(frozen=True)
class Rename(Step):
    """Rename state_dict keys with ordered rules (see ``RULE_KINDS``); refuse collisions."""

    rules: tuple
    at: str | None = None
    kind: ClassVar[str] = "rename"

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(check_rule(r) for r in self.rules))

    def apply(self, root, log):
        targets = find_state_dicts(root, self.at)
        if not targets:
            raise OperationError("there is no state_dict to rename keys in")
        prefix_only = all(r[0] in ("add_prefix", "remove_prefix") for r in self.rules)
        for path, sd in targets:
            rows = rename_preview(list(sd), self.rules)
            n = sum(r.changed for r in rows)
            meta_fn = (lambda m: _module_path_rules(m, self.rules)) if prefix_only else (lambda m: None)
            new_sd = _rename_state_dict(sd, lambda k: apply_rules(k, self.rules), "the renaming", log, path,
                                        rules_for_meta=meta_fn)
            root = replace_at(root, path, new_sd)
            root = _rename_param_names(root, lambda k: apply_rules(k, self.rules), log)
            log.say(f"renamed {n} of {len(rows)} keys of {keypath.format_path(path) or 'the root'}")
        return root

    def describe(self):
        return "Rename keys: " + "; ".join(rule_text(r) for r in self.rules)

    def to_json(self):
        return {"op": self.kind, "rules": [list(r) for r in self.rules], "at": self.at}


def _module_path_rules(module_path: str, rules: tuple) -> str | None:
    """A module path (``conv1``, ``""`` for the root) through prefix rules, as a key ``conv1.x`` would go."""
    probe = apply_rules(module_path + ".\x00" if module_path else "\x00", rules)
    if not probe.endswith("\x00"):
        return None
    out = probe[:-1]
    return out[:-1] if out.endswith(".") else out


def rule_text(rule: tuple, limit: int = 60) -> str:
    """A rename rule in words (file-provided text made safe): "Add prefix 'backbone.'"."""
    from ..util.textsafe import safe_text
    kind = rule[0]
    if kind == "add_prefix":
        return f"Add prefix '{safe_text(rule[1], limit)}'"
    if kind == "remove_prefix":
        return f"Remove prefix '{safe_text(rule[1], limit)}'"
    if kind == "replace":
        return f"Replace '{safe_text(rule[1], limit)}' with '{safe_text(rule[2], limit)}'"
    if kind == "regex":
        return f"Regex '{safe_text(rule[1], limit)}' → '{safe_text(rule[2], limit)}'"
    n = len(rule[1])
    return f"Mapping table ({n} name{'s' if n != 1 else ''})"


def device_matches(rule_src: str, device: str) -> bool:
    if rule_src in ("*", "any"):
        return True
    if ":" in rule_src:
        return device == rule_src
    return device.split(":", 1)[0] == rule_src


@dataclass(frozen=True)
class RemapDevice(Step):
    """Rewrite saved locations like ``map_location``: ``(("cuda:1", "cuda:0"),)``, ``(("cuda", "cpu"),)``.

    The first matching rule wins; ``cuda`` matches every ``cuda:N``; ``*`` matches anything. Model
    and optimizer state alike: every tensor in the tree.
    """

    mapping: tuple
    kind: ClassVar[str] = "remap_device"

    def __post_init__(self):
        pairs = tuple((str(a), str(b)) for a, b in self.mapping)
        for _, dst in pairs:
            if not re.fullmatch(r"(cpu|cuda|mps|xpu|meta|hpu|npu|mtia)(:\d+)?", dst):
                raise OperationError(f"{dst!r} is not a device (try cpu, cuda, cuda:0)")
        object.__setattr__(self, "mapping", pairs)

    def apply(self, root, log):
        counts: dict[tuple[str, str], int] = {}

        def fn(path, t: TensorRef):
            for src, dst in self.mapping:
                if device_matches(src, t.device):
                    if t.device == dst:
                        return t
                    counts[(t.device, dst)] = counts.get((t.device, dst), 0) + 1
                    log.changed.add(path)
                    return t.derive(device=dst)
            return t

        root = map_tensors(root, fn)
        if counts:
            for (a, b), n in sorted(counts.items()):
                log.say(f"moved {n} tensor{'s' if n != 1 else ''} from {a} to {b}")
        else:
            log.say("no tensor is on a device these rules name")
        return root

    def describe(self):
        return "Remap devices: " + ", ".join(f"{a} -> {b}" for a, b in self.mapping)

    def to_json(self):
        return {"op": self.kind, "mapping": {a: b for a, b in self.mapping}}


COUNTER_NAMES = {"num_batches_tracked", "step", "_step_count", "last_epoch"}


@dataclass(frozen=True)
class Cast(Step):
    """Cast floating-point tensors to ``dtype``; integers, bools and counters (``num_batches_tracked``,
    an optimizer's ``step``) stay as they are."""

    dtype: str
    kind: ClassVar[str] = "cast"

    def __post_init__(self):
        object.__setattr__(self, "dtype", cast_dtype(self.dtype).name)

    def apply(self, root, log):
        dst = cast_dtype(self.dtype)
        cast: dict[str, int] = {}
        kept: dict[str, int] = {}

        def fn(path, t: TensorRef):
            name = str(path[-1]) if path else ""
            last = name.rsplit(".", 1)[-1]
            if t.dtype.name == dst.name:
                return t
            if t.dtype.name not in CASTABLE or last in COUNTER_NAMES:
                why = f"{t.dtype.name} {last}" if last in COUNTER_NAMES else t.dtype.name
                kept[why] = kept.get(why, 0) + 1
                return t
            cast[t.dtype.name] = cast.get(t.dtype.name, 0) + t.numel
            log.changed.add(path)
            return t.derive(dtype=dst)

        root = map_tensors(root, fn)
        if cast:
            log.say("cast " + ", ".join(f"{n:,} {src} elements" for src, n in cast.items()) + f" to {dst.name}")
        else:
            log.say(f"no floating-point tensor needed casting to {dst.name}")
        if kept:
            log.say("left alone: " + ", ".join(f"{n} {why}" for why, n in kept.items()))
        return root

    def describe(self):
        return f"Cast floating tensors to {self.dtype}"


@dataclass(frozen=True)
class SelectModel(Step):
    """Keep the model's weights: the one state_dict (or pickled module) in the file.

    When a file holds several (a GAN, an EMA copy), the one named ``prefer`` wins if given, else a
    key that says model / state_dict / net, else the one with the most parameters, and the log says
    which. Optimizer states never count. A file that is already a state_dict stays as it is.
    """

    prefer: str | None = None
    kind: ClassVar[str] = "select_model"

    def apply(self, root, log):
        chosen, why = self.choose(root)
        where = keypath.format_path(chosen.path) or "the root"
        log.say(f"selected the model weights at {where} ({why})")
        if not chosen.path and chosen.kind == "state_dict":
            return unwrap(root)
        return Select(keypath.format_path(chosen.path)).apply(root, EditLog())

    def choose(self, root: Any):
        """(the StateDictInfo of the model's weights, why that one) under ``root``."""
        from ..model.interpret import analyze
        found = [sd for sd in analyze(unwrap(root)).state_dicts if sd.kind in ("state_dict", "module")]
        if not found:
            raise OperationError("the file holds no state_dict or pickled module to select")
        if len(found) == 1:
            chosen, why = found[0], "the only model weights in the file"
        else:
            named = [sd for sd in found if self.prefer is not None and keypath.format_path(sd.path) == self.prefer]
            hinted = [sd for sd in found if sd.path and re.search(r"(?i)model|state_dict|^net$|weights",
                                                                   str(sd.path[-1]))
                      and not re.search(r"(?i)ema|optim|teacher", str(sd.path[-1]))]
            if named:
                chosen, why = named[0], "as asked"
            elif len(hinted) == 1:
                chosen, why = hinted[0], f"its key names a model (of {len(found)} candidates)"
            else:
                chosen = max(found, key=lambda sd: sd.n_parameters)
                why = f"the largest of {len(found)} candidates"
        return chosen, why

    def describe(self):
        return "Select the model's state_dict" + (f" (prefer {self.prefer})" if self.prefer else "")


def tensors_only_selection(root: Any) -> tuple[Step | None, str]:
    """For an output that holds tensors only (safetensors) from a file that holds other values too (a
    training checkpoint): the step that keeps the model's state_dict when there is exactly one, and why;
    ``(None, "")`` when nothing needs choosing. Several candidates raise an error naming ``--select`` for
    each, so the user picks instead of a guess."""
    from ..model.interpret import analyze
    from ..model.walk import iter_leaves
    root = unwrap(root)
    if is_state_dict(root) or not any(not isinstance(v, TensorRef) for _, v in iter_leaves(root)):
        return None, ""
    models = [sd for sd in analyze(root).state_dicts if sd.kind in ("state_dict", "module")]
    if len(models) == 1 and models[0].path:
        where = keypath.format_path(models[0].path)
        return Select(where), (f"safetensors holds tensors only: selected {where}, the only model state_dict in "
                               f"the file (--select PATH chooses another part; --non-tensors drop keeps every "
                               f"tensor of the file)")
    if len(models) > 1:
        options = " or ".join(f"--select {keypath.format_path(sd.path) or '/'}" for sd in models[:6])
        raise OperationError(f"safetensors holds tensors only, and this file holds {len(models)} state_dicts "
                             f"beside other values: choose one with {options}",
                             hint="Or pass --non-tensors drop to write every tensor of the file.")
    return None, ""


@dataclass(frozen=True)
class WeightsOnlySafe(Step):
    """Make the tree loadable by plain ``torch.load`` with its defaults (the weights-only unpickler and its
    default allowlist): objects become dicts of their fields, pickled modules their state_dicts, numpy
    values Python numbers and tensors (see ``plainify``). Tensors are kept as they are."""

    kind: ClassVar[str] = "weights_only_safe"

    def apply(self, root, log):
        from .plainify import make_plain
        return make_plain(root, log.say, log.changed)

    def describe(self):
        return "Make it load with plain torch.load (weights-only safe)"


STEP_TYPES: dict[str, type[Step]] = {c.kind: c for c in (Select, SelectModel, Drop, StripPrefix, Rename,
                                                         RemapDevice, Cast, WeightsOnlySafe)}


def step_from_json(data: dict) -> Step:
    """Build a step from its JSON form; raises OperationError naming what is wrong."""
    if not isinstance(data, dict) or data.get("op") not in STEP_TYPES:
        raise OperationError(f"unknown step {data.get('op') if isinstance(data, dict) else data!r}; "
                             f"use one of {', '.join(STEP_TYPES)}")
    op = data["op"]
    args = {k: v for k, v in data.items() if k != "op"}
    try:
        if op == "select":
            return Select(str(args["path"]))
        if op == "select_model":
            return SelectModel(args.get("prefer"))
        if op == "drop":
            paths = args["paths"]
            return Drop(tuple([paths] if isinstance(paths, str) else map(str, paths)))
        if op == "strip_prefix":
            return StripPrefix(args.get("prefix"), args.get("at"))
        if op == "rename":
            return Rename(tuple(tuple(r) if r[0] != "map" else (r[0], r[1]) for r in args["rules"]), args.get("at"))
        if op == "remap_device":
            mapping = args["mapping"]
            pairs = mapping.items() if isinstance(mapping, dict) else mapping
            return RemapDevice(tuple((a, b) for a, b in pairs))
        if op == "cast":
            return Cast(str(args["dtype"]))
        if op == "weights_only_safe":
            return WeightsOnlySafe()
    except (KeyError, TypeError, IndexError, ValueError) as e:
        if isinstance(e, OperationError):
            raise
        raise OperationError(f"step {op!r} is missing or has a bad argument ({e})") from None
    raise OperationError(f"unknown step {op!r}")  # pragma: no cover


def apply_steps(root: Any, steps: list[Step]) -> tuple[Any, EditLog]:
    """Run ``steps`` in order on ``root``; returns the edited root and the log of what happened."""
    log = EditLog()
    for step in steps:
        try:
            root = step.apply(root, log)
        except ValueError as e:
            raise OperationError(f"{step.describe()}: {e}") from None
    return root, log
