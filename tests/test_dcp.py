"""torch.distributed.checkpoint folders: read safely, values assembled from chunks, info/diff/convert.

Folders are written at test time by torch's own ``dcp.save`` (single process, CPU); tensors split into
several chunks come from a save planner that writes sub-boxes, as sharded training would. torch's
``dcp_to_torch_save`` gives the expected tensors (used here only, on folders the test wrote).
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import pickle
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ckptviewer.core.analyze.diff import DiffOptions, DiffRun
from ckptviewer.core.util.errors import CorruptFileError, OperationError
from ckptviewer.core.write.export import ExportOptions, export
from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.read.multifile.dcp import ChunkedSource, check_tiling
from ckptviewer.core.analyze.info import build_report, report_text, stand_in_classes
from ckptviewer.core.model.objects import StandIn, Unreadable
from ckptviewer.core.edit.ops import Select, StripPrefix, apply_steps
from ckptviewer.core.model.tensor import TensorRef
from models import BNNet

dcp = pytest.importorskip("torch.distributed.checkpoint")
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner  # noqa: E402
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save  # noqa: E402
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex  # noqa: E402
from torch.distributed.checkpoint.planner import TensorWriteData, WriteItem, WriteItemType  # noqa: E402


# -- making folders ----------------------------------------------------------------------------------------
class SplitPlanner(DefaultSavePlanner):
    """Writes the chosen tensors as several chunks (boxes of the global tensor), each its own write item,
    as a tensor sharded across ranks is written; everything else as torch's default planner does."""

    def __init__(self, splits: dict[str, list[tuple[tuple, tuple]]]):
        super().__init__()
        self.splits = splits

    def create_local_plan(self):
        plan = super().create_local_plan()
        items = []
        for item in plan.items:
            boxes = self.splits.get(item.index.fqn)
            if boxes is None:
                items.append(item)
                continue
            for offsets, sizes in boxes:
                items.append(WriteItem(
                    index=MetadataIndex(item.index.fqn, torch.Size(offsets)), type=WriteItemType.SHARD,
                    tensor_data=TensorWriteData(chunk=ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes)),
                                                properties=item.tensor_data.properties, size=item.tensor_data.size)))
        self.plan = dataclasses.replace(plan, items=items)
        return self.plan

    def resolve_data(self, write_item):
        if write_item.index.fqn not in self.splits:
            return super().resolve_data(write_item)
        t = self.state_dict[write_item.index.fqn]
        for d, (o, s) in enumerate(zip(write_item.tensor_data.chunk.offsets, write_item.tensor_data.chunk.sizes)):
            t = t.narrow(d, o, s)
        return t


def save_dcp(state_dict, folder: Path, splits=None, one_file=True) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "torch.distributed is disabled ... single process"
        dcp.save(state_dict, checkpoint_id=str(folder), planner=SplitPlanner(splits or {}),
                 storage_writer=dcp.FileSystemWriter(str(folder), single_file_per_rank=one_file))
    return folder


