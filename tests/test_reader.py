"""The reader against files torch wrote: every container, every case DESIGN.md lists, values bit-exact."""
from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import tarfile
import io

import numpy as np
import pytest
import torch

import makers
from ckptviewer.core import open_checkpoint
from ckptviewer.core.util.errors import CheckpointError, CorruptFileError, NotACheckpointError, TruncatedFileError
from ckptviewer.core.analyze.info import build_report
from ckptviewer.core.model.interpret import analyze
from ckptviewer.core.model.objects import StandIn
from ckptviewer.core.model.tensor import TensorRef
from ckptviewer.core.model.walk import module_state_dict


def entries(path):
    with open_checkpoint(path) as ck:
        return {json.dumps(k): (t.dtype.name, list(t.shape), t.device, t.sha256()) for k, t in ck.tensor_entries()}


def expected(obj, device="cpu"):
    return {k: (v["dtype"], v["shape"], device, v["sha256"]) for k, v in makers.expected_tensors(obj).items()}


@pytest.mark.parametrize("name", ["state_dict.pt", "state_dict_legacy.pt", "optimizer_fresh.pt",
                                  "optimizer_trained.pt", "checkpoint.tar", "checkpoint_legacy.tar",
                                  "whole_model.pt", "whole_model_legacy.pt", "bn_checkpoint.pt", "bn_whole_model.pt",
                                  "gan.tar", "gan_modules.tar", "ensemble.pt", "dataparallel.pt", "compiled.pt",
                                  "tied.pt", "tied_module.pt", "best_is_last.pt", "dtypes.pt",
                                  "state_dict.safetensors", "dataparallel_checkpoint.pth"])
def test_tensors_match_what_torch_saved(ckpts, name):
    assert entries(ckpts[name]) == expected(ckpts.objects[name])


@pytest.mark.parametrize("name,device", [("gpu0.pt", "cuda:0"), ("gpu1_checkpoint.tar", "cuda:1"),
                                         ("gpu0_legacy.pt", "cuda:0")])
def test_gpu_saved_files_open_without_a_gpu_and_keep_their_device(ckpts, name, device):
    assert entries(ckpts[name]) == expected(ckpts.objects[name], device)
    with pytest.raises(RuntimeError):      # what users hit without map_location on a CPU machine
        torch.load(ckpts[name], weights_only=True)


def test_formats_are_sniffed_from_bytes_not_suffix(ckpts, tmp_path):
    cases = {"state_dict.pt": "torch-zip", "state_dict_legacy.pt": "torch-legacy",
             "state_dict.safetensors": "safetensors", "scripted.pt": "torchscript"}
    for name, fmt in cases.items():
        renamed = tmp_path / (name + ".renamed.bin")
        renamed.write_bytes(ckpts[name].read_bytes())
        with open_checkpoint(renamed) as ck:
            assert ck.format == fmt


def test_values_read_on_demand_equal_torch_load(ckpts):
    sd = torch.load(ckpts["state_dict.pt"], weights_only=True)
    with open_checkpoint(ckpts["state_dict.pt"]) as ck:
        for key, t in ck.root.items():
            np.testing.assert_array_equal(t.read(), sd[key].numpy())


def test_bfloat16_and_float8_values_are_widened_exactly(ckpts):
    obj = ckpts.objects["dtypes.pt"]
    with open_checkpoint(ckpts["dtypes.pt"]) as ck:
        for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float16"):
            np.testing.assert_array_equal(ck.root[name].read(), obj[name].float().numpy())
        assert ck.root["complex64"].read().dtype == np.complex64


