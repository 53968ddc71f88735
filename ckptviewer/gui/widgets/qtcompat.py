"""Workarounds for defects of the installed Qt binding, each detected at runtime, never assumed.

PySide6 6.12.0 on Python < 3.12 loses references to two singletons (measured; 6.11.3 does not):

* every Python-side ``SignalInstance.emit()`` drops one reference to ``True``;
* every ``data()``/``headerData()`` override that returns ``None`` (no value for a role, the normal
  answer for most roles) drops one reference to ``None``.

After enough of them (ours, pytest-qt's, pyqtgraph's mouse-move signals, every paint of the tree)
CPython aborts with "Fatal Python error: bool_dealloc" or "none_dealloc", usually at exit. Python
>= 3.12 makes both objects immortal, which hides the defect.

:func:`guard` measures each defect once; where present it keeps a reserve of references to the
singleton that is never freed (so the interpreter's teardown cannot drive the count to zero), and
:func:`top_up` renews a reserve whenever the count runs low. Cost: 8 bytes per lost reference.
"""
from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, Qt, Signal

CHUNK = 1_000_000
LOW_WATER = 500_000
PROBES = 32
_reserves: list[list] = []
_leaking: dict[str, bool] | None = None
_SINGLETONS = {"True": True, "None": None}


class _Probe(QObject):
    fired = Signal(object)


class _ProbeModel(QAbstractListModel):
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else 1

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        return None


def _measure() -> dict[str, bool]:
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(PROBES):
        probe.fired.emit(0)
    true_leaks = before - sys.getrefcount(True) >= PROBES
    model = _ProbeModel()
    index = model.index(0, 0)
    before = sys.getrefcount(None)
    for _ in range(PROBES):
        index.data(Qt.ItemDataRole.ToolTipRole)
    none_leaks = before - sys.getrefcount(None) >= PROBES
    return {"True": true_leaks, "None": none_leaks}


def leaks() -> dict[str, bool]:
    """Which singletons this binding loses references to (measured on first call)."""
    global _leaking
    if _leaking is None:
        _leaking = _measure()
        for name, present in _leaking.items():
            if present:
                _add_reserve(name)
    return _leaking


def _add_reserve(name: str) -> None:
    chunk = [_SINGLETONS[name]] * CHUNK
    # Never freed: releasing the reserve at exit would give back references the binding already took.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(chunk))
    _reserves.append(chunk)


def top_up() -> None:
    """Renew a reserve whose singleton's count has run low (cheap; call it often)."""
    for name, present in leaks().items():
        if present and sys.getrefcount(_SINGLETONS[name]) < LOW_WATER:
            _add_reserve(name)


def guard() -> dict[str, bool]:
    """Detect the defects and protect the process where present; returns what was found."""
    found = leaks()
    top_up()
    return found
