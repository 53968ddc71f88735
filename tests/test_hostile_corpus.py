"""Issue 7's corpus, built at test time: payloads in every container, resource attacks, cuts at every boundary.

Payloads (tests/hostile.py) would only create a marker file; each is proven live under plain pickle in
test_no_execution.py. Resource attacks (tests/corpus.py) must end in a clear CheckpointError or a
partial tree with the broken tensors marked, in bounded time and under 200 MB of traced allocations.
"""
from __future__ import annotations

import struct
import time
import zipfile

import pytest

import corpus
import hostile
from ckptviewer.core import open_checkpoint
from ckptviewer.core.util.errors import (CheckpointError, CorruptFileError, LimitExceededError, NotACheckpointError,
        TruncatedFileError)
from ckptviewer.core.analyze.scan import scan_file, walk_pickle

PAYLOADS = sorted(hostile.payloads(hostile.Path("/x")))
CONTAINERS = sorted(hostile.containers())
MEMORY_LIMIT = 200 * corpus.MB
TIME_GUARD = 5.0           # seconds; the issue asks for 2 s, measured in tests/bench/fuzz_reader.py --bounds


# -- code execution attempts -------------------------------------------------------------------------------
@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("name", PAYLOADS)
def test_payload_never_runs_and_is_reported(tmp_path, marker, container, name):
    path = tmp_path / "evil.pt"
    path.write_bytes(hostile.containers()[container](hostile.payloads(marker)[name]))
    res = scan_file(path)
    assert {g.qualname for g in res.dangerous} == hostile.EXPECTED_DANGEROUS[name]
    assert res.status == 1
    try:
        facts = corpus.exercise(path)
    except CheckpointError as e:
        assert str(e).startswith("evil.pt: ")           # refused with a message naming the file
    else:
        assert facts["report"]["dangerous_globals"], "opened without reporting the dangerous globals"
        assert any(w.startswith("DANGEROUS: ") for w in facts["report"]["warnings"])
        assert any(row[3] == "dangerous" for row in facts["scan"])
    assert not marker.exists()


def test_the_rest_of_the_file_still_shows_next_to_a_payload(ckpts, tmp_path, marker):
    """A TorchScript archive whose constants.pkl calls os.system: the module and its tensors still show."""
    src = zipfile.ZipFile(ckpts["scripted.pt"])
    out = tmp_path / "scripted_evil.pt"
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("constants.pkl"):
                data = hostile.payloads(marker)["global_reduce_os_system"]
            z.writestr(info.filename, data)
    with open_checkpoint(out) as ck:
        assert ck.format == "torchscript" and len(ck.tensor_entries()) == 10
        assert ck.meta["constants"].qualname == "os.system"
    assert {g.qualname for g in scan_file(out).dangerous} == {"os.system"}
    assert not marker.exists()


# -- resource attacks and corruption ------------------------------------------------------------------------
ATTACKS = corpus.resource_attacks()

# What each attack must end in: an error class, or None for a partial tree whose tensors carry problems.
EXPECTED = {
    "zip_storage_missing": "missing from the file", "zip_storage_short": "has 8 bytes",
    "legacy_storage_missing": "missing", "legacy_storage_short": "file ends first",
    "legacy_count_header_cut": "missing", "offset_past_storage": "which holds 2",
    "legacy_count_4GiB_in_1KB": "file ends first", "legacy_count_negative": "declares -5 elements",
    "legacy_count_1e15": "values not read", "declared_1e15_elements": "values not read",
    "1KB_claims_100GB": "the tensor needs 100000000000", "numel_overflow_dims": "values not read",
    "stride0_1e16": "values not read", "stride0_2pow36": "stride-0 or overlapping view",
    "negative_size": "negative", "negative_stride": "negative", "negative_offset": "negative",
    "rank_mismatch": "differ in length",
    "nested_lists_1e6": NotACheckpointError, "nested_tuples_1e6": NotACheckpointError,
    "nested_dicts_1e5": NotACheckpointError,
    "memo_text_index_5000_digits": CorruptFileError, "memo_get_missing": CorruptFileError,
    "binunicode8_2pow63": TruncatedFileError, "long4_huge": LimitExceededError,
    "zip_bomb_honest_ratio": LimitExceededError, "zip_bomb_lying_size": LimitExceededError,
    "zip_bomb_under_1000": LimitExceededError, "amplify_empty_sets": LimitExceededError,
    "amplify_empty_dicts": LimitExceededError, "amplify_memoize": LimitExceededError,
    "amplify_tuple1": LimitExceededError,      # amplify_stand_ins (4 bytes each) stays inside the budget
    # zip_duplicate_data_pkl opens as torch.load reads it (the later entry), with a warning (test_zip_anomalies.py)
    "st_header_longer_than_file": TruncatedFileError, "st_header_100MB_declared": LimitExceededError,
    "st_overlapping": CorruptFileError, "st_out_of_range": CorruptFileError, "st_shape_mismatch": CorruptFileError,
    "st_duplicate_names": CorruptFileError, "st_deep_json": CorruptFileError, "st_huge_shape": CorruptFileError,
}


