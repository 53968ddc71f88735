"""Exports: every format round-trips bit for bit, loads in torch, is atomic, refuses what it must."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.edit.document import Document
from ckptviewer.core.util.errors import CancelledError, OperationError
from ckptviewer.core.write.export import ExportOptions, export, export_iter
from ckptviewer.core.edit.ops import Cast, Drop, RemapDevice, Select, StripPrefix, apply_steps
from models import Net, TiedLM


def hashes(path):
    with open_checkpoint(path) as ck:
        return {tuple(k): (t.dtype.name, t.shape, t.sha256()) for k, t in ck.tensor_entries()}


@pytest.mark.parametrize("fmt,name", [("pt", "out.pt"), ("pt-legacy", "out_legacy.pt"),
                                      ("safetensors", "out.safetensors")])
def test_round_trip_is_bit_identical(ckpts, tmp_path, fmt, name):
    src = ckpts["state_dict.pt"]
    with open_checkpoint(src) as ck:
        export(ck.root, tmp_path / name, ExportOptions(fmt=fmt), sources=[src])
    assert hashes(tmp_path / name) == hashes(src)
    loaded = (torch.load(tmp_path / name, weights_only=True) if fmt != "safetensors"
              else __import__("safetensors.torch", fromlist=["load_file"]).load_file(tmp_path / name))
    Net().load_state_dict(loaded, strict=True)


@pytest.mark.parametrize("fmt", ["pt", "pt-legacy", "safetensors"])
def test_dataparallel_training_checkpoint_to_bare_model(ckpts, tmp_path, fmt):
    """The tutorial's warm-start chore: a DataParallel training checkpoint to a plain state_dict."""
    out = tmp_path / ("clean.safetensors" if fmt == "safetensors" else "clean.pt")
    with open_checkpoint(ckpts["dataparallel_checkpoint.pth"]) as ck:
        root, _ = apply_steps(ck.root, [Select("net"), StripPrefix()])
        export(root, out, ExportOptions(fmt=fmt), sources=[ck.path])
    if fmt == "safetensors":
        from safetensors.torch import load_file
        sd = load_file(out)
    else:
        sd = torch.load(out, weights_only=True)
    model = Net()
    assert model.load_state_dict(sd, strict=True)
    for k, v in ckpts.objects["dataparallel_checkpoint.pth"]["net"].items():
        assert torch.equal(sd[k.removeprefix("module.")], v)


def test_every_pt_we_write_opens_with_weights_only(ckpts, tmp_path):
    for name in ("checkpoint.tar", "gan.tar", "values.pt", "whole_model.pt", "gan_modules.tar", "tied.pt",
                 "bn_checkpoint.pt", "dtypes.pt", "best_is_last.pt", "scripted.pt"):
        with open_checkpoint(ckpts[name]) as ck:
            result = export(ck.root, tmp_path / f"{name}.pt", ExportOptions(), sources=[ck.path])
        torch.load(result.path, weights_only=True)


def test_whole_model_pickle_exports_as_its_state_dict(ckpts, tmp_path):
    with open_checkpoint(ckpts["whole_model.pt"]) as ck:
        result = export(ck.root, tmp_path / "sd.pt", ExportOptions(), sources=[ck.path])
    assert any("written as its state_dict" in n for n in result.notes)
    sd = torch.load(tmp_path / "sd.pt", weights_only=True)
    model = Net()
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.fc1.weight, ckpts.objects["whole_model.pt"].fc1.weight)


def test_non_plain_values_are_converted_with_notes(ckpts, tmp_path):
    with open_checkpoint(ckpts["values.pt"]) as ck:
        result = export(ck.root, tmp_path / "v.pt", ExportOptions(), sources=[ck.path])
    got = torch.load(tmp_path / "v.pt", weights_only=True)
    assert got["epoch"] == 12 and type(got["epoch"]) is int
    assert got["ns"] == {"lr": 0.1, "layers": [1, 2]}
    assert torch.equal(got["table"], torch.arange(6, dtype=torch.int32).reshape(2, 3))
    assert got["device"] == torch.device("cuda", 1) and got["dtype"] is torch.bfloat16
    assert any("argparse.Namespace" in n for n in result.notes)


