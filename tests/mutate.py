"""Mutations of valid checkpoints for fuzzing: bit flips, truncation, insertion, deletion, opcode splicing.

Used by the hypothesis test in the normal suite (test_fuzz_reader.py) and by the long fuzz run
(bench/fuzz_reader.py). A mutation applies either to the whole file or to one pickle inside it
(a zip's data.pkl, rebuilt into a zip with correct CRCs, so the mutation reaches the unpickler
instead of stopping at the CRC check; or the pickles at the start of a legacy file).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from ckptviewer.core.analyze.scan import walk_pickle

# Byte strings worth inserting: opcodes with arguments that stress lengths, memo indexes and marks.
INTERESTING = [
    b"(", b")", b"]", b"}", b"t", b"l", b"d", b"e", b"u", b"s", b"a", b"b", b"R", b"\x81", b"\x92", b"\x93", b"\x94",
    b"0", b"1", b"2", b".", b"N", b"Q", b"h\x00", b"h\xff", b"j\xff\xff\xff\xff", b"r\xff\xff\xff\xff", b"q\x00",
    b"X\xff\xff\xff\xff", b"\x8d" + b"\xff" * 8, b"\x8e" + b"\xff" * 8, b"B\xff\xff\xff\x7f", b"\x8a\xff",
    b"\x8b\xff\xff\xff\x7f", b"J\xff\xff\xff\xff", b"K\x00", b"M\xff\xff", b"\x80\x05", b"\x80\x09", b"\x95" + b"\xff" * 8,
    b"\x82\x01", b"\x97", b"\x98", b"ccollections\nOrderedDict\n", b"cos\nsystem\n", b"ctorch\nFloatStorage\n",
    b"ctorch._utils\n_rebuild_tensor_v2\n", b"\x8c\x07storage", b"\x8c\x010", b"I99999999999999999999\n",
    b"p0\n", b"g0\n", b"S'x'\n", b"F1e308\n", b"\x00", b"\xff" * 8, b"\x7f\xff\xff\xff\xff\xff\xff\x7f",
]


@dataclass
class Seed:
    name: str
    raw: bytes
    kind: str                       # "zip", "legacy", "safetensors", "other"
    pickle_member: str | None = None
    pickle_span: tuple[int, int] | None = None     # legacy: bytes [0, end of the 5th pickle)

    def pickle_bytes(self) -> bytes:
        if self.kind == "zip":
            return zipfile.ZipFile(io.BytesIO(self.raw)).read(self.pickle_member)
        if self.pickle_span:
            return self.raw[self.pickle_span[0]:self.pickle_span[1]]
        return self.raw


def make_seed(name: str, raw: bytes) -> Seed:
    if raw[:4] == b"PK\x03\x04":
        z = zipfile.ZipFile(io.BytesIO(raw))
        member = next(n for n in z.namelist() if n.endswith("data.pkl"))
        return Seed(name, raw, "zip", member)
    if raw[:2] == b"\x80\x02" and raw[2:4] == b"\x8a\x0a":
        pos = 0
        for _ in range(5):
            pos = walk_pickle(raw, start=pos).end
        return Seed(name, raw, "legacy", pickle_span=(0, pos))
    if raw[8:9] == b"{":
        return Seed(name, raw, "safetensors")
    return Seed(name, raw, "other")


def _at(frac: float, n: int) -> int:
    return min(int(frac * (n + 1)), n)


def apply(data: bytes, ops: list[tuple], donors: list[bytes]) -> bytes:
    """Apply mutation ``ops`` (positions as fractions of the current length) to ``data``."""
    buf = bytearray(data)
    for op in ops:
        kind = op[0]
        n = len(buf)
        if kind == "flip" and n:
            i = _at(op[1], n - 1)
            buf[i] ^= 1 << op[2]
        elif kind == "byte" and n:
            buf[_at(op[1], n - 1)] = op[2]
        elif kind == "truncate":
            del buf[_at(op[1], n):]
        elif kind == "insert":
            i = _at(op[1], n)
            buf[i:i] = op[2]
        elif kind == "interesting":
            i = _at(op[1], n)
            buf[i:i] = INTERESTING[op[2] % len(INTERESTING)]
        elif kind == "delete":
            i = _at(op[1], n)
            del buf[i:i + op[2]]
        elif kind == "splice" and donors:           # opcodes from another pickle, inserted or overwritten
            donor = donors[op[2] % len(donors)]
            a = _at(op[3], len(donor))
            piece = donor[a:a + op[4]]
            i = _at(op[1], n)
            if op[5]:
                buf[i:i + len(piece)] = piece
            else:
                buf[i:i] = piece
        elif kind == "duplicate" and n:            # repeat a slice (grows containers, marks, memo use)
            i = _at(op[1], n - 1)
            piece = bytes(buf[i:i + op[2]])
            buf[i:i] = piece * op[3]
    return bytes(buf)


def mutate(seed: Seed, level: str, ops: list[tuple], donors: list[bytes]) -> bytes:
    """The mutated file: ``level`` "file" mutates raw bytes, "pickle" only the seed's pickle."""
    if level == "file" or seed.kind in ("safetensors", "other"):
        return apply(seed.raw, ops, donors)
    if seed.kind == "zip":
        src = zipfile.ZipFile(io.BytesIO(seed.raw))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == seed.pickle_member:
                    data = apply(data, ops, donors)
                z.writestr(info.filename, data)
        return out.getvalue()
    a, b = seed.pickle_span
    return seed.raw[:a] + apply(seed.raw[a:b], ops, donors) + seed.raw[b:]


def small_seeds(folder) -> list[Seed]:
    """Small valid files of every container, made by torch (kept small so each example is fast)."""
    import collections
    from pathlib import Path

    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    sd = lin.state_dict()
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    base = torch.arange(12.0).reshape(3, 4)
    objects = {
        "state_dict.pt": (sd, {}),
        "state_dict_legacy.pt": (sd, {"_use_new_zipfile_serialization": False}),
        "checkpoint.pt": ({"epoch": 3, "model": sd, "optim": opt.state_dict(), "loss": torch.tensor(0.5),
                           "cfg": {"lr": 0.1, "tags": ["a", "b"]}, "np": np.arange(3)}, {}),
        "checkpoint_legacy.pt": ({"epoch": 3, "model": sd, "optim": opt.state_dict()},
                                 {"_use_new_zipfile_serialization": False}),
        "views.pt": ({"t": base.t(), "row": base[1], "step": base[::2, ::3], "ex": torch.ones(1).expand(5),
                      "h": base.half(), "i": torch.arange(4), "b": torch.tensor([True, False])}, {}),
        "module.pt": (lin, {}),
        "module_legacy.pt": (lin, {"_use_new_zipfile_serialization": False}),
        "shared.pt": (collections.OrderedDict(best=sd, last=sd), {}),
    }
    seeds = []
    for name, (obj, kw) in objects.items():
        path = folder / name
        torch.save(obj, path, **kw)
        seeds.append(make_seed(name, path.read_bytes()))
    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "sd.safetensors", metadata={"k": "v"})
    seeds.append(make_seed("sd.safetensors", (folder / "sd.safetensors").read_bytes()))
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, folder / "scripted.pt")
    seeds.append(make_seed("scripted.pt", (folder / "scripted.pt").read_bytes()))
    return seeds
