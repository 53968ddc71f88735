"""`ckptviewer warmstart` and `convert --fit-to`: the seed's load_state_dict(strict=False) case as a command."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from ckptviewer.core.analyze.warmstart import compare, plan_fit, suggest

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120)


class Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, classes)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warm")
    torch.manual_seed(0)
    pre = Net(10)
    # RetinaFace-style: a training checkpoint whose state_dict was saved from DataParallel
    torch.save({"epoch": 3, "state_dict": nn.DataParallel(pre).state_dict(),
                "optimizer": torch.optim.SGD(pre.parameters(), lr=0.1).state_dict()}, folder / "pretrained.pth")
    torch.save(Net(5).state_dict(), folder / "model5.pt")            # a new classifier head
    torch.save(Net(10).state_dict(), folder / "model10.pt")
    torch.save({"model": Net(10)}, folder / "pickled.pt")
    return folder


def test_strict_load_exits_0(files):
    out = run("warmstart", files / "model10.pt", files / "pickled.pt")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "load_state_dict(strict=True) would succeed" in out.stdout
    assert "Missing keys: 0   Unused checkpoint keys: 0   Used keys: 9" in out.stdout


def test_problems_exit_1_with_check_keys_counts_and_suggestions(files):
    out = run("warmstart", files / "pretrained.pth", files / "model5.pt")
    assert out.returncode == 1
    text = out.stdout
    assert "source: " in text and "state_dict (the only model weights in the file)" in text
    assert "Missing keys: 9   Unused checkpoint keys: 9   Used keys: 0" in text
    assert "would load NONE of these weights" in text
    assert "suggestion: remove prefix 'module.'" in text
    assert "drop 2 keys of another shape: fc.weight [10, 8] (the model: [5, 8])" in text
    assert "2 keys of the model stay missing" in text and "fc.weight, fc.bias" in text


def test_json_contract(files):
    out = run("warmstart", "--json", files / "pretrained.pth", files / "model5.pt")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["loads_strictly"] is False
    assert {"key": "fc.weight", "source": None, "target": [5, 8]} in report["missing"]
    assert {"key": "module.fc.bias", "source": [10], "target": None} in report["unexpected"]
    assert report["shape_mismatch"] == []            # nothing shares a name before the renames
    assert report["renames"][0]["rule"] == ["remove_prefix", "module."]
    assert report["check_keys"] == {"missing": 9, "unused": 9, "used": 0}
    assert report["source"]["state_dict"] == ["state_dict"]
    # once the prefix is gone, the head's shapes differ: each entry {"key", "source", "target"}
    fitted = run("convert", files / "pretrained.pth", "-o", files / "fitted_head.pt", "--select", "state_dict",
                 "--strip-prefix", "-f")
    assert fitted.returncode == 0, fitted.stderr
    report = json.loads(run("warmstart", "--json", files / "fitted_head.pt", files / "model5.pt").stdout)
    assert report["shape_mismatch"] == [{"key": "fc.weight", "source": [10, 8], "target": [5, 8]},
                                        {"key": "fc.bias", "source": [10], "target": [5]}]


def test_unreadable_file_exits_2(files, tmp_path):
    out = run("warmstart", tmp_path / "nope.pt", files / "model5.pt")
    assert out.returncode == 2 and "no such file. Check the path." in out.stderr
    out = run("warmstart", files / "model10.pt", files / "model5.pt", "--target-select", "nothing")
    assert out.returncode == 2 and "no entry 'nothing'" in out.stderr


def test_convert_fit_to_gives_a_state_dict_that_loads(files, tmp_path):
    out_path = tmp_path / "fitted.pt"
    out = run("convert", files / "pretrained.pth", "-o", out_path, "--fit-to", files / "model5.pt")
    assert out.returncode == 0, out.stderr
    assert "rename: Remove prefix 'module.'" in out.stdout
    assert "2 keys of the model stay missing" in out.stdout
    fitted = torch.load(out_path, weights_only=True)
    model = Net(5)
    result = model.load_state_dict(fitted, strict=False)        # what the user runs next
    assert result.missing_keys == ["fc.weight", "fc.bias"] and result.unexpected_keys == []
    pre = torch.load(files / "pretrained.pth", weights_only=True)["state_dict"]
    assert torch.equal(model.body[0].weight, pre["module.body.0.weight"])
    assert run("warmstart", out_path, files / "model5.pt").returncode == 1
    assert run("convert", files / "pretrained.pth", "-o", tmp_path / "same.pt", "--fit-to", files / "model10.pt"
               ).returncode == 0
    assert run("warmstart", tmp_path / "same.pt", files / "model10.pt").returncode == 0


def test_known_renamings_are_suggested(tmp_path):
    from ckptviewer.core import open_checkpoint
    torch.save({"ln.gamma": torch.ones(4), "ln.beta": torch.zeros(4), "conv.weight_g": torch.ones(2, 1, 1),
                "conv.weight_v": torch.ones(2, 3, 1)}, tmp_path / "old.pt")
    torch.save({"ln.weight": torch.ones(4), "ln.bias": torch.zeros(4),
                "conv.parametrizations.weight.original0": torch.ones(2, 1, 1),
                "conv.parametrizations.weight.original1": torch.ones(2, 3, 1)}, tmp_path / "new.pt")
    with open_checkpoint(tmp_path / "old.pt") as a, open_checkpoint(tmp_path / "new.pt") as b:
        rep = compare(a.root, b.root)
        reasons = " | ".join(s.reason for s in suggest(rep))
        assert "gamma to weight" in reasons and "weight_g to parametrizations.weight.original0" in reasons
        plan = plan_fit(a.root, b.root)
        assert plan.after.loads_strictly and len(plan.renames) == 4
