"""`ckptviewer convert` as a new user meets it: safetensors from a training checkpoint, metadata, devices,
re-running a recipe, and the window's export file name."""
from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=180)


def test_training_checkpoint_to_safetensors_picks_its_state_dict(ckpts, tmp_path):
    out = tmp_path / "model.safetensors"
    r = run("convert", ckpts["checkpoint.tar"], "-o", out, "--metadata", "epoch=7", "source=run 3")
    assert r.returncode == 0, r.stderr
    assert "selected model_state_dict, the only model state_dict in the file" in r.stdout
    tensors = load_file(out)
    expected = ckpts.objects["checkpoint.tar"]["model_state_dict"]
    assert set(tensors) == set(expected) and all(torch.equal(tensors[k], expected[k]) for k in expected)
    with safe_open(out, "pt") as f:
        assert f.metadata() == {"format": "pt", "epoch": "7", "source": "run 3"}


def test_several_state_dicts_name_the_exact_select(ckpts, tmp_path):
    r = run("convert", ckpts["gan.tar"], "-o", tmp_path / "gan.safetensors")
    assert r.returncode == 1 and not (tmp_path / "gan.safetensors").exists()
    assert "choose one with --select modelA_state_dict or --select modelB_state_dict" in r.stderr
    r = run("convert", ckpts["gan.tar"], "-o", tmp_path / "gan.safetensors", "--select", "modelB_state_dict")
    assert r.returncode == 0, r.stderr


def test_plain_state_dict_to_safetensors_has_format_metadata(ckpts, tmp_path):
    out = tmp_path / "sd.safetensors"
    assert run("convert", ckpts["state_dict.pt"], "-o", out).returncode == 0
    with safe_open(out, "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_gpu_locations_are_warned_about(ckpts, tmp_path):
    r = run("convert", ckpts["gpu1_checkpoint.tar"], "-o", tmp_path / "g.pt")
    assert r.returncode == 0
    assert "warning: the output keeps accelerator locations (21 on cuda:1)" in r.stderr
    assert "--map-location cuda=cpu" in r.stderr
    r = run("convert", ckpts["gpu1_checkpoint.tar"], "-o", tmp_path / "c.pt", "--map-location", "cuda=cpu")
    assert r.returncode == 0 and "warning" not in r.stderr
    r = run("convert", ckpts["gpu1_checkpoint.tar"], "-o", tmp_path / "g.pt", "--dry-run", "-f")
    assert "warning: the output keeps accelerator locations" in r.stdout


def test_recipe_rerun_skips_converted_files_and_force_overwrites(ckpts, tmp_path):
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes(ckpts["dataparallel.pt"].read_bytes())
    first = run("convert", "--recipe", "clean-dataparallel", tmp_path)
    assert first.returncode == 0 and "2 converted, 0 skipped, 0 failed" in first.stdout
    again = run("convert", "--recipe", "clean-dataparallel", tmp_path)
    assert again.returncode == 0, again.stdout
    assert "0 converted, 2 skipped, 0 failed" in again.stdout and "already converted" in again.stdout
    forced = run("convert", "--recipe", "clean-dataparallel", "--force", tmp_path)
    assert forced.returncode == 0 and "2 converted, 0 skipped, 0 failed" in forced.stdout


def test_export_dialog_default_name_takes_the_format_suffix():
    from ckptviewer.gui.dialogs.export import default_destination, format_suffix, with_suffix_for
    assert default_destination("/x/run.pth.tar", "safetensors", None) == "/x/run-edited.safetensors"
    assert default_destination("/x/run.pth.tar", "pt", ("model",)) == "/x/run-model.pt"
    assert default_destination("/x/weights.ckpt", "pt-legacy", None) == "/x/weights-edited.pt"
    assert default_destination("/x/model.pth", "pt", None) == "/x/model-edited.pth"
    assert default_destination("/x/model.safetensors", "pt", None) == "/x/model-edited.pt"
    assert with_suffix_for("/x/run.pth.tar", "safetensors") == "/x/run.safetensors"
    assert with_suffix_for("/x/mine.safetensors", "pt") == "/x/mine.pt"
    assert format_suffix("safetensors", ".pt") == ".safetensors" and format_suffix("pt", ".bin") == ".pt"


def test_json_of_scan_and_info_are_unchanged_in_shape(ckpts):
    report = json.loads(run("info", "--json", ckpts["state_dict.pt"]).stdout)
    assert {"format", "tensors", "warnings", "values", "missing_bytes"} <= set(report)