@pytest.fixture(scope="module")
def attack_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attacks")
    for name, data in ATTACKS.items():
        (folder / f"{name}.pt").write_bytes(data)
    return folder


# A million nested containers: tracemalloc's bookkeeping would take a minute; measured in a subprocess.
BY_RSS = {"nested_lists_in_zip", "nested_tuples_in_legacy", "nested_lists_1e6", "nested_tuples_1e6",
          "amplify_empty_sets", "amplify_empty_dicts", "amplify_memoize", "amplify_tuple1", "amplify_stand_ins"}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_resource_attack_is_bounded(attack_dir, name):
    path = attack_dir / f"{name}.pt"
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        outcome = corpus.exercise(path)
    except CheckpointError as e:
        outcome = e
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # The reader's own time: the smaller of wall-clock and this process's CPU time. The read is CPU work,
    # so a slow read costs both; other processes on a shared machine stretch only the wall clock (under
    # load: 3.8 s wall for 0.8 s of CPU).
    seconds = min(wall, cpu)
    assert seconds < TIME_GUARD, f"{name} took {seconds:.1f} s ({wall:.1f} s wall, {cpu:.1f} s CPU)"
    if name in BY_RSS:
        _, grown = corpus.measure_rss(path, attack_dir / "list_contains_itself.pt")
        assert grown < MEMORY_LIMIT, f"{name} grew the resident set by {grown / corpus.MB:.0f} MB"
    else:
        traced, _, peak = corpus.measure(corpus.exercise, path)
        assert peak < MEMORY_LIMIT, f"{name} allocated {peak / corpus.MB:.0f} MB"
        assert type(traced) is type(outcome)
        scan, _, scan_peak = corpus.measure(scan_file, path)
        assert not isinstance(scan, Exception) and scan_peak < MEMORY_LIMIT
    want = EXPECTED.get(name)
    if isinstance(want, type):
        assert isinstance(outcome, want), f"{name}: {outcome!r}"
        assert outcome.hint                           # what to do, not only what happened
    elif isinstance(want, str):
        assert isinstance(outcome, dict), f"{name}: {outcome!r}"
        assert any(want in p for p in outcome["problems"]), outcome["problems"]
        assert all(rec.get("sha256") is None for rec in outcome["report"]["tensors"] if rec.get("problem"))
    else:
        assert isinstance(outcome, (dict, CheckpointError)), f"{name}: {outcome!r}"


def test_deep_nesting_and_cycles_open_with_walks_cut(attack_dir):
    facts = corpus.exercise(attack_dir / "nested_lists_in_zip.pt")
    assert any("stopped at depth" in w for w in facts["report"]["warnings"])
    for name in ("list_contains_itself", "dict_contains_itself", "standin_contains_itself"):
        facts = corpus.exercise(attack_dir / f"{name}.pt")
        assert facts["tree_nodes"] < 10, name          # the cycle is shown once, never expanded


def test_exponential_dag_is_listed_in_part_and_counted_once(attack_dir):
    from ckptviewer.core.write.export import ExportOptions, plan_export
    from ckptviewer.core.model.tree import build_tree
    with open_checkpoint(attack_dir / "exponential_dag_lists.pt") as ck:
        entries = ck.tensor_entries()
        assert 0 < len(entries) < 100_000
        assert any("exponential object graph" in w for w in ck.warnings)
        assert len(ck.all_tensors()) == 1
        assert build_tree(ck).totals()[:2] == (1, 2)       # one tensor of 2 elements, whatever the paths
        assert plan_export(ck.root, ExportOptions(fmt="pt")).problems             # never a partial copy
        assert plan_export(ck.root, ExportOptions(fmt="safetensors")).problems


def test_zip_member_names_are_never_paths(attack_dir, tmp_path):
    """`../` and absolute member names: nothing is written anywhere, the archive still reads."""
    before = set(tmp_path.parent.rglob("*"))
    facts = corpus.exercise(attack_dir / "zip_dotdot_paths.pt")
    assert facts["tensors"] == 1 and not facts["problems"]
    assert set(tmp_path.parent.rglob("*")) == before
    assert not hostile.Path("/tmp/ckptviewer_escape").exists()


def test_a_100MB_header_is_read_within_bounds(tmp_path):
    path = tmp_path / "big_header.safetensors"
    corpus.big_header_safetensors(path)
    facts, seconds, peak = corpus.measure(corpus.exercise, path)
    assert isinstance(facts, dict) and facts["tensors"] == 1
    assert peak < MEMORY_LIMIT, f"{peak / corpus.MB:.0f} MB"


def test_a_safetensors_file_whose_length_starts_with_a_brace_is_not_an_index(tmp_path):
    """A header of 123 bytes starts the file with 0x7b ("{"): still safetensors, not a JSON shard index."""
    import json
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"k": ""}}
    raw = json.dumps(header).encode()
    raw += b" " * (123 - len(raw))
    path = tmp_path / "brace.safetensors"
    path.write_bytes(corpus.safetensors(raw, bytes(8)))
    assert path.read_bytes()[:1] == b"{"
    with open_checkpoint(path) as ck:
        assert ck.format == "safetensors" and ck.root["w"].readable


