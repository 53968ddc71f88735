"""`ckptviewer diff` lines up what a user means: a checkpoint's state_dict against a bare one, prefixes,
counters as old -> new, optimizer state named by parameter."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.diff import DiffRun, align_sides
from models import BNNet

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def counters(tmp_path_factory):
    """The same BatchNorm model and Adam optimizer after 6 and after 15 steps."""
    folder = tmp_path_factory.mktemp("counters")
    torch.manual_seed(0)
    model = BNNet()
    opt = torch.optim.Adam(model.parameters())

    def train(n):
        for _ in range(n):
            opt.zero_grad()
            model(torch.randn(2, 3, 8, 8)).square().mean().backward()
            opt.step()
    train(6)
    torch.save({"epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict(), "loss": torch.tensor(0.5)},
               folder / "a.pt")
    train(9)
    torch.save({"epoch": 5, "model": model.state_dict(), "optimizer": opt.state_dict(), "loss": torch.tensor(0.25)},
               folder / "b.pt")
    return folder


def test_training_checkpoint_against_bare_state_dict(ckpts):
    out = run("diff", ckpts["checkpoint.tar"], ckpts["state_dict.pt"])
    assert out.returncode == 1
    assert "note: B is a state_dict and A holds exactly one (model_state_dict): comparing those" in out.stdout
    assert "summary: 10 tensor pairs compared" in out.stdout and "only in" not in out.stdout
    # the other way round, and as JSON
    report = json.loads(run("diff", "--json", ckpts["state_dict.pt"], ckpts["checkpoint.tar"]).stdout)
    assert report["counts"].get("only_a", 0) == report["counts"].get("only_b", 0) == 0
    assert report["notes"] and "B holds exactly one (model_state_dict)" in report["notes"][0]
    # a file holding several: nothing is guessed, the note names them
    out = run("diff", ckpts["gan.tar"], ckpts["state_dict.pt"])
    assert "A holds 2 (modelA_state_dict, modelB_state_dict): name the one to compare with --select-a PATH" \
        in out.stdout


def test_wrapper_prefixes_are_lined_up_or_kept(ckpts):
    out = run("diff", ckpts["dataparallel.pt"], ckpts["state_dict.pt"])
    assert "stripped 'module.' (DataParallel/DistributedDataParallel) from A's keys" in out.stdout
    assert "only in" not in out.stdout and "summary: 10 tensor pairs compared" in out.stdout
    kept = run("diff", "--keep-prefixes", ckpts["dataparallel.pt"], ckpts["state_dict.pt"])
    assert "0 tensor pairs compared" in kept.stdout and "10 only in A" in kept.stdout
    # nested: a training checkpoint's state_dict against a bare one with another prefix
    out = run("diff", ckpts["dataparallel_checkpoint.pth"], ckpts["compiled.pt"])
    assert "holds exactly one (net)" in out.stdout and "stripped" in out.stdout
    assert "only in" not in out.stdout


def test_align_sides_leaves_matching_sides_alone(ckpts):
    with open_checkpoint(ckpts["checkpoint.tar"]) as a, open_checkpoint(ckpts["checkpoint_legacy.tar"]) as b:
        ra, rb, notes = align_sides(a.root, b.root)
        assert ra is a.root and rb is b.root and notes == []


def test_counters_and_zero_d_tensors_read_old_to_new(counters):
    out = run("diff", counters / "a.pt", counters / "b.pt").stdout
    assert "! model / features.1.num_batches_tracked  [values changed]  6 -> 15" in out
    assert "! loss  [values changed]  0.5000 -> 0.2500" in out
    assert "step  [values changed]  6.0 -> 15.0" in out
    report = json.loads(run("diff", "--json", counters / "a.pt", counters / "b.pt").stdout)
    entry = next(e for e in report["entries"] if e["key"] == ["model", "features.1.num_batches_tracked"])
    assert entry["a"]["value"] == 6 and entry["b"]["value"] == 15


def test_optimizer_state_rows_are_named_by_parameter(counters):
    out = run("diff", counters / "a.pt", counters / "b.pt").stdout
    assert "! optimizer / state / 0 (features.0.weight, inferred) / exp_avg  [values changed]" in out
    report = json.loads(run("diff", "--json", counters / "a.pt", counters / "b.pt").stdout)
    entry = next(e for e in report["entries"] if e["key"] == ["optimizer", "state", 5, "exp_avg"])
    assert entry["parameter"] == "head.bias, inferred"
    with open_checkpoint(counters / "a.pt") as a, open_checkpoint(counters / "b.pt") as b:
        diff_run = DiffRun(a.root, b.root)
        assert diff_run.param_name(("optimizer", "state", 1, "exp_avg")) == "features.0.bias, inferred"
        assert diff_run.param_name(("model", "head.bias")) == ""
