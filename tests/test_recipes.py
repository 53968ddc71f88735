"""Recipes and batches: JSON round trip and validation, presets, exists rules, a corrupt file, cancel."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.edit.batch import convert_file, convert_iter, expand_inputs, without_outputs
from ckptviewer.core.util.errors import OperationError
from ckptviewer.core.edit.ops import Cast, Rename, SelectModel, StripPrefix, apply_steps
from ckptviewer.core.edit.recipes import OutputRule, Recipe, find_recipe, load_recipe, presets, recipe_from_json
from models import Net

CLI = [sys.executable, "-m", "ckptviewer", "convert"]


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_presets_and_custom_recipes_round_trip(tmp_path):
    custom = Recipe("mine", [SelectModel("net"), StripPrefix("module."), Rename((("add_prefix", "backbone."),)),
                             Cast("bfloat16")], OutputRule("safetensors", str(tmp_path), "{parent}-{stem}{ext}",
                                                           "rename", "drop"), "a test recipe")
    for r in [*presets().values(), custom]:
        path = tmp_path / "r.json"
        r.save(str(path))
        back = load_recipe(str(path))
        assert back.to_json() == r.to_json()
        assert back.steps == r.steps
    assert set(presets()) == {"clean-dataparallel", "to-safetensors", "gpu-to-cpu", "fp16", "weights-only-safe"}


@pytest.mark.parametrize("data,message", [
    ({"steps": []}, "no \"ckptviewer_recipe\" version"),
    ({"ckptviewer_recipe": 9, "steps": []}, "version 9"),
    ({"ckptviewer_recipe": 1, "steps": {}}, "\"steps\" must be a list"),
    ({"ckptviewer_recipe": 1, "steps": [{"op": "select_model"}, {"op": "explode"}]}, "step 2 \\(explode\\)"),
    ({"ckptviewer_recipe": 1, "steps": [{"op": "cast", "dtype": "int8"}]}, "step 1 \\(cast\\).*cannot cast"),
    ({"ckptviewer_recipe": 1, "steps": [{"op": "rename", "rules": [["regex", "(", "x"]]}]}, "step 1.*regular expr"),
    ({"ckptviewer_recipe": 1, "steps": [], "output": {"format": "onnx"}}, "output.format 'onnx'"),
    ({"ckptviewer_recipe": 1, "steps": [], "output": {"name": "../{stem}.pt"}}, "not a path"),
    ({"ckptviewer_recipe": 1, "steps": [], "output": {"name": "{stem}{date}.pt"}}, "unknown field"),
    ({"ckptviewer_recipe": 1, "steps": [], "output": {"colour": "red"}}, "unknown output field"),
])
def test_invalid_recipes_are_rejected_naming_the_problem(data, message):
    with pytest.raises(OperationError, match=message):
        recipe_from_json(data)


def test_select_model_picks_the_weights(ckpts):
    cases = {"checkpoint.tar": ("model_state_dict",), "dataparallel_checkpoint.pth": ("net",),
             "state_dict.pt": (), "whole_model.pt": (), "gan.tar": ("modelA_state_dict",)}
    for name, path in cases.items():
        with open_checkpoint(ckpts[name]) as ck:
            root, log = apply_steps(ck.root, [SelectModel()])
            assert all(k.count(".") >= 1 for k in root), name
            where = "/".join(path) or "the root"
            assert f"at {where}" in log.lines[0], (name, log.lines)
    with open_checkpoint(ckpts["gan.tar"]) as ck:
        root, log = apply_steps(ck.root, [SelectModel("modelB_state_dict")])
        assert list(root)[0] == "net.0.weight" and len(root) == 4


def test_output_names_and_exists_rules(ckpts, tmp_path):
    src = tmp_path / "run.pth"
    src.write_bytes(ckpts["dataparallel_checkpoint.pth"].read_bytes())
    recipe = find_recipe("clean-dataparallel")
    assert recipe.output.output_path(str(src)) == str(tmp_path / "run.clean.pth")
    assert find_recipe("to-safetensors").output.output_path(str(src)) == str(tmp_path / "run.safetensors")
    first = convert_file(str(src), recipe)
    assert first.status == "done" and first.output.endswith("run.clean.pth")
    again = convert_file(str(src), recipe)        # a second run: already converted, skipped
    assert again.status == "skipped" and "already converted" in again.message
    os.utime(first.output, (1_000_000, 1_000_000))  # an output older than its source may be stale: it fails
    stale = convert_file(str(src), recipe)
    assert stale.status == "failed" and "older than its source" in stale.message
    recipe.output.exists = "skip"
    assert convert_file(str(src), recipe).status == "skipped"
    recipe.output.exists = "rename"
    renamed = convert_file(str(src), recipe)
    assert renamed.output.endswith("run.clean-1.pth")
    with open_checkpoint(renamed.output) as a, open_checkpoint(first.output) as b:   # same tensors, other name
        assert [(k, t.sha256()) for k, t in a.tensor_entries()] == [(k, t.sha256()) for k, t in b.tensor_entries()]
    Net().load_state_dict(torch.load(first.output, weights_only=True), strict=True)


def test_folder_expansion_skips_earlier_outputs(tmp_path, ckpts):
    for name in ("a.pt", "b.pth", "a.clean.pt", "notes.txt"):
        (tmp_path / name).write_bytes(ckpts["state_dict.pt"].read_bytes())
    files, passed = expand_inputs([tmp_path])
    assert [p.split("/")[-1] for p in files] == ["a.clean.pt", "a.pt", "b.pth"] and passed[0].endswith("notes.txt")
    keep, own = without_outputs(files, find_recipe("clean-dataparallel"))
    assert [p.split("/")[-1] for p in keep] == ["a.pt", "b.pth"] and own[0].endswith("a.clean.pt")


def test_cancel_leaves_no_partial_output(tmp_path):
    torch.save({f"w{i}": torch.randn(256, 1024) for i in range(16)}, tmp_path / "big.pt")
    gen = convert_iter(str(tmp_path / "big.pt"), find_recipe("fp16"))
    p = next(gen)
    while p.stage != "writing":
        p = next(gen)
    gen.close()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["big.pt"]


def test_cli_batch_with_a_corrupt_file(ckpts, tmp_path):
    inbox = tmp_path / "in"
    out = tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    for name in ("dataparallel_checkpoint.pth", "gpu0.pt", "checkpoint.tar"):
        (inbox / name).write_bytes(ckpts[name].read_bytes())
    (inbox / "corrupt.pt").write_bytes(ckpts["checkpoint.tar"].read_bytes()[:5000])
    r = subprocess.run(CLI + ["--recipe", "clean-dataparallel", str(inbox), "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "corrupt.pt: FAILED" in r.stdout and "summary: 3 converted, 0 skipped, 1 failed" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.clean.tar", "dataparallel_checkpoint.clean.pth",
                                                    "gpu0.clean.pt"]
    for p in out.iterdir():
        sd = torch.load(p, weights_only=True)
        Net().load_state_dict(sd, strict=True)
        assert all(t.device.type == "cpu" for t in sd.values())
    # the core path the window uses gives the same bytes
    again = convert_file(str(inbox / "gpu0.pt"), find_recipe("clean-dataparallel"))
    assert sha(again.output) == sha(out / "gpu0.clean.pt")


def test_cli_recipe_file_and_list(tmp_path, ckpts):
    path = tmp_path / "half.json"
    path.write_text(json.dumps({"ckptviewer_recipe": 1, "name": "half", "steps": [{"op": "cast", "dtype": "float16"}],
                                "output": {"name": "{stem}.half{ext}"}}))
    src = tmp_path / "m.pt"
    src.write_bytes(ckpts["state_dict.pt"].read_bytes())
    r = subprocess.run(CLI + ["--recipe", str(path), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert torch.load(tmp_path / "m.half.pt", weights_only=True)["fc1.weight"].dtype == torch.float16
    listing = subprocess.run(CLI + ["--list-recipes"], capture_output=True, text=True).stdout
    assert "clean-dataparallel" in listing and "fp16" in listing
    bad = tmp_path / "bad.json"
    bad.write_text('{"ckptviewer_recipe": 1, "steps": [{"op": "nope"}]}')
    r = subprocess.run(CLI + ["--recipe", str(bad), str(src)], capture_output=True, text=True)
    assert r.returncode == 2 and "step 1 (nope)" in r.stderr
