"""Make a checkpoint's tree loadable by plain ``torch.load`` (weights-only, default allowlist): the data of
``convert --weights-only-safe`` and the ``weights_only_safe`` recipe step.

:func:`make_plain` returns a new tree in which every value is one torch's weights-only unpickler builds
by default (dicts, lists, tuples, sets, numbers, strings, bytes, tensors, ``torch.Size``/``device``/
dtypes), and never changes its input (unchanged containers are shared, shared ones stay shared):

- plain-data objects (an ``argparse.Namespace``, a dataclass, any object pickled as its class plus its
  ``__dict__``) become dicts of their fields; dict and list subclasses become dicts and lists of their items;
- pickled ``nn.Module`` objects become their state_dict; each module's class name is kept as a string
  in the state_dict's ``_metadata`` (``_metadata[""]["module_class"]``, the place torch keeps per-module
  versions and ignores other keys), so ``load_state_dict`` still takes it;
- numpy scalars become Python numbers, numpy arrays become tensors (the same values, little-endian),
  numpy dtypes their names; paths become strings; omegaconf configs become dicts and lists of their values;
- any other object becomes a dict of its state with its class name under ``"__class__"`` (and its
  constructor arguments under ``"args"``); a call of a dangerous global becomes a string that names it;
- class references become their names; ``range`` and ``slice`` lists; frozensets sets.

Tensors are never touched: the same handles reach the export, which copies their bytes and verifies them.
Every replacement is reported through ``say``.
"""
from __future__ import annotations

import ntpath
import posixpath
from collections import Counter
from typing import Any, Callable

from ..model import keypath
from ..model.objects import GlobalRef, PickledDict, StandIn, TorchDevice, TorchEnum, TorchSize, Unreadable
from ..model.tensor import TensorRef, tensor_from_numpy
from ..model.walk import MAX_DEPTH, module_attrs, module_state_dict, unwrap
from ..util.lazynp import is_generic, is_ndarray
from ..util.textsafe import safe_text

MAX_LINES = 200          # replacements listed one by one; the rest are counted by kind
CLASS_KEY = "__class__"
_PATHS = {"pathlib.Path", "pathlib.PosixPath", "pathlib.PurePath", "pathlib.PurePosixPath",
          "pathlib._local.PosixPath", "pathlib._local.Path", "pathlib._local.PurePosixPath"}
_WINDOWS_PATHS = {"pathlib.WindowsPath", "pathlib.PureWindowsPath", "pathlib._local.WindowsPath",
                  "pathlib._local.PureWindowsPath"}
_KEEP_DICTS = ("collections.OrderedDict", "collections.Counter")


def class_name(obj: StandIn) -> str:
    """The class an object was made from: a nested class pickled as ``getattr(Outer, "Inner")`` is
    named ``module.Outer.Inner``."""
    cls = obj.cls
    if isinstance(cls, StandIn) and isinstance(cls.cls, GlobalRef) and cls.cls.qualname == "builtins.getattr" \
            and len(cls.args) == 2 and isinstance(cls.args[1], str) and hasattr(cls.args[0], "qualname"):
        return f"{cls.args[0].qualname}.{cls.args[1]}"
    return obj.qualname


