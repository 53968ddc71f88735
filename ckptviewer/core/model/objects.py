"""Inert values the safe unpickler builds instead of the objects a pickle names.

Nothing here runs code from a file. A :class:`GlobalRef` is only a name; calling one in a pickle
(``REDUCE``, ``NEWOBJ``, ``INST``, ``OBJ``) makes a :class:`StandIn` that records the name, the
arguments and any state ``BUILD`` gives it, so the tree can show a pickled ``nn.Module``,
``argparse.Namespace`` or config object without its class being importable.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any


class GlobalRef:
    """A global the pickle names that we did not resolve (never imported, never looked up)."""

    __slots__ = ("module", "name", "dangerous")

    def __init__(self, module: str, name: str, dangerous: bool = False):
        self.module = module
        self.name = name
        self.dangerous = dangerous

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<global {self.qualname}>"


class StandIn:
    """An object of a class we did not import: its name and whatever the pickle gave it.

    ``args`` are the constructor arguments (REDUCE/NEWOBJ/INST/OBJ), ``state`` what BUILD passed
    (usually the instance ``__dict__``; a ``(dict, slots)`` pair for classes with slots),
    ``items``/``list_items`` what SETITEMS/APPENDS added (dict and list subclasses).
    """

    __slots__ = ("cls", "args", "kwargs", "state", "items", "list_items", "via", "derived", "__weakref__")

    def __init__(self, cls: GlobalRef | "StandIn" | Any, args: tuple = (), kwargs: dict | None = None,
                 via: str = "REDUCE"):
        self.cls = cls
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None
        self.items: list[tuple[Any, Any]] | None = None
        self.list_items: list[Any] | None = None
        self.via = via
        self.derived: dict | None = None    # values walks compute from this object once (see walk.py)

    @property
    def qualname(self) -> str:
        cls = self.cls
        if isinstance(cls, GlobalRef):
            return cls.qualname
        if isinstance(cls, StandIn):
            return f"{cls.qualname}(...)"
        return type(cls).__name__

    @property
    def dangerous(self) -> bool:
        return isinstance(self.cls, GlobalRef) and self.cls.dangerous

    @property
    def attributes(self) -> dict | None:
        """The instance dict BUILD gave, when it is one (merging the slots half of a 2-tuple state)."""
        st = self.state
        if isinstance(st, dict):
            return st
        if isinstance(st, tuple) and len(st) == 2 and all(x is None or isinstance(x, dict) for x in st):
            merged = {}
            for part in st:
                if part:
                    merged.update(part)
            return merged
        return None

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


class PickledDict(OrderedDict):
    """``collections.OrderedDict`` (and dict subclasses we rebuild) with the attributes BUILD set.

    torch's state_dict carries ``_metadata`` this way. Attributes are kept in ``pickle_attrs``, a fixed
    name, never set with ``setattr`` under names the file chooses.
    """

    type_name = "collections.OrderedDict"   # instances override it for defaultdict, Counter, ...

    @property
    def pickle_attrs(self) -> dict:
        # Made on first use: a state_dict pickle builds one of these per tensor (its backward hooks).
        attrs = self.__dict__.get("_pickle_attrs")
        if attrs is None:
            attrs = self.__dict__["_pickle_attrs"] = {}
        return attrs


class TorchSize(tuple):
    """``torch.Size``: a tuple of ints that prints like torch does."""

    def __repr__(self) -> str:
        return f"torch.Size({list(self)})"


class TorchDevice:
    __slots__ = ("type", "index")

    def __init__(self, type_: str, index: int | None = None):
        self.type = type_
        self.index = index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device('{self}')"

    def __eq__(self, other):
        return isinstance(other, TorchDevice) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))


class TorchEnum:
    """A named torch constant: a dtype (``torch.float32``), layout or memory format."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __eq__(self, other):
        return isinstance(other, TorchEnum) and (self.kind, self.name) == (other.kind, other.name)

    def __hash__(self):
        return hash((self.kind, self.name))


class Unreadable:
    """Placeholder for a value the pickle describes but we could not rebuild (bad arguments...)."""

    __slots__ = ("what", "reason")

    def __init__(self, what: str, reason: str):
        self.what = what
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unreadable {self.what}: {self.reason}>"


class Buildable:
    """Mixin for values a reconstructor creates that accept ``BUILD`` (numpy arrays in the making,
    dtypes...) and stand for another value once built (``finished``)."""

    def pickle_build(self, state: Any, ctx: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def finished(self) -> Any:  # pragma: no cover - interface
        """The value this helper stands for once the pickle has built it."""
        raise NotImplementedError