def test_gpu_file_remapped_to_cpu_loads_without_map_location(ckpts, tmp_path):
    with open_checkpoint(ckpts["gpu1_checkpoint.tar"]) as ck:
        root, _ = apply_steps(ck.root, [RemapDevice((("cuda", "cpu"),))])
        export(root, tmp_path / "cpu.tar", ExportOptions(), sources=[ck.path])
        kept = export(ck.root, tmp_path / "still_gpu.tar", ExportOptions(), sources=[ck.path])
    sd = torch.load(tmp_path / "cpu.tar", weights_only=True)        # no map_location, no GPU
    assert sd["optimizer_state_dict"]["state"][0]["momentum_buffer"].device.type == "cpu"
    with open_checkpoint(kept.path) as ck:            # without a remap the recorded device is kept
        assert {t.device for _, t in ck.tensor_entries()} == {"cuda:1"}
    with pytest.raises(RuntimeError):
        torch.load(kept.path, weights_only=True)


def test_views_offsets_and_tied_storage_survive(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    obj = {"t": base.t(), "rows": base[2:5], "a": base, "step": base[::2, ::3], "x": torch.randn(1, 4).expand(3, 4)}
    torch.save(obj, tmp_path / "views.pt")
    with open_checkpoint(tmp_path / "views.pt") as ck:
        export(ck.root, tmp_path / "out.pt", ExportOptions(), sources=[ck.path])
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    for k, v in obj.items():
        assert torch.equal(got[k], v) and got[k].stride() == v.stride()
    assert got["t"].untyped_storage().data_ptr() == got["a"].untyped_storage().data_ptr()


def test_tied_weights_to_safetensors_are_copied_and_noted(ckpts, tmp_path):
    with open_checkpoint(ckpts["tied.pt"]) as ck:
        result = export(ck.root, tmp_path / "tied.safetensors", ExportOptions(fmt="safetensors"), sources=[ck.path])
    assert any("share storage" in n for n in result.notes)
    from safetensors.torch import load_file
    sd = load_file(tmp_path / "tied.safetensors")
    TiedLM().load_state_dict(sd, strict=True)


def test_nan_payloads_and_negative_zero_survive(tmp_path):
    bits = np.array([0x7FC00001, 0xFFC12345, 0x80000000, 0x7F800000, 0x3F800000], dtype=np.uint32)
    t = torch.from_numpy(bits.view(np.float32).copy())
    torch.save({"w": t}, tmp_path / "nan.pt")
    for fmt, name in (("pt", "a.pt"), ("pt-legacy", "b.pt"), ("safetensors", "c.safetensors")):
        with open_checkpoint(tmp_path / "nan.pt") as ck:
            export(ck.root, tmp_path / name, ExportOptions(fmt=fmt), sources=[ck.path])
        with open_checkpoint(tmp_path / name) as ck:
            assert ck.root["w"].read_raw().view(np.uint32).tolist() == bits.tolist()


def test_cast_export_is_verified_against_the_cast_values(ckpts, tmp_path):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ck:
        root, _ = apply_steps(ck.root, [Cast("bfloat16")])
        export(root, tmp_path / "bf16.pt", ExportOptions(), sources=[ck.path])
    got = torch.load(tmp_path / "bf16.pt", weights_only=True)
    want = ckpts.objects["checkpoint.tar"]["model_state_dict"]["fc1.weight"].to(torch.bfloat16)
    assert torch.equal(got["model_state_dict"]["fc1.weight"], want)


def test_safetensors_non_tensor_handling(ckpts, tmp_path):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ck:
        with pytest.raises(OperationError, match="not tensors: epoch"):
            export(ck.root, tmp_path / "a.safetensors", ExportOptions(fmt="safetensors"), sources=[ck.path])
        export(ck.root, tmp_path / "b.safetensors", ExportOptions(fmt="safetensors", non_tensors="metadata"),
               sources=[ck.path])
        root, _ = apply_steps(ck.root, [Select("model_state_dict")])
        export(root, tmp_path / "c.safetensors", ExportOptions(fmt="safetensors"), sources=[ck.path])
    from safetensors import safe_open
    with safe_open(tmp_path / "b.safetensors", framework="numpy") as f:
        assert f.metadata()["epoch"] == "7"
        assert "model_state_dict.conv1.weight" in f.keys()
    with safe_open(tmp_path / "c.safetensors", framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("conv1.weight"),
                                      ckpts.objects["checkpoint.tar"]["model_state_dict"]["conv1.weight"].numpy())


def test_destination_rules(ckpts, tmp_path):
    src = tmp_path / "src.pt"
    src.write_bytes(ckpts["state_dict.pt"].read_bytes())
    link = tmp_path / "link.pt"
    os.link(src, link)
    with open_checkpoint(src) as ck:
        for dest in (src, link):
            with pytest.raises(OperationError, match="file being read"):
                export(ck.root, dest, ExportOptions(overwrite=True), sources=[str(src)])
        (tmp_path / "exists.pt").write_bytes(b"old")
        with pytest.raises(OperationError, match="already exists"):
            export(ck.root, tmp_path / "exists.pt", ExportOptions(), sources=[str(src)])
        assert (tmp_path / "exists.pt").read_bytes() == b"old"
        export(ck.root, tmp_path / "exists.pt", ExportOptions(overwrite=True), sources=[str(src)])
    assert hashes(tmp_path / "exists.pt") == hashes(src)
    assert src.read_bytes() == ckpts["state_dict.pt"].read_bytes()


def test_interrupted_export_leaves_nothing_behind(tmp_path):
    torch.save({f"w{i}": torch.randn(256, 1024) for i in range(24)}, tmp_path / "big.pt")   # 24 MiB
    out = tmp_path / "out"
    out.mkdir()
    for fmt, name in (("pt", "x.pt"), ("pt-legacy", "y.pt"), ("safetensors", "z.safetensors")):
        with open_checkpoint(tmp_path / "big.pt") as ck:
            gen = export_iter(ck.root, out / name, ExportOptions(fmt=fmt), sources=[ck.path])
            stages = [next(gen) for _ in range(3)]
            assert stages[-1].stage == "writing" and 0 < stages[-1].done < stages[-1].total
            gen.close()                                   # the user pressed Cancel
        assert list(out.iterdir()) == []
    calls = []
    with open_checkpoint(tmp_path / "big.pt") as ck:
        with pytest.raises(CancelledError):
            export(ck.root, out / "w.pt", ExportOptions(), sources=[ck.path], progress=calls.append,
                   cancelled=lambda: len(calls) > 1)
    assert list(out.iterdir()) == []


def test_failure_midway_leaves_the_old_destination(tmp_path, monkeypatch):
    torch.save({"w": torch.randn(1000)}, tmp_path / "a.pt")
    (tmp_path / "dest.pt").write_bytes(b"previous contents")
    import ckptviewer.core.write.export as ex

    def broken(*a, **k):
        raise OSError("disk full")
        yield  # pragma: no cover
    monkeypatch.setattr(ex, "_verify", broken)
    with open_checkpoint(tmp_path / "a.pt") as ck:
        with pytest.raises(OSError, match="disk full"):
            export(ck.root, tmp_path / "dest.pt", ExportOptions(overwrite=True), sources=[ck.path])
    assert (tmp_path / "dest.pt").read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "dest.pt"]


