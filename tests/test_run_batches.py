"""The Run tab's reading pipeline at the level of its parts (issue 17: a Run tab over 100,000 keys froze
the window for seconds): the worker hands over batches only when the GUI has applied the last one, with
the heatmap rows and table numbers already computed; the GUI side copies arrays; the GUI gate makes a
worker wait for a GUI thread that stopped beating. Checked against the per-entry definitions they replace."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

from gui_support import no_workers_left  # noqa: F401
from steps import collect, drain

from ckptviewer.core.analyze.trend import open_run
from ckptviewer.gui.run import work
from ckptviewer.gui.widgets import workers


@pytest.fixture
def run(tmp_path):
    """Three checkpoints of 30 tensors whose values change from one to the next, plus an int counter and
    a one-element float (which the model-only filter leaves out), and a tensor missing from the middle one."""
    paths = []
    for step in range(3):
        sd = {f"layer{k}.weight": torch.full((3, 2), 1.0 + step * (k % 4)) for k in range(30)}
        sd["steps"] = torch.tensor(step)
        sd["scale"] = torch.tensor([2.0])
        if step != 1:
            sd["extra.bias"] = torch.arange(4, dtype=torch.float32) * (step + 1)
        path = tmp_path / f"step_{step}.pt"
        torch.save(sd, path)
        paths.append(str(path))
    r = drain(open_run(paths))
    yield r
    r.close()


def old_log_row(values):
    """The per-value definition the vectorised log_rows replaced."""
    out = np.full(len(values), np.nan)
    for c, x in enumerate(values):
        if x is None:
            continue
        if x > 0:
            out[c] = math.log10(x)
        elif x == 0:
            out[c] = work.FROZEN
    return out


def test_log_rows_matches_the_per_value_definition():
    values = [None, 0.0, -1.0, 1e-3, 10.0, math.inf, 5e-300]
    expected = old_log_row(values)
    got = work.log_row(values)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.allclose(got[~np.isnan(got)], expected[~np.isnan(expected)])
    block = work.log_rows(np.array([[math.nan if x is None else x for x in values]] * 2))
    assert block.shape == (2, len(values)) and np.array_equal(block[1], got, equal_nan=True)


def test_batches_wait_for_the_gui_and_carry_their_rows(run):
    applied = threading.Event()
    applied.set()
    gen = work.trend_batches(run, interval=0.0, applied=applied)
    batches = []
    try:
        while True:
            step = next(gen)
            if isinstance(step, work.TrendBatch):
                batches.append(step)
                # Until the GUI says it applied this batch, no other batch comes, however many entries finish.
                assert not applied.is_set()
                if len(batches) == 1:
                    for _ in range(40):
                        nxt = next(gen)
                        assert not isinstance(nxt, work.TrendBatch)
                applied.set()
    except StopIteration as stop:
        batches.append(stop.value)
    assert len(batches) >= 3 and batches[-1].last
    assert len(batches[1].finished) > 1          # the entries finished while the GUI was busy came together
    seen = [i for b in batches for i in b.finished]
    assert sorted(seen) == list(range(len(run.entries)))       # every entry once
    view = work.RunView(run, [e.text for e in run.entries])
    for b in batches:
        view.add_ready(b.finished, b.rows)
    assert view.ready == set(range(len(run.entries)))
    for i, e in enumerate(run.entries):
        for metric, _ in work.HEATMAP_METRICS:
            assert np.allclose(view.cache[metric][i], old_log_row(work.metric_values(e, metric)),
                               rtol=1e-12, atol=0, equal_nan=True)
        numbers = work.entry_numbers(e)
        assert np.array_equal(view.numbers[i], [math.nan if x is None else x for x in numbers], equal_nan=True)
    # Without rows (a caller that has none), add_ready computes the same.
    other = work.RunView(run, [e.text for e in run.entries])
    other.add_ready(list(range(len(run.entries))))
    for metric in view.cache:
        assert np.array_equal(other.cache[metric], view.cache[metric], equal_nan=True)
    assert np.array_equal(other.numbers, view.numbers, equal_nan=True)


def test_visible_entries_match_the_filter_definition(run):
    view = work.RunView(run, [e.text for e in run.entries])

    def expected(model_only, text):
        needle = text.strip().lower()
        return [i for i, e in enumerate(run.entries)
                if not (model_only and (e.in_optimizer or not e.is_floating or math.prod(e.shape) <= 1))
                and (not needle or needle in view.texts[i].lower())]

    for model_only in (True, False):
        for text in ("", "LAYER1", " bias ", "steps", "nothing"):
            assert work.visible_entries(view, model_only, text) == expected(model_only, text)
    kept = work.visible_entries(view, True)
    names = {run.entries[i].text for i in kept}
    assert "steps" not in names and "scale" not in names and "layer0.weight" in names


class FakeGate(workers.GuiGate):
    CAP_S = 0.3


def test_gate_waits_for_the_next_beat_and_gives_up_once_per_missing_beat():
    gate = FakeGate()
    never = lambda: False  # noqa: E731
    t = time.monotonic()
    gate.make_way(never)                         # nothing runs: no beat, no wait
    gate.beat()
    gate.make_way(never)                         # a fresh beat: no wait
    assert time.monotonic() - t < FakeGate.CAP_S
    # A stale beat: the worker sleeps until the GUI beats again.
    gate._beat = time.monotonic() - 1.0
    beat_at = []

    def beat_later():
        time.sleep(0.1)
        beat_at.append(time.monotonic())
        gate.beat()

    th = threading.Thread(target=beat_later)
    th.start()
    gate.make_way(never)
    returned = time.monotonic()
    th.join()
    assert beat_at and returned >= beat_at[0]
    # No beat comes: it waits CAP_S, then not again for the same missing beat.
    gate._beat = stale = time.monotonic() - 1.0
    t = time.monotonic()
    gate.make_way(never)
    assert time.monotonic() - t >= FakeGate.CAP_S
    assert gate._given_up == stale
    t = time.monotonic()
    for _ in range(100):
        gate.make_way(never)
    assert time.monotonic() - t < FakeGate.CAP_S
    # A cancelled worker never waits; a stopped gate (nothing running) never makes anyone wait.
    gate._beat = time.monotonic() - 1.0
    t = time.monotonic()
    gate.make_way(lambda: True)
    gate.stop()
    gate.make_way(never)
    assert time.monotonic() - t < FakeGate.CAP_S


@pytest.mark.qt_log_level_fail("WARNING")
@pytest.mark.qt_log_ignore(r"This plugin does not support", r"propagateSizeHints")
def test_the_gui_beats_while_a_task_runs_and_stops_after(qtbot):
    from ckptviewer.gui.widgets.workers import GATE, TaskRunner

    release = threading.Event()
    beats = []

    def task():
        first = GATE._beat
        while not release.is_set():
            yield None
            beats.append(GATE._beat)
            time.sleep(0.005)
        return first

    runner = TaskRunner()
    results = []
    assert GATE._beat is None
    runner.submit("t", task, on_result=results.append)
    qtbot.waitUntil(lambda: len({b for b in beats if b is not None}) >= 3, timeout=10_000)
    release.set()
    qtbot.waitUntil(lambda: bool(results) and not runner.is_busy(), timeout=10_000)
    assert results[0] is not None                 # the beat had started when the task did
    assert GATE._beat is None                     # and stopped with the last task
    runner.shutdown()


@pytest.mark.qt_log_level_fail("WARNING")
@pytest.mark.qt_log_ignore(r"This plugin does not support", r"propagateSizeHints")
def test_table_sorts_numbers_with_the_missing_last_and_ties_in_key_order(qtbot, run):
    from PySide6.QtCore import Qt

    from ckptviewer.core.analyze.trend import trend_steps
    from ckptviewer.gui.run.model import RunLayersModel

    drain(trend_steps(run))
    view = work.RunView(run, [e.text for e in run.entries])
    view.add_ready(list(range(0, len(run.entries), 2)))        # the others: not read yet, no numbers
    model = RunLayersModel(view)
    model.set_rows(list(range(len(run.entries))))
    for column in work.NUMBER_COLUMNS:
        for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
            model.sort(0, Qt.SortOrder.AscendingOrder)                   # key order; the sort below is stable
            model.sort(column, order)
            values = [model.sort_value(i, column) if i in view.ready else None for i in model.rows]
            present = [v for v in values if v is not None]
            assert present and values[:len(present)] == present          # every missing one after them
            desc = order == Qt.SortOrder.DescendingOrder
            assert present == sorted(present, reverse=desc)
            for a, b in zip(model.rows, model.rows[1:]):                 # equal values keep key order
                va = model.sort_value(a, column) if a in view.ready else None
                vb = model.sort_value(b, column) if b in view.ready else None
                if va == vb:
                    assert a < b
            assert [model.row_of(i) for i in model.rows] == list(range(len(model.rows)))


def test_a_diff_gives_the_gate_a_point_per_pair_between_its_batches(tmp_path):
    """The diff's worker sends a batch every 150 ms; between batches it must still pass a point where it
    can stop or make way for the window (a yield), at least once per pair compared."""
    from ckptviewer.gui.diff import work as diff_work

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({f"w{k}": torch.full((8,), float(k)) for k in range(40)}, a)
    torch.save({f"w{k}": torch.full((8,), float(k) + (k % 2)) for k in range(40)}, b)
    session = drain(diff_work.prepare_steps(diff_work.DiffSetup(str(a), str(b))))
    try:
        gen = diff_work.compare_steps(session.run, interval=3600.0)      # no batch before the end
        steps, last = collect(gen)
        assert sum(1 for s in steps if s is None) >= 40
        assert not any(isinstance(s, diff_work.CompareBatch) and s.finished for s in steps)
        assert sorted(last.finished) == list(range(len(session.run.entries)))
    finally:
        session.close()