def oracle(folder: Path):
    """What torch itself reads from the folder (a torch.save file written by torch's converter)."""
    out = folder.parent / (folder.name + ".oracle.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp_to_torch_save(str(folder), str(out))
    return torch.load(out, weights_only=True)


def flat(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from flat(v, prefix + (i,))
    else:
        yield prefix, obj


def raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def assert_same_tensors(ck, expected) -> int:
    want = {p: v for p, v in flat(expected) if isinstance(v, torch.Tensor)}
    got = {tuple(p): t for p, t in ck.tensor_entries()}
    assert set(got) == set(want)
    for path, t in got.items():
        w = want[path]
        assert t.dtype.name == str(w.dtype).removeprefix("torch.") and list(t.shape) == list(w.shape), path
        assert t.device == "cpu"
        assert t.sha256() == hashlib.sha256(raw_bytes(w)).hexdigest(), path
    return len(got)


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """model + Adam state after one step + plain values, saved by dcp.save in one .distcp file."""
    torch.manual_seed(0)
    model = BNNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 7, "run": "trial-3",
             "cfg": {"lr": 0.001, "betas": (0.9, 0.999), "layers": [64, 32]}}
    folder = save_dcp(state, tmp_path_factory.mktemp("dcp") / "train")
    return folder, oracle(folder)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Tensors split into chunks along any dimension, each chunk in its own .distcp file."""
    g = torch.Generator().manual_seed(1)
    state = {"a": torch.randn(7, 9, generator=g),
             "b": torch.randn(4, 5, 6, generator=g).to(torch.bfloat16),
             "c": torch.arange(10, dtype=torch.int64),
             "h": torch.randn(6, 4, generator=g).half(),
             "t": torch.randn(9, 3, generator=g).t(),         # saved from a transposed view
             "s": torch.tensor(3.5), "e": torch.zeros(0, 3), "n": 5}
    splits = {"a": [((0, 0), (2, 9)), ((2, 0), (5, 4)), ((2, 4), (5, 5))],
              "b": [((0, 0, 0), (4, 5, 1)), ((0, 0, 1), (4, 5, 5))],
              "c": [((0,), (3,)), ((3,), (7,))],
              "h": [((0, 0), (3, 4)), ((3, 0), (3, 4))],
              "t": [((0, 0), (3, 4)), ((0, 4), (3, 5))]}
    folder = save_dcp(state, tmp_path_factory.mktemp("dcp") / "split", splits, one_file=False)
    return folder, oracle(folder)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- reading -----------------------------------------------------------------------------------------------
def test_training_checkpoint_matches_torch(training):
    folder, expected = training
    with open_checkpoint(folder) as ck:
        assert ck.format == "torch-dcp"
        assert assert_same_tensors(ck, expected) == sum(1 for _, v in flat(expected) if isinstance(v, torch.Tensor))
        # The original nesting comes back, and the non-tensor values with it.
        assert ck.root["epoch"] == 7 and ck.root["run"] == "trial-3"
        assert ck.root["cfg"]["betas"] == (0.9, 0.999) and ck.root["cfg"]["layers"] == [64, 32]
        assert ck.root["optim"]["param_groups"][0]["lr"] == expected["optim"]["param_groups"][0]["lr"]
        assert list(ck.root["model"]) == list(expected["model"])
        report = build_report(ck, checksums=True)
        assert report["dangerous_globals"] == []
        assert "Adam" in report["summary"] and report["meta"]["dcp_version"]
        text = report_text(ck)
        assert "torch-dcp" in text and "Layout" in text


def test_opening_reads_no_chunk(split):
    folder, _ = split
    with open_checkpoint(folder) as ck:
        sources = [t.storage.source for _, t in ck.tensor_entries()]
        assert all(isinstance(s, ChunkedSource) for s in sources)
        assert all(c.tensor is None for s in sources for c in s.chunks)        # nothing parsed yet
        chunk_files = {c["file"] for chunks in ck.meta["chunks"].values() for c in chunks}
        mapped = {f.name for f in ck._resources if f._mm is not None}          # only the value "n"'s file
        assert len(mapped) == 1 and not mapped & chunk_files


def test_chunks_split_along_any_dimension_assemble_to_torchs_values(split):
    folder, expected = split
    with open_checkpoint(folder) as ck:
        assert assert_same_tensors(ck, expected) == 7
        assert ck.root["n"] == 5
        assert set(ck.meta["chunks"]) == {"a", "b", "c", "h", "t"}
        a = ck.meta["chunks"]["a"]
        assert [c["offsets"] for c in a] == [[0, 0], [2, 0], [2, 4]] and len({c["file"] for c in a}) == 3
        assert any("a: [7, 9] in 3 chunks split along dim 0, 1" in line for line in ck.meta["layout"])
        assert ck.root["a"].storage.key.startswith("3 chunks in ")


def test_any_byte_range_of_a_split_tensor(split):
    """The ByteSource maps any global byte range onto the chunks (unaligned, across chunk edges)."""
    folder, expected = split
    rng = random.Random(5)
    with open_checkpoint(folder) as ck:
        for name in ("a", "b", "c", "h", "t"):
            src, want = ck.root[name].storage.source, raw_bytes(expected[name])
            assert src.size == len(want)
            for _ in range(60):
                off = rng.randrange(len(want))
                n = rng.randrange(len(want) - off + 1)
                assert bytes(src.view(off, n)) == want[off:off + n], (name, off, n)
                src.release(off, n)
            pieces = b"".join(bytes(p) for p in ck.root[name].iter_bytes(max_bytes=7))
            assert pieces == want
        with pytest.raises(Exception):
            ck.root["a"].storage.source.view(0, 10_000)


def test_values_and_stats_of_a_split_tensor(split):
    folder, expected = split
    with open_checkpoint(folder) as ck:
        np.testing.assert_array_equal(ck.root["a"].read(), expected["a"].numpy())
        np.testing.assert_array_equal(ck.root["b"].read(), expected["b"].float().numpy())
        rows = list(ck.root["a"].iter_values(max_bytes=40))
        np.testing.assert_array_equal(np.concatenate([r.reshape(-1) for r in rows]), expected["a"].numpy().ravel())


def test_check_tiling():
    assert check_tiling((4, 4), [((0, 0), (2, 4)), ((2, 0), (2, 4))]) is None
    assert "missing" in check_tiling((4, 4), [((0, 0), (2, 4))])
    assert "overlap" in check_tiling((4, 4), [((0, 0), (3, 4)), ((2, 0), (2, 4))])
    # Same element count, one overlap and one gap: caught by the grid, not by counting.
    assert "overlap" in check_tiling((4, 4), [((0, 0), (2, 4)), ((1, 0), (2, 4))])
    assert "overlap" in check_tiling((2, 4), [((0, 0), (1, 4)), ((0, 0), (1, 4))])
    assert "outside" in check_tiling((4, 4), [((0, 0), (5, 4))])
    assert check_tiling((0, 3), []) is None
    assert check_tiling((), [((), ())]) is None


def test_close_releases_every_file(split):
    folder, _ = split
    before = fd_count()
    ck = open_checkpoint(folder)
    for _, t in ck.tensor_entries():
        t.sha256()
    assert fd_count() > before
    files = list(ck._resources)
    assert any(f._mm is not None for f in files)
    ck.close()
    assert all(f._mm is None for f in files) and fd_count() <= before


# -- damaged and hostile folders ---------------------------------------------------------------------------
def _rewrite_metadata(folder: Path, change) -> None:
    """Load our own .metadata with pickle (test side, a file this test wrote), change it, write it back."""
    path = folder / ".metadata"
    md = pickle.loads(path.read_bytes())
    change(md)
    path.write_bytes(pickle.dumps(md))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_missing_data_file_is_reported_not_fatal(split, tmp_path):
    folder = _copy(split[0], tmp_path)
    with open_checkpoint(folder) as ck:
        victim = ck.meta["chunks"]["a"][1]["file"]
    (folder / victim).unlink()
    with open_checkpoint(folder) as ck:
        a = ck.root["a"]
        assert not a.readable and "missing" in a.problem and list(a.shape) == [7, 9]
        assert ck.root["c"].readable and ck.root["c"].read().tolist() == list(range(10))
        report = build_report(ck)
        assert any(victim in w and "missing" in w for w in report["warnings"])
        assert any(w.startswith("tensor a:") for w in report["warnings"])
        with pytest.raises(OperationError, match="drop it"):
            export(ck.root, str(tmp_path / "out.pt"))


@pytest.mark.parametrize("bad", ["../outside.distcp", "/etc/passwd", "sub/x.distcp", "..", ""])
def test_data_file_names_outside_the_folder_are_refused(training, tmp_path, bad):
    folder = _copy(training[0], tmp_path)
    (tmp_path / "outside.distcp").write_bytes((folder / "__0_0.distcp").read_bytes())

    def change(md):
        for info in md.storage_data.values():
            info.relative_path = bad
    _rewrite_metadata(folder, change)
    with open_checkpoint(folder) as ck:
        assert all(not t.readable for _, t in ck.tensor_entries())
        assert isinstance(ck.root["epoch"], Unreadable)
        assert any("refused" in w for w in ck.warnings)
        assert ck.meta["files"] == [] or all("problem" in f for f in ck.meta["files"])


def test_link_out_of_the_folder_is_refused(training, tmp_path):
    folder = _copy(training[0], tmp_path)
    outside = tmp_path / "elsewhere.distcp"
    shutil.move(folder / "__0_0.distcp", outside)
    os.symlink(outside, folder / "__0_0.distcp")
    with open_checkpoint(folder) as ck:
        assert all(not t.readable for _, t in ck.tensor_entries())
        assert any("link" in w for w in ck.warnings)


def test_records_past_the_end_overlaps_and_gaps(split, tmp_path):
    folder = _copy(split[0], tmp_path)

    def change(md):
        for key, info in md.storage_data.items():
            if key.fqn == "c":
                info.length += 10_000                   # past the end of its file
        chunks = md.state_dict_metadata["a"].chunks
        chunks[1] = ChunkStorageMetadata(torch.Size([1, 0]), torch.Size([5, 4]))    # overlaps chunk 0, gap below
        md.state_dict_metadata["h"].chunks.pop()                                      # half the values missing
    _rewrite_metadata(folder, change)
    with open_checkpoint(folder) as ck:
        assert "past the file's end" in ck.root["c"].problem
        assert "overlap" in ck.root["a"].problem
        assert "missing" in ck.root["h"].problem
        assert ck.root["b"].readable


def test_transformed_records_are_unreadable(training, tmp_path):
    folder = _copy(training[0], tmp_path)

    def change(md):
        for info in md.storage_data.values():
            info.transform_descriptors = ["stream.zstd/1"]
    _rewrite_metadata(folder, change)
    with open_checkpoint(folder) as ck:
        assert all("transforms" in t.problem for _, t in ck.tensor_entries())


def test_chunk_that_disagrees_with_the_metadata(split, tmp_path):
    folder = _copy(split[0], tmp_path)

    def change(md):
        md.state_dict_metadata["c"].properties.dtype = torch.int32
    _rewrite_metadata(folder, change)
    with open_checkpoint(folder) as ck:
        t = ck.root["c"]
        assert t.readable        # the metadata alone looks fine ...
        with pytest.raises(Exception, match="int64"):
            t.sha256()           # ... the chunk says otherwise, and its values are refused


def test_nesting_that_does_not_fit_falls_back_to_flat_keys(training, tmp_path):
    folder = _copy(training[0], tmp_path)

    def change(md):
        md.planner_data["epoch"] = ("model", "head.weight")     # two entries at one place
    _rewrite_metadata(folder, change)
    with open_checkpoint(folder) as ck:
        assert "epoch" in ck.root and "model.head.weight" in ck.root
        assert any("does not fit together" in w for w in ck.warnings)


class _Touch:
    """Pickles as os.system("touch MARKER"): what a hostile .metadata or value would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_metadata_is_reported_and_never_run(training, tmp_path, marker):
    folder = _copy(training[0], tmp_path)
    _rewrite_metadata(folder, lambda md: md.storage_meta.modules.append(_Touch(marker)))
    with open_checkpoint(folder) as ck:
        _, dangerous = stand_in_classes(ck)
        assert any(name.endswith(".system") for name, _ in dangerous)
        assert build_report(ck)["dangerous_globals"]
        assert ck.root["epoch"] == 7               # the folder still opens and shows its contents
    assert not marker.exists()


def test_metadata_that_is_only_a_payload(training, tmp_path, marker):
    folder = _copy(training[0], tmp_path)
    (folder / ".metadata").write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(CorruptFileError, match="not a torch.distributed.checkpoint Metadata"):
        open_checkpoint(folder)
    assert not marker.exists()


def test_hostile_value_is_reported_and_not_exported(tmp_path, marker):
    folder = save_dcp({"w": torch.ones(3), "evil": _Touch(marker)}, tmp_path / "evil")
    with open_checkpoint(folder) as ck:
        assert isinstance(ck.root["evil"], StandIn) and ck.root["evil"].dangerous
        assert any(n.endswith(".system") for n in build_report(ck)["dangerous_globals"])
        with pytest.raises(OperationError, match="dangerous"):
            export(ck.root, str(tmp_path / "out.pt"))
    assert not marker.exists()


def test_package_never_uses_torchs_dcp_reader():
    """torch's DCP reader unpickles .metadata: the package must not import torch.distributed at all."""
    root = Path(__file__).resolve().parents[1] / "ckptviewer"
    offenders = []
    for py in root.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute) and node.attr in ("FileSystemReader", "dcp_to_torch_save",
                                                                   "read_metadata"):
                names = [node.attr]
            if any(n.startswith("torch.distributed") or n in ("FileSystemReader", "dcp_to_torch_save",
                                                              "read_metadata") for n in names):
                offenders.append(f"{py.relative_to(root)}:{node.lineno}")
    assert offenders == []


