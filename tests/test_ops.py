"""Core edit operations: select, drop, strip prefix, rename (with collisions), remap devices, cast, warm start."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.model.cast import cast_raw
from ckptviewer.core.model.dtypes import BY_NAME
from ckptviewer.core.util.errors import OperationError
from ckptviewer.core.edit.ops import (Cast, Drop, Rename, RemapDevice, Select, StripPrefix, apply_steps,
        rename_preview, step_from_json)
from ckptviewer.core.model.tensor import TensorRef
from ckptviewer.core.analyze.warmstart import compare, suggest


def devices(root):
    from ckptviewer.core.model.walk import iter_tensors
    return {t.device for _, t in iter_tensors(root)}


def test_select_a_state_dict_and_a_pickled_module(ckpts):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ck:
        root, log = apply_steps(ck.root, [Select("model_state_dict")])
        assert list(root) == list(ckpts.objects["checkpoint.tar"]["model_state_dict"])
        assert log.lines == ["selected model_state_dict"]
    with open_checkpoint(ckpts["gan.tar"]) as ck:
        root, _ = apply_steps(ck.root, [Select("modelB_state_dict")])
        assert list(root) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    with open_checkpoint(ckpts["gan_modules.tar"]) as ck:
        root, log = apply_steps(ck.root, [Select("gen")])
        assert list(root) == list(ckpts.objects["gan_modules.tar"]["gen"].state_dict())
        assert "pickled module models.Generator" in log.lines[0]
    with open_checkpoint(ckpts["whole_model.pt"]) as ck:
        root, _ = apply_steps(ck.root, [Select("")])
        assert list(root)[0] == "conv1.weight"


def test_select_missing_path_says_what_exists(ckpts):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ck:
        with pytest.raises(OperationError, match="no entry 'model'.*model_state_dict"):
            apply_steps(ck.root, [Select("model")])


def test_drop_entries_and_globs_without_touching_the_source(ckpts):
    with open_checkpoint(ckpts["checkpoint.tar"]) as ck:
        before = list(ck.root)
        root, log = apply_steps(ck.root, [Drop(("optimizer_state_dict", "model_state_dict/*.bias"))])
        assert "optimizer_state_dict" not in root
        assert all(not k.endswith(".bias") for k in root["model_state_dict"])
        assert list(ck.root) == before and "conv1.bias" in ck.root["model_state_dict"]
        assert ("model_state_dict", "conv1.bias") in log.changed


def test_strip_dataparallel_prefix_detected_and_chosen(ckpts):
    with open_checkpoint(ckpts["dataparallel.pt"]) as ck:
        root, log = apply_steps(ck.root, [StripPrefix()])
        assert list(root) == list(ckpts.objects["state_dict.pt"])
        assert "DataParallel" in log.lines[0]
        # the per-module version table follows the keys, as torch's consume_prefix_in_state_dict_if_present does
        meta = root.pickle_attrs["_metadata"]
        assert "conv1" in meta and "module.conv1" not in meta
    with open_checkpoint(ckpts["compiled.pt"]) as ck:
        root, _ = apply_steps(ck.root, [StripPrefix("_orig_mod.")])
        assert list(root)[0] == "conv1.weight"


def test_strip_leaves_keys_without_the_prefix_and_says_so(tmp_path):
    sd = {"module.a.weight": torch.zeros(2), "module.b.weight": torch.zeros(2), "extra": torch.zeros(1)}
    torch.save(sd, tmp_path / "mixed.pt")
    with open_checkpoint(tmp_path / "mixed.pt") as ck:
        root, log = apply_steps(ck.root, [StripPrefix("module.")])
        assert list(root) == ["a.weight", "b.weight", "extra"]
        assert "1 key without it left as it is: extra" in log.lines[-1]
        root, log = apply_steps(ck.root, [StripPrefix()])        # not shared by all: nothing detected
        assert list(root) == list(sd) and "nothing was stripped" in log.lines[-1]


def test_rename_rules_in_order_with_preview_and_collisions(ckpts):
    rules = (("add_prefix", "backbone."), ("replace", "conv", "c"), ("regex", r"fc(\d)", r"head\1"),
             ("map", {"backbone.head3.bias": "out.bias"}))
    with open_checkpoint(ckpts["state_dict.pt"]) as ck:
        rows = rename_preview(list(ck.root), rules)
        assert [(r.old, r.new) for r in rows][:2] == [("conv1.weight", "backbone.c1.weight"),
                                                       ("conv1.bias", "backbone.c1.bias")]
        assert rows[-1].new == "out.bias" and not any(r.collision for r in rows)
        root, _ = apply_steps(ck.root, [Rename(rules)])
        assert list(root) == [r.new for r in rows]
        clash = (("regex", r"\.(weight|bias)$", ".param"),)
        rows = rename_preview(list(ck.root), clash)
        assert all(r.collision for r in rows)
        with pytest.raises(OperationError, match="collision"):
            apply_steps(ck.root, [Rename(clash)])


def test_rename_rejects_bad_rules():
    with pytest.raises(OperationError, match="regular expression"):
        Rename((("regex", "(", "x"),))
    with pytest.raises(OperationError, match="unknown rename rule"):
        Rename((("shout", "x"),))


def test_remap_devices_for_model_and_optimizer(ckpts):
    with open_checkpoint(ckpts["gpu1_checkpoint.tar"]) as ck:
        assert devices(ck.root) == {"cuda:1"}
        root, log = apply_steps(ck.root, [RemapDevice((("cuda:1", "cuda:0"),))])
        assert devices(root) == {"cuda:0"}
        assert devices(root["optimizer_state_dict"]["state"]) == {"cuda:0"}
        assert log.lines == ["moved 21 tensors from cuda:1 to cuda:0"]
        root, _ = apply_steps(ck.root, [RemapDevice((("cuda", "cpu"),))])
        assert devices(root) == {"cpu"}
        assert devices(ck.root) == {"cuda:1"}            # the source is untouched
    with pytest.raises(OperationError, match="not a device"):
        RemapDevice((("cuda", "gpu0"),))


def test_cast_floats_only_and_leave_counters(ckpts):
    with open_checkpoint(ckpts["bn_checkpoint.pt"]) as ck:
        root, log = apply_steps(ck.root, [Cast("float16")])
        sd = root["model"]
        assert sd["features.0.weight"].dtype.name == "float16"
        assert sd["features.1.num_batches_tracked"].dtype.name == "int64"
        assert root["optimizer"]["state"][0]["step"].dtype.name == "float32"     # Adam's step counter
        assert root["optimizer"]["state"][0]["exp_avg"].dtype.name == "float16"
        assert any("left alone" in line and "step" in line for line in log.lines)
        want = ckpts.objects["bn_checkpoint.pt"]["model"]["features.0.weight"].half().numpy()
        np.testing.assert_array_equal(sd["features.0.weight"].read(), want)


@pytest.mark.parametrize("src,dst", [("float32", "float16"), ("float32", "bfloat16"), ("bfloat16", "float32"),
                                     ("float16", "bfloat16"), ("float64", "bfloat16"), ("bfloat16", "float16")])
def test_cast_matches_torch_bit_for_bit(src, dst):
    rng = np.random.default_rng(0)
    base = np.concatenate([rng.standard_normal(50000) * 300, [0.0, -0.0, 1e-8, 6e-8, 65504, 65520, 1e6, np.inf,
                                                              -np.inf, np.nan, 3.4e38, 1.00390625]])
    t = torch.from_numpy(base).to(getattr(torch, src))
    raw = t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]).numpy().view(
        BY_NAME[src].raw if BY_NAME[src].numpy_native else np.uint16)
    ours = cast_raw(raw, BY_NAME[src], BY_NAME[dst])
    ref = t.to(getattr(torch, dst))
    ref_bits = ref.view({4: torch.int32, 2: torch.int16}[ref.element_size()]).numpy()
    ours_bits = ours.view(ref_bits.dtype)
    nan = torch.isnan(ref).numpy()
    assert np.array_equal(np.isnan(cast_raw(ours, BY_NAME[dst], BY_NAME["float32"])
                                   if dst == "bfloat16" else ours.astype(np.float64)), nan)
    assert np.array_equal(ours_bits[~nan], ref_bits[~nan])


def test_steps_round_trip_through_json():
    steps = [Select("model_state_dict"), Drop(("a", "b/*.bias")), StripPrefix(), StripPrefix("module.", "net"),
             Rename((("add_prefix", "x."), ("regex", "^a", "b"), ("map", {"k": "v"}))),
             RemapDevice((("cuda:1", "cuda:0"), ("*", "cpu"))), Cast("bfloat16")]
    for s in steps:
        assert step_from_json(s.to_json()) == s
    with pytest.raises(OperationError, match="unknown step"):
        step_from_json({"op": "explode"})
    with pytest.raises(OperationError, match="missing or has a bad argument"):
        step_from_json({"op": "select"})


def _module_sd(model):
    class H:
        def __init__(self, t):
            self.shape = tuple(t.shape)
    return {k: H(v) for k, v in model.state_dict().items()}


def test_warm_start_lists_match_load_state_dict(ckpts):
    """missing_keys / unexpected_keys exactly as torch's load_state_dict(strict=False) reports them."""
    from models import Net
    with open_checkpoint(ckpts["dataparallel_checkpoint.pth"]) as ck, \
            open_checkpoint(ckpts["state_dict.pt"]) as target:
        src = ck.root["net"]
        rep = compare(src, target.root)
        torch_sd = {k: torch.zeros(v.shape) for k, v in src.items()}
        result = Net().load_state_dict(torch_sd, strict=False)
        assert rep.missing_keys == result.missing_keys
        assert rep.unexpected_keys == result.unexpected_keys
        (best, *_) = suggest(rep)
        assert best.rule == ("remove_prefix", "module.") and best.gain == 10
        # accepting the suggestion makes it load strictly
        root, _ = apply_steps(ck.root, [Select("net"), Rename((best.rule,))])
        assert compare(root, target.root).loads_strictly