def test_views_strides_offsets_and_shared_storage(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    obj = {"t": base.t(), "rows": base[2:5], "cols": base[:, 3:7], "step": base[::2, ::3], "a": base,
           "expanded": torch.randn(1, 4).expand(3, 4), "empty": torch.empty(0, 5), "scalar": torch.tensor(3.25)}
    path = tmp_path / "views.pt"
    torch.save(obj, path)
    with open_checkpoint(path) as ck:
        for k, v in obj.items():
            np.testing.assert_array_equal(ck.root[k].read(), v.numpy())
        assert ck.root["t"].storage is ck.root["a"].storage
        assert not ck.root["t"].is_contiguous and ck.root["a"].is_contiguous
        assert ck.root["expanded"].has_zero_stride
        assert ck.root["rows"].offset == 20


def test_torchscript_archive_shows_its_attributes_and_tensors(ckpts):
    scripted = torch.jit.load(ckpts["scripted.pt"])
    with open_checkpoint(ckpts["scripted.pt"]) as ck:
        assert ck.format == "torchscript"
        got = {".".join(map(str, k)): t for k, t in ck.tensor_entries()}
        want = dict(scripted.state_dict())
        assert set(got) == set(want)
        for k, t in want.items():
            np.testing.assert_array_equal(got[k].read(), t.numpy())
        assert any(f.startswith("code/") for f in ck.meta["code_files"])
        assert "TorchScript module" in analyze(ck.root).summary


def _legacy_tar_file(path):
    """A torch < 0.1.10 tar checkpoint: {'w': FloatTensor 2x3, 'epoch': 5}, written member by member."""
    data = np.arange(6, dtype=np.float32)

    storages = io.BytesIO()
    storages.write(pickle.dumps(1, protocol=2))
    storages.write(pickle.dumps(("s0", "cpu", torch.FloatStorage), protocol=2))
    storages.write(struct.pack("<q", 6) + data.tobytes())
    storages.write(pickle.dumps([], protocol=2))
    tensors = io.BytesIO()
    tensors.write(pickle.dumps(1, protocol=2))
    tensors.write(pickle.dumps(("t0", "s0", torch.FloatTensor), protocol=2))
    tensors.write(struct.pack("<i", 2) + b"\0\0\0\0" + struct.pack("<2q", 2, 3) + struct.pack("<2q", 3, 1)
                  + struct.pack("<q", 0))

    class Ref:
        pass
    ref = Ref()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "t0" if obj is ref else None
    body = io.BytesIO()
    P(body, protocol=2).dump({"w": ref, "epoch": 5})
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, bio in (("storages", storages), ("tensors", tensors), ("pickle", body)):
            raw = bio.getvalue()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return data.reshape(2, 3)


def test_oldest_tar_format(tmp_path):
    path = tmp_path / "ancient.pt"
    want = _legacy_tar_file(path)
    with open_checkpoint(path) as ck:
        assert ck.format == "torch-tar"
        assert ck.root["epoch"] == 5
        np.testing.assert_array_equal(ck.root["w"].read(), want)


def test_rebuild_tensor_v1_of_torch_0_4(tmp_path):
    """torch 0.3/0.4 files call torch._utils._rebuild_tensor (four arguments)."""
    from hostile import PROTO2, glob, s, torch_legacy
    pid = b"(" + s("storage") + glob("torch", "FloatStorage") + s("0") + s("cpu") + b"K\x04" + b"Nt" + b"Q"
    body = (PROTO2 + b"}" + s("x") + glob("torch._utils", "_rebuild_tensor") + b"(" + pid + b"K\x00"
            + b"K\x02K\x02\x86" + b"K\x02K\x01\x86" + b"tR" + b"s.")
    raw = np.array([1, 2, 3, 4], dtype=np.float32).tobytes()
    path = tmp_path / "old.pt"
    path.write_bytes(torch_legacy(body, ["0"], [struct.pack("<q", 4) + raw]))
    with open_checkpoint(path) as ck:
        np.testing.assert_array_equal(ck.root["x"].read(), [[1, 2], [3, 4]])


def test_legacy_file_naming_classes_from_main(ckpts):
    with open_checkpoint(ckpts["main_module_legacy.pt"]) as ck:
        assert isinstance(ck.root, StandIn) and ck.root.qualname == "__main__.Tiny"
        names = [n for n, _ in module_state_dict(ck.root)]
        assert names == ["fc.weight", "fc.bias"]
        assert "class Tiny" in ck.meta["class_sources"]["__main__.Tiny"]


def test_whole_model_opens_without_importing_its_class(ckpts):
    code = ("import sys, json; from ckptviewer.core import open_checkpoint; "
            f"ck = open_checkpoint({str(ckpts['whole_model.pt'])!r}); "
            "print(json.dumps([k for k, _ in ck.tensor_entries()])); "
            "print('models' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(ckpts["whole_model.pt"].parent))
    keys, flags = out.stdout.strip().splitlines()
    assert json.loads(keys)[0] == ["conv1.weight"]
    assert flags == "False False"


def test_stand_ins_keep_class_name_and_state(ckpts):
    with open_checkpoint(ckpts["values.pt"]) as ck:
        ns = ck.root["ns"]
        assert isinstance(ns, StandIn) and ns.qualname == "argparse.Namespace"
        assert ns.attributes == {"lr": 0.1, "layers": [1, 2]}
        assert str(ck.root["device"]) == "cuda:1"
        assert ck.root["size"] == (3, 224, 224)
        assert ck.root["epoch"] == 12 and isinstance(ck.root["epoch"], np.integer)
        report = build_report(ck)
        assert any("argparse.Namespace" in w for w in report["warnings"])


def test_optimizer_ids_mapped_to_parameter_names_in_training_checkpoint(ckpts):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ck:
        an = analyze(ck.root)
        (opt,) = an.optimizers
        assert opt.type_name == "SGD" and opt.label == "SGD optimizer with momentum"
        assert opt.groups[0]["lr"] == 0.001 and opt.groups[0]["momentum"] == 0.9
        assert opt.param_names[0] == "conv1.weight" and opt.param_names[9] == "fc3.bias"
        assert opt.names_inferred
        assert an.summary.startswith("training checkpoint: epoch 7; model 62,006 parameters; SGD optimizer")


def test_optimizer_mapping_skips_buffers_and_pairs_models_in_a_gan(ckpts):
    with open_checkpoint(ckpts["gan.tar"]) as ck:
        an = analyze(ck.root)
        by_path = {o.path: o for o in an.optimizers}
        a, b = by_path[("optimizerA_state_dict",)], by_path[("optimizerB_state_dict",)]
        assert a.type_name == "Adam" and b.type_name == "SGD"
        assert a.names_from == ("modelA_state_dict",) and b.names_from == ("modelB_state_dict",)
        # BatchNorm's running stats are buffers: the Adam ids skip them.
        assert list(a.param_names.values()) == ["net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias",
                                                "net.3.weight", "net.3.bias"]
    with open_checkpoint(ckpts["bn_checkpoint.pt"]) as ck:
        (opt,) = analyze(ck.root).optimizers
        assert "features.1.running_mean" not in opt.param_names.values()
        assert len(opt.param_names) == 6


def test_optimizer_ids_stay_ids_when_nothing_matches(ckpts):
    with open_checkpoint(ckpts["optimizer_trained.pt"]) as ck:
        (opt,) = analyze(ck.root).optimizers
        assert opt.param_names == {} and "no model" in opt.names_note


def test_optimizer_param_names_saved_by_torch_are_used(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.named_parameters(), lr=0.1)
    path = tmp_path / "named.pt"
    torch.save(opt.state_dict(), path)
    with open_checkpoint(path) as ck:
        (info,) = analyze(ck.root).optimizers
        assert info.type_name == "AdamW"
        assert info.param_names == {0: "weight", 1: "bias"} and not info.names_inferred


@pytest.mark.parametrize("cls,name", [(torch.optim.SGD, "SGD"), (torch.optim.Adam, "Adam"),
                                      (torch.optim.AdamW, "AdamW"), (torch.optim.RMSprop, "RMSprop"),
                                      (torch.optim.Adagrad, "Adagrad"), (torch.optim.Adadelta, "Adadelta"),
                                      (torch.optim.NAdam, "NAdam"), (torch.optim.RAdam, "RAdam"),
                                      (torch.optim.Adamax, "Adamax"), (torch.optim.LBFGS, "LBFGS")])
def test_optimizer_types_recognised(tmp_path, cls, name):
    path = tmp_path / "opt.pt"
    torch.save(cls(torch.nn.Linear(2, 2).parameters(), lr=0.1).state_dict(), path)
    with open_checkpoint(path) as ck:
        assert analyze(ck.root).optimizers[0].type_name == name


def test_pickled_module_state_dict_names_follow_torch(ckpts):
    model = ckpts.objects["bn_whole_model.pt"]
    with open_checkpoint(ckpts["bn_whole_model.pt"]) as ck:
        names = [n for n, _ in module_state_dict(ck.root)]
        # the non-persistent buffer "scratch" is not in the state_dict, as in torch
        assert names == list(model.state_dict().keys())
        an = analyze(ck.root)
        assert an.state_dicts[0].n_parameters == sum(p.numel() for p in model.parameters())


def test_wrapper_prefixes_detected(ckpts):
    for name, prefix in (("dataparallel.pt", "module."), ("compiled.pt", "_orig_mod."),
                         ("dataparallel_checkpoint.pth", "module.")):
        with open_checkpoint(ckpts[name]) as ck:
            an = analyze(ck.root)
            assert an.state_dicts[0].prefix[0] == prefix
            assert f"keys start with '{prefix}'" in an.summary


def test_multi_model_files(ckpts):
    with open_checkpoint(ckpts["ensemble.pt"]) as ck:
        an = analyze(ck.root)
        assert [sd.path for sd in an.state_dicts] == [(0,), (1,), (2,)]
    with open_checkpoint(ckpts["gan_modules.tar"]) as ck:
        an = analyze(ck.root)
        assert {sd.class_name for sd in an.state_dicts} == {"models.Generator", "models.Discriminator"}
        keys = [k for k, _ in ck.tensor_entries()]
        assert ["gen", "net.0.weight"] in keys and ["disc", "net.2.bias"] in keys


def test_best_is_last_shares_one_dict(ckpts):
    with open_checkpoint(ckpts["best_is_last.pt"]) as ck:
        got = {tuple(k): t.sha256() for k, t in ck.tensor_entries()}
        assert got[("best", "fc1.weight")] == got[("last", "fc1.weight")]


def test_safetensors_metadata_and_lazy_handles(ckpts):
    with open_checkpoint(ckpts["state_dict.safetensors"]) as ck:
        assert ck.meta["metadata"] == {"epoch": "7"}
        t = ck.root["conv1.weight"]
        assert isinstance(t, TensorRef) and t.storage.source.size == t.nbytes


def test_real_gpu_dataparallel_checkpoints_from_shared():
    from pathlib import Path
    folder = Path(__file__).resolve().parents[2] / "shared" / "realckpt"
    files = sorted(folder.glob("*.pth")) if folder.exists() else []
    if not files:
        pytest.skip("../shared/realckpt is not available here")
    for path in files:
        with open_checkpoint(path) as ck:
            an = analyze(ck.root)
            sd = an.state_dicts[0]
            assert sd.path == ("net",) and sd.prefix[0] == "module."
            assert {t.device for _, t in ck.tensor_entries()} == {"cuda:0"}
            ref = torch.load(path, map_location="cpu", weights_only=True)
            for key, t in ck.root["net"].items():
                np.testing.assert_array_equal(t.read(), ref["net"][key].numpy())


# -- errors ---------------------------------------------------------------------------------------------
def test_empty_file(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    with pytest.raises(NotACheckpointError, match="empty"):
        open_checkpoint(p)


@pytest.mark.parametrize("content,what", [(b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image"),
                                          (b"hello, this is text\n" * 10, "text file"),
                                          (bytes(range(256)) * 4, "not a format")])
def test_not_a_checkpoint(tmp_path, content, what):
    p = tmp_path / "thing.pt"
    p.write_bytes(content)
    with pytest.raises(NotACheckpointError, match=what) as e:
        open_checkpoint(p)
    assert "thing.pt" in str(e.value)


def test_random_bytes_never_escape_the_error_family(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(50):
        p = tmp_path / f"r{i}.pt"
        p.write_bytes(rng.bytes(int(rng.integers(0, 4096))))
        try:
            open_checkpoint(p).close()
        except CheckpointError:
            pass


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(NotACheckpointError, match="folder"):
        open_checkpoint(tmp_path)


def test_truncated_zip_at_every_region(ckpts, tmp_path):
    """A zip cut before the end of data.pkl cannot be listed; one cut later (the directory at the end is
    always lost) opens from its local headers, and the tensors whose bytes are gone say so."""
    raw = ckpts["checkpoint.tar"].read_bytes()
    for cut in (10, 100):
        p = tmp_path / f"cut{cut}.tar"
        p.write_bytes(raw[:cut])
        with pytest.raises((TruncatedFileError, CorruptFileError)):
            open_checkpoint(p)
    expected = makers.expected_tensors(ckpts.objects["checkpoint.tar"])
    for cut in (len(raw) // 2, len(raw) - 30, len(raw) - 1):
        p = tmp_path / f"cut{cut}.tar"
        p.write_bytes(raw[:cut])
        with open_checkpoint(p) as ck:
            assert any("cut short" in w for w in ck.warnings)
            report = build_report(ck, checksums=True)
            whole = [t for t in report["tensors"] if t["sha256"] is not None]
            for t in whole:              # what is there reads back as torch saved it
                assert t["sha256"] == expected[json.dumps(t["key"])]["sha256"]
            missing = ck.missing_bytes()
            if cut == len(raw) // 2:
                assert missing is not None and missing.truncated and 0 < missing.without_bytes < 21
                assert len(whole) == 21 - missing.without_bytes
            else:                        # only the directory is lost: every tensor is whole
                assert missing is None and len(whole) == len(report["tensors"])


def test_truncated_legacy_file_reports_missing_storages(ckpts, tmp_path):
    raw = ckpts["state_dict_legacy.pt"].read_bytes()
    p = tmp_path / "cut.pt"
    p.write_bytes(raw[: len(raw) - 1000])       # cut inside the last storages
    with open_checkpoint(p) as ck:
        report = build_report(ck, checksums=True)
        bad = [t for t in report["tensors"] if "problem" in t]
        good = [t for t in report["tensors"] if "problem" not in t]
        assert bad and good and all(t["sha256"] for t in good) and all(t["sha256"] is None for t in bad)
        assert any("declares" in w or "missing" in w for w in report["warnings"])
    p.write_bytes(raw[:200])                     # cut inside the object pickle
    with pytest.raises(TruncatedFileError):
        open_checkpoint(p)


def test_missing_and_short_storage_records(tmp_path):
    from hostile import PROTO2, glob, s, torch_zip

    def tensor(key, numel):
        pid = b"(" + s("storage") + glob("torch", "FloatStorage") + s(key) + s("cpu") + b"K" + bytes([numel]) + b"t"
        return (glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + b"K\x00" + b"K" + bytes([numel])
                + b"\x85" + b"K\x01\x85" + b"\x89" + glob("collections", "OrderedDict") + b")R" + b"tR")
    body = PROTO2 + b"}(" + s("ok") + tensor("0", 2) + s("short") + tensor("1", 4) + s("missing") + tensor("2", 2) \
        + b"u."
    p = tmp_path / "bad.pt"
    p.write_bytes(torch_zip(body, {"0": bytes(8), "1": bytes(8)}))
    with open_checkpoint(p) as ck:
        assert ck.root["ok"].readable
        assert "holds 2" not in (ck.root["short"].problem or "") and not ck.root["short"].readable
        assert "missing" in ck.root["missing"].problem
        with pytest.raises(CheckpointError):
            ck.root["missing"].read()
        np.testing.assert_array_equal(ck.root["ok"].read(), [0, 0])


def test_corrupt_pickle_is_a_checkpoint_error(ckpts, tmp_path):
    import zipfile
    src = zipfile.ZipFile(ckpts["state_dict.pt"])
    out = tmp_path / "bad.pt"
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = data[: len(data) // 2]
            z.writestr(info.filename, data)
    with pytest.raises(TruncatedFileError, match="data.pkl"):
        open_checkpoint(out)


def test_data_pkl_crc_is_checked(ckpts, tmp_path):
    raw = bytearray(ckpts["state_dict.pt"].read_bytes())
    at = raw.index(b"conv1.weight")          # inside data.pkl, which the CRC covers
    raw[at] ^= 0x01
    out = tmp_path / "flipped.pt"
    out.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="CRC"):
        open_checkpoint(out)


def test_tree_find_reaches_every_tensor_by_its_key_path(ckpts):
    from ckptviewer.core.model.tree import build_tree
    for name in ("checkpoint.tar", "bn_whole_model.pt", "gan_modules.tar", "scripted.pt", "values.pt"):
        with open_checkpoint(ckpts[name]) as ck:
            root = build_tree(ck)
            for path, t in ck.tensor_entries():
                node = root.find(tuple(path))
                assert node is not None and node.value is t, (name, path)