# -- info, diff, convert -------------------------------------------------------------------------------------
def test_convert_to_one_torch_file_with_cleaning(training, tmp_path):
    folder, expected = training
    with open_checkpoint(folder) as ck:
        root, _ = apply_steps(ck.root, [Select("model"), StripPrefix("features.")])
        out = tmp_path / "model.pt"
        export(root, str(out), sources=[ck.path])
    got = torch.load(out, weights_only=True)
    want = {k.removeprefix("features."): v for k, v in expected["model"].items()}
    assert list(got) == list(want)
    for k in want:
        assert torch.equal(got[k], want[k])


def test_convert_split_folder_to_safetensors_and_diff(split, tmp_path):
    folder, expected = split
    out = tmp_path / "merged.safetensors"
    with open_checkpoint(folder) as ck:
        root, _ = apply_steps(ck.root, [])
        export(root, str(out), ExportOptions(fmt="safetensors", non_tensors="metadata"), sources=[ck.path])
    from safetensors.torch import load_file
    got = load_file(out)
    for k, v in expected.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(got[k], v.contiguous()), k
    with open_checkpoint(folder) as a, open_checkpoint(out) as b:
        run = DiffRun({k: v for k, v in a.root.items() if k != "n"}, b.root, DiffOptions())
        for _ in run.compare():
            pass
        assert run.equal


