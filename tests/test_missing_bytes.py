"""Files read only in part: a cut legacy or zip file says so first, in `info`, `scan` and the JSON."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.core.analyze.scan import scan_checkpoint, scan_file

CLI = [sys.executable, "-m", "ckptviewer"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """48 tensors of 256 KiB, saved in both formats (what the issue's 16 MB file looked like)."""
    folder = tmp_path_factory.mktemp("big")
    torch.manual_seed(0)
    sd = {f"layer{i}.weight": torch.randn(256, 256) for i in range(48)}
    torch.save(sd, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(sd, folder / "zip.pt")
    return folder


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
@pytest.mark.parametrize("fraction", [0.03, 0.5, 0.97])
def test_a_cut_file_says_so_first(big, tmp_path, fmt, fraction):
    raw = (big / f"{fmt}.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: int(len(raw) * fraction)])
    out = run("info", cut)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("truncated: ") and " of 48 tensors have no bytes" in first
    assert "download or copy the file again" in first
    report = json.loads(run("info", "--json", cut).stdout)
    missing = report["missing_bytes"]
    assert missing["truncated"] and missing["tensors"] == 48 and missing["file_size"] == cut.stat().st_size
    assert missing["bytes_needed"] == 48 * 256 * 256 * 4
    unreadable = [t for t in report["tensors"] if "problem" in t]
    assert missing["tensors_without_bytes"] == len(unreadable) > 0
    # about as many tensors are missing as the cut removed
    assert abs(len(unreadable) - 48 * (1 - fraction)) <= 2
    scan = run("scan", cut)
    assert scan.returncode == 2 and "clean" not in scan.stdout.splitlines()[-1], scan.stdout
    assert json.loads(run("scan", "--json", cut).stdout)["status"] == 2
    assert run("info", "--checksums", cut).returncode == 1


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_whole_file_has_no_missing_bytes(big, fmt):
    report = json.loads(run("info", "--json", big / f"{fmt}.pt").stdout)
    assert report["missing_bytes"] is None
    assert not run("info", big / f"{fmt}.pt").stdout.startswith("truncated")
    assert run("scan", big / f"{fmt}.pt").returncode == 0


def test_missing_records_are_incomplete_not_truncated(tmp_path):
    """A zip whose directory is whole but whose records are missing or short: not cut short, still not whole."""
    from hostile import PROTO2, glob, s, torch_zip

    def tensor(key, numel):
        pid = b"(" + s("storage") + glob("torch", "FloatStorage") + s(key) + s("cpu") + b"K" + bytes([numel]) + b"t"
        return (glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + b"K\x00" + b"K" + bytes([numel])
                + b"\x85" + b"K\x01\x85" + b"\x89" + glob("collections", "OrderedDict") + b")R" + b"tR")
    body = PROTO2 + b"}(" + s("ok") + tensor("0", 2) + s("short") + tensor("1", 4) + s("missing") + tensor("2", 2) \
        + b"u."
    path = tmp_path / "records.pt"
    path.write_bytes(torch_zip(body, {"0": bytes(8), "1": bytes(8)}))
    with open_checkpoint(path) as ck:
        missing = ck.missing_bytes()
        assert missing is not None and not missing.truncated
        assert (missing.tensors, missing.without_bytes, missing.bytes_needed, missing.bytes_missing) == (3, 2, 32, 16)
        assert missing.headline().startswith("incomplete: 2 of 3 tensors have no bytes")
        assert scan_checkpoint(ck).status == 2       # what the window's safety line is built from
    out = run("info", path)
    assert out.stdout.startswith("incomplete: 2 of 3 tensors have no bytes")


def test_scan_words_unknown_classes_for_todays_torch(ckpts):
    out = run("scan", ckpts["whole_model.pt"])
    verdict = out.stdout.splitlines()[-1]
    assert "would be imported by plain torch.load" not in verdict
    assert "since torch 2.6" in verdict and "weights_only" in verdict and "ckptviewer doctor" in verdict
    assert out.returncode == 0


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_the_doctor_says_a_cut_file_does_not_load(big, tmp_path, fmt):
    """The reader opens cut files to show what they hold; torch.load does not, and the doctor says so."""
    from ckptviewer.core.analyze.doctor import diagnose
    raw = (big / f"{fmt}.pt").read_bytes()
    for keep in (len(raw) // 2, len(raw) - 30):         # bytes missing / only the zip directory missing
        cut = tmp_path / f"cut{keep}.pt"
        cut.write_bytes(raw[:keep])
        d = diagnose(str(cut), import_torch=False)
        assert not d.loads and {r.kind for r in d.reasons if r.blocks} == {"truncated"}, (keep, d.reasons)
        with pytest.raises(Exception):
            torch.load(cut, weights_only=True)
