"""Sharded checkpoints (an index JSON plus shard files, as transformers writes them): one merged tree,
missing shards reported, hostile indexes refused, and info / diff / convert (merging and re-sharding)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckptviewer.core.analyze.diff import DiffOptions, DiffRun
from ckptviewer.core.util.errors import CorruptFileError, LimitExceededError, NotACheckpointError, OperationError
from ckptviewer.core.write.export import ExportOptions, export
from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.read.multifile import sharded as sharded_mod
from ckptviewer.core.read.multifile.sharded import shard_of
from ckptviewer.core.analyze.info import build_report, report_text, stand_in_classes
from ckptviewer.core.model.objects import Unreadable
from ckptviewer.core.edit.ops import StripPrefix, apply_steps
from ckptviewer.core.write.shards import export_sharded_iter, parse_size, shard_file_names
from ckptviewer.core.model.tensor import TensorRef
from hostile import payloads
from steps import collect

CLI = [sys.executable, "-m", "ckptviewer"]


def reference_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    sd = {"model.embed.weight": torch.randn(50, 12, generator=g)}
    for i in range(4):
        sd[f"model.layers.{i}.attn.weight"] = torch.randn(12, 12, generator=g).to(torch.bfloat16)
        sd[f"model.layers.{i}.norm.weight"] = torch.ones(12, dtype=torch.float16)
        sd[f"model.layers.{i}.steps"] = torch.tensor(i, dtype=torch.int64)
    sd["lm_head.weight"] = torch.randn(50, 12, generator=g)
    return sd


def write_sharded(folder: Path, sd: dict, kind: str, per_shard: int = 5) -> Path:
    """transformers' layout: shards named name-0000i-of-0000n.ext and an index in the same folder."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    parts = [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
    stem, ext = ("model", ".safetensors") if kind == "safetensors" else ("pytorch_model", ".bin")
    weight_map = {}
    for i, part in enumerate(parts, 1):
        fname = f"{stem}-{i:05d}-of-{len(parts):05d}{ext}"
        shard = {k: sd[k] for k in part}
        if kind == "safetensors":
            save_file({k: v.contiguous() for k, v in shard.items()}, folder / fname, metadata={"format": "pt"})
        else:
            torch.save(shard, folder / fname)
        weight_map.update({k: fname for k in part})
    index = folder / f"{stem}{ext}.index.json"
    total = sum(v.numel() * v.element_size() for v in sd.values())
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return index


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    sd = reference_state()
    return {"sd": sd, "st": write_sharded(root / "st", sd, "safetensors"),
            "bin": write_sharded(root / "bin", sd, "bin"), "root": root}


def copy_set(index: Path, tmp_path: Path) -> Path:
    dst = tmp_path / index.parent.name
    shutil.copytree(index.parent, dst)
    return dst / index.name


def assert_matches(ck, sd):
    assert list(ck.root) == list(sd)              # one mapping, in the index's order
    for name, want in sd.items():
        t = ck.root[name]
        assert isinstance(t, TensorRef), name
        assert t.dtype.name == str(want.dtype).removeprefix("torch.") and list(t.shape) == list(want.shape)
        assert torch.equal(torch.from_numpy(t.read_raw().copy()).view(want.dtype).reshape(want.shape)
                           if want.dtype == torch.bfloat16 else torch.from_numpy(t.read().copy()), want), name


# -- reading -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["st", "bin"])
def test_index_opens_as_one_mapping(made, kind):
    index = made[kind]
    with open_checkpoint(index) as ck:
        assert ck.format == ("sharded safetensors" if kind == "st" else "sharded torch-zip")
        assert_matches(ck, made["sd"])
        weight_map = json.loads(index.read_text())["weight_map"]
        for name, t in ck.root.items():
            assert shard_of(t) == weight_map[name]           # each tensor knows its shard
        assert [s["file"] for s in ck.meta["shards"]] == sorted(set(weight_map.values()))
        assert ck.meta["metadata"]["total_size"] == str(json.loads(index.read_text())["metadata"]["total_size"])
        report = build_report(ck, checksums=True)
        assert report["warnings"] == [] and report["tensor_count"] == len(made["sd"])
        assert report["tensors"][0]["storage"].startswith(weight_map[report["tensors"][0]["key"][0]] + ":")
        assert "Layout    3 shard files" in report_text(ck)


