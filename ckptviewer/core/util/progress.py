"""Progress records and the step-generator protocol every long job uses.

Long work (statistics, diffs, exports, loads) is written as a generator: each ``yield`` reports how far
it got and is a point where the caller may stop it. The CLI drains such a generator with
:func:`run_steps`; the window runs it in a worker and shows the progress.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator

from .errors import CancelledError


@dataclass
class Progress:
    """How far a pass over a tensor has got, in elements."""

    done: int
    total: int
    what: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def run_steps(steps: Iterator[Any] | Generator[Any, None, Any], *,
              progress: Callable[[Any], None] | None = None,
              cancelled: Callable[[], bool] | None = None) -> Any:
    """Drain a step generator and return its result; ``cancelled()`` is checked between steps.

    Raises :class:`CancelledError` (after closing the generator) when ``cancelled()`` turns true.
    """
    while True:
        if cancelled is not None and cancelled():
            close = getattr(steps, "close", None)
            if close:
                close()
            raise CancelledError()
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(step)