def test_warm_start_partial_match_with_shape_mismatch_and_renamed_layer(tmp_path):
    """A fine-tuned head (10 -> 5 classes) and a renamed layer: the lists, the mismatch torch raises on,
    and a suggestion from the unique shape."""
    from models import Net
    src = Net().state_dict()
    src = {("classifier" + k[3:] if k.startswith("fc2") else k): v for k, v in src.items()}
    torch.save(src, tmp_path / "src.pt")
    target_model = Net()
    target_model.fc3 = torch.nn.Linear(84, 5)
    torch.save(target_model.state_dict(), tmp_path / "tgt.pt")
    with open_checkpoint(tmp_path / "src.pt") as a, open_checkpoint(tmp_path / "tgt.pt") as b:
        rep = compare(a.root, b.root)
        assert rep.missing_keys == ["fc2.weight", "fc2.bias"]
        assert rep.unexpected_keys == ["classifier.weight", "classifier.bias"]
        assert [k for k, _, _ in rep.shape_mismatches] == ["fc3.weight", "fc3.bias"]
        with pytest.raises(RuntimeError, match="size mismatch for fc3.weight"):
            target_model.load_state_dict({k: torch.zeros(s) for k, s in rep.source_shapes.items()}, strict=False)
        rules = [s.rule for s in suggest(rep)]
        assert ("regex", "^classifier\\.", "fc2.") in rules


def test_edited_tensor_views_do_not_register_with_the_source(ckpts):
    with open_checkpoint(ckpts["tied.pt"]) as ck:
        users_before = len(ck.root["embed.weight"].storage.users)
        root, _ = apply_steps(ck.root, [Cast("bfloat16")])
        assert isinstance(root["embed.weight"], TensorRef) and root["embed.weight"].origin is ck.root["embed.weight"]
        assert len(ck.root["embed.weight"].storage.users) == users_before