def test_folder_with_one_index_opens_it(made):
    with open_checkpoint(made["st"].parent) as ck:
        assert ck.path == str(made["st"]) and len(ck.root) == len(made["sd"])


def test_folder_with_two_indexes_is_ambiguous(made, tmp_path):
    index = copy_set(made["st"], tmp_path)
    shutil.copy(index, index.parent / "other.index.json")
    with pytest.raises(NotACheckpointError, match="2 shard indexes"):
        open_checkpoint(index.parent)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotACheckpointError, match="this folder holds no checkpoint"):
        open_checkpoint(empty)


def test_both_shard_formats_agree_in_diff(made):
    with open_checkpoint(made["st"]) as a, open_checkpoint(made["bin"]) as b:
        run = DiffRun(a.root, b.root, DiffOptions())
        for _ in run.compare():
            pass
        assert run.equal


def test_close_releases_every_shard(made):
    before = len(os.listdir("/proc/self/fd"))
    ck = open_checkpoint(made["bin"])
    assert len(os.listdir("/proc/self/fd")) >= before + 3        # one map per shard
    ck.close()
    assert len(os.listdir("/proc/self/fd")) <= before


# -- damaged and hostile sets --------------------------------------------------------------------------------
def test_missing_shard_is_reported_not_fatal(made, tmp_path):
    index = copy_set(made["st"], tmp_path)
    (index.parent / "model-00002-of-00003.safetensors").unlink()
    with open_checkpoint(index) as ck:
        lost = [k for k, v in ck.root.items() if isinstance(v, Unreadable)]
        assert len(lost) == 5 and all("missing" in ck.root[k].reason for k in lost)
        assert all(isinstance(ck.root[k], TensorRef) for k in ck.root if k not in lost)
        assert any("model-00002-of-00003.safetensors is missing" in w for w in ck.warnings)
        assert ck.meta["shards"][1]["problem"]
        with pytest.raises(OperationError, match="unreadable"):
            export(ck.root, str(tmp_path / "merged.pt"))
    r = subprocess.run(CLI + ["info", str(index)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "missing" in r.stdout


def test_unreadable_shard_is_reported(made, tmp_path):
    index = copy_set(made["bin"], tmp_path)
    (index.parent / "pytorch_model-00001-of-00003.bin").write_bytes(b"<html>not found</html>")
    with open_checkpoint(index) as ck:
        assert sum(isinstance(v, Unreadable) for v in ck.root.values()) == 5
        assert any("cannot be read" in w and "HTML" in w for w in ck.warnings)


def test_index_and_shards_that_disagree(made, tmp_path):
    index = copy_set(made["st"], tmp_path)
    doc = json.loads(index.read_text())
    doc["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors"     # listed, not in the shard
    del doc["weight_map"]["lm_head.weight"]                                     # in a shard, not listed
    index.write_text(json.dumps(doc))
    with open_checkpoint(index) as ck:
        assert isinstance(ck.root["ghost.weight"], Unreadable)
        assert isinstance(ck.root["lm_head.weight"], TensorRef)     # shown, after the indexed entries
        assert list(ck.root)[-1] == "lm_head.weight"
        assert any("does not hold" in w and "ghost.weight" in w for w in ck.warnings)
        assert any("not map to it" in w and "lm_head.weight" in w for w in ck.warnings)


@pytest.mark.parametrize("bad", ["../secret.safetensors", "/tmp/secret.safetensors", "sub/x.safetensors", "..",
                                 "a\\b.safetensors"])
def test_shard_names_outside_the_folder_are_refused(made, tmp_path, bad):
    index = copy_set(made["st"], tmp_path)
    save_file({"secret": torch.ones(2)}, tmp_path / "secret.safetensors")
    doc = json.loads(index.read_text())
    doc["weight_map"]["secret"] = bad
    index.write_text(json.dumps(doc))
    with open_checkpoint(index) as ck:
        assert isinstance(ck.root["secret"], Unreadable)
        assert any(repr(bad) in w or bad in w for w in ck.warnings)
        assert all(not s.get("format") for s in ck.meta["shards"] if s["file"] == bad)


def test_link_out_of_the_folder_is_refused(made, tmp_path):
    index = copy_set(made["st"], tmp_path)
    shard = index.parent / "model-00001-of-00003.safetensors"
    outside = tmp_path / "outside.safetensors"
    shutil.move(shard, outside)
    os.symlink(outside, shard)
    with open_checkpoint(index) as ck:
        assert sum(isinstance(v, Unreadable) for v in ck.root.values()) == 5
        assert any("link" in w for w in ck.warnings)


@pytest.mark.parametrize("text,error,match", [
    ('{"weight_map": ["a"]}', CorruptFileError, "not a mapping"),
    ('{"weight_map": {"a": 3}}', CorruptFileError, "other than a file name"),
    ('{"weight_map": {"a": "x.bin", "a": "y.bin"}}', CorruptFileError, "twice"),
    ('{"metadata": {}, "weight_map": {}, "metadata": 1}', CorruptFileError, "twice"),
    ('{"weight_map": {}, "metadata": 5}', CorruptFileError, "metadata"),
    ('{"name": "not an index"}', NotACheckpointError, "weight_map"),
    ('{"weight_map": {', NotACheckpointError, "not a valid JSON"),
])
def test_malformed_indexes(tmp_path, text, error, match):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(text)
    with pytest.raises(error, match=match):
        open_checkpoint(index)


def test_index_size_is_capped(tmp_path, monkeypatch):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {f"t{i}": "x.safetensors" for i in range(1000)}}))
    monkeypatch.setattr(sharded_mod, "MAX_INDEX_BYTES", 1000)
    with pytest.raises(LimitExceededError):
        open_checkpoint(index)


