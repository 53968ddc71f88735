"""`scan` finds pickles wherever a loader or a person could find them (issue 20), and the reader warns about
archive anomalies instead of refusing them (issue 13).

Every container is built at test time around hostile.py's harmless payloads (they would only create a
marker file; nothing here unpickles them) and around clean pickles (no false alarms).
"""
from __future__ import annotations

import gzip
import io
import json
import pickle
import subprocess
import sys
import tarfile
import zipfile

import pytest

import hostile
import scanvectors as sv
from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.scan import FRAMES, scan_buffer, scan_file, walk_pickle
from ckptviewer.core.analyze.scanning.report import JIT_LOAD, NUMPY_LOAD, TORCH_LOAD, UNPACKING, categorize
from ckptviewer.core.read.pickle.danger import danger_reason
from ckptviewer.core.util.errors import CheckpointError

CLI = [sys.executable, "-m", "ckptviewer"]
HAS_7Z = True
try:
    import py7zr  # noqa: F401
except ImportError:
    HAS_7Z = False


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every vector around an os.system payload, and around a clean pickle, written once."""
    folder = tmp_path_factory.mktemp("vectors")
    marker = folder / "PWNED"
    cmd = hostile.touch_cmd(marker)
    payload = hostile.payloads(marker)["global_reduce_os_system"]
    fragment = hostile.glob("os", "system") + hostile.s(cmd) + b"\x85R"
    clean = pickle.dumps({"lr": 0.1, "names": ["a", "b"]}, protocol=2)
    evil = sv.vectors(payload, fragment, with_7z=HAS_7Z)
    good = sv.vectors(clean, hostile.s("harmless"), with_7z=HAS_7Z)
    paths = {}
    for kind, vecs in (("evil", evil), ("clean", good)):
        for vid, data in vecs.items():
            path = folder / f"{kind}_{vid}.bin"
            path.write_bytes(data)
            paths[kind, vid] = path
    yield paths, marker
    assert not marker.exists()


VECTOR_IDS = sorted(sv.vectors(b"N.", b"N", with_7z=HAS_7Z))
# Clean containers whose structure is itself broken: scanned, nothing dangerous, but read only in part.
BROKEN_WHEN_CLEAN = {"Z06": "CRC-32", "Z07": "CRC-32", "Z11": "does not inflate", "Z15": "unreadable",
                     "Z24": "CRC-32", "P02": "in the middle of a pickle", "P02b": "in the middle of a pickle"}


@pytest.mark.parametrize("vid", VECTOR_IDS)
def test_every_container_trick_is_found(made, vid):
    paths, marker = made
    res = scan_file(paths["evil", vid])
    assert res.status == 1, (vid, res.verdict(), res.problems)
    assert "os.system" in {g.qualname for g in res.dangerous}, vid
    assert not marker.exists()


@pytest.mark.parametrize("vid", VECTOR_IDS)
def test_the_same_containers_around_clean_pickles_are_not_dangerous(made, vid):
    paths, _ = made
    res = scan_file(paths["clean", vid])
    if vid == "P03":             # a frame divergence hides opcodes whatever they are: dangerous by itself
        assert res.status == 1 and {g.module for g in res.dangerous} == {FRAMES}
        return
    assert not res.dangerous and not res.dangerous_code, (vid, [g.qualname for g in res.dangerous])
    if vid in BROKEN_WHEN_CLEAN:
        assert res.status == 2 and any(BROKEN_WHEN_CLEAN[vid] in p for p in res.problems), (vid, res.problems)
    else:
        assert res.status == 0, (vid, res.problems)


@pytest.mark.parametrize("vid", VECTOR_IDS)
def test_no_vector_crashes_the_reader(made, vid):
    """Opening each file either works (anomalies are warnings) or is a clear CheckpointError."""
    paths, marker = made
    for kind in ("evil", "clean"):
        try:
            with open_checkpoint(paths[kind, vid]) as ck:
                ck.tensor_entries()
        except CheckpointError as e:
            assert e.message
    assert not marker.exists()


def _pickle(res, part: str):
    return next(p for p in res.pickles if any(q == "os.system" for q in (f"{m}.{n}" for m, n in p.counts))
                and part in p.where)


def test_each_pickle_says_where_it_sat_and_who_would_load_it(made):
    paths, _ = made
    res = scan_file(paths["evil", "Z02"])                     # a pickle in a member called extra.bin
    p = _pickle(res, "extra.bin")
    assert p.name == "extra.bin" and "central directory" in p.where and p.loader == UNPACKING
    assert any(q.loader == TORCH_LOAD for q in res.pickles if q.name == "data.pkl")
    res = scan_file(paths["evil", "Z01"])
    assert _pickle(res, "data.pkl").loader == TORCH_LOAD
    res = scan_file(paths["evil", "Z22"])                     # npy content under a name without .npy
    assert _pickle(res, "weights").loader == NUMPY_LOAD
    res = scan_file(paths["evil", "Z16"])                     # a local entry the directory leaves out
    assert "local header only" in _pickle(res, "data.pkl").where
    assert any("not in the central directory" in a for a in res.anomalies)
    res = scan_file(paths["evil", "Z13"])                     # appended after the end record
    assert "after the end record" in _pickle(res, "after").where
    res = scan_file(paths["evil", "T03"])                     # torch reads the last `storages`
    last = [p for p in res.pickles if p.name.startswith("storages")]
    assert [p.loader for p in last] == [UNPACKING, TORCH_LOAD] and ("os", "system") in last[1].counts
    res = scan_file(paths["evil", "T06"])                     # a torch archive inside a tar
    assert _pickle(res, "model.pt").loader.startswith(f"{TORCH_LOAD} of model.pt")


def test_disagreements_between_the_two_views_are_anomalies(made):
    paths, _ = made
    for vid, words in (("Z08", "in its local header"), ("Z10", "compression method"), ("Z17", "duplicate"),
                       ("Z12", "follow the end"), ("Z04_0x1", "encrypted"), ("Z05", "encryption"),
                       ("Z19", "precede"), ("Z25", "in its local header")):
        for kind in ("evil", "clean"):
            res = scan_file(paths[kind, vid])
            assert any(words in a for a in res.anomalies), (vid, kind, res.anomalies)
    assert not scan_file(paths["clean", "Z01"]).anomalies


def test_overlapping_members_are_an_anomaly_and_both_are_scanned(tmp_path, marker):
    """Two directory entries that point at one local header: a second name for the same bytes."""
    b = sv.mkzip([("a/data.pkl", hostile.payloads(marker)["global_reduce_os_system"]), ("a/version", b"3\n")])
    (c1, l1, n1), (c2, l2, n2) = sv.cd_entries(b)
    sv.u32(b, c2 + 42, l1)                                    # version's entry now points at data.pkl's header
    path = tmp_path / "overlap.zip"
    path.write_bytes(bytes(b))
    res = scan_file(path)
    assert res.status == 1 and any("overlap" in a for a in res.anomalies)
    assert sum(1 for p in res.pickles if ("os", "system") in p.counts) == 2
    with open_checkpoint(path) as ck:                        # the reader opens it, with a warning
        assert any("overlap" in w for w in ck.warnings)
    assert not marker.exists()


def test_the_cli_reports_anomalies_where_and_exit_status(made):
    paths, _ = made
    out = subprocess.run(CLI + ["scan", str(paths["evil", "Z08"])], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "anomaly: zip member" in out.stdout and "found in data.pkl" in out.stdout and "loaded by torch.load" in out.stdout
    out = subprocess.run(CLI + ["scan", "--json", str(paths["evil", "Z02"]), str(paths["clean", "Z08"])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    evil, clean = json.loads(out.stdout)
    assert evil["status"] == 1 and clean["status"] == 0 and clean["anomalies"]
    row = next(g for g in evil["globals"] if g["category"] == "dangerous")
    assert row["loader"] == UNPACKING and "extra.bin" in row["where"]


# -- pickles hidden from the walk ------------------------------------------------------------------------------
def test_frame_divergence_reports_what_the_c_unpickler_runs(marker):
    """pickle.py stops where an opcode crosses a frame's end; the C unpickler reading a file skips to the
    frame's end and runs what the flat reading sees as bytes. Both readings are reported, and the file
    is dangerous even where the hidden part names nothing."""
    hidden = hostile.glob("os", "system") + hostile.s(hostile.touch_cmd(marker)) + b"\x85R"
    res = walk_pickle(sv.frame_divergence(hidden))
    assert ("os", "system") in res.counts
    assert any(m == FRAMES for m, _ in res.counts)
    quiet = walk_pickle(sv.frame_divergence(b"N"))
    assert [m for m, _ in quiet.counts] == [FRAMES] and categorize(*next(iter(quiet.counts)))[0] == "dangerous"
    assert not marker.exists()


@pytest.mark.parametrize("proto", [4, 5])
def test_real_frames_are_not_a_divergence(proto):
    """pickle writes large strings and bytes after the frame that holds their opcode: not a crossing."""
    obj = [b"x" * 300_000, "y" * 200_000, {f"k{i}": (i, str(i)) for i in range(20_000)}, bytearray(70_000)]
    res = walk_pickle(pickle.dumps(obj, protocol=proto))
    assert res.complete and not any(m == FRAMES for m, _ in res.counts)


def test_pickles_are_found_by_content_not_by_name(tmp_path, marker):
    payload = hostile.payloads(marker)["stack_global_exec"]
    # A stray member called like a tensor record, one called like code, and text that is not a pickle.
    data = zipfile.ZipFile(io.BytesIO(sv.torch_save()))
    path = tmp_path / "stray.pt"
    path.write_bytes(sv.rezip(data, lambda n, d: [(n, d, sv.S)] + (
        [(n.rsplit("/", 1)[0] + "/data/99", payload, sv.S), (n.rsplit("/", 1)[0] + "/code/x.py", payload, sv.D),
         (n.rsplit("/", 1)[0] + "/notes.txt", b"class M(Module):\n  __parameters__ = []\n", sv.D)]
        if n.endswith("/version") else [])))
    res = scan_file(path)
    assert {p.name for p in res.pickles if ("builtins", "exec") in p.counts} == {"data/99", "code/x.py"}
    assert "notes.txt" not in {p.name for p in res.pickles}
    assert not marker.exists()


@pytest.mark.parametrize("vid", sorted(sv.PICKLE_LEVEL_FLAGS))
def test_deny_list_bypasses_are_dangerous(tmp_path, marker, vid):
    data = sv.pickle_level(hostile.py_touch(marker))[vid]
    path = tmp_path / f"{vid}.pkl"
    path.write_bytes(data)
    res = scan_file(path)
    assert res.status == 1 and sv.PICKLE_LEVEL_FLAGS[vid] in {g.qualname for g in res.dangerous}
    assert not marker.exists()


def test_new_danger_entries_and_rules():
    for module, name in [("torch._utils", "_import_dotted_name"), ("sympy", "sympify"), ("typing", "get_type_hints"),
                         ("string", "Formatter.get_field"), ("numpy", "save"), ("numpy", "memmap"),
                         ("numpy.lib.format", "read_array"), ("torch", "save"), ("torch", "from_file"),
                         ("torch", "UntypedStorage.from_file"), ("builtins", "__getattribute__"),
                         ("numpy", "__builtins__"), ("reprlib", "builtins"), ("glob", "os"), ("torch._utils", "sys"),
                         ("anything", "_os"), ("X", "__loader__"), ("pandas.io.pickle", "read_pickle"),
                         ("_io", "open_code"), ("gzip", "GzipFile"), ("pkg_resources", "load_entry_point"),
                         ("torch.utils.benchmark", "Timer"), ("linecache", "getline")]:
        assert categorize(module, name)[0] == "dangerous", (module, name)
        assert danger_reason(module, name)
    # What real checkpoints name stays as it was.
    for module, name in [("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"),
                         ("copyreg", "__newobj__"), ("copy_reg", "_reconstructor"), ("__main__", "Net"),
                         ("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"), ("numpy", "ndarray"),
                         ("torch.profiler", "profile"), ("argparse", "Namespace"), ("sympy.core.numbers", "Integer"),
                         ("__torch__.torch.nn.modules.linear", "Linear"), ("torch", "Size"), ("builtins", "set")]:
        assert categorize(module, name)[0] != "dangerous", (module, name)


# -- archives people unpack -----------------------------------------------------------------------------------
def test_tar_v7_duplicates_and_data_after_the_archive(tmp_path, marker):
    payload = hostile.payloads(marker)["global_reduce_os_system"]
    tar = sv.v7(sv.mktar([("weights/model.pkl", pickle.dumps([1], protocol=2))], tarfile.GNU_FORMAT))
    path = tmp_path / "old.tar"
    path.write_bytes(bytes(tar) + payload)
    res = scan_file(path)
    assert res.format == "tar" and res.status == 1
    assert any("follow the end of the tar archive" in a for a in res.anomalies)
    assert not marker.exists()


def test_tar_gz_bombs_and_deep_nesting_are_bounded(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range(300):
            f.write(bytes(1 << 20))                    # 300 MiB of zeros: a bomb (1000-fold)
    res = scan_file(bomb)
    assert res.status == 2 and any("bomb" in p for p in res.problems) and not res.dangerous
    inner = pickle.dumps({"a": 1}, protocol=2)
    for i in range(7):
        inner = bytes(sv.mkzip([(f"level{i}.zip" if i else "m.pkl", inner)]))
    path = tmp_path / "deep.zip"
    path.write_bytes(inner)
    res = scan_file(path)
    assert res.status == 2 and any("nested more than" in p for p in res.problems)


@pytest.mark.skipif(not HAS_7Z, reason="py7zr (the optional ckptviewer[7z] extra) is not installed")
def test_7z_members_are_scanned_in_memory(made, tmp_path):
    paths, marker = made
    folder = paths["evil", "S01"].parent
    before = sorted(folder.iterdir())
    for vid in ("S01", "S02", "S03"):
        res = scan_file(paths["evil", vid])
        assert res.format == "7z" and res.status == 1
        where = [p.where for p in res.pickles if ("os", "system") in p.counts]
        assert where and (vid != "S01" or where == ["data.pkl (7-Zip member)"]), where
    assert sorted(folder.iterdir()) == before and not marker.exists()       # nothing extracted to disk


def test_7z_without_py7zr_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "py7zr", None)
    monkeypatch.setitem(sys.modules, "py7zr.io", None)
    path = tmp_path / "a.7z"
    path.write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(64))
    res = scan_file(path)
    assert res.status == 2 and any("ckptviewer[7z]" in p for p in res.problems)


# -- TorchScript code that runs at load --------------------------------------------------------------------------
def _scripted(tmp_path, marker) -> tuple:
    import torch
    from typing import Tuple

    class Saver(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))
            self.path = str(marker)

        def forward(self, x):
            return x * self.w

        @torch.jit.export
        def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:
            return (self.w, self.path, self.training)

        @torch.jit.export
        def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:
            self.w = state[0]
            self.path = state[1]
            self.training = state[2]
            self.helper()

        @torch.jit.export
        def helper(self) -> None:
            print("saving")
            torch.save(self.w, self.path)          # reached from __setstate__ through helper()

    class Printer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n = 1

        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self) -> Tuple[int, bool]:
            return (self.n, self.training)

        @torch.jit.export
        def __setstate__(self, state: Tuple[int, bool]) -> None:
            self.n = state[0]
            self.training = state[1]
            print("loaded", self.n)

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evil, calm = tmp_path / "saver.pt", tmp_path / "printer.pt"
        torch.jit.save(torch.jit.script(Saver()), str(evil))      # saving runs __getstate__, never __setstate__
        torch.jit.save(torch.jit.script(Printer()), str(calm))
    return evil, calm


def test_torchscript_code_that_runs_at_load_is_read_never_run(tmp_path, marker):
    evil, calm = _scripted(tmp_path, marker)
    res = scan_file(evil)
    assert res.format == "torchscript" and res.status == 1
    (finding,) = res.dangerous_code
    assert finding.method == "Saver.__setstate__" and "torch.save" in finding.calls and "print" in finding.calls
    assert finding.member.startswith("code/") and finding.loader == JIT_LOAD
    res = scan_file(calm)
    assert res.status == 0 and [c.method for c in res.code] == ["Printer.__setstate__"]
    assert res.code[0].category == "unknown" and res.code[0].calls == ("print",)
    assert not marker.exists()


def _with_code(base: bytes, text: str) -> bytes:
    """``base`` with the code file that defines Printer replaced by ``text`` (hand-edited code)."""
    src = zipfile.ZipFile(io.BytesIO(base))
    return sv.rezip(src, lambda n, d: [(n, text.encode() if n.endswith(".py") and b"class Printer" in d else d,
                                        sv.D if "/code/" in n else sv.S)])


def test_hand_edited_code_custom_ops_torchbind_and_unparsable_text(tmp_path, marker):
    _, calm = _scripted(tmp_path, marker)
    base = calm.read_bytes()
    code = ("class Printer(Module):\n  n : int\n  def __setstate__(self: __torch__.Printer, state: Tuple[int, bool])"
            " -> NoneType:\n    x = ops.evilns.run(\"payload\")\n    y = getattr(torch, \"from_file\")(\"/etc/x\", True, 4)\n"
            "    return None\n")
    path = tmp_path / "edited.pt"
    path.write_bytes(_with_code(base, code))
    res = scan_file(path)
    (finding,) = res.dangerous_code
    assert set(finding.calls) == {"ops.evilns.run", "torch.from_file"} and "custom operator" in finding.reason
    path.write_bytes(_with_code(base, "class Printer(Module:\n  def"))
    res = scan_file(path)
    assert res.status == 2 and any("could not be parsed" in p for p in res.problems)
    # A TorchBind object in data.pkl: its native __setstate__ runs at load.
    data = hostile.PROTO2 + hostile.glob("__torch__.torch.classes.evilns", "Thing") + b")\x81."
    path.write_bytes(hostile.torchscript(data))
    res = scan_file(path)
    assert res.status == 1 and "torch.classes.evilns.Thing" in res.dangerous_code[0].calls
    assert not marker.exists()


# -- the reader: anomalies are warnings -------------------------------------------------------------------------
def test_reader_opens_what_torch_loads_and_warns(tmp_path):
    """Duplicate names (the later wins, as torch reads it), a local name that differs, a member outside
    the archive's folder, a local method that differs: each opens with a warning."""
    import torch
    base = zipfile.ZipFile(io.BytesIO(sv.torch_save()))
    path = tmp_path / "dup.pt"
    path.write_bytes(sv.rezip(base, lambda n, d: [(n, pickle.dumps({"w": 0}, protocol=2), sv.S), (n, d, sv.S)]
                              if n.endswith("data.pkl") else [(n, d, sv.S)]))
    with open_checkpoint(path) as ck:
        assert torch.equal(torch.from_numpy(ck.root["w"].read()), torch.arange(4, dtype=torch.float32))
        assert any("duplicate" in w for w in ck.warnings)
    b = bytearray(sv.torch_save())
    c, lo, n = sv.find(b, b"data.pkl")
    b[lo + 30 + len(n) - 8:lo + 30 + len(n)] = b"datX.pkl"
    sv.u16(b, lo + 8, 8)                                     # and a local method that says deflate
    path.write_bytes(bytes(b))
    with open_checkpoint(path) as ck:
        assert ck.root["w"].shape == (4,)
        assert any("in its local header" in w for w in ck.warnings)
        assert any("compression method" in w for w in ck.warnings)
    path.write_bytes(sv.rezip(zipfile.ZipFile(io.BytesIO(sv.torch_save())),
                              lambda n, d: [(n, d, sv.S)] + ([("../escape.txt", b"x", sv.S)] if n.endswith("version") else [])))
    with open_checkpoint(path) as ck:
        assert any("outside the archive's top folder" in w for w in ck.warnings)