def test_export_never_overwrites_a_data_file(split, tmp_path):
    folder = _copy(split[0], tmp_path)
    with open_checkpoint(folder) as ck:
        target = folder / ck.meta["chunks"]["a"][0]["file"]
        with pytest.raises(OperationError, match="being read"):
            export({"a": ck.root["a"]}, str(target), ExportOptions(fmt="pt", overwrite=True), sources=[ck.path])


def test_cli_info_and_convert(training, tmp_path):
    folder, expected = training
    cli = [sys.executable, "-m", "ckptviewer"]
    r = subprocess.run(cli + ["info", str(folder)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "torch-dcp" in r.stdout and "Adam" in r.stdout
    out = tmp_path / "model.safetensors"
    r = subprocess.run(cli + ["convert", str(folder), "-o", str(out), "--select", "model", "--dtype", "float16"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file
    got = load_file(out)
    assert torch.equal(got["features.0.weight"], expected["model"]["features.0.weight"].half())
    r = subprocess.run(cli + ["diff", str(folder), str(folder)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_tensor_ref_of_a_dcp_tensor_is_ordinary(training):
    folder, _ = training
    with open_checkpoint(folder) as ck:
        t = ck.root["model"]["head.weight"]
        assert isinstance(t, TensorRef) and t.is_contiguous and t.storage.key.startswith("__0_0.distcp:")
        assert t.storage.source.file_location(0)[0].endswith("__0_0.distcp")      # exports copy in the kernel


def test_dcp_records_are_not_dangerous_but_its_reader_is():
    from ckptviewer.core.read.pickle.danger import danger_reason
    assert danger_reason("torch.distributed.checkpoint.filesystem", "_StorageInfo") is None
    assert danger_reason("pathlib", "PosixPath") is None
    assert danger_reason("torch.distributed.checkpoint.filesystem", "FileSystemReader") is not None


_RANKS_SCRIPT = '''
import os, sys, warnings
import torch, torch.distributed as dist, torch.multiprocessing as mp
warnings.simplefilter("ignore")

def worker(rank, world, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    full = {"rows": torch.randn(7, 6), "cols": torch.randn(4, 9).to(torch.bfloat16), "bias": torch.randn(3),
            "rep": torch.randn(3, 3)}
    placements = {"rows": [Shard(0)], "cols": [Shard(1)], "bias": [Shard(0)], "rep": [Replicate()]}
    sd = {k: distribute_tensor(v, mesh, placements[k]) for k, v in full.items()}
    dcp.save({"model": sd, "step": 12}, checkpoint_id=out)
    if rank == 0:
        torch.save(full, out + ".full.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(worker, args=(2, sys.argv[1], int(sys.argv[2])), nprocs=2)
'''


def test_dtensor_shards_written_by_two_ranks(tmp_path):
    """A real multi-process save (gloo on the CPU, DTensors sharded by rows, by columns, unevenly, and
    replicated), as FSDP2 / tensor parallel training writes it: one .distcp file per rank."""
    import socket
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS_SCRIPT)
    errors = []
    for attempt in range(3):        # a free port can be taken by another process before the ranks meet
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        folder = tmp_path / f"ranks{attempt}"
        r = subprocess.run([sys.executable, str(script), str(folder), str(port)], capture_output=True, text=True,
                           timeout=300)
        if r.returncode == 0:
            break
        errors.append(r.stderr[-3000:])
    assert r.returncode == 0, "\n---\n".join(errors)
    full = torch.load(str(folder) + ".full.pt", weights_only=True)
    with open_checkpoint(folder) as ck:
        assert sorted(f["file"] for f in ck.meta["files"]) == ["__0_0.distcp", "__1_0.distcp"]
        assert ck.root["step"] == 12
        for name, want in full.items():
            t = ck.root["model"][name]
            assert t.sha256() == hashlib.sha256(raw_bytes(want)).hexdigest(), name
        assert [c["sizes"] for c in ck.meta["chunks"]["model.rows"]] == [[4, 6], [3, 6]]
        assert [c["offsets"] for c in ck.meta["chunks"]["model.cols"]] == [[0, 0], [0, 5]]
        assert "model.rep" not in ck.meta["chunks"]          # replicated: saved once