def test_a_shard_that_is_an_index_is_not_followed(tmp_path):
    """A shard is opened as a file only: an index naming an index (or itself) cannot recurse."""
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    with open_checkpoint(index) as ck:
        assert isinstance(ck.root["a"], Unreadable) and "text file" in ck.root["a"].reason


def test_hostile_shard_is_reported_and_never_run(made, tmp_path, marker):
    index = copy_set(made["bin"], tmp_path)
    shard = index.parent / "pytorch_model-00003-of-00003.bin"
    import zipfile
    with zipfile.ZipFile(shard, "w") as z:
        z.writestr("archive/data.pkl", payloads(marker)["global_reduce_os_system"])
    with open_checkpoint(index) as ck:
        _, dangerous = stand_in_classes(ck)
        assert dangerous and any(p.pickle.startswith("pytorch_model-00003-of-00003.bin/") for p in ck.pickles)
    assert not marker.exists()


# -- convert --------------------------------------------------------------------------------------------------
def test_merge_shards_into_one_file(made, tmp_path):
    for kind, out in (("st", tmp_path / "merged.pt"), ("bin", tmp_path / "merged.safetensors")):
        with open_checkpoint(made[kind]) as ck:
            export(ck.root, str(out), sources=[ck.path])
        got = load_file(out) if out.suffix == ".safetensors" else torch.load(out, weights_only=True)
        assert list(got) == list(made["sd"])
        assert all(torch.equal(got[k], v) for k, v in made["sd"].items())


