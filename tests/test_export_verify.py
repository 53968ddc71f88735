"""Export verification by CRC-32: each written record is read back once and checked against the CRC-32
known from writing (the source zip's stored one for bytes copied unchanged, one computed from the bytes
produced for casts and other computed records); any mismatch stops the export with one line and leaves
the destination as it was. A source whose bytes fail their stored CRC-32 is refused unless forced."""
from __future__ import annotations

import os
import struct
import zipfile

import numpy as np
import pytest
import torch

import ckptviewer.core.write.export as ex
from ckptviewer.core import open_checkpoint
from ckptviewer.core.edit.ops import Cast, apply_steps
from ckptviewer.core.util.errors import OperationError
from ckptviewer.core.write.export import ExportOptions, export

OLD = b"previous contents"


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src.pt"
    gen = torch.Generator().manual_seed(0)
    torch.save({"w": torch.randn(64, 64, generator=gen), "b": torch.randn(64, generator=gen),
                "view": torch.arange(100.)[10:30]}, path)
    return path


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _damage_before_read_back(monkeypatch, label: str):
    """Flip one byte in the middle of the record written for ``label``, after it is written and before
    it is read back."""
    real = ex._put_record
    seen = {}

    def damaging(copier, at, nbytes, what, *args):
        check = yield from real(copier, at, nbytes, what, *args)
        if what == label:
            byte = os.pread(copier.fd, 1, at + nbytes // 2)
            os.pwrite(copier.fd, bytes([byte[0] ^ 0x40]), at + nbytes // 2)
            seen["at"] = at + nbytes // 2
        return check
    monkeypatch.setattr(ex, "_put_record", damaging)
    return seen


@pytest.mark.parametrize("fmt,name", [("pt", "dest.pt"), ("pt-legacy", "dest.pt"),
                                      ("safetensors", "dest.safetensors")])
def test_damage_after_writing_is_found_and_the_destination_is_untouched(src, tmp_path, monkeypatch, fmt, name):
    dest = tmp_path / name
    dest.write_bytes(OLD)
    seen = _damage_before_read_back(monkeypatch, "w")
    with open_checkpoint(src) as ck:
        with pytest.raises(OperationError) as err:
            export(ck.root, dest, ExportOptions(fmt=fmt, overwrite=True), sources=[ck.path])
    assert seen and "verification failed for w: the written bytes differ from the source" in str(err.value)
    assert "\n" not in str(err.value)
    assert dest.read_bytes() == OLD
    assert _listing(tmp_path) == sorted(["src.pt", name])        # no temporary file or folder left


def test_a_bad_write_of_a_cast_tensor_is_found(src, tmp_path, monkeypatch):
    """Cast values have no source CRC-32: the one computed from the bytes produced in memory is checked."""
    real_write = ex._Copier.write
    hits = []

    def flipping(self, piece, location, pos):
        real_write(self, piece, location, pos)
        if len(piece) == 64 * 64 * 2 and not hits:          # w as bfloat16: damage what reached the file
            hits.append(pos)
            os.pwrite(self.fd, bytes([bytes(piece[:1])[0] ^ 0x01]), pos)
    monkeypatch.setattr(ex._Copier, "write", flipping)
    dest = tmp_path / "cast.pt"
    with open_checkpoint(src) as ck:
        root, _ = apply_steps(ck.root, [Cast("bfloat16")])
        with pytest.raises(OperationError, match="verification failed for w: the written bytes differ"):
            export(root, dest, ExportOptions(), sources=[ck.path])
    assert hits and not dest.exists() and _listing(tmp_path) == ["src.pt"]


@pytest.mark.parametrize("fmt,name", [("pt", "cast.pt"), ("pt-legacy", "cast.pt"), ("safetensors", "cast.safetensors")])
def test_cast_output_carries_the_crc_of_its_values(src, tmp_path, fmt, name):
    dest = tmp_path / name
    with open_checkpoint(src) as ck:
        root, _ = apply_steps(ck.root, [Cast("bfloat16")])
        export(root, dest, ExportOptions(fmt=fmt), sources=[ck.path])
    want = torch.load(src, weights_only=True)
    if fmt == "safetensors":
        from safetensors.torch import load_file
        got = load_file(dest)
    else:
        got = torch.load(dest, weights_only=True)
    for k, v in want.items():
        assert torch.equal(got[k], v.to(torch.bfloat16))
    if fmt == "pt":
        with zipfile.ZipFile(dest) as z:
            assert z.testzip() is None                     # every patched CRC-32 matches its bytes


def test_plain_copy_keeps_torchs_crcs_without_reading_the_source(src, tmp_path):
    """A whole record copied unchanged takes the CRC-32 the source stores; the copy does not read it here
    (one pass over the bytes: the read-back of the output), and the output's directory records it."""
    dest = tmp_path / "copy.pt"
    with open_checkpoint(src) as ck:
        export(ck.root, dest, ExportOptions(), sources=[ck.path])
        unread = [st.source.verified for st in ck.storages.values()]
    if hasattr(os, "copy_file_range"):
        assert not any(unread)
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dest) as b:
        crcs = lambda z: sorted(i.CRC for i in z.infolist() if "/data/" in i.filename)   # noqa: E731
        assert crcs(a) == crcs(b)
        assert b.testzip() is None


def _damage_member(path, name_end: str) -> bytes:
    """Flip a bit in the middle of a stored member; returns the member's (damaged) bytes."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(name_end))
    data = bytearray(path.read_bytes())
    nlen, xlen = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + nlen + xlen
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(data)
    return bytes(data[start:start + info.file_size])


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copied-unread", "read-through"])
@pytest.mark.parametrize("fmt,name", [("pt", "out.pt"), ("safetensors", "out.safetensors")])
def test_a_source_that_fails_its_crc_is_refused_unless_forced(tmp_path, monkeypatch, fmt, name, kernel_copy):
    """Copied file to file unread, the damage is found by the read-back (and the source re-read to say so);
    copied through this process (no copy_file_range), by the source's own check as its bytes pass."""
    if not kernel_copy:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    path = tmp_path / "src.pt"
    torch.save({"ok": torch.ones(1000), "bad": torch.arange(4096.)}, path)
    with zipfile.ZipFile(path) as z:
        key = next(i.filename for i in z.infolist() if i.file_size == 4096 * 4)
    raw = _damage_member(path, key)
    dest = tmp_path / name
    dest.write_bytes(OLD)
    with open_checkpoint(path) as ck:
        with pytest.raises(OperationError) as err:
            export(ck.root, dest, ExportOptions(fmt=fmt, overwrite=True), sources=[ck.path])
        msg = str(err.value)
        assert msg.startswith("cannot export bad: zip member") and "fails its CRC-32 check" in msg
        assert "--force-bad-crc" in msg and "\n" not in msg
        assert dest.read_bytes() == OLD and _listing(tmp_path) == sorted(["src.pt", name])
        result = export(ck.root, dest, ExportOptions(fmt=fmt, overwrite=True, force_bad_crc=True),
                        sources=[ck.path])
    assert any("bad: written although" in n for n in result.notes)
    damaged = np.frombuffer(raw, dtype=np.float32)
    if fmt == "pt":
        got = torch.load(dest, weights_only=True)
        with zipfile.ZipFile(dest) as z:
            assert z.testzip() is None          # the forced copy carries the CRC-32 of what it holds
    else:
        from safetensors.torch import load_file
        got = load_file(dest)
    np.testing.assert_array_equal(got["bad"].numpy(), damaged)
    assert torch.equal(got["ok"], torch.ones(1000))


def test_a_wrong_crc_in_the_written_directory_is_found(src, tmp_path, monkeypatch):
    """The CRC-32s patched into the output's zip directory are checked too (other readers check them)."""
    real = ex._crc_patcher

    def off_by_one(mm, member, start):
        patch = real(mm, member, start)
        return lambda fd, crc: patch(fd, crc ^ 1)
    monkeypatch.setattr(ex, "_crc_patcher", off_by_one)
    with open_checkpoint(src) as ck:
        with pytest.raises(OperationError, match="the written zip directory does not record its CRC-32"):
            export(ck.root, tmp_path / "o.pt", ExportOptions(), sources=[ck.path])
    assert _listing(tmp_path) == ["src.pt"]


def test_cancel_during_read_back_stops_and_cleans_up(src, tmp_path):
    from ckptviewer.core.util.errors import CancelledError
    stages = []
    with open_checkpoint(src) as ck:
        with pytest.raises(CancelledError):
            export(ck.root, tmp_path / "o.pt", ExportOptions(), sources=[ck.path],
                   progress=lambda p: stages.append(p.stage), cancelled=lambda: stages[-1:] == ["verifying"])
    assert "verifying" in stages and _listing(tmp_path) == ["src.pt"]


def test_crc32_is_zlibs_checksum_whichever_implementation():
    import zlib

    from ckptviewer.core.util import checksum
    data = np.random.default_rng(0).bytes(3 << 20) + b"tail"
    assert checksum.crc32(data) == zlib.crc32(data)
    assert checksum.crc32(memoryview(data)[1000:], checksum.crc32(data[:1000])) == zlib.crc32(data)
    assert checksum.IMPLEMENTATION in ("isal", "zlib")
