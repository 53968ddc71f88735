"""Trends across a run (core.analyze.trend and `ckptviewer trend`), checked against torch's own arithmetic
on runs trained at test time: norms, means, stds and relative changes per tensor and per file, optimizer
state under parameter names, file order, nulls where undefined, each file read once, and the CLI."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from ckptviewer.core.analyze import trend as trend_mod
from ckptviewer.core.analyze.trend import compute_trend, expand_run_inputs, natural_key, trend_json
from ckptviewer.core.model.tensor import TensorRef
from models import BNNet, Net

CLI = [sys.executable, "-m", "ckptviewer", "trend"]


def cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def train_run(folder, epochs=(0, 1, 2, 10), dtype=None, seed=0):
    """A training run: Net with Adam, a training checkpoint saved at each of ``epochs`` (named so that
    plain string order would be wrong: epoch_10 sorts before epoch_2). Returns {epoch: saved dict}."""
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    saved = {}
    for ep in range(max(epochs) + 1):
        loss = model(torch.randn(4, 3, 32, 32)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if ep in epochs:
            sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).clone()
                  for k, v in model.state_dict().items()}
            obj = {"epoch": ep, "model_state_dict": sd, "optimizer_state_dict": opt.state_dict(),
                   "loss": loss.item()}
            torch.save(obj, folder / f"epoch_{ep}.tar")
            saved[ep] = torch.load(folder / f"epoch_{ep}.tar", weights_only=True)
    return saved


def entry(run, *key):
    found = [e for e in run.entries if tuple(e.key) == tuple(key)]
    assert len(found) == 1, [e.key for e in run.entries][:20]
    return found[0]


def close(a, b, rtol=1e-6):
    return a is not None and math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_numbers_match_torch(tmp_path, dtype):
    saved = train_run(tmp_path, dtype=dtype)
    with compute_trend([tmp_path]) as run:
        assert run.order == "epoch"
        assert [f.epoch for f in run.files] == [0, 1, 2, 10]
        sds = [saved[ep]["model_state_dict"] for ep in (0, 1, 2, 10)]
        for name in sds[0]:
            e = entry(run, "model_state_dict", name)
            for i, sd in enumerate(sds):
                x = sd[name].double()
                assert close(e.norm[i], x.norm().item()), (name, i)
                assert close(e.mean[i], x.mean().item(), 1e-5), (name, i)
                assert close(e.std[i], x.std(correction=0).item(), 1e-5), (name, i)
                if i == 0:
                    assert e.rel_change[0] is None
                else:
                    p = sds[i - 1][name].double()
                    ref = ((x - p).norm() / p.norm()).item()
                    assert close(e.rel_change[i], ref, 1e-5), (name, i, e.rel_change[i], ref)
        # The optimizer state, under the parameter names the interpretation gives its ids.
        e = entry(run, "optimizer_state_dict", "state", "fc1.weight", "exp_avg_sq")
        assert e.in_optimizer and not entry(run, "model_state_dict", "fc1.weight").in_optimizer
        for i, ep in enumerate((0, 1, 2, 10)):
            ref = saved[ep]["optimizer_state_dict"]["state"][4]["exp_avg_sq"].double()
            assert close(e.norm[i], ref.norm().item())
        # The series each file records: epoch, loss, lr (from the optimizer's param group).
        series = run.series()
        assert series["epoch"] == [0, 1, 2, 10]
        assert series["loss"] == [saved[ep]["loss"] for ep in (0, 1, 2, 10)]
        assert series["lr"] == [saved[ep]["optimizer_state_dict"]["param_groups"][0]["lr"] for ep in (0, 1, 2, 10)]
        assert "step" not in series


def test_each_tensor_read_once_and_shared_entries_computed_once(tmp_path, monkeypatch):
    torch.manual_seed(1)
    for i in range(3):
        sd = BNNet().state_dict()
        torch.save({"best": sd, "last": sd}, tmp_path / f"ckpt{i}.pt")   # one dict saved twice
    reads: dict[int, int] = {}
    iter_raw, read_flat = TensorRef.iter_raw, TensorRef.read_flat

    def counting_iter(self, *a, **kw):
        reads[id(self)] = reads.get(id(self), 0) + 1
        return iter_raw(self, *a, **kw)

    def counting_flat(self, start, stop, **kw):
        reads[id(self)] = reads.get(id(self), 0) + (stop - start) / self.numel
        return read_flat(self, start, stop, **kw)

    monkeypatch.setattr(TensorRef, "iter_raw", counting_iter)
    monkeypatch.setattr(TensorRef, "read_flat", counting_flat)
    with compute_trend([tmp_path]) as run:
        distinct = {id(t) for e in run.entries for t in e.tensors if t is not None and t.numel}
        assert set(reads) == distinct and set(reads.values()) == {1}
        best = entry(run, "best", "features.0.weight")
        last = entry(run, "last", "features.0.weight")
        assert best.norm == last.norm and best.rel_change == last.rel_change and best.rel_change[1] > 0
        # An integer buffer has numbers too; it never changes here.
        nbt = entry(run, "best", "features.1.num_batches_tracked")
        assert nbt.norm == [0.0, 0.0, 0.0] and nbt.rel_change == [None, None, None]   # ||0||: undefined


def test_order_natural_recorded_and_given(tmp_path):
    a = tmp_path / "names"
    a.mkdir()
    for n in (10, 2, 1):
        torch.save({"w": torch.full((3,), float(n))}, a / f"ckpt_{n}.pt")
    (a / "notes.txt").write_text("not a checkpoint")
    assert [p.rsplit("/", 1)[-1] for p in expand_run_inputs([a])] == ["ckpt_1.pt", "ckpt_2.pt", "ckpt_10.pt"]
    assert sorted(["x10", "x9", "X1"], key=natural_key) == ["X1", "x9", "x10"]
    with compute_trend([a]) as run:
        assert run.order == "name" and [f.label for f in run.files] == ["ckpt_1.pt", "ckpt_2.pt", "ckpt_10.pt"]
        assert entry(run, "w").rel_change == [None, pytest.approx(1.0), pytest.approx(4.0)]
    b = tmp_path / "recorded"
    b.mkdir()
    for name, step in (("a.pt", 300), ("b.pt", 100), ("c.pt", 200)):
        torch.save({"global_step": step, "epoch": 0, "w": torch.full((2,), float(step))}, b / name)
    with compute_trend([b]) as run:
        assert run.order == "step" and [f.label for f in run.files] == ["b.pt", "c.pt", "a.pt"]
    c = tmp_path / "same_step"
    c.mkdir()
    for name, epoch in (("x.pt", 2), ("y.pt", 1)):
        torch.save({"step": 0, "epoch": epoch, "w": torch.ones(2)}, c / name)   # the step tells nothing apart
    with compute_trend([c]) as run:
        assert run.order == "epoch" and [f.label for f in run.files] == ["y.pt", "x.pt"]
    files = [b / "c.pt", b / "a.pt", b / "b.pt"]
    with compute_trend(files, order="given") as run:
        assert [f.label for f in run.files] == ["c.pt", "a.pt", "b.pt"]
        assert entry(run, "w").norm[0] == pytest.approx(200 * math.sqrt(2))


def test_nulls_where_undefined(tmp_path):
    torch.save({"w": torch.zeros(4), "grows": torch.ones(2), "gone": torch.ones(3)}, tmp_path / "s1.pt")
    torch.save({"w": torch.ones(4), "grows": torch.ones(3), "nan": torch.tensor([1.0, float("nan")])}, tmp_path / "s2.pt")
    torch.save({"w": torch.full((4,), 3.0), "grows": torch.ones(3), "gone": torch.ones(3),
                "nan": torch.tensor([2.0, 5.0])}, tmp_path / "s3.pt")
    with compute_trend([tmp_path]) as run:
        assert entry(run, "w").rel_change == [None, None, pytest.approx(2.0)]        # ||x_0|| = 0
        assert entry(run, "grows").rel_change == [None, None, 0.0]                    # the shape changed
        gone = entry(run, "gone")
        assert gone.norm[1] is None and gone.rel_change == [None, None, None]          # absent in s2
        nan = entry(run, "nan")
        assert nan.norm == [None, 1.0, pytest.approx(math.sqrt(29))]                 # finite values only
        assert nan.rel_change[2] == pytest.approx(1.0)                               # over finite pairs
        doc = json.loads(json.dumps(trend_json(run), allow_nan=False))
        assert set(doc) >= {"files", "entries"} and len(doc["files"]) == 3
        rec = next(r for r in doc["entries"] if r["key"] == ["gone"])
        assert set(rec) == {"key", "norm", "mean", "std", "rel_change"} and rec["rel_change"] == [None, None, None]


def test_bounded_memory_two_buffers(tmp_path, monkeypatch):
    """Memory: two raw buffers (the previous file's copy of a tensor, the current one), the size of the
    largest tensor and reused from key to key; nothing that grows with the checkpoint."""
    for i in range(4):
        # "wide" is a stride-0 view: 5,000 elements presented by one stored float. It is not copied.
        torch.save({"a": torch.randn(64, 64) + i, "b": torch.randn(1000) * i,
                    "wide": torch.full((1,), float(i + 1)).expand(5000)}, tmp_path / f"r{i}.pt")
    sizes = []
    real_empty = trend_mod.np.empty

    def spy(shape, dtype=None, **kw):
        if dtype is trend_mod.np.uint8:
            sizes.append(shape)
        return real_empty(shape, dtype=dtype, **kw)

    monkeypatch.setattr(trend_mod.np, "empty", spy)
    with compute_trend([tmp_path]) as run:
        wide = entry(run, "wide")
        assert wide.norm == [pytest.approx((i + 1) * math.sqrt(5000)) for i in range(4)]
        assert wide.rel_change == [None, pytest.approx(1.0), pytest.approx(0.5), pytest.approx(1 / 3)]
    assert sorted(x for x in sizes if x) == [64 * 64 * 4, 64 * 64 * 4]


def test_cli_json_text_and_exit_status(tmp_path):
    saved = train_run(tmp_path, epochs=(0, 3))
    r = cli(tmp_path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [f.rsplit("/", 1)[-1] for f in doc["files"]] == ["epoch_0.tar", "epoch_3.tar"]
    rec = next(x for x in doc["entries"] if x["key"] == ["model_state_dict", "fc3.weight"])
    x0, x1 = (saved[ep]["model_state_dict"]["fc3.weight"].double() for ep in (0, 3))
    assert rec["rel_change"][0] is None
    assert rec["rel_change"][1] == pytest.approx(((x1 - x0).norm() / x0.norm()).item(), rel=1e-5)
    assert any(x["key"] == ["optimizer_state_dict", "state", "fc3.weight", "exp_avg"] for x in doc["entries"])
    assert doc["series"]["epoch"] == [0, 3] and doc["order"] == "epoch"
    r = cli(tmp_path)
    assert r.returncode == 0 and "ordered by the epoch recorded in each" in r.stdout
    assert "model_state_dict / fc3.weight" in r.stdout and "moved most" in r.stdout
    (tmp_path / "epoch_9.tar").write_bytes(b"PK\x03\x04 truncated")
    r = cli(tmp_path, "--json")
    assert r.returncode == 1 and "epoch_9.tar: left out" in r.stderr
    assert len(json.loads(r.stdout)["files"]) == 2
    r = cli(tmp_path / "epoch_9.tar")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_damaged_bytes_give_no_numbers(tmp_path):
    """A tensor whose record fails its zip CRC-32 gets no numbers in that file (and no relative change in
    the next), with the reason; the intact tensors of the same file are measured as usual."""
    big = torch.arange(4096.)
    for i in range(3):
        torch.save({"w": big + i, "x": torch.full((3,), float(i + 1))}, tmp_path / f"c{i}.pt")
    path = tmp_path / "c1.pt"
    data = bytearray(path.read_bytes())
    at = bytes(data).find((big + 1)[1000:1002].numpy().tobytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with compute_trend([tmp_path]) as run:
        w = entry(run, "w")
        assert w.norm[1] is None and w.rel_change[1:] == [None, None]
        assert w.norm[0] is not None and w.norm[2] is not None
        assert any("c1.pt" in err and "CRC-32" in err for err in w.errors)
        assert entry(run, "x").rel_change == [None, pytest.approx(1.0), pytest.approx(0.5)]
