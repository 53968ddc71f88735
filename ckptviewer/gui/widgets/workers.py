"""Generator workers on a thread pool, with cancel and stale-result dropping.

A task is a function returning a generator. The worker runs it on a pool thread; every ``yield`` is
a cancel point and its value is delivered to the GUI thread as progress (a :class:`Progress`, or a
partial result such as a sampled histogram); the generator's return value is the result.

:class:`TaskRunner` owns the tasks of one view. ``submit(channel, ...)`` cancels the task running
in the same channel ("stats", "load", ...) and bumps the channel's generation; deliveries from an
older generation are dropped, so a result that arrives after the selection moved on never paints.

Hazards: Qt signals emitted on a pool thread reach GUI-thread slots as queued events, so each
worker's ``WorkerSignals`` object is created on the GUI thread and kept alive by the runner until the
worker has reported its end. Workers are started as plain callables (``QThreadPool.start(worker.run)``)
rather than as Python ``QRunnable`` subclasses: Qt then owns the runnable and keeps the callable alive
until it returns, so no Python wrapper of a running ``QRunnable`` can be collected under the pool.
"""
from __future__ import annotations

import itertools
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Generator

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from ...core.util.errors import CancelledError
from ...core.util.progress import Progress
from ...core.util.task import task_context
from .qtcompat import top_up

# Progress steps (a Progress, or None) are sent at most this often per worker; the newest one waiting is
# sent before a partial result and before the end. Every queued signal costs the GUI thread a hand-over
# of the GIL from the busy worker (up to sys.getswitchinterval(), 5 ms): a loader that reported every
# step kept the window busy delivering its backlog, without repainting, for seconds when 50 files opened.
PROGRESS_INTERVAL_S = 0.05
_NOTHING = object()

# How long a busy worker may keep the GIL while the GUI thread waits for it (Python's default: 5 ms).
# Qt calls back into Python for every cell it paints (the models' data()), and each call must win the
# GIL back from a worker running pure-Python code: at 5 ms a hand-over, one repaint while a file was
# loading froze the window for over a second (50 hostile files opened at once: longest stall 1.3 s at
# 5 ms, 0.56 s at 1 ms, 0.16 s at 0.25 ms, total time unchanged).
GUI_SWITCH_INTERVAL_S = 0.00025


class GuiGate:
    """Workers make way for a GUI thread that has stopped turning its event loop.

    A shorter switch interval is not enough on its own: every cell Qt paints calls back into Python
    (a model's ``rowCount``, ``index``, ``data``), and each call has to win the GIL back from a busy worker,
    a hand-over of ~0.3 ms on a small VM whatever the interval. Painting a table of numbers took over a
    second that way while a Run tab read 100,000 small tensors (the window froze for up to 14 s in all).
    So the GUI thread beats (a timer every ``BEAT_S`` while any worker runs), and a worker that finds the
    last beat older than ``STALE_S`` between two steps sleeps, the GIL released, until the next beat:
    the GUI's callbacks then find the GIL free. It waits at most ``CAP_S`` for a beat that does not come
    (the GUI busy in C++ or blocked), and only once per missing beat, so a GUI that does not turn its
    loop (a test calling code directly) slows a worker by ``CAP_S`` at most, not at every step."""

    BEAT_S = 0.01
    STALE_S = 0.025
    CAP_S = 0.2

    def __init__(self) -> None:
        self._beat: float | None = None     # monotonic time of the last beat; None while nothing runs
        self._given_up: float | None = None

    def beat(self) -> None:
        self._beat = time.monotonic()

    def stop(self) -> None:
        self._beat = None

    def make_way(self, cancelled: Callable[[], bool]) -> None:
        """Worker side, between steps: wait (sleeping) while the GUI thread's last beat is stale."""
        beat = self._beat
        if beat is None or beat == self._given_up:
            return
        now = time.monotonic()
        if now - beat <= self.STALE_S:
            return
        deadline = now + self.CAP_S
        while self._beat == beat and not cancelled():
            if time.monotonic() >= deadline:
                self._given_up = beat
                return
            time.sleep(0.001)


GATE = GuiGate()


