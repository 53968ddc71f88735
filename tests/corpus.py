"""Broken and resource-hungry files, built at test time, and the one routine every reader test runs on them.

``resource_attacks()`` maps a name to the bytes of a file that tries to exhaust memory or time, or is
simply broken (declared sizes past the end, absurd shapes, deep nesting, cycles, exponential DAGs,
zip bombs, bad safetensors headers). ``exercise(path)`` does what the viewer does with a file: open
it, list its tensors, build the info report with checksums, walk the display tree with every column,
plan an export, and scan it; tests assert it returns or raises a ``CheckpointError`` within bounds.
"""
from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

from hostile import PROTO2, glob, s, torch_legacy, torch_zip

MB = 1 << 20


def pint(n: int) -> bytes:
    """The shortest pickle opcode for the int ``n`` (BININT1, BININT or LONG1)."""
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(1 << 31) <= n < (1 << 31):
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def ints(values) -> bytes:
    return b"(" + b"".join(pint(v) for v in values) + b"t"


def put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def tensor(key: str, storage_numel: int, shape, stride=None, offset: int = 0, stype: str = "FloatStorage") -> bytes:
    """``torch._utils._rebuild_tensor_v2`` of a storage persistent id, as torch.save writes it."""
    if stride is None:
        stride, acc = [], 1
        for n in reversed(list(shape)):
            stride.insert(0, acc)
            acc *= max(n, 1)
    pid = b"(" + s("storage") + glob("torch", stype) + s(key) + s("cpu") + pint(storage_numel) + b"t"
    return (glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + pint(offset) + ints(shape)
            + ints(stride) + b"\x89" + glob("collections", "OrderedDict") + b")R" + b"tR")


