"""ckptviewer: a safe, lazy browser for PyTorch checkpoints.

Importing this package imports neither torch nor Qt: the reader needs neither, and the first window
must appear before torch would have finished importing.
"""
__version__ = "0.1.0"