def test_unreadable_tensors_block_export_until_dropped(ckpts, tmp_path):
    raw = ckpts["state_dict_legacy.pt"].read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) - 1000])
    with open_checkpoint(cut) as ck:
        with pytest.raises(OperationError, match="drop it"):
            export(ck.root, tmp_path / "o.pt", ExportOptions(), sources=[ck.path])
        bad = [k[0] for k, t in ck.tensor_entries() if t.problem]
        root, _ = apply_steps(ck.root, [Drop(tuple(bad))])
        export(root, tmp_path / "o.pt", ExportOptions(), sources=[ck.path])
    assert set(torch.load(tmp_path / "o.pt", weights_only=True)) == set(ckpts.objects["state_dict_legacy.pt"]) - set(bad)


def test_safetensors_written_is_read_by_the_library_identically(ckpts, tmp_path):
    with open_checkpoint(ckpts["dtypes.pt"]) as ck:
        root, _ = apply_steps(ck.root, [Drop(("complex64",))])
        export(root, tmp_path / "d.safetensors", ExportOptions(fmt="safetensors"), sources=[ck.path])
    from safetensors.torch import load_file
    got = load_file(tmp_path / "d.safetensors")
    for k, v in ckpts.objects["dtypes.pt"].items():
        if k != "complex64":
            assert torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)), k
    header_len = struct.unpack("<Q", (tmp_path / "d.safetensors").read_bytes()[:8])[0]
    assert (8 + header_len) % 8 == 0


def test_document_steps_undo_exactly(ckpts, tmp_path):
    with open_checkpoint(ckpts["dataparallel_checkpoint.pth"]) as ck:
        doc = Document(ck)
        doc.push(Select("net"))
        doc.push(StripPrefix())
        assert list(doc.root)[0] == "conv1.weight"
        with pytest.raises(OperationError):
            doc.push(Select("nothing-here"))
        assert len(doc.steps) == 2
        doc.pop()
        assert list(doc.root)[0] == "module.conv1.weight"
        doc.push(StripPrefix())
        doc.export(str(tmp_path / "d.pt"), ExportOptions())
    assert list(torch.load(tmp_path / "d.pt", weights_only=True)) == list(ckpts.objects["state_dict.pt"])
