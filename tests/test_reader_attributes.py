"""Tensors a pickled module holds outside its state_dict (plain attributes, lists of them, tensors inside
objects and dataclasses it holds, non-persistent buffers) are in the file, so they are listed: under the
module's key path as [submodule, "__dict__", name, ...], marked as attributes, counted in the summary."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
import torch.nn as nn

import makers
from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.info import build_report, report_text
from ckptviewer.core.model import keypath
from ckptviewer.core.model.tree import build_tree
from ckptviewer.core.write.export import ExportOptions, plan_export


@dataclasses.dataclass
class Cfg:
    scale: torch.Tensor
    name: str = "anchors"


class Detect(nn.Module):
    """A detection head as YOLO-style models pickle it: strides, anchors and grids as plain attributes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.stride = torch.tensor([8., 16., 32.])
        self.anchors = [torch.ones(2), torch.zeros(3)]
        self._grid = torch.arange(4.)
        self.register_buffer("scratch", torch.full((2,), 7.), persistent=False)
        self.cfg = Cfg(torch.full((2,), 3.0))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), Detect())
        self.head_anchor = torch.tensor(5.)


ATTRIBUTE_KEYS = [["__dict__", "head_anchor"], ["backbone.1", "__dict__", "stride"],
                  ["backbone.1", "__dict__", "anchors", 0], ["backbone.1", "__dict__", "anchors", 1],
                  ["backbone.1", "__dict__", "_grid"], ["backbone.1", "__dict__", "cfg", "scale"],
                  ["backbone.1", "__dict__", "_buffers", "scratch"]]


def _saved(tmp_path, obj, name="m.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_attribute_tensors_are_listed_marked_and_counted(tmp_path):
    model = Net()
    path = _saved(tmp_path, {"model": model, "epoch": 3})
    with open_checkpoint(path) as ck:
        rep = build_report(ck, checksums=True)
        text = report_text(ck)
    got = {json.dumps(t["key"]): t for t in rep["tensors"]}
    want = makers.expected_tensors({"model": model})
    assert set(got) == set(want)                       # state_dict entries and attributes, nothing else
    for key, w in want.items():
        assert (got[key]["dtype"], got[key]["shape"], got[key]["sha256"]) == (w["dtype"], w["shape"], w["sha256"])
    attrs = {json.dumps(["model"] + k) for k in ATTRIBUTE_KEYS}
    assert {k for k, t in got.items() if t.get("attribute")} == attrs
    # State_dict names stay single components (the conformance contract), and are not attributes.
    assert not got['["model", "backbone.0.weight"]'].get("attribute")
    assert rep["attribute_tensor_count"] == 7 and rep["tensor_count"] == 11
    assert "7 tensors held as attributes outside its state_dict" in rep["summary"]
    assert "7 held as module attributes outside any state_dict" in text
    assert "backbone.1 / __dict__ / anchors / 0" in text


def test_tree_and_key_paths_reach_every_attribute_tensor(tmp_path):
    path = _saved(tmp_path, Net())
    with open_checkpoint(path) as ck:
        root = build_tree(ck)
        for key in ATTRIBUTE_KEYS:
            node = root.find(tuple(key))
            assert node is not None and node.kind == "tensor", key
            exact, value = keypath.resolve(ck.root, keypath.format_path(key))
            assert value is node.value and list(exact) == key
        holder = root.find(("backbone.1", "__dict__"))
        assert "tensors outside the state_dict" in holder.note
        detect = root.find(("backbone.1",))
        assert {tuple(p) for p, _ in detect.tensors()} >= {tuple(k) for k in ATTRIBUTE_KEYS[1:]}
        assert root.attribute_tensor_count() == 7
        np.testing.assert_array_equal(root.find(("backbone.1", "__dict__", "stride")).value.read(), [8, 16, 32])


def test_tensors_in_plain_objects_and_dataclasses(tmp_path):
    path = _saved(tmp_path, {"cfg": Cfg(torch.ones(3)), "cfgs": [Cfg(torch.zeros(2), "b")], "t": torch.zeros(1)})
    with open_checkpoint(path) as ck:
        keys = {json.dumps(k) for k, _ in ck.tensor_entries()}
    assert keys == {'["cfg", "scale"]', '["cfgs", 0, "scale"]', '["t"]'}


def test_export_of_a_module_says_what_it_leaves_out(tmp_path):
    path = _saved(tmp_path, Net())
    with open_checkpoint(path) as ck:
        plan = plan_export(ck.root, ExportOptions(fmt="pt"))
    assert {p[0] for p, _ in plan.tensors} == set(Net().state_dict())
    assert any("7 tensors the module holds as attributes outside its state_dict are not written" in n
               for n in plan.notes)


def test_plain_state_dicts_and_modules_without_attributes_are_unchanged(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    path = _saved(tmp_path, model)
    with open_checkpoint(path) as ck:
        rep = build_report(ck)
    assert [t["key"] for t in rep["tensors"]] == [[k] for k in model.state_dict()]
    assert rep["attribute_tensor_count"] == 0