def test_bin_shards_to_safetensors_shards(made, tmp_path):
    out = tmp_path / "out" / "model.safetensors.index.json"
    out.parent.mkdir()
    with open_checkpoint(made["bin"]) as ck:
        root, _ = apply_steps(ck.root, [StripPrefix("model.")])
        gen = export_sharded_iter(root, str(out), ExportOptions(fmt="safetensors"), 1500, sources=[ck.path])
        progress, result = collect(gen)
    assert progress[-1].done == progress[-1].total and "shard" in progress[-1].stage
    names = shard_file_names(str(out), len(result.shards), "safetensors")
    assert [os.path.basename(p) for p in result.shards] == names and len(names) > 2
    assert sorted(os.listdir(out.parent)) == sorted(names + [out.name])         # no temporary files left
    doc = json.loads(out.read_text())
    assert set(doc["weight_map"].values()) == set(names)
    # What transformers does: load each shard the index names and merge.
    merged = {}
    for name in names:
        shard = load_file(out.parent / name)
        assert set(shard) == {k for k, v in doc["weight_map"].items() if v == name}
        merged.update(shard)
    want = {k.removeprefix("model."): v for k, v in made["sd"].items()}
    assert set(merged) == set(want) and all(torch.equal(merged[k], want[k]) for k in want)
    assert doc["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in want.values())
    from safetensors import safe_open
    with safe_open(out.parent / names[0], framework="pt") as f:
        assert f.metadata()["format"] == "pt"
    with open_checkpoint(out) as back:
        assert list(back.root) == list(want) and back.warnings == []


def test_safetensors_shards_to_bin_shards_with_the_cli(made, tmp_path):
    out = tmp_path / "pytorch_model.bin.index.json"
    r = subprocess.run(CLI + ["convert", str(made["st"]), "-o", str(out), "--shard-size", "2KB"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "each verified" in r.stdout
    doc = json.loads(out.read_text())
    merged = {}
    for name in dict.fromkeys(doc["weight_map"].values()):
        merged.update(torch.load(tmp_path / name, weights_only=True, mmap=True))
    assert list(merged) == list(made["sd"]) and all(torch.equal(merged[k], v) for k, v in made["sd"].items())
    r = subprocess.run(CLI + ["diff", str(out), str(made["bin"])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(CLI + ["convert", str(made["st"]), "-o", str(tmp_path / "x.index.json"), "--shard-size",
                              "1KB", "--dry-run"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "x-00001-of-" in r.stdout and not (tmp_path / "x.index.json").exists()


def test_sharded_output_refuses_overwrites_and_source_shards(made, tmp_path):
    index = copy_set(made["st"], tmp_path)
    with open_checkpoint(index) as ck:
        with pytest.raises(OperationError, match="being read"):        # the new shard 1 would be a source shard
            list(export_sharded_iter(ck.root, str(index), ExportOptions(fmt="safetensors", overwrite=True),
                                     1500, sources=[ck.path]))
        with pytest.raises(OperationError, match="being read"):        # one file onto a source shard
            export(ck.root, str(index.parent / "model-00002-of-00003.safetensors"),
                   ExportOptions(fmt="safetensors", overwrite=True), sources=[ck.path])
        out = tmp_path / "o" / "model.safetensors.index.json"
        out.parent.mkdir()
        out.write_text("{}")
        with pytest.raises(OperationError, match="already exists"):
            list(export_sharded_iter(ck.root, str(out), ExportOptions(fmt="safetensors"), 1500))


def test_stopping_midway_leaves_the_destination_as_it_was(made, tmp_path):
    out = tmp_path / "model.safetensors.index.json"
    with open_checkpoint(made["st"]) as ck:
        gen = export_sharded_iter(ck.root, str(out), ExportOptions(fmt="safetensors"), 1500)
        next(gen)
        next(gen)
        gen.close()
    assert os.listdir(tmp_path) == []


def test_sharded_torch_output_needs_a_flat_state_dict(made, tmp_path):
    with open_checkpoint(made["st"]) as ck:
        with pytest.raises(OperationError, match="flat state_dict"):
            list(export_sharded_iter({"model": ck.root, "epoch": 3}, str(tmp_path / "pytorch_model.bin.index.json"),
                                     ExportOptions(fmt="pt"), 1500))


def test_sizes_and_names():
    assert parse_size("2GB") == 2 * 10 ** 9 and parse_size("500MiB") == 500 * 2 ** 20 and parse_size("1.5KB") == 1500
    assert parse_size("1234") == 1234
    with pytest.raises(OperationError):
        parse_size("lots")
    assert shard_file_names("/x/pytorch_model.bin.index.json", 2, "pt") == [
        "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    assert shard_file_names("weights.index.json", 1, "safetensors") == ["weights-00001-of-00001.safetensors"]
