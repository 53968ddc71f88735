"""Reader fidelity, round 2: every dtype torch 2.13 writes (packed FP4, e8m0 scales, sub-byte and bit types,
quint4x2/2x4, complex32), sparse, nested and quantized tensors, old pickle protocols and Python 2 strings.
Every file is made here by torch; values are compared with what torch saved, bit for bit."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import types
import zipfile

import numpy as np
import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.info import build_report, report_text
from ckptviewer.core.analyze.stats import compute_stats, exact_histogram, sampled_histogram
from ckptviewer.core.model.sparse import SparseTensorRef, nested_shapes, quantizer_info, special_facts
from ckptviewer.core.util.errors import StorageError


def sha(t: torch.Tensor) -> str:
    """The contract's checksum: dense values, C order, little-endian bytes."""
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    t = t.detach().contiguous().reshape(-1)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


def report(path, **kw) -> dict:
    with open_checkpoint(path) as ck:
        return build_report(ck, checksums=True, **kw)


def by_key(rep: dict) -> dict:
    return {json.dumps(t["key"]): t for t in rep["tensors"]}


# -- dtypes ---------------------------------------------------------------------------------------
NEW_DTYPES = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
              "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2", "complex32", "uint16",
              "uint32", "uint64"]


def _tensor_of(name: str) -> torch.Tensor:
    dt = getattr(torch, name)
    return (torch.arange(4 * 8 * dt.itemsize, dtype=torch.uint8).reshape(4, -1) * 7 + 1).view(dt)   # (4, 8)


@pytest.mark.parametrize("name", NEW_DTYPES)
def test_every_saveable_new_dtype_lists_with_torchs_bytes(tmp_path, name):
    t = _tensor_of(name)
    path = tmp_path / f"{name}.pt"
    torch.save({"t": t, "view": t[1:3]}, path)
    rec = by_key(report(path))
    for key, want in (("t", t), ("view", t[1:3])):
        got = rec[json.dumps([key])]
        assert got["dtype"] == name and got["shape"] == list(want.shape)
        assert got["sha256"] == sha(want.contiguous().view(torch.uint8))
        assert "problem" not in got


def test_float4_values_are_two_e2m1_numbers_per_byte_low_nibble_first(tmp_path):
    codes = torch.tensor([[0x21, 0xF7], [0x00, 0x9C]], dtype=torch.uint8)   # low nibble first: 0x21 is (0.5, 1.0)
    path = tmp_path / "fp4.pt"
    torch.save({"w": codes.view(torch.float4_e2m1fn_x2)}, path)
    with open_checkpoint(path) as ck:
        t = ck.root["w"]
        assert t.dtype.name == "float4_e2m1fn_x2" and t.shape == (2, 2) and t.logical_shape == (2, 4)
        np.testing.assert_array_equal(t.read(), [[0.5, 1.0, 6.0, -6.0], [0.0, 0.0, -2.0, -0.5]])
        s = compute_stats(t)
        assert s.numel == 8 and s.min == -6.0 and s.max == 6.0 and "both 4-bit values" in s.note
        assert exact_histogram(t).finite == 8
        facts = dict(special_facts(t))
        assert "two FP4" in facts["Type"] and "logical shape [2, 4]" in facts["Type"]
    assert by_key(report(path))['["w"]']["logical_shape"] == [2, 4]


def test_e8m0_scales_are_powers_of_two(tmp_path):
    path = tmp_path / "e8m0.pt"
    torch.save({"s": torch.tensor([127, 128, 120, 255], dtype=torch.uint8).view(torch.float8_e8m0fnu)}, path)
    with open_checkpoint(path) as ck:
        v = ck.root["s"].read()
    np.testing.assert_array_equal(v[:3], [1.0, 2.0, 2.0 ** -7])
    assert np.isnan(v[3])


def test_complex32_widens_to_complex64(tmp_path):
    t = torch.tensor([1 + 2j, -0.5 + 0.25j], dtype=torch.complex64).to(torch.complex32)
    path = tmp_path / "c32.pt"
    torch.save({"c": t}, path)
    with open_checkpoint(path) as ck:
        np.testing.assert_array_equal(ck.root["c"].read(), t.to(torch.complex64).numpy())


