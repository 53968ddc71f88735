"""`ckptviewer convert`: the flags, dry runs, warm-start report, errors and exit codes."""
from __future__ import annotations

import subprocess
import sys

import torch

from models import Net

CLI = [sys.executable, "-m", "ckptviewer", "convert"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def test_clean_dataparallel_training_checkpoint(ckpts, tmp_path):
    out = tmp_path / "model.pt"
    r = run(ckpts["dataparallel_checkpoint.pth"], "-o", out, "--select", "net", "--strip-prefix",
            "--map-location", "*=cpu")
    assert r.returncode == 0, r.stderr
    assert "stripped 'module.'" in r.stdout and "verified" in r.stdout
    Net().load_state_dict(torch.load(out, weights_only=True), strict=True)


def test_gpu_to_cpu_fp16_safetensors(ckpts, tmp_path):
    out = tmp_path / "w.safetensors"
    r = run(ckpts["gpu1_checkpoint.tar"], "-o", out, "--select", "model_state_dict", "--map-location", "cuda=cpu",
            "--dtype", "float16")
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file
    sd = load_file(out)
    assert sd["fc1.weight"].dtype == torch.float16
    assert torch.equal(sd["fc1.weight"], ckpts.objects["gpu1_checkpoint.tar"]["model_state_dict"]["fc1.weight"].half())


def test_rename_flags_and_dry_run_write_nothing(ckpts, tmp_path):
    out = tmp_path / "never.pt"
    r = run(ckpts["state_dict.pt"], "-o", out, "--add-prefix", "backbone.", "--rename", "conv=c",
            "--rename-regex", r"fc(\d)=head\1", "--drop", "fc3.bias", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "conv1.weight -> backbone.c1.weight" in r.stdout
    assert "fc2.bias -> backbone.head2.bias" in r.stdout
    assert "dry run: nothing written" in r.stdout
    assert not out.exists()


def test_collision_and_bad_paths_fail_cleanly(ckpts, tmp_path):
    out = tmp_path / "x.pt"
    r = run(ckpts["state_dict.pt"], "-o", out, "--rename-regex", r"\.(weight|bias)$=.p")
    assert r.returncode == 1 and "collision" in r.stderr and r.stderr.count("\n") == 1
    r = run(ckpts["checkpoint.tar"], "-o", out, "--select", "model")
    assert r.returncode == 1 and "no entry 'model'" in r.stderr
    assert not out.exists()
    r = run(ckpts["state_dict.pt"], "-o", ckpts["state_dict.pt"], "--force")
    assert r.returncode == 1 and "file being read" in r.stderr
    out.write_bytes(b"keep me")
    r = run(ckpts["state_dict.pt"], "-o", out)
    assert r.returncode == 1 and "already exists" in r.stderr and out.read_bytes() == b"keep me"
    r = run(ckpts["state_dict.pt"])
    assert r.returncode == 2 and "-o OUT" in r.stderr


def test_check_against_reports_warm_start(ckpts):
    r = run(ckpts["dataparallel_checkpoint.pth"], "--select", "net", "--check-against", ckpts["checkpoint.tar"],
            "--target-select", "model_state_dict", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "0 of 10 target keys match; 10 missing; 10 unexpected" in r.stdout
    assert "suggestion: remove prefix 'module.': 10 more keys would match" in r.stdout


def test_legacy_output_format(ckpts, tmp_path):
    out = tmp_path / "old.pt"
    r = run(ckpts["checkpoint.tar"], "-o", out, "--format", "pt-legacy")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:2] == b"\x80\x02"          # the legacy magic pickle, not a zip
    got = torch.load(out, weights_only=True)
    assert got["epoch"] == 7 and set(got["model_state_dict"]) == set(ckpts.objects["checkpoint.tar"]["model_state_dict"])
