"""Diffs: identical files, best-is-last, a fine-tuned head, DataParallel vs plain, shapes, formats, values."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.diff import DiffOptions, DiffRun, diff_report, select_and_strip
from models import Net

CLI = [sys.executable, "-m", "ckptviewer", "diff"]


def run_cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def diff(a, b, **kw):
    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        return DiffRun(ca.root, cb.root, DiffOptions(**kw)).run()


def test_identical_files(ckpts):
    r = diff(ckpts["checkpoint.tar"], ckpts["checkpoint.tar"])
    assert r.equal and r.counts()["same"] == len(r.entries)
    out = run_cli(ckpts["checkpoint.tar"], ckpts["checkpoint.tar"])
    assert out.returncode == 0 and "21 tensor pairs compared: 21 identical" in out.stdout


def test_best_is_last_when_best_was_a_reference(tmp_path):
    """The tutorial's trap: best_state = model.state_dict() is a reference, so 'best' equals 'last'."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad()
        model(torch.randn(2, 3, 32, 32)).square().mean().backward()
        opt.step()
    step()
    best_ref = model.state_dict()                      # the bug: a reference
    best_copy = copy.deepcopy(model.state_dict())     # the fix: a copy
    step()
    torch.save(best_ref, tmp_path / "best.pt")
    torch.save(best_copy, tmp_path / "best_copy.pt")
    torch.save(model.state_dict(), tmp_path / "last.pt")
    assert diff(tmp_path / "best.pt", tmp_path / "last.pt").equal
    assert run_cli(tmp_path / "best.pt", tmp_path / "last.pt").returncode == 0
    r = diff(tmp_path / "best_copy.pt", tmp_path / "last.pt")
    assert not r.equal and r.counts()["changed"] == 10


def test_fine_tune_of_the_head_is_singled_out(tmp_path):
    torch.manual_seed(0)
    model = Net()
    torch.save(model.state_dict(), tmp_path / "base.pt")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.fc3.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    opt.zero_grad()
    model(torch.randn(4, 3, 32, 32)).square().mean().backward()
    opt.step()
    torch.save(model.state_dict(), tmp_path / "tuned.pt")
    r = diff(tmp_path / "base.pt", tmp_path / "tuned.pt")
    changed = [e.path[0] for e in r.entries if e.status == "changed"]
    assert changed == ["fc3.weight", "fc3.bias"]
    chart = dict(r.layer_changes())
    assert chart["conv1.weight"] == 0 and chart["fc3.weight"] > 0
    lines = [line for line in diff_report(r) if line.startswith("!")]
    assert len(lines) == 2 and lines[0].startswith("! fc3.weight")


def test_dataparallel_vs_plain_equal_after_strip(ckpts):
    with open_checkpoint(ckpts["dataparallel_checkpoint.pth"]) as a, open_checkpoint(ckpts["checkpoint.tar"]) as b:
        raw = DiffRun(select_and_strip(a.root, "net", False), b.root["model_state_dict"]).run()
        assert raw.counts()["only_a"] == 10 and raw.counts()["only_b"] == 10
        stripped = DiffRun(select_and_strip(a.root, "net", True), select_and_strip(b.root, "model_state_dict", True))
        assert stripped.run().equal
    out = run_cli(ckpts["dataparallel_checkpoint.pth"], ckpts["checkpoint.tar"], "--select-a", "net",
                  "--select-b", "model_state_dict", "--strip-prefix")
    assert out.returncode == 0, out.stdout + out.stderr


def test_shape_changes_and_only_on_one_side(tmp_path):
    torch.manual_seed(0)
    a = Net()
    b = copy.deepcopy(a)
    b.fc3 = torch.nn.Linear(84, 5)
    sd_b = b.state_dict()
    sd_b["extra.weight"] = torch.zeros(2)
    del sd_b["fc1.bias"]
    torch.save(a.state_dict(), tmp_path / "a.pt")
    torch.save(sd_b, tmp_path / "b.pt")
    r = diff(tmp_path / "a.pt", tmp_path / "b.pt")
    status = {e.path[0]: e.status for e in r.entries}
    assert status["fc3.weight"] == status["fc3.bias"] == "shape"
    assert status["fc1.bias"] == "only_a" and status["extra.weight"] == "only_b"
    assert status["conv1.weight"] == "same"
    out = run_cli(tmp_path / "a.pt", tmp_path / "b.pt")
    assert out.returncode == 1
    assert "- fc1.bias" in out.stdout and "+ extra.weight" in out.stdout and "! fc3.weight" in out.stdout


