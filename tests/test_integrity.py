"""Integrity: a zip member's CRC-32 is checked when its bytes are read (values, statistics, checksums,
exports), never when the file opens; a mismatch is a warning on that tensor wherever it shows, an export
of it fails unless forced, and `info --verify` / Checkpoint > Verify Integrity read every member once."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.info import build_report, report_text
from ckptviewer.core.analyze.integrity import verify_steps
from ckptviewer.core.analyze.stats import compute_stats, sampled_histogram
from ckptviewer.core.util.errors import OperationError
from ckptviewer.core.util.progress import run_steps
from ckptviewer.core.write.export import ExportOptions, export

CLI = [sys.executable, "-m", "ckptviewer"]


def _flip_byte_of(path, needle: bytes, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    pos = bytes(data).find(needle)
    assert pos > 0
    data[pos + at] ^= 0x01
    path.write_bytes(data)


@pytest.fixture
def damaged(tmp_path):
    """A torch.save file whose record for "a" has one flipped bit; "b" and the view "v" are intact."""
    big = torch.arange(4096.)
    path = tmp_path / "damaged.pt"
    torch.save({"a": big, "b": torch.ones(10), "v": torch.arange(100.)[10:20]}, path)
    _flip_byte_of(path, big[1000:1002].numpy().tobytes())
    return path


def test_opening_reads_no_tensor_bytes_and_checks_no_crc(damaged):
    with open_checkpoint(damaged) as ck:
        build_report(ck)
        report_text(ck)
        assert all(not st.source.verified for st in ck.storages.values())
        assert all(t.integrity_error is None for t in ck.all_tensors())
        sampled_histogram(ck.root["a"], size=16)           # a sample reads a few pages, checks nothing
        assert not ck.root["a"].integrity_checked


def test_reading_values_finds_the_damage_on_that_tensor_only(damaged):
    with open_checkpoint(damaged) as ck:
        a, b, v = ck.root["a"], ck.root["b"], ck.root["v"]
        stats = compute_stats(a)
        assert stats.numel == 4096              # values stay readable
        assert "fails its CRC-32 check" in a.integrity_error and a.integrity_checked
        b.sha256()
        v.read()                                 # a view: the rest of its record is read to settle the check
        assert b.integrity_error is None and v.integrity_error is None and v.integrity_checked


def test_checksums_json_and_text_carry_the_warning(damaged):
    out = subprocess.run(CLI + ["info", "--json", "--checksums", str(damaged)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    rep = json.loads(out.stdout)
    rec = {t["key"][0]: t for t in rep["tensors"]}
    assert "fails its CRC-32 check" in rec["a"]["warnings"][0]
    assert "warnings" not in rec["b"] and "warnings" not in rec["v"]
    assert any(w.startswith("tensor a: zip member") for w in rep["warnings"])


def test_info_verify_reads_every_member(damaged, tmp_path):
    out = subprocess.run(CLI + ["info", "--verify", str(damaged)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "1 member FAIL" in out.stdout and "tensors whose bytes fail: a" in out.stdout
    assert "a  [4096]  float32  cpu  CRC-32 MISMATCH" in out.stdout
    good = tmp_path / "good.pt"
    torch.save({"x": torch.ones(3)}, good)
    out = subprocess.run(CLI + ["info", "--verify", "--json", str(good)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    integrity = json.loads(out.stdout)["integrity"]
    assert integrity["ok"] and integrity["members"] == len(zipfile.ZipFile(good).namelist())
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    out = subprocess.run(CLI + ["info", "--verify", str(legacy)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "stores no checksums" in out.stdout


def test_verify_covers_pickles_and_compressed_members(tmp_path):
    src = tmp_path / "plain.pt"
    torch.save({"x": torch.arange(50.)}, src)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    with open_checkpoint(deflated) as ck:
        np.testing.assert_array_equal(ck.root["x"].read(), np.arange(50.0))
        assert ck.root["x"].integrity_error is None and ck.root["x"].integrity_checked
        report = run_steps(verify_steps(ck))
    assert report.ok and report.members == len(zipfile.ZipFile(src).namelist())
    # A damaged member that backs no tensor (the version record) is still found by the full pass.
    data = bytearray(src.read_bytes())
    pos = bytes(data).find(b"little")
    data[pos] ^= 0x20
    src.write_bytes(data)
    with open_checkpoint(src) as ck:
        report = run_steps(verify_steps(ck))
    assert [p.member.rsplit("/", 1)[-1] for p in report.problems] == ["byteorder"] and not report.tensors


def test_export_refuses_damaged_bytes_unless_forced(damaged, tmp_path):
    out = tmp_path / "out.pt"
    with open_checkpoint(damaged) as ck:
        with pytest.raises(OperationError, match="--force-bad-crc"):
            export(ck.root, str(out), ExportOptions(fmt="pt"), sources=[str(damaged)])
        assert not out.exists()
        result = export(ck.root, str(out), ExportOptions(fmt="pt", force_bad_crc=True), sources=[str(damaged)])
    assert any("written although" in n for n in result.notes)
    assert torch.load(out, weights_only=True)["b"].sum() == 10
    cli = subprocess.run(CLI + ["convert", str(damaged), "-o", str(tmp_path / "c.safetensors")], capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode != 0 and "--force-bad-crc" in cli.stderr
    cli = subprocess.run(CLI + ["convert", str(damaged), "-o", str(tmp_path / "c.safetensors"), "--force-bad-crc"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr


def test_a_known_mismatch_stops_the_plan_before_writing(damaged, tmp_path):
    from ckptviewer.core.write.export import plan_export
    with open_checkpoint(damaged) as ck:
        ck.root["a"].check_integrity()
        plan = plan_export(ck.root, ExportOptions(fmt="safetensors"))
        assert any("CRC-32" in p and "--force-bad-crc" in p for p in plan.problems)
        forced = plan_export(ck.root, ExportOptions(fmt="safetensors", force_bad_crc=True))
        assert not forced.problems and any("written although" in n for n in forced.notes)
