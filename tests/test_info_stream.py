"""``info --json`` writes its report with the tensor records encoded in batches as they are made
(write_report_json); the text must be exactly json.dumps of build_report's dict, whatever the file holds."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
import torch

from ckptviewer.core import open_checkpoint
from ckptviewer.cli.common import drain
from ckptviewer.core.analyze import info
from ckptviewer.core.analyze.integrity import verify_steps


def _rich_file(path):
    base = torch.arange(12, dtype=torch.float32)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    model.extra_tensor = torch.ones(2)           # a tensor held as a module attribute
    torch.save({
        "model": model,
        "state_dict": {f"layer.{i}.weight": torch.full((2, 2), float(i)) for i in range(7)},
        "tied": base, "view": base[2:8].view(2, 3), "again": base,     # shared storage, one tensor twice
        "step": torch.tensor(5), "loss": torch.tensor(0.25),          # 0-d tensors (values read)
        "scalar_view": base[3],                                        # a 0-d view of a shared storage
        "epoch": 3, "name": "run", "lr": [0.1, 0.01],
    }, path)


def _damage_member(path, member_suffix):
    """Flip one byte of a stored member, leaving its recorded CRC-32: a damaged download."""
    with zipfile.ZipFile(path) as z:
        info_ = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
        header = info_.header_offset
    raw = bytearray(path.read_bytes())
    nlen = int.from_bytes(raw[header + 26:header + 28], "little")
    xlen = int.from_bytes(raw[header + 28:header + 30], "little")
    raw[header + 30 + nlen + xlen] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damaged", [False, True])
def test_streamed_report_is_json_dumps_of_the_report(tmp_path, monkeypatch, damaged):
    monkeypatch.setattr(info, "STREAM_BATCH", 3)           # several batches, one partial
    path = tmp_path / "rich.pt"
    _rich_file(path)
    if damaged:
        with open_checkpoint(str(path)) as ck:
            key = ck.root["step"].storage.key                 # a 0-d tensor whose value the report reads
        _damage_member(path, f"data/{key}")
    def opened():
        ck = open_checkpoint(str(path))
        if damaged:                     # as `info --verify` does: every member's CRC-32 is settled first
            drain(verify_steps(ck))
        return ck

    with opened() as ck:
        expected = json.dumps(info.build_report(ck), default=repr)
    with opened() as ck:
        pieces: list[str] = []
        missing = info.write_report_json(ck, pieces.append)
    text = "".join(pieces)
    assert text == expected
    assert missing == 0
    report = json.loads(text)
    assert len(report["tensors"]) >= 12
    if damaged:
        assert any("CRC-32" in w for w in report["warnings"])


def test_cli_json_for_several_files_is_one_list(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _rich_file(a)
    torch.save({"w": torch.zeros(3)}, b)
    out = subprocess.run([sys.executable, "-m", "ckptviewer", "info", "--json", str(a), str(b)],
                         capture_output=True, text=True, check=True).stdout
    with open_checkpoint(str(a)) as ca, open_checkpoint(str(b)) as cb:
        expected = json.dumps([info.build_report(ca), info.build_report(cb)], default=repr) + "\n"
    assert out == expected