def test_pt_against_safetensors_and_legacy(ckpts, tmp_path):
    from safetensors.torch import save_file
    sd = torch.load(ckpts["state_dict.pt"], weights_only=True)
    save_file(sd, tmp_path / "same.safetensors")
    torch.save(sd, tmp_path / "same_legacy.pt", _use_new_zipfile_serialization=False)
    assert diff(ckpts["state_dict.pt"], tmp_path / "same.safetensors").equal
    assert diff(ckpts["state_dict.pt"], tmp_path / "same_legacy.pt").equal


def test_non_tensor_differences(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 7, "loss": 0.5, "model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "a.pt")
    opt.param_groups[0]["lr"] = 0.01
    torch.save({"epoch": 8, "loss": 0.5, "model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "b.pt")
    r = diff(tmp_path / "a.pt", tmp_path / "b.pt")
    changed = {e.path: (e.a, e.b) for e in r.entries if e.status == "value"}
    assert changed == {("epoch",): (7, 8), ("opt", "param_groups", 0, "lr"): (0.1, 0.01)}
    out = run_cli(tmp_path / "a.pt", tmp_path / "b.pt")
    assert "! epoch  [value changed]  7 -> 8" in out.stdout and out.returncode == 1


def test_metrics_match_a_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 700)).astype(np.float32)
    b = a.copy()
    b[:100] += rng.standard_normal((100, 700)).astype(np.float32) * 1e-3   # only the first rows change
    b[250, :5] = np.nan
    torch.save({"w": torch.from_numpy(a)}, tmp_path / "a.pt")
    torch.save({"w": torch.from_numpy(b)}, tmp_path / "b.pt")
    # small chunks: several equal and several changed chunks
    r = diff(tmp_path / "a.pt", tmp_path / "b.pt", chunk_bytes=64 * 700 * 4)
    m = r.entries[0].metrics
    x, y = a.astype(np.float64), b.astype(np.float64)
    fin = np.isfinite(y)
    d = np.abs(x - y)[fin]
    assert math.isclose(m.max_abs, d.max(), rel_tol=1e-6)
    assert math.isclose(m.mean_abs, d.sum() / a.size, rel_tol=1e-6)
    assert math.isclose(m.relative_change, np.sqrt((d ** 2).sum() / (x ** 2).sum()), rel_tol=1e-5)
    yb = np.where(fin, y, 0)
    assert math.isclose(m.cosine, (x * yb).sum() / np.sqrt((x ** 2).sum() * (yb ** 2).sum()), rel_tol=1e-9)
    close = torch.isclose(torch.from_numpy(a), torch.from_numpy(b), rtol=1e-5, atol=1e-8)
    assert m.not_close == int((~close).sum())


def test_nan_in_the_same_place_is_identical(tmp_path):
    t = torch.tensor([1.0, float("nan"), 3.0])
    torch.save({"w": t}, tmp_path / "a.pt")
    torch.save({"w": t.clone()}, tmp_path / "b.pt")
    assert diff(tmp_path / "a.pt", tmp_path / "b.pt").equal


def test_dtype_change_still_measures(tmp_path):
    w = torch.randn(64, 64)
    torch.save({"w": w}, tmp_path / "a.pt")
    torch.save({"w": w.half()}, tmp_path / "b.pt")
    (e,) = diff(tmp_path / "a.pt", tmp_path / "b.pt").entries
    assert e.status == "dtype" and 0 < e.metrics.max_abs < 1e-2


def test_cli_json_and_errors(ckpts, tmp_path):
    out = run_cli(ckpts["checkpoint.tar"], ckpts["checkpoint_legacy.tar"], "--json")
    data = json.loads(out.stdout)
    assert data["equal"] is True and out.returncode == 0
    assert {e["status"] for e in data["entries"]} == {"same"}
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    out = run_cli(ckpts["state_dict.pt"], bad)
    assert out.returncode == 2 and "not a checkpoint" in out.stderr


def test_compare_is_a_generator_that_can_stop(tmp_path):
    torch.save({f"w{i}": torch.randn(512, 512) for i in range(8)}, tmp_path / "a.pt")
    torch.save({f"w{i}": torch.randn(512, 512) for i in range(8)}, tmp_path / "b.pt")
    with open_checkpoint(tmp_path / "a.pt") as a, open_checkpoint(tmp_path / "b.pt") as b:
        run = DiffRun(a.root, b.root)
        gen = run.compare()
        first = [next(gen) for _ in range(3)]
        gen.close()
        assert first[-1].done < first[-1].total
        assert run.counts()["pending"] > 0            # stopped part way; the rest stay pending