class _Plainer:
    def __init__(self, say: Callable[[str], None], changed: set):
        self.say = say
        self.changed = changed
        self.memo: dict[int, Any] = {}
        self.active: set[int] = set()
        self.lines = 0
        self.kinds: Counter = Counter()

    def note(self, path: tuple, kind: str, text: str) -> None:
        self.kinds[kind] += 1
        self.changed.add(path)
        if self.lines < MAX_LINES:
            where = safe_text(keypath.format_path(path) or "the root", 120)
            self.say(f"{where}: {text}")
            self.lines += 1

    def finish(self) -> None:
        total = sum(self.kinds.values())
        if total > self.lines:
            self.say(f"... and {total - self.lines:,} more replacements")
        if total > 1:
            self.say("replaced in all: " + ", ".join(f"{n:,} {k}" for k, n in self.kinds.most_common()))
        if not total:
            self.say("everything is already plain data that torch.load(weights_only=True) accepts by default")

    # -- values -----------------------------------------------------------------------------------------
    def visit(self, v: Any, path: tuple) -> Any:
        v = unwrap(v)
        if v is None or type(v) in (bool, int, float, str, bytes, complex, bytearray):
            return v
        if isinstance(v, TensorRef):
            if v.subclass:
                self.note(path, "tensor subclasses", f"tensor of subclass {safe_text(v.subclass, 80)} written as a "
                          f"plain tensor (same values)")
            return v
        if is_generic(v):
            return self.numpy_scalar(v, path)
        if isinstance(v, (str, bytes, int, float, complex)):    # subclasses of the plain types
            return v
        if is_ndarray(v):
            return self.numpy_array(v, path)
        if type(v).__module__.startswith("numpy") and hasattr(v, "kind") and hasattr(v, "itemsize"):
            self.note(path, "numpy dtypes", f"numpy dtype {v} written as the string {str(v)!r}")
            return str(v)
        if isinstance(v, (TorchSize, TorchDevice)):
            return v
        if isinstance(v, TorchEnum):
            if v.kind in ("dtype", "layout"):
                return v
            self.note(path, "torch constants", f"torch.{v.name} written as the string {v.name!r}")
            return v.name
        if isinstance(v, GlobalRef):
            self.note(path, "class references", f"the reference to {safe_text(v.qualname, 120)} written as its name")
            return v.qualname
        if isinstance(v, range):
            self.note(path, "ranges", f"{v!r} written as a list")
            return list(v)
        if isinstance(v, slice):
            self.note(path, "slices", f"{v!r} written as [start, stop, step]")
            return [self.visit(v.start, path), self.visit(v.stop, path), self.visit(v.step, path)]
        if isinstance(v, Unreadable):
            return v                                    # the export says what is wrong with it
        key = id(v)
        if key in self.memo:
            return self.memo[key]
        if key in self.active or len(path) > MAX_DEPTH:
            return v                                    # a cycle: the export reports it
        self.active.add(key)
        try:
            out = self.container(v, path)
        finally:
            self.active.discard(key)
        self.memo[key] = out
        return out

    def numpy_scalar(self, v: Any, path: tuple) -> Any:
        if v.dtype.kind in "biufcSU":
            out = v.item()
            self.note(path, "numpy scalars", f"numpy {v.dtype} scalar written as a Python {type(out).__name__}")
            return out
        self.note(path, "numpy scalars", f"numpy {v.dtype} scalar written as the string {str(v)!r}")
        return str(v)

    def numpy_array(self, v: Any, path: tuple) -> Any:
        where = keypath.format_path(path) or "root"
        t = tensor_from_numpy(v, where)
        if t is not None:
            self.note(path, "numpy arrays", f"numpy array ({v.dtype}, shape {list(v.shape)}) written as a tensor "
                      f"with the same values")
            return t
        self.note(path, "numpy arrays", f"numpy array of {v.dtype} written as a nested list")
        return self.visit(v.tolist(), path)

    # -- containers -------------------------------------------------------------------------------------
    def container(self, v: Any, path: tuple) -> Any:
        if isinstance(v, StandIn):
            return self.stand_in(v, path)
        if isinstance(v, PickledDict):
            items = self.items(v.items(), path)
            if v.type_name in _KEEP_DICTS:
                out = PickledDict(items)
                out.type_name = v.type_name
                attrs = v.__dict__.get("_pickle_attrs")
                if attrs:
                    out.pickle_attrs.update(attrs)
                return out if any(a is not b for a, b in zip(out.values(), v.values())) \
                    or list(out) != list(v) else v
            factory = v.pickle_attrs.get("default_factory") if v.type_name == "collections.defaultdict" else None
            self.note(path, "dict subclasses", f"{safe_text(v.type_name, 80)} written as a dict"
                      + (f" (its default factory {safe_text(factory, 60)} is not kept)" if factory else ""))
            return dict(items)
        if isinstance(v, dict):
            items = self.items(v.items(), path)
            if len(items) == len(v) and all(nk is ok and nv is ov for (nk, nv), (ok, ov) in zip(items, v.items())):
                return v
            return dict(items)
        if isinstance(v, list):
            new = [self.visit(x, path + (i,)) for i, x in enumerate(v)]
            return v if all(a is b for a, b in zip(new, v)) else new
        if isinstance(v, tuple):
            new = tuple(self.visit(x, path + (i,)) for i, x in enumerate(v))
            return v if all(a is b for a, b in zip(new, v)) else new
        if isinstance(v, frozenset):
            self.note(path, "frozensets", "frozenset written as a set")
            return {self.key(x, path) for x in v}
        if isinstance(v, set):
            new = {self.key(x, path) for x in v}
            return v if new == v and all(type(x) in (int, str, float, bool, bytes) for x in v) else new
        self.note(path, "other values", f"a {type(v).__name__} written as its text")
        return safe_text(v, 1000)

    def items(self, pairs, path: tuple) -> list[tuple[Any, Any]]:
        out = []
        for k, x in pairs:
            nk = self.key(k, path)
            out.append((nk, self.visit(x, path + (k,))))
        return out

    def key(self, k: Any, path: tuple) -> Any:
        if k is None or type(k) in (bool, int, float, str, bytes, complex):
            return k
        new = self.visit(k, path)
        try:
            hash(new)
        except TypeError:
            new = safe_text(new, 200)
        return new

    def stand_in(self, v: StandIn, path: tuple) -> Any:
        name = class_name(v)
        shown = safe_text(name, 120)
        if v.dangerous:
            self.note(path, "dangerous calls", f"a call of {shown}, a dangerous global, replaced by a string that "
                      f"names it (nothing of it is written)")
            return f"<ckptviewer: dangerous call {name} removed>"
        if module_attrs(v) is not None:
            return self.module(v, path, shown)
        if name in _PATHS or name in _WINDOWS_PATHS:
            parts = [a for a in v.args if isinstance(a, str)]
            if parts and len(parts) == len(v.args) and v.state is None:
                text = (ntpath if name in _WINDOWS_PATHS else posixpath).join(*parts)
                self.note(path, "paths", f"{shown} written as the string {safe_text(text, 120)!r}")
                return text
        if name.startswith("omegaconf."):
            found = self.omegaconf(v, path, name)
            if found is not _NO:
                return found
        attrs = v.attributes
        plain_state = attrs is not None and all(isinstance(k, str) for k in attrs)
        if not v.args and not v.kwargs and not v.items and not v.list_items and plain_state \
                and v.state is not None:
            self.note(path, "objects", f"{shown} object written as a dict of its {len(attrs)} field"
                      f"{'s' if len(attrs) != 1 else ''}")
            return {k: self.visit(x, path + (k,)) for k, x in attrs.items()}
        if v.items and not v.args and not v.list_items and (v.state is None or v.state == {}):
            self.note(path, "dict subclasses", f"{shown} (a dict subclass) written as a dict of its "
                      f"{len(v.items)} items")
            return dict(self.items(v.items, path))
        if v.list_items and not v.items and (v.state is None or v.state == {}):
            self.note(path, "list subclasses", f"{shown} (a list subclass) written as a list of its "
                      f"{len(v.list_items)} items")
            return [self.visit(x, path + (i,)) for i, x in enumerate(v.list_items)]
        out: dict = {CLASS_KEY: name}
        if v.args:
            out["args"] = [self.visit(a, path + ("args", i)) for i, a in enumerate(v.args)]
        if v.kwargs:
            out["kwargs"] = {str(k): self.visit(a, path + ("kwargs", k)) for k, a in v.kwargs.items()}
        if plain_state and attrs and not (set(attrs) & {CLASS_KEY, "args", "kwargs", "items", "list_items"}):
            for k, x in attrs.items():
                out[k] = self.visit(x, path + (k,))
        elif v.state is not None:
            out["state"] = self.visit(v.state, path + ("state",))
        if v.items:
            out["items"] = dict(self.items(v.items, path + ("items",)))
        if v.list_items:
            out["list_items"] = [self.visit(x, path + ("list_items", i)) for i, x in enumerate(v.list_items)]
        self.note(path, "objects", f"{shown} object written as a dict of its state with its class name "
                  f"under {CLASS_KEY!r}")
        return out

    def module(self, v: StandIn, path: tuple, shown: str) -> PickledDict:
        sd = PickledDict((k, self.visit(t, path + (k,))) for k, t in module_state_dict(v))
        meta = PickledDict()
        todo = [("", v, 0)]
        seen: set[int] = set()
        while todo:
            prefix, mod, depth = todo.pop()
            attrs = module_attrs(mod)
            if attrs is None or id(mod) in seen or depth > MAX_DEPTH:
                continue
            seen.add(id(mod))
            meta[prefix] = {"module_class": class_name(mod)}
            for name, child in attrs["_modules"].items():
                if child is not None:
                    todo.append((f"{prefix}.{name}" if prefix else name, child, depth + 1))
        sd.pickle_attrs["_metadata"] = meta
        self.note(path, "pickled modules", f"pickled module {shown} written as its state_dict ({len(sd)} entries; "
                  f"the class names are kept in its _metadata under 'module_class'; its other attributes are not "
                  f"kept, as with state_dict())")
        return sd

    def omegaconf(self, v: StandIn, path: tuple, name: str) -> Any:
        """DictConfig / ListConfig / value nodes as the plain values they hold."""
        state = v.state if isinstance(v.state, dict) else {}
        if name.endswith("DictConfig") and isinstance(state.get("_content"), dict):
            self.note(path, "config objects", f"{safe_text(name, 80)} written as a dict of its values")
            return {self.key(k, path): self.node(x, path + (k,)) for k, x in state["_content"].items()}
        if name.endswith("ListConfig") and isinstance(state.get("_content"), (list, tuple)):
            self.note(path, "config objects", f"{safe_text(name, 80)} written as a list of its values")
            return [self.node(x, path + (i,)) for i, x in enumerate(state["_content"])]
        if name.startswith("omegaconf.nodes.") and "_val" in state:
            return self.visit(state["_val"], path)
        return _NO

    def node(self, x: Any, path: tuple) -> Any:
        x = unwrap(x)
        if isinstance(x, StandIn) and class_name(x).startswith("omegaconf.nodes."):
            state = x.state if isinstance(x.state, dict) else {}
            if "_val" in state:
                return self.visit(state["_val"], path)
        return self.visit(x, path)


_NO = object()


def make_plain(root: Any, say: Callable[[str], None], changed: set | None = None) -> Any:
    """The tree with every value replaced by one the weights-only unpickler accepts by default; each
    replacement reported through ``say`` (and its path added to ``changed``)."""
    p = _Plainer(say, changed if changed is not None else set())
    out = p.visit(root, ())
    p.finish()
    return out