def test_reader_reads_v7_and_duplicated_legacy_tars_as_torch_does(tmp_path):
    """torch < 0.1.10's tar, written as an old v7 tar with an empty `storages` before the real one:
    tarfile (and so torch) reads the last member of a name; so does the reader, with a warning."""
    import torch
    storages = (pickle.dumps(1, protocol=2) + pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2)
                + (2).to_bytes(8, "little") + b"\x00\x00\x80?\x00\x00\x00@" + pickle.dumps([], protocol=2))
    tensors = (pickle.dumps(1, protocol=2) + pickle.dumps(("t", "0", torch.FloatTensor), protocol=2)
               + (1).to_bytes(4, "little") + bytes(4) + (2).to_bytes(8, "little") + (1).to_bytes(8, "little")
               + (0).to_bytes(8, "little"))
    members = [("storages", pickle.dumps(0, protocol=2)), ("storages", storages), ("tensors", tensors),
               ("pickle", _persistent_pickle({"w": _Pid("t")}))]
    path = tmp_path / "old.tar"
    path.write_bytes(bytes(sv.v7(sv.mktar(members, tarfile.GNU_FORMAT))))
    with open_checkpoint(path) as ck:
        assert ck.format == "torch-tar" and list(ck.root["w"].read()) == [1.0, 2.0]
        assert any("more than one member named 'storages'" in w for w in ck.warnings)
    res = scan_file(path)
    assert res.status == 0 and res.format == "torch-tar"
    assert any("more than one member named" in a for a in res.anomalies)


class _Pid:
    def __init__(self, key):
        self.key = key


def _persistent_pickle(obj) -> bytes:
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)
    p.persistent_id = lambda o: o.key if isinstance(o, _Pid) else None
    p.dump(obj)
    return buf.getvalue()


def test_scan_buffer_of_bytes_matches_the_file(made):
    paths, _ = made
    raw = paths["evil", "Z16"].read_bytes()
    assert scan_buffer(raw, "x").status == scan_file(paths["evil", "Z16"]).status == 1
