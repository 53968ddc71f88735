"""Merging checkpoints (core.edit.merge and `ckptviewer merge`), checked bit for bit against torch's own
arithmetic on checkpoints made at test time: fp32, fp16, bf16 and fp64 inputs, weights, --dtype, what is
taken from the first file, tied weights, the cleaning steps, every output format, and mismatches that
stop the merge with nothing written."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ckptviewer.core.edit.merge import (MergedRegion, MergeMismatchError, merge_plan, merge_roots, normalized,
                                        parse_weights)
from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.util.errors import OperationError
from ckptviewer.core.util.progress import run_steps
from ckptviewer.core.write.export import ExportOptions, export_iter
from models import BNNet, Net, TiedLM

CLI = [sys.executable, "-m", "ckptviewer", "merge"]


def cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def reference(sds, weights, dtype=None):
    """What a user would write with torch: sum(w_i * x_i.float()) / sum(w), back to the dtype."""
    w = [x / sum(weights) for x in weights]
    out = {}
    for k, a in sds[0].items():
        if a.is_floating_point() and not k.endswith("num_batches_tracked"):
            wide = torch.float64 if a.dtype == torch.float64 or dtype == torch.float64 else torch.float32
            out[k] = sum(wi * sd[k].to(wide) for wi, sd in zip(w, sds)).to(dtype or a.dtype)
        else:
            out[k] = a
    return out


def perturbed(n, model_cls=BNNet, dtype=None, seed=0):
    torch.manual_seed(seed)
    base = model_cls().state_dict()
    out = []
    for i in range(n):
        sd = {}
        for k, v in base.items():
            if v.is_floating_point():
                v = v + 0.01 * (i + 1) * torch.randn_like(v)
                v = v.to(dtype) if dtype is not None else v
            elif k.endswith("num_batches_tracked"):
                v = torch.tensor(10 * (i + 1))
            sd[k] = v
        out.append(sd)
    return out


def save_all(folder, sds, stem="m", wrap=None):
    paths = []
    for i, sd in enumerate(sds):
        p = folder / f"{stem}{i}.pt"
        torch.save(wrap(sd) if wrap else sd, p)
        paths.append(p)
    return paths


def assert_bitwise(got, want):
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert torch.equal(got[k], want[k]), (k, (got[k].double() - want[k].double()).abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_weighted_average_matches_torch_bit_for_bit(tmp_path, dtype):
    sds = perturbed(3, dtype=dtype)
    paths = save_all(tmp_path, sds)
    out = tmp_path / "soup.pt"
    r = cli(*paths, "--weights", "1,2,5", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout
    got = torch.load(out, weights_only=True)
    assert_bitwise(got, reference(sds, [1, 2, 5]))
    # Counters and integer buffers come from the first file.
    assert got["features.1.num_batches_tracked"].item() == 10


@pytest.mark.parametrize("target", ["float16", "bfloat16", "float64"])
def test_dtype_rounds_the_average_once(tmp_path, target):
    sds = perturbed(2, model_cls=Net, seed=3)
    paths = save_all(tmp_path, sds)
    out = tmp_path / "half.safetensors"
    r = cli(*paths, "--dtype", target, "-o", out)
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file
    got = load_file(out)
    assert_bitwise(got, reference(sds, [1, 1], getattr(torch, target)))


def test_training_checkpoints_select_and_strip_prefix(tmp_path):
    sds = perturbed(2, model_cls=Net, seed=5)
    a = tmp_path / "a.tar"
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in sds[0].items()},
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1, "params": list(range(10))}]}}, a)
    b = tmp_path / "b.tar"
    torch.save({"epoch": 7, "model_state_dict": sds[1]}, b)
    out = tmp_path / "m.pt"
    # Without select: the keys do not line up (exit 2, nothing written).
    r = cli(a, b, "-o", out)
    assert r.returncode == 2 and not out.exists()
    assert "only in a.tar, not in b.tar" in r.stderr and "nothing written" in r.stderr
    r = cli(a, b, "--select", "model_state_dict", "--strip-prefix", "-o", out)
    assert r.returncode == 0, r.stderr
    got = torch.load(out, weights_only=True)
    assert_bitwise(got, reference(sds, [1, 1]))
    Net().load_state_dict(got)


def test_whole_training_checkpoint_keeps_first_files_values(tmp_path):
    torch.manual_seed(0)
    paths, objs = [], []
    for i in range(2):
        model = Net()
        opt = torch.optim.Adam(model.parameters())
        model(torch.randn(2, 3, 32, 32)).sum().backward()
        for _ in range(i + 1):
            opt.step()
        obj = {"epoch": i, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict()}
        paths.append(tmp_path / f"e{i}.tar")
        torch.save(obj, paths[-1])
        objs.append(torch.load(paths[-1], weights_only=True))
    out = tmp_path / "avg.tar"
    r = cli(*paths, "-o", out)
    assert r.returncode == 0, r.stderr
    got = torch.load(out, weights_only=True)
    assert got["epoch"] == 0
    assert_bitwise(got["model_state_dict"], reference([o["model_state_dict"] for o in objs], [1, 1]))
    st = got["optimizer_state_dict"]["state"][0]
    assert torch.equal(st["step"], objs[0]["optimizer_state_dict"]["state"][0]["step"])   # a counter: from A
    assert torch.equal(st["exp_avg"], (0.5 * objs[0]["optimizer_state_dict"]["state"][0]["exp_avg"]
                                        + 0.5 * objs[1]["optimizer_state_dict"]["state"][0]["exp_avg"]))


def test_tied_weights_stay_tied(tmp_path):
    torch.manual_seed(0)
    models = [TiedLM() for _ in range(2)]
    paths = [tmp_path / f"t{i}.pt" for i in range(2)]
    for m, p in zip(models, paths):
        torch.save(m.state_dict(), p)
    out = tmp_path / "tied.pt"
    r = cli(*paths, "-o", out)
    assert r.returncode == 0, r.stderr
    got = torch.load(out, weights_only=True)
    assert got["embed.weight"].data_ptr() == got["head.weight"].data_ptr()
    assert torch.equal(got["head.weight"], 0.5 * models[0].embed.weight.detach() + 0.5 * models[1].embed.weight.detach())


def test_mismatches_are_listed_and_nothing_is_written(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.pt", "b.pt", "c.pt"))
    torch.save({"w": torch.ones(3), "x": torch.ones(2), "int": torch.ones(2, dtype=torch.int64)}, a)
    torch.save({"w": torch.ones(4), "y": torch.ones(2), "int": torch.ones(2)}, b)
    torch.save({"w": torch.ones(3), "x": torch.ones(2), "int": torch.ones(2, dtype=torch.int64)}, c)
    out = tmp_path / "never.pt"
    r = cli(a, b, c, "-o", out)
    assert r.returncode == 2
    assert "only in a.pt, not in b.pt" in r.stderr and "y: only in b.pt, not in a.pt" in r.stderr
    assert "w: shapes differ: [3] in a.pt, [4] in b.pt, [3] in c.pt" in r.stderr
    assert "int: dtypes differ" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "b.pt", "c.pt"]       # no output, no temporary file
    r = cli(a, c, "--weights", "1,2,3", "-o", out)
    assert r.returncode == 2 and "3 weights for 2 checkpoints" in r.stderr
    r = cli(a, c, "--weights", "1,-1", "-o", out)
    assert r.returncode == 2 and "add up to 0" in r.stderr
    r = cli(a, c, "-o", a, "--force")
    assert r.returncode == 1 and "file being read" in r.stderr
    r = cli(a, c, "--dry-run")
    assert r.returncode == 0 and "dry run: nothing written" in r.stdout and not out.exists()


def test_sharded_output_and_pt_legacy(tmp_path):
    sds = perturbed(2, model_cls=Net, seed=9)
    paths = save_all(tmp_path, sds)
    index = tmp_path / "out" / "model.safetensors.index.json"
    index.parent.mkdir()
    r = cli(*paths, "-o", index, "--shard-size", "100KB")
    assert r.returncode == 0, r.stderr
    with open_checkpoint(index) as ckpt:
        got = {p[-1]: torch.from_numpy(t.read().copy()) for p, t in ckpt.tensor_entries()}
    assert_bitwise(got, reference(sds, [1, 1]))
    legacy = tmp_path / "legacy.pt"
    r = cli(*paths, "--format", "pt-legacy", "-o", legacy)
    assert r.returncode == 0, r.stderr
    assert_bitwise(torch.load(legacy, weights_only=True), reference(sds, [1, 1]))


def test_core_plan_computed_region_and_verification(tmp_path):
    sds = perturbed(3, model_cls=Net, seed=2)
    paths = save_all(tmp_path, sds)
    ckpts = [open_checkpoint(p) for p in paths]
    try:
        roots = [c.root for c in ckpts]
        plan = merge_plan(roots, [1, 1, 2])
        assert plan.ok and plan.n_averaged == 10 and plan.elements == 62006
        merged = merge_roots(roots, [1, 1, 2])
        t = merged["fc1.weight"]
        region = t.storage.source
        assert isinstance(region, MergedRegion) and region.files == sorted(str(p) for p in paths)
        want = reference(sds, [1, 1, 2])["fc1.weight"]
        # Any byte range reads the same values (the export reads in chunks, statistics sample).
        raw = bytes(region.view(6, 3998))
        assert raw == want.reshape(-1).view(torch.uint8).numpy().tobytes()[6:6 + 3998]
        assert torch.equal(torch.from_numpy(t.read().copy()), want)
        out = tmp_path / "m.safetensors"
        result = run_steps(export_iter(merged, str(out), ExportOptions(fmt="safetensors"), sources=[]))
        assert result.tensors == 10
        from safetensors.torch import load_file
        assert torch.equal(load_file(out)["fc1.weight"], want)
        # The destination check knows the computed tensors' files: an input is never overwritten.
        with pytest.raises(OperationError, match="file being read"):
            run_steps(export_iter(merged, str(paths[1]), ExportOptions(fmt="pt", overwrite=True)))
    finally:
        for c in ckpts:
            c.close()
    assert normalized([1, 3]) == [0.25, 0.75]
    assert parse_weights("", 4) == [0.25] * 4
    with pytest.raises(MergeMismatchError):
        merge_roots([{"a": roots_tensor()}, {"b": roots_tensor()}])


def roots_tensor():
    from ckptviewer.core.model.dtypes import BY_NAME
    from ckptviewer.core.model.tensor import StorageRef, TensorRef
    from ckptviewer.core.source.regions import BytesRegion
    st = StorageRef("0", BY_NAME["float32"], 8, "cpu", typed=True, source=BytesRegion(bytes(8)))
    return TensorRef(st, 0, (2,), (1,), BY_NAME["float32"])


def test_a_damaged_input_stops_the_merge_unless_forced(tmp_path):
    """A flipped bit in an input's record fails its zip CRC-32: the merge (computed from those bytes) is
    refused like a copy of them, and written with --force-bad-crc."""
    torch.manual_seed(0)
    big = torch.arange(4096.)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"w": big, "x": torch.ones(3)}, a)
    torch.save({"w": big * 2, "x": torch.ones(3)}, b)
    data = bytearray(a.read_bytes())
    at = bytes(data).find(big[1000:1002].numpy().tobytes())
    data[at] ^= 0x01
    a.write_bytes(bytes(data))
    out = tmp_path / "m.pt"
    r = cli(a, b, "-o", out)
    assert r.returncode == 1 and "CRC-32" in r.stderr and "--force-bad-crc" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]
    r = cli(a, b, "-o", out, "--force-bad-crc")
    assert r.returncode == 0, r.stderr
    assert torch.load(out, weights_only=True)["x"].tolist() == [1.0, 1.0, 1.0]
