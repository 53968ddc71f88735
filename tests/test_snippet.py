"""The "copy load snippet" code (core/analyze/snippet.py): it must name the entry and, where it says
weights_only=True, really load it with torch."""
from __future__ import annotations

import pytest
import torch

from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.analyze.snippet import key_path_text, load_snippet, py_literal
from ckptviewer.core.model.tree import build_tree


def _walk(node):
    yield node
    for c in node.children():
        yield from _walk(c)


def _node(ckpt, path, kind=None):
    root = build_tree(ckpt)
    for n in _walk(root):
        if n.path == tuple(path) and (kind is None or n.kind == kind):
            return n
    raise AssertionError(f"no node at {path}")


def _run(snippet):
    scope: dict = {}
    exec(snippet, scope)   # files made by the tests themselves: safe to load
    return scope["value"]


@pytest.mark.parametrize("name,path", [
    ("checkpoint.tar", ("model_state_dict", "conv1.weight")),
    ("checkpoint.tar", ("optimizer_state_dict", "state", 0, "momentum_buffer")),
    ("checkpoint.tar", ("optimizer_state_dict", "param_groups", 0, "lr")),
    ("gan.tar", ("modelA_state_dict", "net.1.running_mean")),
    ("ensemble.pt", (2, "fc3.bias")),
    ("checkpoint_legacy.tar", ("epoch",)),
])
def test_weights_only_snippets_load_the_entry(ckpts, name, path):
    with open_checkpoint(ckpts[name]) as ckpt:
        snippet = load_snippet(_node(ckpt, path))
    assert "weights_only=True" in snippet
    expected = ckpts.objects[name]
    for k in path:
        expected = expected[k]
    got = _run(snippet)
    if isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected)
    else:
        assert got == expected


def test_group_snippet_selects_the_prefix(ckpts):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ckpt:
        group = next(n for n in _walk(build_tree(ckpt)) if n.kind == "group" and n.key == "fc2")
        snippet = load_snippet(group)
    got = _run(snippet)
    assert sorted(got) == ["fc2.bias", "fc2.weight"]


def test_safetensors_snippet_uses_safe_open(ckpts):
    with open_checkpoint(ckpts["state_dict.safetensors"]) as ckpt:
        snippet = load_snippet(_node(ckpt, ("fc1.bias",)))
    assert "safe_open" in snippet and "torch.load" not in snippet
    assert torch.equal(_run(snippet), ckpts.objects["state_dict.safetensors"]["fc1.bias"])


def test_whole_model_and_stand_in_snippets_warn_instead_of_loading(ckpts):
    with open_checkpoint(ckpts["whole_model.pt"]) as ckpt:
        node = next(n for n in _walk(build_tree(ckpt)) if n.kind == "tensor")
        snippet = load_snippet(node)
    assert "weights_only=True cannot load this file: it pickles a whole model object (models.Net)" in snippet
    assert "weights_only=False" in snippet and snippet.rstrip().endswith(".conv1.weight")
    with open_checkpoint(ckpts["values.pt"]) as ckpt:
        snippet = load_snippet(_node(ckpt, ("ns",)))
    assert "argparse.Namespace" in snippet and "weights_only=False" in snippet
    with open_checkpoint(ckpts["scripted.pt"]) as ckpt:
        node = next(n for n in _walk(build_tree(ckpt)) if n.kind == "tensor")
        snippet = load_snippet(node)
    assert "torch.jit.load" in snippet and "runs the code" in snippet


def test_keys_become_safe_python_literals():
    assert py_literal("conv1.weight") == '"conv1.weight"'
    assert py_literal("a\u202eb\"") == '"a\\u202eb\\""'
    assert py_literal(3) == "3" and py_literal((1, "x")) == '(1, "x")' and py_literal(object()) is None


def test_key_path_text(ckpts):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ckpt:
        node = _node(ckpt, ("optimizer_state_dict", "state", 0))
        assert key_path_text(node) == '["optimizer_state_dict"]["state"][0]'
