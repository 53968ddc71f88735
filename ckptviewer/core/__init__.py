"""The Qt-free core: readers, the safe unpickler, interpretation, statistics, edits and exports."""
from .errors import CheckpointError
from .formats import open_checkpoint

__all__ = ["CheckpointError", "open_checkpoint"]
