"""The health pass: each finding kind on files made here in float32 and bfloat16, the rules' restraint on
normal checkpoints, the fast bit-level path against plain numpy, and `ckptviewer health` (text, JSON, exits)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ckptviewer.core.analyze import health
from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.util.progress import run_steps
from models import BNNet, Net

CLI = [sys.executable, "-m", "ckptviewer", "health"]
DTYPES = [torch.float32, torch.bfloat16]


def run_cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def blocks(dtype, n=6, seed=0):
    """A stack of ``n`` repeated blocks, as a transformer's state_dict lists them."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(n):
        sd[f"layers.{i}.fc.weight"] = torch.randn(64, 32, generator=g).to(dtype)
        sd[f"layers.{i}.fc.bias"] = torch.zeros(64).to(dtype)
        sd[f"layers.{i}.norm.weight"] = torch.ones(64).to(dtype)
    return sd


def check(path):
    return health.check_file(str(path))


def kinds(report, key=None):
    return {(f.kind, f.severity) for f in report.findings if key is None or tuple(f.key) == key}


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_nan_and_inf_are_errors_with_counts_and_first_index(tmp_path, dtype):
    sd = blocks(dtype)
    sd["layers.2.fc.weight"][5, 7] = float("nan")
    sd["layers.2.fc.weight"][40, 1] = float("nan")
    sd["layers.3.fc.weight"][1, 2] = float("inf")
    sd["layers.3.fc.weight"][0, 9] = float("-inf")
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    nan = [f for f in rep.findings if f.kind == "nan"]
    inf = [f for f in rep.findings if f.kind == "inf"]
    assert len(nan) == 1 and nan[0].key == ("layers.2.fc.weight",) and nan[0].severity == "error"
    assert nan[0].count == 2 and nan[0].index == [5, 7]
    assert len(inf) == 1 and inf[0].count == 2 and inf[0].index == [0, 9] and "1 +inf, 1 -inf" in inf[0].message
    assert rep.has_errors
    th = next(t for t in rep.tensors if t.key == ("layers.2.fc.weight",))
    finite = sd["layers.2.fc.weight"].float()
    finite = finite[torch.isfinite(finite)]
    assert th.absmax == pytest.approx(finite.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_all_zero_weights_warn_but_zero_biases_and_buffers_do_not(tmp_path, dtype):
    sd = blocks(dtype)
    sd["head.weight"] = torch.zeros(10, 64).to(dtype)
    sd["conv.weight"] = torch.zeros(8, 3, 3, 3).to(dtype)
    sd["bn.running_mean"] = torch.zeros(8).to(dtype)
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    assert kinds(rep, ("head.weight",)) == {("all_zero", "warning")}
    assert kinds(rep, ("conv.weight",)) == {("all_zero", "warning")}
    assert "convolution kernel" in next(f.message for f in rep.findings if f.key == ("conv.weight",))
    assert not kinds(rep, ("layers.0.fc.bias",)) and not kinds(rep, ("bn.running_mean",))
    assert not rep.has_errors


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_constant_weight_warns_constant_norm_scale_is_info(tmp_path, dtype):
    sd = blocks(dtype)
    sd["proj.weight"] = torch.full((16, 8), 0.5).to(dtype)
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    assert kinds(rep, ("proj.weight",)) == {("constant", "warning")}
    assert "0.5" in next(f.message for f in rep.findings if f.key == ("proj.weight",))
    assert kinds(rep, ("layers.0.norm.weight",)) == {("constant", "info")}
    assert not kinds(rep, ("layers.0.fc.weight",))


def test_a_big_tensor_constant_except_one_element_is_not_constant(tmp_path):
    """The sample decides first; the full comparison must still catch the one element the sample missed."""
    t = torch.ones(1 << 20)
    t[12345] = 2.0
    torch.save({"w": t.reshape(1024, 1024), "c": torch.ones(1024, 1024)}, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    assert not kinds(rep, ("w",))
    assert kinds(rep, ("c",)) == {("constant", "warning")}


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_dead_rows_and_filters(tmp_path, dtype):
    sd = blocks(dtype)
    sd["layers.1.fc.weight"][[3, 9, 11, 20]] = 0
    sd["embed.weight"] = torch.randn(100, 16).to(dtype)
    sd["embed.weight"][0] = 0                      # a padding row: info, not a warning
    conv = torch.randn(16, 3, 3, 3).to(dtype)
    conv[[2, 5]] = 0
    sd["conv.weight"] = conv
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    f = next(f for f in rep.findings if f.key == ("layers.1.fc.weight",) and f.kind == "dead_rows")
    assert f.severity == "warning" and f.count == 4 and "rows 3, 9, 11, 20" in f.message
    assert kinds(rep, ("embed.weight",)) == {("dead_rows", "info")}
    f = next(f for f in rep.findings if f.key == ("conv.weight",))
    assert f.kind == "dead_rows" and f.severity == "warning" and "2 of 16 filters" in f.message


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_duplicates_are_exact_and_shared_storage_is_not_one(tmp_path, dtype):
    sd = blocks(dtype)
    sd["copy.weight"] = sd["layers.0.fc.weight"].clone()
    almost = sd["layers.1.fc.weight"].clone()
    almost[63, 31] = 123.0                         # same sample (the stride may skip it), different bytes
    sd["almost.weight"] = almost
    sd["tied.weight"] = sd["layers.2.fc.weight"]   # one storage under two names: sharing, not duplication
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    dups = [f for f in rep.findings if f.kind == "duplicate"]
    assert len(dups) == 1
    assert dups[0].key == ("layers.0.fc.weight",) and dups[0].related == [("copy.weight",)]
    assert dups[0].severity == "warning"
    assert ("copy.weight",) in rep.by_key()


def test_duplicate_detection_on_big_tensors_verifies_bytes(tmp_path):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(1024, 1024, generator=g)
    b = a.clone()
    b[1000, 1000] += 1                             # the strided sample is identical, the bytes are not
    torch.save({"a": a, "a2": a.clone(), "b": b}, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    dups = [f for f in rep.findings if f.kind == "duplicate"]
    assert [(d.key, d.related) for d in dups] == [(("a",), [("a2",)])]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_outlier_norm_among_repeated_blocks(tmp_path, dtype):
    sd = blocks(dtype, n=8)
    sd["layers.5.fc.weight"] = (sd["layers.5.fc.weight"].float() * 50).to(dtype)
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    out = [f for f in rep.findings if f.kind == "outlier_norm"]
    assert [f.key for f in out] == [("layers.5.fc.weight",)]
    assert out[0].severity == "warning" and "layers.#.fc.weight" in out[0].message


def test_outliers_need_peers_and_tolerate_a_smooth_trend(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {f"blocks.{i}.w": torch.randn(32, 32, generator=g) * (1.6 ** i) for i in range(10)}   # 100x over depth
    sd.update({f"few.{i}.w": torch.randn(32, 32, generator=g) * (100 if i == 0 else 1) for i in range(3)})
    torch.save(sd, tmp_path / "x.pt")
    assert not [f for f in check(tmp_path / "x.pt").findings if f.kind == "outlier_norm"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_cast_overflow_for_a_float16_export(tmp_path, dtype):
    sd = blocks(dtype)
    big = torch.ones(10)
    big[3:6] = 1e6
    big[6] = 65280                                  # fits float16 (and is a bfloat16 value)
    sd["stats.var"] = big.to(dtype)
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    f = next(f for f in rep.findings if f.kind == "cast_overflow")
    assert f.key == ("stats.var",) and f.count == 3 and f.severity == "info"
    torch.save({"h": torch.tensor([60000.0, 1, 2, 3], dtype=torch.float16)}, tmp_path / "h.pt")
    assert not check(tmp_path / "h.pt").findings              # float16 values fit float16


def test_unreadable_tensor_is_an_error(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"a": torch.randn(1000), "b": torch.randn(1000)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[:-2000])
    with open_checkpoint(path) as ckpt:
        rep = run_steps(health.check_steps(ckpt))
    assert any(f.kind == "unreadable" and f.severity == "error" for f in rep.findings)


@pytest.mark.parametrize("whole", [False, True], ids=["chunked", "read-whole"])
def test_fast_path_agrees_with_numpy_on_every_float_type(tmp_path, monkeypatch, whole):
    """Both ways of measuring (chunked, bit-level; small tensors read whole) against plain numpy."""
    monkeypatch.setattr(health, "SMALL", 1 << 20 if whole else 0)
    g = torch.Generator().manual_seed(7)
    base = torch.randn(300, 50, generator=g) * 3
    base[0, :5] = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -0.0])
    base[[10, 20]] = 0
    sd = {str(dt).split(".")[-1]: base.to(dt) for dt in
          (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e5m2)}
    sd["float8_e4m3fn"] = base.clamp(-400, 400).nan_to_num(posinf=0, neginf=0).to(torch.float8_e4m3fn)
    torch.save(sd, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    for th in rep.tensors:
        ref = sd[th.key[0]].double().numpy()
        fin = ref[np.isfinite(ref)]
        assert th.nan == np.isnan(ref).sum(), th.dtype
        assert th.posinf == np.isposinf(ref).sum() and th.neginf == np.isneginf(ref).sum(), th.dtype
        assert th.zeros == (ref == 0).sum(), th.dtype
        assert th.absmax == np.abs(fin).max(), th.dtype
        assert th.dead_rows == 2 and th.dead_first == [10, 20], th.dtype
        assert th.moments_exact
        assert th.mean == pytest.approx(fin.mean(), rel=1e-9, abs=1e-12)
        assert th.std == pytest.approx(fin.std(), rel=1e-9)
        assert th.norm == pytest.approx(math.sqrt((fin * fin).sum()), rel=1e-9)


def test_moments_of_big_tensors_are_estimated_closely(tmp_path):
    g = torch.Generator().manual_seed(5)
    t = torch.randn(2048, 1024, generator=g) * 0.02 + 0.001
    torch.save({"w": t, "h": t.half()}, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    for th in rep.tensors:
        assert not th.moments_exact and th.moments_from >= health.SAMPLE
        ref = t.double() if th.key == ("w",) else t.half().double()
        assert th.std == pytest.approx(ref.std(unbiased=False).item(), rel=0.01)
        assert th.norm == pytest.approx(ref.norm().item(), rel=0.01)
        assert th.absmax == ref.abs().max().item()          # exact whatever the size


def test_normal_models_get_no_warnings(tmp_path):
    """Freshly initialised and briefly trained models (zero biases, unit norm scales, BatchNorm buffers,
    optimizer state) are what most files hold: nothing in them may be an error or a warning."""
    torch.manual_seed(0)
    net, bn = Net(), BNNet()
    opt = torch.optim.Adam(list(net.parameters()) + list(bn.parameters()))
    loss = net(torch.randn(4, 3, 32, 32)).sum() + bn(torch.randn(4, 3, 8, 8)).sum()
    loss.backward()
    opt.step()
    torch.save({"model": net.state_dict(), "bn": bn.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
               tmp_path / "ckpt.pt")
    torch.save(net, tmp_path / "whole.pt")
    for name in ("ckpt.pt", "whole.pt"):
        rep = check(tmp_path / name)
        assert [f for f in rep.findings if f.severity != "info"] == [], [f.text() for f in rep.findings]


def test_breakdown_and_layer_series(tmp_path):
    sd = blocks(torch.float32)
    sd["head.weight"] = torch.randn(10, 64)
    torch.save({"model": sd, "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(10, 64)}},
                                           "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]}},
               tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    names = {s.name: s for s in rep.breakdown}
    assert names["model/layers"].tensors == 18 and names["model/head"].numel == 640
    assert names["optimizer (optimizer state)"].kind == "optimizer"
    assert sum(s.nbytes for s in rep.breakdown) == rep.nbytes
    series = health.layer_series(rep)
    assert [th.key[-1] for th in series][:3] == ["layers.0.fc.weight", "layers.0.fc.bias", "layers.0.norm.weight"]
    # the optimizer's zero momentum is not a model layer, and all-zero optimizer state is at most info
    assert all(th.role == "parameter" for th in series)
    assert all(f.severity == "info" for f in rep.findings if f.key[0] == "optimizer")


def test_role_pattern():
    assert health.role_pattern(("model", "layers.11.attn.q.weight")) == "model/layers.#.attn.q.weight"
    assert health.role_pattern(("blocks", 3, "w")) == "blocks/#/w"
    assert health.module_of(("sd", "layers.3.attn.q.weight"), 2) == "sd/layers.3"


def test_cli_text_json_and_exit_codes(tmp_path):
    sd = blocks(torch.bfloat16)
    torch.save(sd, tmp_path / "ok.pt")
    sd["layers.2.fc.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    r = run_cli(tmp_path / "ok.pt", "-q")
    assert r.returncode == 0, r.stderr
    assert "0 errors, 0 warnings" in r.stdout
    r = run_cli(tmp_path / "bad.pt")
    assert r.returncode == 1 and "nan" in r.stdout and "layers.2.fc.weight" in r.stdout
    r = run_cli("--json", tmp_path / "bad.pt")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["counts"]["error"] == 1
    f = out["findings"][0]
    assert f == {"key": ["layers.2.fc.weight"], "kind": "nan", "severity": "error", "message": f["message"],
                 "count": 1, "index": [0, 0]}
    r = run_cli("--json", "--stats", tmp_path / "ok.pt", tmp_path / "junk.pt")
    out = json.loads(r.stdout)
    assert r.returncode == 2 and len(out) == 2 and "error" in out[1] and len(out[0]["stats"]) == 18
    assert r.stderr.count("\n") == 1 and "junk.pt" in r.stderr


def test_rows_longer_than_a_piece_and_long_vectors(tmp_path):
    """Rows bigger than the measuring piece (1 MB) and 1-D tensors bigger than a chunk go the same exact way."""
    g = torch.Generator().manual_seed(9)
    wide = torch.randn(3, 1_500_000, generator=g).half()
    wide[1] = 0
    wide[2, 1_400_000] = float("nan")
    flat = torch.randn(9_000_000, generator=g)
    flat[8_999_999] = float("inf")
    torch.save({"wide": wide, "flat": flat}, tmp_path / "x.pt")
    rep = check(tmp_path / "x.pt")
    by = {th.key[0]: th for th in rep.tensors}
    assert by["wide"].dead_rows == 1 and by["wide"].dead_first == [1]
    assert by["wide"].nan == 1 and by["wide"].first_nan == 2 * 1_500_000 + 1_400_000
    assert not by["wide"].zeros_exact
    assert by["wide"].zeros == pytest.approx((wide == 0).sum().item(), rel=0.02)     # estimated from the sample
    assert by["flat"].posinf == 1 and by["flat"].first_inf == 8_999_999
    fin = flat[torch.isfinite(flat)]
    assert by["flat"].absmax == fin.abs().max().item()