def _retag_dtype(src, dst, old: bytes, new: bytes):
    """Copy a torch.save zip with its pickle's dtype global renamed (torch.save cannot write uint1..7 and
    int1..7, but torch.load reads a pickle naming them)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info, data)


@pytest.mark.parametrize("name", ["uint4", "int2", "uint7", "int1"])
def test_sub_byte_dtypes_torch_loads_read_one_value_per_byte(tmp_path, name):
    src, dst = tmp_path / "u16.pt", tmp_path / f"{name}.pt"
    torch.save({"t": torch.arange(8, dtype=torch.uint8).view(torch.uint16)}, src)
    _retag_dtype(src, dst, b"torch\nuint16\n", f"torch\n{name}\n".encode())
    theirs = torch.load(dst, weights_only=True)["t"]
    assert str(theirs.dtype) == f"torch.{name}"
    rec = by_key(report(dst))['["t"]']
    assert rec["dtype"] == name and rec["shape"] == [4] and "problem" not in rec
    assert rec["sha256"] == hashlib.sha256(theirs.view(torch.uint8).numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("dtype,per_byte", [(torch.quint4x2, 2), (torch.quint2x4, 4)])
def test_packed_quantized_types_read_their_packed_storage(tmp_path, dtype, per_byte):
    x = torch.tensor([[0., 1, 2, 3, 4], [5, 6, 7, 0, 1]])
    q = torch.quantize_per_channel(x, torch.tensor([1., 2.]), torch.tensor([0., 1.]), 0, dtype) \
        if dtype == torch.quint4x2 else torch.quantize_per_tensor(x / 3, 1.0, 0, dtype)
    path = tmp_path / "q.pt"
    torch.save({"q": q}, path)
    packed = q.int_repr().reshape(-1).numpy()            # torch gives the packed bytes
    bits = 8 // per_byte
    logical = ((packed[:, None] >> (np.arange(per_byte) * bits)) & ((1 << bits) - 1)).reshape(-1)[:q.numel()]
    with open_checkpoint(path) as ck:
        t = ck.root["q"]
        assert t.readable and t.nbytes == len(packed)
        np.testing.assert_array_equal(t.read().reshape(-1), logical)
        assert t.sha256() == hashlib.sha256(packed.tobytes()).hexdigest()
        assert compute_stats(t).numel == q.numel()


def test_safetensors_f4_and_e8m0_shapes_and_bytes(tmp_path):
    from safetensors.torch import load_file, save_file
    fp4 = torch.arange(12, dtype=torch.uint8).reshape(3, 4).view(torch.float4_e2m1fn_x2)
    e8 = torch.tensor([120, 127, 130], dtype=torch.uint8).view(torch.float8_e8m0fnu)
    path = tmp_path / "mx.safetensors"
    save_file({"w": fp4, "scale": e8}, str(path))
    header = json.loads(path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
    assert header["w"]["dtype"] == "F4" and header["w"]["shape"] == [3, 8]    # logical shape in the header
    rec = by_key(report(path))
    assert rec['["w"]']["dtype"] == "float4_e2m1fn_x2" and rec['["w"]']["shape"] == [3, 4]
    assert rec['["w"]']["sha256"] == sha(fp4.view(torch.uint8))
    assert rec['["scale"]']["dtype"] == "float8_e8m0fnu" and rec['["scale"]']["sha256"] == sha(e8.view(torch.uint8))
    # ... and an export to safetensors writes the logical shape back, which the library reads as torch does.
    from ckptviewer.core.write.export import ExportOptions, export
    out = tmp_path / "again.safetensors"
    with open_checkpoint(path) as ck:
        export(ck.root, str(out), ExportOptions(fmt="safetensors"), sources=[str(path)])
    back = load_file(str(out))
    assert back["w"].dtype == torch.float4_e2m1fn_x2 and back["w"].shape == fp4.shape
    assert torch.equal(back["w"].view(torch.uint8), fp4.view(torch.uint8))


# -- sparse ---------------------------------------------------------------------------------------
def _sparse_cases():
    d = torch.tensor([[0., 1, 0, 0], [2, 0, 0, 3]])
    blocky = torch.arange(32.).reshape(4, 8) * torch.tensor([1., 0, 1, 1, 0, 0, 1, 1])
    hybrid = torch.zeros(5, 6, 3)
    hybrid[1, 2] = torch.tensor([1., 2, 3])
    hybrid[4, 5, 1] = 7
    return {
        "coo": d.to_sparse(),
        "coo_3d": torch.arange(60.).reshape(3, 4, 5).remainder(7).eq(0).float().to_sparse(),
        "coo_hybrid": hybrid.to_sparse(2),
        "coo_bf16": d.bfloat16().to_sparse(),
        "coo_duplicates": torch.sparse_coo_tensor(torch.tensor([[0, 0, 1], [1, 1, 2]]), torch.tensor([1., 2., 3.]),
                                                  (2, 4)),
        "csr": d.to_sparse_csr(),
        "csr_batched": torch.stack([d, 2 * d]).to_sparse_csr(),
        "csr_int": d.long().to_sparse_csr(),
        "csc": d.to_sparse_csc(),
        "csc_hybrid": hybrid.to_sparse_csc(dense_dim=1),
        "bsr": blocky.to_sparse_bsr((2, 2)),
        "bsc": blocky.to_sparse_bsc((2, 2)),
        "empty": torch.zeros(3, 3).to_sparse(),
    }


def test_sparse_tensors_of_every_layout_checksum_their_dense_values(tmp_path):
    cases = _sparse_cases()
    path = tmp_path / "sparse.pt"
    torch.save(cases, path)
    rec = by_key(report(path))
    for name, t in cases.items():
        got = rec[json.dumps([name])]
        assert got["sha256"] == sha(t), name
        assert got["shape"] == list(t.shape) and got["dtype"] == str(t.dtype).removeprefix("torch.")
        assert got["layout"] == str(t.layout).removeprefix("torch.")
        assert "problem" not in got
    with open_checkpoint(path) as ck:
        for name, t in cases.items():
            np.testing.assert_array_equal(ck.root[name].read(), t.to_dense().float().numpy()
                                          if t.dtype == torch.bfloat16 else t.to_dense().numpy())


def test_sparse_statistics_run_over_the_stored_values_and_say_so(tmp_path):
    t = torch.sparse_coo_tensor(torch.tensor([[0, 3, 7]]), torch.tensor([-1., 5., 2.]), (1000,))
    path = tmp_path / "s.pt"
    torch.save({"s": t}, path)
    with open_checkpoint(path) as ck:
        s = ck.root["s"]
        assert isinstance(s, SparseTensorRef) and s.nnz == 3 and s.nbytes < 100 and s.dense_nbytes == 4000
        st = compute_stats(s)
        assert (st.numel, st.min, st.max, st.zeros) == (3, -1.0, 5.0, 0)
        assert "3 stored values" in st.note and "997 implicit zeros" in st.note
        assert exact_histogram(s).finite == 3 and sampled_histogram(s).finite == 3
        assert "sparse_coo: 3 stored entries" in dict(special_facts(s))["Sparse"]
        assert "sparse_coo: 3 stored entries" in report_text(ck)


def test_hostile_sparse_indices_are_errors_not_crashes(tmp_path):
    good = torch.tensor([[0., 1, 0, 0], [2, 0, 0, 3]]).to_sparse()
    path = tmp_path / "bad.pt"
    torch.save({"s": good}, path)
    data = path.read_bytes()
    # Make index 3 (column of the value 3.0) point far outside the shape: the indices are int64 storage 0.
    idx = good.indices().contiguous().numpy().tobytes()
    bad = bytearray(data)
    pos = bytes(bad).find(idx)
    assert pos > 0
    bad[pos + 5 * 8:pos + 6 * 8] = struct.pack("<q", 10 ** 6)
    path.write_bytes(bad)
    with open_checkpoint(path) as ck:
        t = ck.root["s"]
        with pytest.raises(StorageError, match="outside shape"):
            t.sha256()
        assert compute_stats(t).numel == 3          # the stored values still read


def test_a_huge_dense_form_is_not_hashed_but_its_values_are_measured(tmp_path):
    t = torch.sparse_coo_tensor(torch.tensor([[0, 10 ** 6], [5, 10 ** 6]]), torch.tensor([1., 2.]),
                                (10 ** 6 + 1, 10 ** 6 + 1))
    path = tmp_path / "huge.pt"
    torch.save({"s": t}, path)
    with open_checkpoint(path) as ck:
        with pytest.raises(StorageError, match="dense form"):
            ck.root["s"].sha256()
        assert compute_stats(ck.root["s"]).max == 2.0


# -- nested and quantized ---------------------------------------------------------------------------
def test_nested_tensors_show_component_shapes(tmp_path):
    strided = torch.nested.nested_tensor([torch.arange(6.).reshape(2, 3), torch.arange(3.).reshape(1, 3)])
    jagged = torch.nested.nested_tensor([torch.ones(3, 2), torch.zeros(1, 2)], layout=torch.jagged)
    path = tmp_path / "nested.pt"
    torch.save({"strided": strided, "jagged": jagged}, path)
    rep = report(path)
    rec = by_key(rep)
    assert rec['["strided"]']["component_shapes"] == [[2, 3], [1, 3]]
    assert rec['["strided"]']["layout"] == "nested_strided"
    assert rec['["jagged"]']["component_shapes"] == [[3, 2], [1, 2]]
    assert rec['["strided"]']["sha256"] == sha(torch.cat([c.reshape(-1) for c in strided.unbind()]))
    assert rec['["jagged"]']["sha256"] == sha(jagged.values())
    # A jagged tensor's metadata names torch._dynamo's _DimRange record: read as data, not dangerous.
    assert not rep["dangerous_globals"] and not rep["stand_in_classes"]
    with open_checkpoint(path) as ck:
        assert nested_shapes(ck.root["jagged"]) == [(3, 2), (1, 2)]


def test_quantized_tensors_show_scale_and_zero_point_and_count_as_parameters(tmp_path):
    w = torch.quantize_per_channel(torch.randn(3, 4), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64),
                                   torch.tensor([0, 1, 2]), 0, torch.qint8)
    b = torch.quantize_per_tensor(torch.randn(3), 0.5, 10, torch.quint8)
    path = tmp_path / "q.pt"
    torch.save({"fc.weight": w, "fc.bias": b}, path)
    rep = report(path)
    rec = by_key(rep)
    assert rec['["fc.weight"]']["quantizer"] == {"qscheme": "per_channel_affine", "axis": 0, "scales_dtype": "float64",
                                                   "scales_shape": [3], "scales": [0.1, 0.2, 0.3],
                                                   "zero_points_dtype": "int64", "zero_points_shape": [3],
                                                   "zero_points": [0, 1, 2]}
    assert rec['["fc.bias"]']["quantizer"] == {"qscheme": "per_tensor_affine", "scale": 0.5, "zero_point": 10}
    assert rec['["fc.weight"]']["sha256"] == sha(w)
    assert rep["state_dicts"][0]["parameters"] == 15
    with open_checkpoint(path) as ck:
        assert quantizer_info(ck.root["fc.bias"])["scale"] == 0.5
        assert "along axis 0: 3 scales [0.1, 0.2, 0.3]" in report_text(ck)


# -- pickle protocols and Python 2 strings ------------------------------------------------------------
@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_pickle_protocol_torch_save_writes(tmp_path, protocol, zip_format):
    obj = {"w": torch.arange(6.).reshape(2, 3), "tied": None, "name": "abcé", "n": 3, "flag": True}
    obj["tied"] = obj["w"][1]
    path = tmp_path / f"p{protocol}.pt"
    torch.save(obj, path, pickle_protocol=protocol, _use_new_zipfile_serialization=zip_format)
    with open_checkpoint(path) as ck:
        assert ck.format == ("torch-zip" if zip_format else "torch-legacy")
        assert ck.root["name"] == "abcé" and ck.root["n"] == 3 and ck.root["flag"] is True
        np.testing.assert_array_equal(ck.root["w"].read(), obj["w"].numpy())
        np.testing.assert_array_equal(ck.root["tied"].read(), obj["tied"].numpy())
        assert ck.root["tied"].storage is ck.root["w"].storage
        assert not ck.warnings


def test_protocol_0_whole_model_names_its_classes(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    path = tmp_path / "m.pt"
    torch.save(model, path, pickle_protocol=0, _use_new_zipfile_serialization=False)
    rep = report(path)
    assert "torch.nn.modules.linear.Linear" in rep["stand_in_classes"]
    assert by_key(rep)['["0.weight"]']["sha256"] == sha(model[0].weight)


class _Py2Pickler(pickle._Pickler):
    """Writes every str as Python 2's pickle did: latin-1 bytes in STRING / SHORT_BINSTRING / BINSTRING."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin-1")
        if self.proto >= 1:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw if len(raw) < 256
                       else pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        else:
            self.write(pickle.STRING + repr(raw)[1:].encode("ascii") + b"\n")
        self.memoize(obj)

    dispatch[str] = save_py2_str


