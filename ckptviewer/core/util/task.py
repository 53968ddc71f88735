"""The task a thread is running for someone: where it reports progress from deep inside a call, and how it
learns that it should stop.

Most long work is a step generator (``progress.run_steps``). A few waits happen inside one call that
cannot yield: a network fetch while a checkpoint is opened, a whole-file download. The caller (a window
worker, a command) sets a context for its thread with :func:`task_context`; code deep below reports with
:func:`report` and :func:`notice`, and calls :func:`check_cancelled` (or polls :func:`cancel_requested`)
while it waits. Without a context, reports go nowhere and nothing is ever cancelled.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .errors import CancelledError

_local = threading.local()


class _Context:
    __slots__ = ("cancelled", "notice", "report")

    def __init__(self, report, notice, cancelled):
        self.report = report
        self.notice = notice
        self.cancelled = cancelled


@contextlib.contextmanager
def task_context(*, report: Callable[[Any], None] | None = None, notice: Callable[[str], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
    """Within the block, this thread's :func:`report`, :func:`notice` and :func:`cancel_requested` use
    these callables. Contexts nest; the inner one wins until its block ends."""
    saved = getattr(_local, "ctx", None)
    _local.ctx = _Context(report, notice, cancelled)
    try:
        yield
    finally:
        _local.ctx = saved


def report(step: Any) -> None:
    """Tell whoever runs this thread's task how far it got (a ``Progress``)."""
    ctx = getattr(_local, "ctx", None)
    if ctx is not None and ctx.report is not None:
        ctx.report(step)


def notice(text: str) -> None:
    """Tell the person something they should know before a long wait (a download's size, a fallback)."""
    ctx = getattr(_local, "ctx", None)
    if ctx is not None and ctx.notice is not None:
        ctx.notice(text)


def cancel_requested() -> bool:
    ctx = getattr(_local, "ctx", None)
    return bool(ctx is not None and ctx.cancelled is not None and ctx.cancelled())


def check_cancelled() -> None:
    """Raise :class:`CancelledError` when this thread's task was cancelled."""
    if cancel_requested():
        raise CancelledError()


def current_context() -> Any:
    """The calling thread's context (to carry it into helper threads with :func:`adopt_context`)."""
    return getattr(_local, "ctx", None)


@contextlib.contextmanager
def adopt_context(ctx: Any) -> Iterator[None]:
    """Run a helper thread's work under the context another thread captured."""
    saved = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        yield
    finally:
        _local.ctx = saved
