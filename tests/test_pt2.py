"""torch.export archives (.pt2) and AOTInductor packages, made here by torch, read without running anything:
every parameter, buffer and constant under its name with torch's values, and the program's signature."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile

import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.info import build_report, report_text
from ckptviewer.core.analyze.integrity import verify_steps
from ckptviewer.core.util.progress import run_steps


def sha(t: torch.Tensor) -> str:
    t = t.detach().contiguous().reshape(-1)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


class Small(torch.nn.Module):
    """Parameters (one bf16, two views of one storage), persistent and non-persistent buffers, a tensor
    constant, a constant made inside forward."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.bf = torch.nn.Parameter(torch.arange(4.).reshape(2, 2).bfloat16())
        self.register_buffer("running", torch.arange(3, dtype=torch.float16))
        self.register_buffer("scratch", torch.arange(3), persistent=False)
        self.const = torch.tensor([1.5, 2.5, 3.5], dtype=torch.float64)
        base = torch.arange(12.)
        self.view_a = torch.nn.Parameter(base[:6].view(2, 3), requires_grad=False)
        self.register_buffer("view_b", base[6:].view(3, 2).t())

    def forward(self, x):
        y = self.lin(x) + self.running + self.const + self.scratch
        return y * torch.tensor(2.0) + self.view_a.sum() + self.view_b.sum() + self.bf.float().sum()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pt2")
    model = Small()
    ep = torch.export.export(model, (torch.randn(2, 4),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    path = folder / "small.pt2"
    torch.export.save(ep, path, extra_files={"note.txt": "hello"})
    return path, torch.export.load(path)


def records(path) -> dict:
    with open_checkpoint(path) as ck:
        rep = build_report(ck, checksums=True)
    return rep, {json.dumps(t["key"]): t for t in rep["tensors"]}


def test_program_weights_and_constants_match_torch_export_load(small):
    path, ep = small
    rep, rec = records(path)
    assert rep["format"] == "torch-export"
    want = {json.dumps(["model", "state_dict", k]): v for k, v in ep.state_dict.items()}
    want |= {json.dumps(["model", "constants", k]): v for k, v in ep.constants.items()}
    for key, t in want.items():
        got = rec[key]
        assert (got["dtype"], got["shape"], got["sha256"]) == (str(t.dtype)[6:], list(t.shape), sha(t)), key
    listed = {k for k in rec if '"sample_inputs"' not in k}
    assert listed == set(want)
    # Names that share one raw file are views of it; parameters are told from buffers by the config.
    assert rec['["model", "state_dict", "view_a"]']["storage"] == rec['["model", "state_dict", "view_b"]']["storage"]
    assert rec['["model", "state_dict", "lin.weight"]']["kind"] == "parameter"
    assert rec['["model", "state_dict", "running"]']["kind"] == "tensor"
    assert not rep["warnings"] and not rep["dangerous_globals"] and not rep["stand_in_classes"]


def test_signature_sample_inputs_and_summary(small):
    path, ep = small
    with open_checkpoint(path) as ck:
        prog = ck.root["model"]
        inputs = prog["signature"]["inputs"]
        assert inputs["p_lin_weight"] == "parameter lin.weight: float32 [3, 4]"
        assert inputs["b_scratch"].startswith("buffer scratch (not persistent)")
        assert inputs["x"].startswith("user input: float32 [")             # a symbolic batch size, shown
        assert prog["signature"]["range_constraints"]
        sample = prog["sample_inputs"]
        assert sample[0][0].shape == (2, 4) and sample[0][0].sha256() == sha(ep.example_inputs[0][0])
        assert ck.root["extra"]["note.txt"] == "hello"
        text = report_text(ck)
    assert "torch.export program model: 6 weights, 25 parameters, 3 constants; input x float32 [s" in text
    assert "saved by torch" in text.splitlines()[0]


def test_archive_saved_to_a_buffer_and_several_programs(tmp_path):
    ep = torch.export.export(Small(), (torch.randn(2, 4),))
    second = torch.export.export(torch.nn.ReLU(), (torch.randn(3),))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    path = tmp_path / "buffer.pt2"
    path.write_bytes(buf.getvalue())
    rep, rec = records(path)
    assert rep["meta"]["archive"] == "archive" and rec['["model", "state_dict", "lin.bias"]']["sha256"] == \
        sha(ep.state_dict["lin.bias"])
    from torch.export.pt2_archive._package import package_pt2
    multi = tmp_path / "multi.pt2"
    package_pt2(str(multi), exported_programs={"model": ep, "second": second})
    rep, rec = records(multi)
    assert "torch.export program second" in rep["summary"]
    assert rec['["model", "state_dict", "lin.weight"]']["sha256"] == sha(ep.state_dict["lin.weight"])


def test_tensor_subclass_weights_show_their_parts(tmp_path):
    from torch.testing._internal.two_tensor import TwoTensor

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(TwoTensor(torch.ones(2), torch.arange(2.)))

        def forward(self, x):
            return x + self.p

    path = tmp_path / "sub.pt2"
    torch.export.save(torch.export.export(M(), (torch.randn(2),)), path)
    rep, rec = records(path)
    assert "subclass" in rec['["model", "state_dict", "p"]']["problem"]
    assert rec['["model", "tensor_subclass_parts", "p", "b"]']["sha256"] == sha(torch.arange(2.))
    assert rep["dangerous_globals"] == []


def test_a_save_that_failed_part_way_is_described(tmp_path):
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.zeros(2, dtype=torch.uint8).view(torch.float4_e2m1fn_x2))

        def forward(self, x):
            return x + 1

    path = tmp_path / "partial.pt2"
    with pytest.raises(Exception):
        torch.export.save(torch.export.export(M(), (torch.randn(2),)), path)
    with open_checkpoint(path) as ck:
        assert any("no program or config describing them" in w for w in ck.warnings)


def _rewrite(src, dst, edit):
    """Copy a zip, letting ``edit(name, data)`` change members (None drops one)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def test_hostile_configs_and_symbolic_text_are_never_followed_or_evaluated(small, tmp_path):
    path, _ = small
    marker = tmp_path / "MARKER"
    payload = f"__import__('os').system('touch {marker}')"

    def edit(name, data):
        if name.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            cfg["config"]["lin.bias"]["path_name"] = "../../../etc/passwd"
            cfg["config"]["lin.weight"]["tensor_meta"]["sizes"][0] = {"as_expr": {"expr_str": payload}}
            cfg["config"]["bf"]["tensor_meta"]["dtype"] = 99
            cfg["config"]["running"]["tensor_meta"]["sizes"] = [{"as_int": 10 ** 9}]
            return json.dumps(cfg).encode()
        if name.endswith("models/model.json"):
            prog = json.loads(data)
            prog["range_constraints"] = {payload: {"min_val": 1, "max_val": 2}}
            return json.dumps(prog).encode()
        return data

    bad = tmp_path / "bad.pt2"
    _rewrite(path, bad, edit)
    rep, rec = records(bad)
    text = "\n".join(rep["warnings"])
    assert "'lin.bias'" in text and "not a plain file name" in text
    assert "symbolic size" in text and "unknown export dtype code 99" in text
    assert "needs elements" in rec['["model", "state_dict", "running"]']["problem"]
    assert rec['["model", "state_dict", "view_a"]']["sha256"]          # the rest still reads
    assert not marker.exists()


def _aoti_model():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x).relu()

    return torch.export.export(M().eval(), (torch.randn(2, 4),))


def test_aoti_cpp_only_package_constants_from_the_object_file(tmp_path):
    ep = _aoti_model()
    path = tmp_path / "cpp_only.pt2"
    torch._inductor.aoti_compile_and_package(ep, package_path=str(path),
                                             inductor_configs={"aot_inductor.package_cpp_only": True})
    rep, rec = records(path)
    assert rep["format"] == "aotinductor"
    got = rec['["aotinductor", "model", "constants", "lin.weight"]']
    assert got["sha256"] == sha(ep.state_dict["lin.weight"]) and got["shape"] == [3, 4]
    assert "AOTInductor compiled model" in rep["summary"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="needs a C++ compiler")
def test_aoti_package_constants_from_the_compiled_library(tmp_path):
    """The default package: weights inside the .so (about 15 s to build here). Read from the ELF symbol
    table as data; the library is never loaded."""
    ep = _aoti_model()
    path = tmp_path / "aoti.pt2"
    torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
    rep, rec = records(path)
    for name in ("lin.weight", "lin.bias"):
        key = json.dumps(["aotinductor", "model", "constants", name])
        if key in rec:
            assert rec[key]["sha256"] == sha(ep.state_dict[name])
    assert json.dumps(["aotinductor", "model", "constants", "lin.weight"]) in rec
    assert any("compiled native code" in w for w in rep["warnings"])
    with open_checkpoint(path) as ck:
        report = run_steps(verify_steps(ck))
    assert report.ok and report.members >= 5


def test_a_damaged_compiled_library_is_a_warning(tmp_path):
    ep = _aoti_model()
    path = tmp_path / "cpp_only.pt2"
    torch._inductor.aoti_compile_and_package(ep, package_path=str(path),
                                             inductor_configs={"aot_inductor.package_cpp_only": True})
    bad = tmp_path / "bad.pt2"
    _rewrite(path, bad, lambda name, data: os.urandom(len(data)) if name.endswith(".o") else data)
    rep, rec = records(bad)
    assert "weights were not found" in rec['["aotinductor", "model", "constants", "lin.weight"]']["problem"]
    assert any("not an ELF file" in w for w in rep["warnings"])