class _Heartbeat(QObject):
    """The GUI thread's beat for :data:`GATE`, running while any :class:`TaskRunner` has a task."""

    def __init__(self) -> None:
        super().__init__()
        self._timer = QTimer(self)
        self._timer.setInterval(int(GuiGate.BEAT_S * 1000))
        self._timer.timeout.connect(GATE.beat)
        self._holders: set[int] = set()

    def hold(self, runner: object) -> None:
        if not self._holders:
            GATE.beat()
            self._timer.start()
        self._holders.add(id(runner))

    def release(self, runner: object) -> None:
        self._holders.discard(id(runner))
        if not self._holders:
            self._timer.stop()
            GATE.stop()


_heartbeat: _Heartbeat | None = None


def _the_heartbeat() -> _Heartbeat:
    global _heartbeat
    if _heartbeat is None:
        _heartbeat = _Heartbeat()
    return _heartbeat


def keep_gui_responsive() -> None:
    """Shorten the interpreter's thread switch interval for a process that runs the window (never
    lengthens it). Called when the main window is made."""
    if sys.getswitchinterval() > GUI_SWITCH_INTERVAL_S:
        sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)


class WorkerSignals(QObject):
    started = Signal(int)
    progressed = Signal(int, object)
    finished = Signal(int, object)
    errored = Signal(int, object)


@dataclass
class WorkerError:
    """What a failed task raised: the exception and its formatted traceback (for 'Details')."""

    exc: BaseException
    details: str


