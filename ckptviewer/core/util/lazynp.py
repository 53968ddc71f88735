"""numpy, imported on first use.

Listing a checkpoint needs no array math, and importing numpy is most of what `ckptviewer info` costs
on a big file (85 ms of 130). Modules on that path use this stand-in: ``np.frombuffer`` imports numpy
the first time it is touched. Type checks go through :func:`is_generic` / :func:`is_ndarray`, which
never import it: if numpy is not loaded, no numpy object can exist.
"""
from __future__ import annotations

import sys
from typing import Any


class _Numpy:
    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        import numpy
        return getattr(numpy, name)


np: Any = _Numpy()


def is_generic(value: Any) -> bool:
    """A numpy scalar (np.float64(1.0), np.int64(3)...), without importing numpy."""
    mod = sys.modules.get("numpy")
    return mod is not None and isinstance(value, mod.generic)


def is_ndarray(value: Any) -> bool:
    mod = sys.modules.get("numpy")
    return mod is not None and isinstance(value, mod.ndarray)


def is_integer(value: Any) -> bool:
    """An int or a numpy integer (not a bool)."""
    if type(value) is int:
        return True
    mod = sys.modules.get("numpy")
    return mod is not None and isinstance(value, mod.integer)