PY2 = types.SimpleNamespace(Pickler=_Py2Pickler, __name__="py2pickle",
                            dump=lambda o, f, protocol=None: _Py2Pickler(f, protocol).dump(o))


@pytest.mark.parametrize("protocol", [0, 2])
def test_python2_strings_that_are_not_utf8_are_latin1_and_said_so(tmp_path, protocol):
    obj = {"state_dict": {"fc.weight": torch.tensor([[1.0, 2.0]])}, "arch": "caf\xe9", "long": "é" * 300}
    path = tmp_path / "py2.pt"
    torch.save(obj, path, pickle_module=PY2, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
    with pytest.raises(Exception):
        torch.load(path, weights_only=False)             # torch's default encoding (utf-8) fails
    # torch reads protocol 2 with encoding="latin1"; a protocol-0 file it cannot read at all (its text
    # persistent ids reach torch's loader as strings).
    theirs = torch.load(path, weights_only=False, encoding="latin1") if protocol else obj
    rep = report(path)
    with open_checkpoint(path) as ck:
        assert ck.root["arch"] == theirs["arch"] == "café" and ck.root["long"] == theirs["long"]
    note = [w for w in rep["warnings"] if "latin-1" in w]
    assert len(note) == 1 and "'café'" in note[0] and "encoding='latin1'" in note[0]
    assert by_key(rep)['["state_dict", "fc.weight"]']["sha256"] == sha(theirs["state_dict"]["fc.weight"])


def test_python2_utf8_strings_read_without_a_warning(tmp_path):
    path = tmp_path / "py2.pt"
    torch.save({"arch": "resnet", "w": torch.ones(2)}, path, pickle_module=PY2, pickle_protocol=2,
               _use_new_zipfile_serialization=False)
    rep = report(path)
    assert not rep["warnings"]


def test_python2_numpy_array_bytes_survive_even_when_they_look_like_utf8(tmp_path):
    """numpy arrays pickled by Python 2 carry their data as a py2 str: the bytes must be the file's, not
    text re-encoded (b'\\xc3\\xa9' is valid UTF-8 and must stay two bytes)."""
    arr = np.frombuffer(b"\xc3\xa9\x00\x01", dtype=np.uint8).copy()
    buf = io.BytesIO()
    _Py2Pickler(buf, 2).dump({"a": arr})
    from ckptviewer.core.model.walk import unwrap
    from ckptviewer.core.read.pickle.unpickle import unpickle
    value, _ = unpickle(buf.getvalue(), name="t", warnings=[], pickles=[])
    np.testing.assert_array_equal(unwrap(value["a"]), arr)