# -- truncation at every container boundary ------------------------------------------------------------------
def _zip_boundaries(raw: bytes) -> set[int]:
    z = zipfile.ZipFile(__import__("io").BytesIO(raw))
    cuts = set()
    for info in z.infolist():
        h = info.header_offset
        nlen, xlen = struct.unpack_from("<HH", raw, h + 26)
        start = h + 30 + nlen + xlen
        cuts.update({h, h + 30, start, start + info.compress_size})
    cd = raw.index(b"PK\x01\x02")
    cuts.update({cd, raw.rindex(b"PK\x05\x06"), len(raw) - 22})
    pos = cd
    while raw[pos:pos + 4] == b"PK\x01\x02":
        cuts.add(pos)
        nlen, xlen, clen = struct.unpack_from("<HHH", raw, pos + 28)
        pos += 46 + nlen + xlen + clen
    cuts.update({pos, pos + 56})          # zip64 end record and its locator
    return cuts


def _legacy_boundaries(raw: bytes) -> set[int]:
    cuts, pos = set(), 0
    for _ in range(5):
        scan = walk_pickle(raw, start=pos)
        cuts.update({pos, scan.end})
        pos = scan.end
    while pos + 8 <= len(raw):              # storage records: 8-byte element count, then the bytes
        (count,) = struct.unpack_from("<q", raw, pos)
        cuts.update({pos, pos + 4, pos + 8})
        pos += 8 + count * 4                # the makers' files hold float32 storages
        cuts.add(pos)
    return cuts


@pytest.mark.parametrize("name,container", [("checkpoint.tar", "zip"), ("scripted.pt", "zip"),
                                            ("checkpoint_legacy.tar", "legacy"),
                                            ("whole_model_legacy.pt", "legacy")])
def test_truncated_at_every_boundary(ckpts, tmp_path, name, container):
    raw = ckpts[name].read_bytes()
    base = _zip_boundaries(raw) if container == "zip" else _legacy_boundaries(raw)
    cuts = sorted({c + d for c in base for d in (-1, 0, 1) if 0 < c + d < len(raw)})
    assert len(cuts) > 20
    whole = scan_file(ckpts[name])
    full = {p.name: p.counts for p in whole.pickles}
    pickles_end = whole.pickles[-1].end if container == "legacy" else len(raw)
    path = tmp_path / "cut.pt"
    partial = 0
    for cut in cuts:
        path.write_bytes(raw[:cut])
        try:
            facts = corpus.exercise(path)
        except CheckpointError as e:
            assert isinstance(e, (TruncatedFileError, CorruptFileError, NotACheckpointError)), (cut, e)
        else:
            partial += 1
            assert facts["problems"] or facts["report"]["warnings"], cut
        res = scan_file(path)
        assert not res.dangerous and res.status == (2 if res.broken else 0), cut
        # Every cut loses something: a pickle, a legacy file's raw storages, a zip's directory.
        assert res.broken, cut
        if cut >= pickles_end and container == "legacy":     # the pickles are whole: the bytes are not
            assert all(p.complete for p in res.pickles) and "no bytes" in res.problems[-1], cut
        for p in res.pickles:                # a pickle read to its end names what the whole file's does
            if p.complete and p.name in full:
                assert p.counts == full[p.name], (cut, p.name)
    assert partial > 5                       # cuts after the object pickle leave a partial tree


def test_dense_honest_pickles_stay_inside_the_object_budget(tmp_path):
    """The unpickler's object budget (against one-byte opcodes that each make an object) must leave
    honest pickles alone, also dense ones: 600,000 small containers in torch.save's protocol 2 and
    in protocol 5, which memoizes every object (as torch.distributed.checkpoint metadata does)."""
    import pickle

    import torch
    from ckptviewer.core import open_checkpoint
    from ckptviewer.core.read.pickle.unpickler import BASE_UNITS

    history = [{"step": i, "lr": (i, 0.1)} for i in range(300_000)]
    torch.save({"history": history, "w": torch.zeros(2)}, tmp_path / "dense.pt")
    with open_checkpoint(tmp_path / "dense.pt") as ck:
        assert len(ck.root["history"]) == 300_000 and ck.root["history"][-1] == {"step": 299_999, "lr": (299_999, 0.1)}
    body = pickle.dumps([[i, (i,), {}] for i in range(300_000)], protocol=5)
    (tmp_path / "dense5.pt").write_bytes(hostile.torch_zip(body))
    with open_checkpoint(tmp_path / "dense5.pt") as ck:
        assert len(ck.root) == 300_000 and ck.root[-1] == [299_999, (299_999,), {}]
    assert 4 * 300_000 > BASE_UNITS      # the budget's base alone would not have held them
