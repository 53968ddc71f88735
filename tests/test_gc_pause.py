"""Workers that build a big file's objects run with the cyclic collector paused, and freeze what they
built before turning it back on: a full collection over a million young objects on a worker holds the
GIL for 0.2-0.7 s, which froze the window while a 100,000-key file opened, was edited or was diffed."""
from __future__ import annotations

import gc

import pytest

from steps import drain


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_loading_pauses_the_collector_and_freezes_what_it_built(ckpts, monkeypatch, collector_on):
    from ckptviewer.gui.checkpoint import loading

    seen = []
    real = loading.build_tree

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "build_tree", spy)
    frozen = gc.get_freeze_count()
    loaded = drain(loading.load_steps(str(ckpts["checkpoint.tar"])))
    try:
        assert seen == [False]                          # paused while the tree was built
        assert gc.isenabled()                           # and on again afterwards
        assert gc.get_freeze_count() > frozen           # with the loaded objects out of its way
    finally:
        loaded.close()
        gc.unfreeze()


def test_a_cancelled_load_turns_the_collector_back_on(ckpts, collector_on):
    from ckptviewer.gui.checkpoint import loading

    gen = loading.load_steps(str(ckpts["checkpoint.tar"]))
    next(gen)
    next(gen)
    assert not gc.isenabled()
    gen.close()                                         # what a Cancel does
    assert gc.isenabled()
    gc.unfreeze()


def test_diff_preparation_and_comparison_pause_the_collector(ckpts, monkeypatch, collector_on):
    from ckptviewer.gui.diff import work as diff_work

    seen = []
    real = diff_work.build_diff_tree

    def spy(run):
        seen.append(gc.isenabled())
        return real(run)

    monkeypatch.setattr(diff_work, "build_diff_tree", spy)
    path = str(ckpts["checkpoint.tar"])
    session = drain(diff_work.prepare_steps(diff_work.DiffSetup(path, path)))
    try:
        assert seen == [False] and gc.isenabled()
        gen = diff_work.compare_steps(session.run, 0.0)
        next(gen)
        assert not gc.isenabled()
        drain(gen)
        assert gc.isenabled() and session.run.equal
    finally:
        session.close()
        gc.unfreeze()