def state_dict(entries: dict[str, bytes]) -> bytes:
    return PROTO2 + b"}(" + b"".join(s(k) + v for k, v in entries.items()) + b"u."


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zip_with(members: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of (name, content, method) members, written member by member (duplicates allowed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, method in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with _quiet_duplicates():
                z.writestr(info, data)
    return buf.getvalue()


class _quiet_duplicates:
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def amplifier(opcodes: bytes, count: int, head: bytes = b"", tail: bytes = b".") -> bytes:
    """A torch-like zip whose data.pkl repeats a 1-3 byte object-making opcode ``count`` times, deflated:
    a few hundred KB of file become megabytes of pickle and, unchecked, gigabytes of objects. An
    incompressible string (pushed and popped) keeps the member under the reader's inflate-ratio guard."""
    import random
    filler = random.Random(0).randbytes(count * len(opcodes) // 60 + 4096)
    body = (PROTO2 + b"X" + struct.pack("<I", len(filler)) + filler + b"0" + head + opcodes * count + tail)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def bomb_zip(inflated: int, ratio_padding: int = 0, declared: int | None = None) -> bytes:
    """A torch-like zip whose data.pkl is a deflate stream of ``inflated`` zero bytes (built in pieces).

    ``ratio_padding`` zero bytes are appended as stored blocks, which brings the ratio down under a
    guard; ``declared`` lies about the inflated size in the directory.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MB)
    parts = []
    for _ in range(inflated // MB):
        parts.append(c.compress(chunk))
    parts.append(c.compress(bytes(inflated % MB)))
    if ratio_padding:       # stored (level 0) blocks after a full flush keep the stream valid
        parts.append(c.flush(zlib.Z_FULL_FLUSH))
        stored = zlib.compressobj(0, zlib.DEFLATED, -15)
        parts.append(stored.compress(bytes(ratio_padding)) + stored.flush())
        inflated += ratio_padding
    else:
        parts.append(c.flush())
    comp = b"".join(parts)
    return _raw_deflated_zip("archive/data.pkl", comp, declared if declared is not None else inflated,
                             zlib.crc32(bytes(0)))


def _raw_deflated_zip(name: str, comp: bytes, size: int, crc: int) -> bytes:
    """A one-member zip written by hand, so the sizes in its headers can say anything."""
    raw = name.encode()
    lfh = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(comp), size, len(raw), 0) + raw
    cdh = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(comp), size, len(raw),
                      0, 0, 0, 0, 0, 0) + raw
    body = lfh + comp
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(cdh), len(body), 0)
    return body + cdh + eocd


def safetensors(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def exponential_dag(levels: int, leaf: bytes, as_dict: bool = False) -> bytes:
    """Level i is [level i-1, level i-1] (or a dict with two keys): 2**levels paths to the leaf."""
    out = PROTO2 + leaf + put(0)
    for i in range(1, levels):
        if as_dict:
            out += b"}(" + s("a") + get(i - 1) + s("b") + get(i - 1) + b"u" + put(i)
        else:
            out += b"(" + get(i - 1) + get(i - 1) + b"l" + put(i)
    return out + b"."


def resource_attacks() -> dict[str, bytes]:
    """name -> file bytes. Each must give a clear CheckpointError or a partial tree, within bounds."""
    one = tensor("0", 2, [2])
    big_numel = 10 ** 15
    out: dict[str, bytes] = {
        # Storage records missing, or shorter than the tensors need
        "zip_storage_missing": torch_zip(state_dict({"w": one}), {}),
        "zip_storage_short": torch_zip(state_dict({"w": tensor("0", 4, [4])}), {"0": bytes(8)}),
        "legacy_storage_missing": torch_legacy(state_dict({"w": one}), ["0"], []),
        "legacy_storage_short": torch_legacy(state_dict({"w": one}), ["0"], [struct.pack("<q", 2) + bytes(4)]),
        "legacy_count_header_cut": torch_legacy(state_dict({"w": one}), ["0"], [b"\x02\x00\x00"]),
        # Offsets and sizes past the end of a storage or the file
        "offset_past_storage": torch_zip(state_dict({"w": tensor("0", 2, [2], offset=10 ** 9)}), {"0": bytes(8)}),
        "legacy_count_4GiB_in_1KB": torch_legacy(state_dict({"w": one}), ["0"], [struct.pack("<q", 1 << 30)]),
        "legacy_count_negative": torch_legacy(state_dict({"w": one}), ["0"], [struct.pack("<q", -5) + bytes(8)]),
        "legacy_count_1e15": torch_legacy(state_dict({"w": tensor("0", big_numel, [big_numel])}), ["0"],
                                          [struct.pack("<q", big_numel) + bytes(64)]),
        # Declared sizes far beyond the file
        "declared_1e15_elements": torch_zip(state_dict({"w": tensor("0", big_numel, [big_numel])}), {"0": bytes(8)}),
        "1KB_claims_100GB": torch_zip(state_dict({"w": tensor("0", 25 * 10 ** 9, [5 * 10 ** 4, 5 * 10 ** 5])}),
                                      {"0": bytes(64)}),
        "numel_overflow_dims": torch_zip(state_dict({"w": tensor("0", 1, [2 ** 62, 2 ** 62, 2 ** 62])}),
                                         {"0": bytes(4)}),
        # Views: stride 0 with absurd numel, negative sizes/strides/offsets, mismatched ranks
        "stride0_1e16": torch_zip(state_dict({"w": tensor("0", 1, [10 ** 8, 10 ** 8], [0, 0])}), {"0": bytes(4)}),
        "stride0_2pow36": torch_zip(state_dict({"w": tensor("0", 1, [1 << 18, 1 << 18], [0, 0])}), {"0": bytes(4)}),
        "negative_size": torch_zip(state_dict({"w": tensor("0", 4, [-4], [1])}), {"0": bytes(16)}),
        "negative_stride": torch_zip(state_dict({"w": tensor("0", 4, [4], [-1], offset=3)}), {"0": bytes(16)}),
        "negative_offset": torch_zip(state_dict({"w": tensor("0", 4, [2], offset=-2)}), {"0": bytes(16)}),
        "rank_mismatch": torch_zip(state_dict({"w": tensor("0", 4, [2, 2], [1])}), {"0": bytes(16)}),
        "rank_65": torch_zip(state_dict({"w": tensor("0", 1, [1] * 65)}), {"0": bytes(4)}),
        # Deep nesting (the unpickler is iterative; walks have depth caps)
        "nested_lists_1e6": PROTO2 + b"]" * 10 ** 6 + b"a" * (10 ** 6 - 1) + b".",
        "nested_tuples_1e6": PROTO2 + b")" + b"\x85" * 10 ** 6 + b".",
        "nested_dicts_1e5": PROTO2 + (b"}" + s("k")) * 10 ** 5 + b"}" + b"s" * 10 ** 5 + b".",
        "nested_lists_in_zip": torch_zip(PROTO2 + b"]" * 10 ** 6 + b"a" * (10 ** 6 - 1) + b"."),
        "nested_tuples_in_legacy": torch_legacy(PROTO2 + b")" + b"\x85" * 10 ** 6 + b"."),
        # Cycles and exponential DAGs (2**100 paths)
        "list_contains_itself": torch_zip(PROTO2 + b"]" + put(0) + get(0) + b"a."),
        "dict_contains_itself": torch_zip(PROTO2 + b"}" + put(0) + b"(" + s("me") + get(0) + s("w") + one + b"u.",
                                          {"0": bytes(8)}),
        "standin_contains_itself": torch_zip(PROTO2 + glob("models", "Net") + b")\x81" + put(0) + b"}(" + s("self")
                                             + get(0) + s("_modules") + b"}" + s("_parameters") + b"}(" + s("w") + one
                                             + b"uub.", {"0": bytes(8)}),
        "exponential_dag_lists": torch_zip(exponential_dag(100, b"]" + one + b"a"), {"0": bytes(8)}),
        "exponential_dag_dicts": torch_zip(exponential_dag(100, b"}" + s("w") + one + b"s", as_dict=True),
                                           {"0": bytes(8)}),
        # Memo tricks
        "memo_index_2pow32": torch_zip(PROTO2 + b"N" + b"r\xf0\xff\xff\xff" + b"j\xf0\xff\xff\xff" + b"\x86."),
        "memo_text_index_huge": torch_zip(b"N" + b"p" + b"9" * 4000 + b"\ng" + b"9" * 4000 + b"\n\x86."),
        "memo_text_index_5000_digits": torch_zip(b"N" + b"p" + b"9" * 5000 + b"\n."),
        "memo_get_missing": torch_zip(PROTO2 + b"j\x00\x00\x00\x10."),
        # Declared string and integer lengths past the end
        "binunicode8_2pow63": torch_zip(PROTO2 + b"\x8d" + struct.pack("<Q", 1 << 63) + b"abc."),
        "long4_huge": torch_zip(PROTO2 + b"\x8b" + struct.pack("<i", 1 << 30) + b"."),
        # Zip bombs and zip structure
        "zip_bomb_honest_ratio": bomb_zip(100 * MB),
        "zip_bomb_lying_size": bomb_zip(100 * MB, declared=100),
        "zip_bomb_under_1000": bomb_zip(200 * MB, ratio_padding=100 * 1024),
        # One-byte opcodes that each make an object, inflated from a small member (a 66 KB file once
        # asked for 6 GB): the unpickler's object budget stops them (1.5 million is enough to pass it:
        # the budget is 500,000 units plus one per 2 bytes); a stand-in costs 4 bytes of pickle, inside
        # the budget, so that one opens, in bounded memory
        "amplify_empty_sets": amplifier(b"\x8f", 15 * 10 ** 5, head=b"]("),
        "amplify_empty_dicts": amplifier(b"}", 15 * 10 ** 5, head=b"]("),
        "amplify_memoize": amplifier(b"\x94", 15 * 10 ** 5, head=b"]"),
        "amplify_tuple1": amplifier(b"\x85", 15 * 10 ** 5, head=b"N"),
        "amplify_stand_ins": amplifier(b"h\x00)R", 5 * 10 ** 5, head=glob("models", "Net") + b"q\x00]("),
        "zip_duplicate_data_pkl": zip_with([("archive/data.pkl", PROTO2 + b"}.", 0),
                                            ("archive/data.pkl", PROTO2 + b"].", 0)]),
        "zip_dotdot_paths": zip_with([("../../escape/data.pkl", PROTO2 + b"}.", 0),
                                      ("archive/data.pkl", state_dict({"w": one}), 0),
                                      ("archive/data/../../../../tmp/ckptviewer_escape", bytes(8), 0),
                                      ("/abs/data/0", bytes(8), 0),
                                      ("archive/data/0", bytes(8), 0)]),
        "zip_dotdot_prefix": zip_with([("../data.pkl", state_dict({"w": one}), 0), ("../data/0", bytes(8), 0)]),
        # safetensors headers
        "st_header_longer_than_file": safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                                  bytes(8), length=10 ** 6),
        "st_header_100MB_declared": safetensors(b"{}", length=100 * 1000 * 1000 + 1),
        "st_overlapping": safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
        "st_out_of_range": safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                        "b": {"dtype": "F32", "shape": [10 ** 9], "data_offsets": [8, 4 * 10 ** 9 + 8]}},
                                       bytes(8)),
        "st_unknown_dtype": safetensors({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
        "st_shape_mismatch": safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
        "st_duplicate_names": b"",      # filled below (json.dumps cannot write duplicate keys)
        "st_deep_json": safetensors(b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"),
        "st_huge_shape": safetensors({"a": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 8]}},
                                     bytes(8)),
    }
    dup = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    out["st_duplicate_names"] = safetensors(dup, bytes(4))
    return out


def big_header_safetensors(path: Path, size: int = 100 * 1000 * 1000) -> None:
    """A valid safetensors file whose header is ``size`` bytes (JSON padded with spaces, as the format allows)."""
    head = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", size))
        f.write(head)
        pad = size - len(head)
        block = b" " * MB
        while pad > 0:
            f.write(block[:min(pad, MB)])
            pad -= MB
        f.write(bytes(8))


# -- what the viewer does with a file ---------------------------------------------------------------
TREE_NODES = 3000


def exercise(path) -> dict:
    """Open ``path`` and do everything the viewer would; returns facts for assertions.

    Raises only what the reader raises (tests assert that is a CheckpointError).
    """
    from ckptviewer.core import open_checkpoint
    from ckptviewer.core.write.export import ExportOptions, plan_export
    from ckptviewer.core.analyze.info import build_report, report_text
    from ckptviewer.core.model.interpret import analyze
    from ckptviewer.core.analyze.scan import scan_checkpoint
    from ckptviewer.core.model.tree import build_tree

    facts: dict = {}
    with open_checkpoint(path) as ck:
        entries = ck.tensor_entries()
        facts["tensors"] = len(entries)
        report = build_report(ck, checksums=True)
        facts["report"] = report
        facts["problems"] = [t.get("problem") for t in report["tensors"] if t.get("problem")]
        root = build_tree(ck, analyze(ck.root))
        facts["tree_nodes"] = _walk_tree(root)
        report_text(ck, depth=4)
        for fmt in ("pt", "safetensors"):
            plan = plan_export(ck.root, ExportOptions(fmt=fmt))
            facts[f"plan_{fmt}"] = len(plan.problems)
        facts["scan"] = scan_checkpoint(ck).rows()
        from ckptviewer.core.analyze.health import check_steps
        from ckptviewer.core.analyze.planes import default_request, preview_text, view_steps
        from ckptviewer.core.util.progress import run_steps
        facts["health"] = [f.kind for f in run_steps(check_steps(ck)).findings]
        for _key, t in entries[:50]:                       # the Values view and a preview of what it can read
            if t.readable and t.numel:
                run_steps(view_steps(t, default_request(t)))
                preview_text(t)
        facts["pickles"] = {p.pickle: dict(p.counts) for p in ck.pickles}
    return facts


def _walk_tree(root) -> int:
    """Expand the tree breadth first like a user clicking everything open (bounded), reading every column."""
    todo = [root]
    seen = 0
    while todo and seen < TREE_NODES:
        node = todo.pop(0)
        seen += 1
        for col in (node.shape_text, node.dtype_text, node.numel_text, node.size_text, node.device_text,
                    node.value_text):
            col()
        node.child_count_hint()
        if node.has_children:
            todo.extend(node.children()[:50])
    return seen


def measure(fn, *args) -> tuple[object, float, int]:
    """(result or the exception raised, seconds, peak bytes traced by tracemalloc) of ``fn(*args)``."""
    import gc
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as e:      # returned, not raised: the caller asserts its type
        out = e
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak


_RSS_SCRIPT = """
import resource, sys, time
sys.path.insert(0, {tests!r})
import corpus
from ckptviewer.core.util.errors import CheckpointError
from ckptviewer.core.analyze.scan import scan_file
def run(p):
    try:
        corpus.exercise(p)
    except CheckpointError:
        pass
    scan_file(p)
run({warmup!r})                       # imports and first-use costs are not the file's
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
run({path!r})
print(time.perf_counter() - t0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def measure_rss(path, warmup) -> tuple[float, int]:
    """(seconds, growth of the peak resident set in bytes) of exercise + scan in a fresh process.

    For files where tracemalloc's bookkeeping costs minutes (a million nested containers); the
    peak resident set also counts what tracemalloc cannot see."""
    import subprocess
    import sys
    code = _RSS_SCRIPT.format(tests=str(Path(__file__).resolve().parent), warmup=str(warmup), path=str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    seconds, grown = out.stdout.split()[-2:]
    return float(seconds), int(grown)

