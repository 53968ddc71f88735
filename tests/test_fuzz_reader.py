"""Fuzzing in the normal suite: mutated valid files never make the reader raise anything but CheckpointError.

Deterministic (derandomized, no example database) and bounded, so CI runs the same few hundred files
every time; tests/bench/fuzz_reader.py runs the same mutations for minutes. Every bug a fuzz run
found has a regression test below, named after what it was.
"""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corpus
import mutate
from ckptviewer.core.util.errors import CheckpointError
from ckptviewer.core.analyze.scan import COMPUTED, scan_file

EXAMPLES = 300


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return mutate.small_seeds(tmp_path_factory.mktemp("seeds"))


_frac = st.floats(0, 1, allow_nan=False)
_op = st.one_of(
    st.tuples(st.just("flip"), _frac, st.integers(0, 7)),
    st.tuples(st.just("byte"), _frac, st.integers(0, 255)),
    st.tuples(st.just("truncate"), _frac),
    st.tuples(st.just("insert"), _frac, st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("interesting"), _frac, st.integers(0, 1000)),
    st.tuples(st.just("delete"), _frac, st.integers(1, 16)),
    st.tuples(st.just("splice"), _frac, st.integers(0, 100), _frac, st.integers(1, 64), st.booleans()),
    st.tuples(st.just("duplicate"), _frac, st.integers(1, 24), st.integers(1, 50)),
)


def check_file(path) -> str:
    """What the viewer does with the file; returns "ok" or the CheckpointError's class name."""
    t0 = time.perf_counter()
    facts = None
    try:
        facts = corpus.exercise(path)
        outcome = "ok"
    except CheckpointError as e:
        outcome = type(e).__name__
    res = scan_file(path)                        # the scanner never raises either
    assert res.status in (0, 1, 2)
    if facts is not None:                        # differential check: the light pass models the stack right
        for p in res.pickles:
            if p.complete and p.name in facts["pickles"] and not _computed(p.counts):
                assert dict(p.counts) == facts["pickles"][p.name], p.name
    assert time.perf_counter() - t0 < 10, "a mutated small file took over 10 s"
    return outcome


def _computed(counts) -> bool:
    """A STACK_GLOBAL operand computed while loading: the reader may resolve it (str(b"os", "ascii") is
    one of its safe rebuilders), the light pass reports it as unknowable; the two differ by design."""
    return any(COMPUTED in key for key in counts)


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_files_open_or_raise_checkpoint_error(seeds, tmp_path, data):
    seed = data.draw(st.sampled_from(seeds), label="seed")
    level = data.draw(st.sampled_from(["pickle", "pickle", "file"]), label="level")
    ops = data.draw(st.lists(_op, min_size=1, max_size=4), label="ops")
    donors = [s.pickle_bytes() for s in seeds if s.kind in ("zip", "legacy")]
    path = tmp_path / "fuzzed.pt"
    path.write_bytes(mutate.mutate(seed, level, ops, donors))
    check_file(path)


def test_seeds_are_valid(seeds, tmp_path):
    """The mutations start from files that open cleanly (else the fuzzing would only test errors)."""
    for seed in seeds:
        path = tmp_path / seed.name
        path.write_bytes(seed.raw)
        assert check_file(path) == "ok", seed.name
        assert scan_file(path).status == 0, seed.name


# -- regressions: what fuzz runs found (each a minimal file) ---------------------------------------------------
from hostile import PROTO2, glob, s, torch_zip  # noqa: E402

ONE = corpus.tensor("0", 2, [2])


def _module(state: bytes) -> bytes:
    """A pickled nn.Module stand-in (NEWOBJ of an unknown class) whose BUILD state is ``state``."""
    return torch_zip(PROTO2 + glob("models", "Net") + b")\x81" + state + b"b.", {"0": bytes(8)})


@pytest.mark.parametrize("label,state", [
    # found: tree.py AttributeError, 'Unreadable' object has no attribute 'startswith' (an attribute named by a value)
    ("attribute named by a global", b"}(" + s("_modules") + b"}" + s("_parameters") + b"}(" + s("w") + ONE + b"u"
     + glob("x", "y") + b"K\x01u"),
    # found: interpret.py TypeError, can only concatenate str (not "Reconstructor") to str (a parameter named by one)
    ("parameter named by a global", b"}(" + s("_modules") + b"}" + s("_parameters") + b"}(" + s("w") + ONE
     + glob("collections", "OrderedDict") + ONE + b"uu"),
    ("submodule named by an int", b"}(" + s("_modules") + b"}(K\x05" + glob("models", "Net") + b")\x81u"
     + s("_parameters") + b"}(" + s("w") + ONE + b"uu"),
])
def test_module_with_non_string_names_is_shown_as_an_object(tmp_path, label, state):
    path = tmp_path / "m.pt"
    path.write_bytes(_module(state))
    facts = corpus.exercise(path)
    assert facts["tensors"] >= 1, label


def test_non_persistent_buffer_set_that_is_not_a_set(tmp_path):
    """found: tree.py TypeError, argument of type 'StandIn' is not iterable (`name in nonpersistent`)."""
    state = (b"}(" + s("_modules") + b"}" + s("_parameters") + b"}" + s("_buffers") + b"}(" + s("b") + ONE + b"u"
             + s("_non_persistent_buffers_set") + glob("x", "NotASet") + b")R" + b"u")
    path = tmp_path / "m.pt"
    path.write_bytes(_module(state))
    facts = corpus.exercise(path)
    assert facts["tensors"] == 1 and facts["tree_nodes"] >= 2


def test_dict_subclass_items_follow_the_dict_key_rule(tmp_path):
    """found: interpret.py TypeError, unhashable type: 'set' (a stand-in's SETITEMS key became a key path)."""
    from ckptviewer.core.util.errors import CorruptFileError
    path = tmp_path / "d.pt"
    path.write_bytes(torch_zip(PROTO2 + glob("x", "MyDict") + b")\x81(" + b"\x8f" + s("v") + b"u.", {}))
    with pytest.raises(CorruptFileError, match="as a dict key"):
        corpus.exercise(path)
    path.write_bytes(torch_zip(PROTO2 + glob("x", "MyDict") + b")\x81(" + s("k") + b"(K\x01K\x02t" + b"u.", {}))
    assert corpus.exercise(path)["tree_nodes"] == 2
