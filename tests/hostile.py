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
    out.update(more_payloads(marker))
    return out


def more_payloads(marker: Path) -> dict[str, bytes]:
    """The rest of the issue 7 corpus: every way a pickle can name or reach a callable."""
    sh = touch_cmd(marker)
    inner = PROTO2 + glob("os", "system") + s(sh) + b"\x85R."
    return {
        # EXT2 / EXT4: two- and four-byte extension codes
        "ext2": PROTO2 + b"\x83\x01\x02" + s(sh) + b"\x85R.",
        "ext4": PROTO2 + b"\x84\x01\x02\x03\x04" + s(sh) + b"\x85R.",
        # torch.storage._load_from_bytes(b) is torch.load(BytesIO(b), weights_only=False)
        "nested_load_from_bytes": (PROTO2 + glob("torch.storage", "_load_from_bytes") + b"C" + bytes([len(inner)])
                                   + inner + b"\x85R."),
        # Python 2 names, protocol 0: __builtin__.eval is builtins.eval under fix_imports
        "py2_builtin_eval": b"c__builtin__\neval\n(S'" + f"__import__('os').system({sh!r})".replace("'", '"').encode()
                            + b"'\ntR.",
        # STACK_GLOBAL operands through the memo (MEMOIZE, then BINGET after POPs)
        "memo_stack_global": (b"\x80\x04" + s("os") + b"\x94" + s("system") + b"\x94" + b"00" + b"h\x00h\x01"
                              + b"\x93" + s(sh) + b"\x85R."),
        # A dotted name is a getattr chain from protocol 4: glob.os is the os module
        "dotted_chain_glob": b"\x80\x04" + stack_glob("glob", "os.system") + s(sh) + b"\x85R.",
        "dotted_chain_torch_utils": b"\x80\x04" + stack_glob("torch._utils", "os.system") + s(sh) + b"\x85R.",
        # A module name computed while loading: str(b"os", "ascii") is "os"
        "computed_stack_global": (b"\x80\x04" + glob("builtins", "str") + b"C\x02os" + s("ascii") + b"\x86R"
                                  + s("system") + b"\x93" + s(sh) + b"\x85R."),
        # A persistent id built by calling os.system (runs before any persistent_load sees it)
        "persid_with_call": PROTO2 + b"(" + s("storage") + glob("os", "system") + s(sh) + b"\x85R" + b"tQ.",
        # Persistent ids that are not storage tuples: text (protocol 0), a string, a legacy module class
        "persid_text": b"P" + sh.encode() + b"\n" + glob("os", "system") + b"\x86.",
        "persid_string": PROTO2 + s(sh) + b"Q" + glob("os", "system") + b"\x86.",
        "persid_module_class": (PROTO2 + b"(" + s("module") + glob("os", "system") + s("evil.py") + s("src") + b"tQ"
                                + s(sh) + b"\x85R."),
        # os.system is called, then the pickle is cut short (plain pickle has already run it)
        "truncated_after_call": PROTO2 + glob("os", "system") + s(sh) + b"\x85R",
    }


# Payloads that create the marker under plain ``pickle.loads`` (the others only name dangerous globals,
# or need a loader's persistent_load / copyreg registry to run).
LIVE = {"global_reduce_os_system", "global_reduce_posix_system", "stack_global_exec", "stack_global_eval",
        "getattr_chain", "subprocess_popen", "inst_os_system", "obj_os_system", "build_setstate",
        "nested_pickle_loads", "nested_load_from_bytes", "py2_builtin_eval", "memo_stack_global",
        "dotted_chain_glob", "dotted_chain_torch_utils", "computed_stack_global", "persid_with_call",
        "truncated_after_call"}

# What a scan must flag for each payload (qualified names; "<computed>" for a computed STACK_GLOBAL).
EXPECTED_DANGEROUS = {
    "global_reduce_os_system": {"os.system"},
    "global_reduce_posix_system": {"posix.system"},
    "stack_global_exec": {"builtins.exec"},
    "stack_global_eval": {"builtins.eval"},
    "getattr_chain": {"builtins.getattr", "builtins.__import__"},
    "subprocess_popen": {"subprocess.Popen"},
    "inst_os_system": {"os.system"},
    "obj_os_system": {"os.system"},
    "newobj_popen": {"subprocess.Popen"},
    "newobj_ex_popen": {"subprocess.Popen"},
    "build_setstate": {"os.system"},
    "build_on_standin": {"os.system"},
    "nested_pickle_loads": {"pickle.loads"},
    "nested_torch_load": {"torch.load"},
    "ext1": {"copyreg.extension_code_1"},
    "ext2": {"copyreg.extension_code_513"},
    "ext4": {"copyreg.extension_code_67305985"},
    "nested_load_from_bytes": {"torch.storage._load_from_bytes"},
    "py2_builtin_eval": {"__builtin__.eval"},
    "memo_stack_global": {"os.system"},
    "dotted_chain_glob": {"glob.os.system"},
    "dotted_chain_torch_utils": {"torch._utils.os.system"},
    "computed_stack_global": {"<computed>.system"},
    "persid_with_call": {"os.system"},
    "persid_text": {"os.system"},
    "persid_string": {"os.system"},
    "persid_module_class": {"os.system"},
    "truncated_after_call": {"os.system"},
}


def torchscript(data_pkl: bytes, constants_pkl: bytes = PROTO2 + b").", archive: str = "archive") -> bytes:
    """A zip laid out like torch.jit.save's: data.pkl, constants.pkl, code/, .data/version."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/code/__torch__/m.py", "class M(Module):\n  __parameters__ = []\n")
        z.writestr(f"{archive}/constants.pkl", constants_pkl)
        z.writestr(f"{archive}/version", "8\n")
        z.writestr(f"{archive}/.data/version", "8\n")
    return buf.getvalue()


# Where a payload can sit in each container (name -> builder of the whole file from the payload pickle).
CLEAN_DICT = PROTO2 + b"}."


def containers() -> dict:
    import pickle
    return {
        "zip": lambda p: torch_zip(p),
        "legacy": lambda p: torch_legacy(p),
        "legacy_sys_info": lambda p: _legacy_slots(sys_info=p),
        "legacy_key_list": lambda p: _legacy_slots(keys=p),
        "torchscript_data": lambda p: torchscript(p),
        "torchscript_constants": lambda p: torchscript(CLEAN_DICT, p),
        "plain_pickle": lambda p: p,
        "after_a_pickle": lambda p: pickle.dumps({"weights": [1.0, 2.0]}, protocol=2) + p,
    }


def _legacy_slots(*, sys_info: bytes | None = None, keys: bytes | None = None) -> bytes:
    """A legacy file whose sys_info or storage key list pickle is the payload."""
    import pickle
    magic = PROTO2 + b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
    info = sys_info or pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    return magic + pickle.dumps(1001, protocol=2) + info + CLEAN_DICT + (keys or pickle.dumps([], protocol=2))


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
