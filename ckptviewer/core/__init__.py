"""The Qt-free core, in layers from the bottom: ``util`` (errors, progress, text) -> ``source`` (where bytes
come from) -> ``model`` (what is inside a checkpoint) -> ``read`` (files into models) -> ``write`` (models into
files) -> ``edit`` (operations, documents, recipes) -> ``analyze`` (statistics, diffs, scans, warm starts).
A module imports only from its own layer or those below it (``tests/test_layout.py`` checks it).

``open_checkpoint`` and ``CheckpointError`` are re-exported here for scripts.
"""
from .read.open import open_checkpoint
from .util.errors import CheckpointError

__all__ = ["CheckpointError", "open_checkpoint"]