class GeneratorWorker:
    """Runs ``fn(*args)`` (a generator function, or a plain function) on a pool thread."""

    _ids = itertools.count(1)

    def __init__(self, fn: Callable[..., Generator[Any, None, Any] | Any], *args: Any):
        self.id = next(self._ids)
        self.signals = WorkerSignals()
        self._fn = fn
        self._args = args
        self._cancel = threading.Event()
        self._done = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has ended (only for shutdown paths; returns False on timeout)."""
        return self._done.wait(timeout)

    def run(self) -> None:
        # Waits inside one step (a network fetch, a download) report and check for cancel through the
        # thread's task context (core.util.task): progress reaches the GUI and Cancel stops the wait.
        self._inside_last = 0.0
        with task_context(report=self._report_inside, notice=self._notice_inside, cancelled=self._cancel.is_set):
            self._run()

    def _report_inside(self, step: Any) -> None:
        GATE.make_way(self._cancel.is_set)
        now = time.monotonic()
        if self._cancel.is_set() or now - self._inside_last < PROGRESS_INTERVAL_S:
            return
        self._inside_last = now
        try:
            self.signals.progressed.emit(self.id, step)
        except RuntimeError:        # the window is gone; nobody to tell
            pass

    def _notice_inside(self, text: str) -> None:
        self._inside_last = 0.0
        self._report_inside(Progress(0, 0, text))

    def _run(self) -> None:
        sig = self.signals
        try:
            if self._cancel.is_set():
                sig.finished.emit(self.id, None)
                return
            sig.started.emit(self.id)
            result = self._fn(*self._args)
            if isinstance(result, Generator):
                gen = result
                result = None
                last = 0.0
                held: Any = _NOTHING       # the newest progress step not sent yet
                while True:
                    if self._cancel.is_set():
                        gen.close()
                        break
                    GATE.make_way(self._cancel.is_set)
                    try:
                        step = next(gen)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    if step is None or isinstance(step, Progress):
                        now = time.monotonic()
                        if now - last < PROGRESS_INTERVAL_S:
                            held = step
                            continue
                        last = now
                    elif held is not _NOTHING and held is not None:
                        sig.progressed.emit(self.id, held)     # partial results come after their progress
                    held = _NOTHING
                    sig.progressed.emit(self.id, step)
                if held is not _NOTHING and held is not None and not self._cancel.is_set():
                    sig.progressed.emit(self.id, held)
            sig.finished.emit(self.id, None if self._cancel.is_set() else result)
        except CancelledError:
            self._emit_last(sig.finished, None)
        except BaseException as exc:  # noqa: BLE001 - everything is reported, nothing escapes a pool thread
            self._emit_last(sig.errored, WorkerError(exc, traceback.format_exc()))
        finally:
            self._done.set()

    def _emit_last(self, signal, value: Any) -> None:
        """Report the end. A worker that outlived its window (still inside one long step when the app
        quit) finds its signal object deleted; there is no one left to tell, so it ends quietly."""
        try:
            signal.emit(self.id, value)
        except RuntimeError:
            if not self._cancel.is_set():
                raise


@dataclass
class _Task:
    worker: GeneratorWorker
    channel: str
    generation: int
    on_progress: Callable[[Any], None] | None
    on_result: Callable[[Any], None] | None
    on_error: Callable[[WorkerError], None] | None


class TaskRunner(QObject):
    """Submits workers per channel; delivers only the newest generation's events, on the GUI thread.

    ``busy_changed(bool)`` tells whether any task runs; ``task_progressed(channel, step)`` relays
    progress of current tasks (for a status bar).
    """

    busy_changed = Signal(bool)
    task_progressed = Signal(str, object)

    def __init__(self, parent: QObject | None = None, pool: QThreadPool | None = None):
        super().__init__(parent)
        self._pool = pool or QThreadPool.globalInstance()
        self._tasks: dict[int, _Task] = {}
        self._generation: dict[str, int] = {}
        self._shut = False

    # -- submitting -----------------------------------------------------------------------------
    def submit(self, channel: str, fn: Callable[..., Any], *args: Any,
               on_progress: Callable[[Any], None] | None = None,
               on_result: Callable[[Any], None] | None = None,
               on_error: Callable[[WorkerError], None] | None = None) -> GeneratorWorker | None:
        if self._shut:
            return None
        self.cancel(channel)
        gen = self._generation.get(channel, 0) + 1
        self._generation[channel] = gen
        worker = GeneratorWorker(fn, *args)
        task = _Task(worker, channel, gen, on_progress, on_result, on_error)
        was_idle = not self._tasks
        self._tasks[worker.id] = task
        s = worker.signals
        s.progressed.connect(self._on_worker_progressed)
        s.finished.connect(self._on_worker_finished)
        s.errored.connect(self._on_worker_errored)
        if was_idle:
            _the_heartbeat().hold(self)
        self._pool.start(worker.run)
        if was_idle:
            self.busy_changed.emit(True)
        return worker

    def cancel(self, channel: str | None = None) -> None:
        """Cancel the tasks of ``channel`` (all when None); their late events are dropped."""
        for task in list(self._tasks.values()):
            if channel is None or task.channel == channel:
                task.worker.cancel()        # one not started yet returns at once when it starts
        if channel is None:
            for ch in self._generation:
                self._generation[ch] += 1
        elif channel in self._generation:
            self._generation[channel] += 1

    def shutdown(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Cancel everything; with ``wait``, block until running workers end (at their next yield)."""
        self._shut = True
        self.cancel()
        _the_heartbeat().release(self)      # cancelled workers need no room; their late ends are dropped
        if wait:
            for task in list(self._tasks.values()):
                task.worker.wait(timeout)
            self._tasks.clear()

    def is_busy(self, channel: str | None = None) -> bool:
        return any(channel is None or t.channel == channel for t in self._tasks.values())

    def is_current(self, channel: str, generation: int) -> bool:
        return self._generation.get(channel) == generation

    # -- deliveries (GUI thread) ----------------------------------------------------------------
    def _current(self, worker_id: int) -> _Task | None:
        task = self._tasks.get(worker_id)
        if task is None or task.worker.is_cancelled or not self.is_current(task.channel, task.generation):
            return None
        return task

    def _on_worker_progressed(self, worker_id: int, step: Any) -> None:
        top_up()
        task = self._current(worker_id)
        if task is None:
            return
        self.task_progressed.emit(task.channel, step)
        if task.on_progress is not None:
            task.on_progress(step)

    def _on_worker_finished(self, worker_id: int, result: Any) -> None:
        top_up()
        task = self._current(worker_id)
        self._forget(worker_id)
        if task is not None and task.on_result is not None:
            task.on_result(result)

    def _on_worker_errored(self, worker_id: int, error: WorkerError) -> None:
        task = self._current(worker_id)
        self._forget(worker_id)
        if task is not None and task.on_error is not None:
            task.on_error(error)

    def _forget(self, worker_id: int) -> None:
        task = self._tasks.pop(worker_id, None)
        if task is not None:
            task.worker.signals.deleteLater()
            if not self._tasks:
                _the_heartbeat().release(self)
                self.busy_changed.emit(False)
