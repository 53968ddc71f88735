"""Dialogs that edit or export a checkpoint.

Each is a small state object (plain Python, testable without Qt) and a thin view with one typed
entry point, e.g. ``RenameDialog.ask(parent, root) -> Rename | None``. Tests build the view, set its
widgets and read ``step()`` (or ``steps()``, ``request()``) without calling ``exec()``. Previews come
from the core (``rename_preview``, ``warmstart.compare``/``suggest``, ``plan_export``); the dialogs
never reimplement an operation.
"""
from .export import ExportDialog, ExportState
from .remap import RemapDevicesDialog, RemapState
from .rename import RenameDialog, RenameState
from .strip import StripPrefixDialog, StripState
from .warm_start import WarmStartDialog, WarmStartState

__all__ = ["ExportDialog", "ExportState", "RemapDevicesDialog", "RemapState", "RenameDialog", "RenameState",
           "StripPrefixDialog", "StripState", "WarmStartDialog", "WarmStartState"]
