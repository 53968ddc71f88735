"""Hand-made pickles and containers for tests of what the reader must never do.

Every payload is harmless: if it ever ran, it would only create a marker file, which tests assert
is absent. The pickles are written opcode by opcode, so they do exactly what they say.
"""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

PROTO2 = b"\x80\x02"


def s(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    return s(module) + s(name) + b"\x93"


def touch_cmd(marker: Path) -> str:
    return f"touch {marker}"


def py_touch(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def payloads(marker: Path) -> dict[str, bytes]:
    """name -> a complete pickle (protocol 2 or 4) that would create ``marker`` if executed."""
    sh = touch_cmd(marker)
    py = py_touch(marker)
    out = {
        # GLOBAL + REDUCE: os.system("touch marker")
        "global_reduce_os_system": PROTO2 + glob("os", "system") + s(sh) + b"\x85R.",
        "global_reduce_posix_system": PROTO2 + glob("posix", "system") + s(sh) + b"\x85R.",
        # STACK_GLOBAL (protocol 4) + REDUCE: builtins.exec(code)
        "stack_global_exec": b"\x80\x04" + stack_glob("builtins", "exec") + s(py) + b"\x85R.",
        "stack_global_eval": b"\x80\x04" + stack_glob("builtins", "eval") + s(f"exec({py!r})") + b"\x85R.",
        # getattr(__import__("os"), "system")("touch marker")
        "getattr_chain": (PROTO2 + glob("builtins", "getattr") + glob("builtins", "__import__") + s("os")
                          + b"\x85R" + s("system") + b"\x86R" + s(sh) + b"\x85R."),
        # subprocess.Popen(["touch", marker])
        "subprocess_popen": PROTO2 + glob("subprocess", "Popen") + b"]" + b"(" + s("touch") + s(str(marker))
                            + b"e\x85R.",
        # INST (protocol 0): instantiate os.system with an argument
        "inst_os_system": b"(" + b"S'" + sh.encode() + b"'\n" + b"ios\nsystem\n.",
        # OBJ (protocol 1): class and arguments after MARK
        "obj_os_system": b"(" + glob("os", "system") + s(sh) + b"o.",
        # NEWOBJ with a class whose __new__ could have effects
        "newobj_popen": PROTO2 + glob("subprocess", "Popen") + b"]" + s("touch") + b"a" + s(str(marker)) + b"a"
                        + b"\x85\x81.",
        # NEWOBJ_EX (protocol 4)
        "newobj_ex_popen": b"\x80\x04" + stack_glob("subprocess", "Popen") + b"]" + s("touch") + b"a"
                           + s(str(marker)) + b"a" + b"\x85}\x92.",
        # BUILD whose target class has a __setstate__ (here: a stand-in for a class that would run code)
        "build_setstate": PROTO2 + glob("collections", "OrderedDict") + b")R" + glob("os", "system") + s(sh)
                          + b"\x85R" + b"b.",
        "build_on_standin": PROTO2 + glob("evil.module", "Thing") + b")\x81" + b"}" + s("__setstate__")
                            + glob("os", "system") + b"sb.",
        # nested pickle: pickle.loads(bytes_of_a_pickle_calling_os_system)
        "nested_pickle_loads": PROTO2 + glob("pickle", "loads") + b"C" + bytes([0]) + b"\x85R.",
        # torch.load on embedded bytes
        "nested_torch_load": PROTO2 + glob("torch", "load") + s("/dev/null") + b"\x85R.",
        # EXT1: an extension code that a registry could map to os.system
        "ext1": PROTO2 + b"\x82\x01" + s(sh) + b"\x85R.",
    }
    inner = PROTO2 + glob("os", "system") + s(sh) + b"\x85R."
    out["nested_pickle_loads"] = (PROTO2 + glob("pickle", "loads") + b"C" + bytes([len(inner)]) + inner
                                  + b"\x85R.")
    return out


def torch_zip(pickle_bytes: bytes, storages: dict[str, bytes] | None = None, archive: str = "archive",
              extra: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like torch.save's, with ``pickle_bytes`` as data.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", pickle_bytes)
        z.writestr(f"{archive}/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(f"{archive}/data/{key}", data)
        for name, data in (extra or {}).items():
            z.writestr(f"{archive}/{name}", data)
        z.writestr(f"{archive}/version", "3\n")
    return buf.getvalue()


def torch_legacy(pickle_bytes: bytes, keys: list[str] | None = None, storages: list[bytes] | None = None) -> bytes:
    """The legacy container around ``pickle_bytes``: magic, protocol, sys_info, object, keys, storages."""
    import pickle
    magic = PROTO2 + b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
    proto = pickle.dumps(1001, protocol=2)
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    out = magic + proto + sys_info + pickle_bytes + pickle.dumps(keys or [], protocol=2)
    for data in storages or []:
        out += data
    return out
