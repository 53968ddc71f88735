"""What every command shares: one-line errors on stderr and progress on a terminal."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Generator, Iterator


def err(msg: str) -> None:
    """Print one line on stderr, prefixed with the program's name."""
    print(f"ckptviewer: {single_line(msg)}", file=sys.stderr)


def single_line(text: Any) -> str:
    return " ".join(str(text).split())


def internal_error(path: str, exc: BaseException) -> str:
    """The line for an exception that is a bug of ours, not a problem of the file: say so, keep going."""
    from ..core.util.locations import location_name, redact
    return (f"{location_name(path)}: internal error ({type(exc).__name__}: {redact(exc)}); "
            f"please report this file's problem")


@contextlib.contextmanager
def terminal_task(show: bool | None = None) -> Iterator[None]:
    """While a command runs: notices (a remote file about to be downloaded whole, with its size) go to
    stderr as lines; progress reported from inside a call (a download) is one stderr line on a terminal."""
    from ..core.util.task import task_context
    if show is None:
        show = sys.stderr.isatty()
    state = {"last": 0.0, "shown": False}

    def report(p: Any) -> None:
        if not show or p is None or not getattr(p, "what", ""):
            return
        now = time.monotonic()
        if now - state["last"] < 0.2:
            return
        state["last"] = now
        total = getattr(p, "total", 0)
        amount = f" {100 * p.done // total:3d}%" if total else ""
        sys.stderr.write("\r\033[K" + single_line(p.what)[:150] + amount)
        sys.stderr.flush()
        state["shown"] = True

    def notice(text: str) -> None:
        if state["shown"]:
            sys.stderr.write("\r\033[K")
            state["shown"] = False
        err(text)

    try:
        with task_context(report=report, notice=notice):
            yield
    finally:
        if state["shown"]:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def drain(gen: Generator[Any, None, Any], *, show: bool | None = None, label: str = "") -> Any:
    """Run a step generator (each step has ``done``/``total`` and a ``stage`` or ``what``) to its end and
    return its value. On a terminal (or with ``show``), one line of stderr shows how far it got."""
    if show is None:
        show = sys.stderr.isatty()
    last = None
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if not show or p is None:
                continue
            total = getattr(p, "total", 0)
            pct = int(100 * p.done / total) if total else 100
            stage = getattr(p, "stage", None) or getattr(p, "what", "")
            text = f"{label}{stage} {pct:3d}%"
            if text != last:
                sys.stderr.write("\r\033[K" + text)
                sys.stderr.flush()
                last = text
    finally:
        if last is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
