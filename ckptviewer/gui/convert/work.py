"""What the Convert panel runs off the GUI thread. Qt-free.

Each file is one job: :func:`convert_job_steps` wraps the core's ``batch.convert_iter`` (the same code
path as ``ckptviewer convert --recipe``), forwarding its progress and stopping when the panel sets the
job's ``stop`` event. Stopping closes the core generator, which removes the temporary file: a cancelled
job leaves no output behind. :func:`expand_steps` turns dropped files and folders into the list of
checkpoints to convert (``batch.expand_inputs`` and ``batch.without_outputs``), also in a worker,
since listing a folder is file-system work.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Generator

from ...core.edit.batch import ConvertResult, convert_iter, expand_inputs, without_outputs
from ...core.edit.recipes import Recipe
from ...core.write.export import ExportProgress
from ..widgets.gc_pause import gc_paused

CANCELLED = "cancelled"


@dataclass
class Expansion:
    files: list[str]
    passed_over: list[str] = field(default_factory=list)     # non-checkpoint files found in folders
    own_outputs: list[str] = field(default_factory=list)     # this recipe's earlier outputs, left alone


def expand_steps(paths: list[str], recursive: bool, recipe: Recipe) -> Generator[None, None, Expansion]:
    yield None
    files, passed = expand_inputs(paths, recursive=recursive)
    yield None
    files, own = without_outputs(files, recipe)
    return Expansion(files, passed, own)


def convert_job_steps(source: str, recipe: Recipe, stop: threading.Event
                      ) -> Generator[ExportProgress, None, ConvertResult]:
    """Convert ``source``; returns a ConvertResult (status ``cancelled`` when stopped). Errors about the
    file propagate as ``CheckpointError`` (the panel shows their message on the file's row). The cyclic
    collector is paused meanwhile (``loading.gc_paused``): its passes over a big file's objects would
    hold the GIL and freeze the window."""
    with gc_paused():
        return (yield from _convert_job_steps(source, recipe, stop))


def _convert_job_steps(source: str, recipe: Recipe, stop: threading.Event
                       ) -> Generator[ExportProgress, None, ConvertResult]:
    started = time.perf_counter()
    if stop.is_set():
        return ConvertResult(source, None, CANCELLED, "cancelled before it started; nothing was written")
    yield ExportProgress(0, 0, "opening")
    gen = convert_iter(source, recipe)
    try:
        while True:
            if stop.is_set():
                gen.close()               # the export's finally removes its temporary file
                return ConvertResult(source, None, CANCELLED, "cancelled; nothing was written",
                                     seconds=time.perf_counter() - started)
            try:
                step = next(gen)
            except StopIteration as done:
                return done.value
            yield step
    finally:
        gen.close()

