"""`ckptviewer info` as a new user meets it: values in the JSON, tiny tensors inline, bounded text, folders."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.info import TextLimits, build_report, report_text
from ckptviewer.core.model.values import number_text, small_value, value_text
from ckptviewer.core.read.open import checkpoint_paths

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_json_values_hold_every_non_tensor_leaf(ckpts):
    report = json.loads(run("info", "--json", ckpts["values.pt"]).stdout)
    values = {json.dumps(v["key"]): (v["type"], v["value"]) for v in report["values"]}
    assert values['["epoch"]'] == ("numpy.int64", 12)
    assert values['["acc"]'] == ("numpy.float64", 0.93)
    assert values['["hist"]'] == ("list", [0.1, 0.01])          # a list of numbers is one value
    assert values['["note"]'] == ("str", "hi")
    assert values['["flags", "amp"]'] == ("bool", True)
    assert values['["flags", "seed"]'] == ("None", None)
    assert values['["ns", "lr"]'] == ("float", 0.1)             # a Namespace's fields, as stand-in entries
    assert values['["size"]'] == ("torch.Size", [3, 224, 224])
    assert values['["device"]'][0] == "torch.device"             # the rest: a short text
    report = json.loads(run("info", "--json", ckpts["checkpoint.tar"]).stdout)
    values = {json.dumps(v["key"]): v for v in report["values"]}
    assert values['["epoch"]'] == {"key": ["epoch"], "type": "int", "value": 7}
    assert values['["optimizer_state_dict", "param_groups", 0, "lr"]']["value"] == 0.001
    assert not any(v["key"] == ["loss"] for v in report["values"])      # tensors are tensor records


def test_zero_d_tensors_carry_their_value(ckpts, tmp_path):
    report = json.loads(run("info", "--json", ckpts["checkpoint.tar"]).stdout)
    loss = next(t for t in report["tensors"] if t["key"] == ["loss"])
    assert loss["value"] == pytest.approx(float(ckpts.objects["checkpoint.tar"]["loss"]))
    report = json.loads(run("info", "--json", ckpts["bn_checkpoint.pt"]).stdout)
    counter = next(t for t in report["tensors"] if t["key"] == ["model", "features.1.num_batches_tracked"])
    assert counter["value"] == int(ckpts.objects["bn_checkpoint.pt"]["model"]["features.1.num_batches_tracked"])
    assert isinstance(counter["value"], int)
    assert all("value" not in t for t in report["tensors"] if t["shape"])     # only 0-d tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                   torch.int32, torch.uint8, torch.bool, torch.int8])
def test_small_values_read_like_torch(tmp_path, dtype):
    one = torch.tensor(3 if not dtype.is_floating_point else -1.5).to(dtype)
    few = torch.tensor([1, 0, 2]).to(dtype)
    torch.save({"one": one, "few": few, "grid": torch.arange(4).reshape(2, 2).to(dtype)}, tmp_path / "v.pt",
               _use_new_zipfile_serialization=dtype != torch.int8)       # the legacy format too
    with open_checkpoint(tmp_path / "v.pt") as ck:
        assert small_value(ck.root["one"]) == one.item()
        assert small_value(ck.root["few"]) == few.tolist()
        assert small_value(ck.root["grid"]) == torch.arange(4).reshape(2, 2).to(dtype).tolist()


def test_number_text_prints_like_torch():
    assert number_text(0.0063218) == "0.0063"
    assert number_text(2.0) == "2.0"
    assert number_text(15) == "15"
    assert number_text(1.234e-5) == "1.2340e-05"
    assert number_text(True) == "True"
    assert value_text([0.5, 1]) == "[0.5000, 1]"


def test_text_shows_small_tensor_values_inline(ckpts):
    out = run("info", ckpts["checkpoint.tar"]).stdout
    loss = float(ckpts.objects["checkpoint.tar"]["loss"])
    assert f"loss: {number_text(loss)} (float32 tensor)" in out
    out = run("info", ckpts["bn_checkpoint.pt"]).stdout
    n = int(ckpts.objects["bn_checkpoint.pt"]["model"]["features.1.num_batches_tracked"])
    assert any(line.split()[0] == "features.1.num_batches_tracked" and line.endswith(f"= {n}")
               for line in out.splitlines() if line.strip())
    assert "step: 2.0 (float32 tensor)" in out                      # Adam's step counter
    assert "features.0.weight               [8, 3, 3, 3]  float32  cpu\n" in out   # big tensors: no values


def test_default_text_is_bounded_and_models_come_first(tmp_path):
    history = [(0.5 + i * 1e-4, 1.0 / (i + 1)) for i in range(3596)]
    loops = {f"loop{i}": {f"k{j}": {"a": [1, 2], "b": {"c": j}} for j in range(200)} for i in range(200)}
    opt = torch.optim.SGD(torch.nn.Linear(4, 2).parameters(), lr=0.1)
    torch.save({"history": history, "loops": loops, "epoch": 3, "state_dict": torch.nn.Linear(4, 2).state_dict(),
                "optimizer_states": [opt.state_dict()], "note": "x"}, tmp_path / "big.ckpt")
    out = run("info", tmp_path / "big.ckpt")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) < 400
    names = [line.split(":")[0] for line in lines if line and not line.startswith(" ") and ":" in line]
    top = names[names.index("epoch"):]
    assert top[:5] == ["epoch", "note", "state_dict", "optimizer_states", "history"]   # bulky extras last
    assert "loops" in top                   # past the line budget, still named with its summary line
    assert "  … 3,556 more entries (--max-items N or --all to see them)" in lines
    everything = run("info", "--all", tmp_path / "big.ckpt").stdout.splitlines()
    assert len(everything) > 3596 + 200 * 200
    assert f"  3595: ({history[-1][0]!r}, {history[-1][1]!r})" in everything
    few = run("info", "--max-items", "3", tmp_path / "big.ckpt").stdout.splitlines()
    assert "  … 3,593 more entries (--max-items N or --all to see them)" in few


def test_long_state_dicts_are_elided_with_a_count(tmp_path):
    torch.save({f"layers.{i}.weight": torch.zeros(3, 3) for i in range(1000)}, tmp_path / "wide.pt")
    with open_checkpoint(tmp_path / "wide.pt") as ck:
        text = report_text(ck)
        assert "… 960 more keys (--max-items N or --all to see them)" in text
        assert len(text.splitlines()) < 60
        assert len(report_text(ck, limits=TextLimits.everything()).splitlines()) > 1000


def test_a_folder_opens_each_checkpoint_in_it(ckpts, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    torch.save({"w": torch.zeros(2)}, folder / "a.pt")
    torch.save({"w": torch.ones(2)}, folder / "b.bin", _use_new_zipfile_serialization=False)
    (folder / "notes.txt").write_text("not a checkpoint")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    shard_dir = folder / "sharded"
    shard_dir.mkdir()
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, shard_dir / "model-00001-of-00001.safetensors")
    (shard_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"x": "model-00001-of-00001.safetensors"}}))
    assert checkpoint_paths(folder) == [str(folder / n) for n in ("a.pt", "b.bin", "sharded")]
    assert checkpoint_paths(shard_dir) == [str(shard_dir)]           # a sharded folder is one checkpoint
    out = run("info", "--json", folder)
    assert out.returncode == 0, out.stderr
    reports = json.loads(out.stdout)
    assert [r["format"] for r in reports] == ["torch-zip", "torch-legacy", "sharded safetensors"]
    text = run("info", folder).stdout
    assert text.count("File      ") == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run("info", empty)
    assert out.returncode == 1 and "this folder holds no checkpoint" in out.stderr


def test_numpy_scalars_read_as_numbers(tmp_path):
    torch.save({"acc": np.float64(0.93)}, tmp_path / "n.pt")
    assert "acc: 0.93 (float64)" in run("info", tmp_path / "n.pt").stdout


def test_checksums_fail_loudly_when_bytes_are_missing(ckpts, tmp_path):
    raw = ckpts["state_dict_legacy.pt"].read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) - 1000])
    for json_flag in ((), ("--json",)):
        out = run("info", "--checksums", *json_flag, cut)
        assert out.returncode == 1 and "checksum" in out.stderr
    assert run("info", "--checksums", "--json", ckpts["state_dict_legacy.pt"]).returncode == 0
    with open_checkpoint(cut) as ck:
        assert build_report(ck, checksums=True)["checksums_missing"] >= 1
