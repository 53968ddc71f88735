"""The safe unpickler's memo (a list for in-order indices plus a dict for the rest) behaves as pickle's own:
out-of-order, overwritten, negative and huge indices, MEMOIZE after sparse PUTs, reads of unwritten entries.
Each stream is plain data, so Python's pickle (on bytes this test wrote) gives the expected answer."""
from __future__ import annotations

import pickle
import struct

import pytest

from ckptviewer.core.read.pickle.reconstructors import resolve
from ckptviewer.core.read.pickle.unpickler import SafeUnpickler
from ckptviewer.core.util.errors import CorruptFileError


def _ours(data: bytes):
    return SafeUnpickler(data, resolver=resolve).load()


def _uni(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _put(i: int) -> bytes:
    return b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)


def _get(i: int) -> bytes:
    return b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)


STREAMS = {
    # in order, then read back (the common case: list only)
    "in_order": b"\x80\x02(" + _uni("a") + _put(0) + _uni("b") + _put(1) + _get(0) + _get(1) + b"l.",
    # a gap: index 2 written before 1, then 1 fills the gap and pulls 2 into the list
    "gap_filled": b"\x80\x02(" + _uni("a") + _put(0) + _uni("c") + _put(2) + _uni("b") + _put(1)
                  + _get(2) + _get(1) + _get(0) + b"l.",
    # overwrites of an in-order entry and of a sparse one
    "overwrite": b"\x80\x02(" + _uni("a") + _put(0) + _uni("z") + _put(0) + _uni("x") + _put(700)
                 + _uni("y") + _put(700) + _get(0) + _get(700) + b"l.",
    # a far index stays sparse
    "far": b"\x80\x02(" + _uni("a") + _put(0) + _uni("h") + _put(70000) + _get(70000) + _get(0) + b"l.",
    # MEMOIZE numbers entries by their count, as pickle does, also after a sparse PUT
    "memoize_after_sparse": b"\x80\x04(" + _uni("a") + b"\x94" + _uni("s") + _put(5) + _uni("m") + b"\x94"
                            + _get(0) + _get(5) + _get(2) + b"l.",
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_memo_matches_pickle(name):
    data = STREAMS[name]
    assert _ours(data) == pickle.loads(data)


def test_huge_index_costs_one_entry():
    # pickle's C unpickler grows its memo to twice the index (a MemoryError here); ours keeps one entry.
    data = b"\x80\x02(" + _uni("a") + _put(0) + _uni("h") + _put(0xFFFFFFF0) + _get(0xFFFFFFF0) + _get(0) + b"l."
    assert _ours(data) == ["a", "h", "h", "a"]


def test_negative_text_index_never_reads_the_list_from_its_end():
    # pickle refuses a negative PUT; ours keeps it as a sparse entry of its own (memo[-1] is not memo's last)
    data = b"\x80\x02(" + _uni("a") + _put(0) + _uni("b") + _put(1) + _uni("n") + b"p-1\n" + b"g-1\n" + _get(1) + b"l."
    assert _ours(data) == ["a", "b", "n", "n", "b"]


@pytest.mark.parametrize("data", [
    b"\x80\x02(" + _uni("a") + _put(0) + _get(1) + b"l.",            # one past the list
    b"\x80\x02(" + _uni("a") + _put(3) + _get(0) + b"l.",            # below a sparse entry, never written
    b"\x80\x02(" + _uni("a") + _put(0) + _get(70000) + b"l.",        # far past everything
    b"\x80\x02(" + _uni("a") + _put(0) + b"g-2\n" + b"l.",           # negative, never written
])
def test_reading_an_unwritten_entry_is_a_corrupt_file(data):
    with pytest.raises(CorruptFileError, match="read before it was written"):
        _ours(data)
