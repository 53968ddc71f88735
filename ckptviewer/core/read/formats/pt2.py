"""torch.export archives (``.pt2``) and AOTInductor packages, read from their JSON and raw weight files.

``torch.export.save`` writes a zip (torch's own writer: stored members, 64-byte aligned) with a top folder
named after the file (``archive/`` for a buffer) holding ``archive_format`` (``pt2``), ``archive_version``,
``models/<name>.json`` (the program: graph and signature), ``data/weights/<name>_weights_config.json`` and
``data/constants/<name>_constants_config.json``, raw weight files ``data/weights/weight_N`` and
``data/constants/tensor_N``, example inputs ``data/sample_inputs/<name>.pt`` and ``extra/*``.

A config maps each fully qualified name to ``{"path_name", "is_param", "use_pickle", "tensor_meta":
{"dtype", "sizes", "strides", "storage_offset", "device", "layout", "requires_grad"}}``. A raw file is the
whole storage's bytes with no header, shared by every name whose ``path_name`` it is; each tensor is a
strided view of it (``as_strided``), its dtype given by the export schema's own ScalarType numbering
(not c10's). ``use_pickle`` payloads (tensor subclasses, script and opaque objects) and the sample inputs
are pickles; they are read with our own interpreter like any checkpoint, never with ``pickle``.
Symbolic sizes are sympy text that torch would evaluate; they are shown as text and never evaluated.

The root this reader builds, per program ``m``: ``{m: {"state_dict": parameters and persistent buffers
(what ``ExportedProgram.state_dict`` holds), "constants": tensor constants, non-persistent buffers and
objects (``ExportedProgram.constants``), "signature": inputs and outputs, "sample_inputs": (args,
kwargs)}}``, plus ``"extra"`` (the extra files) and ``"aotinductor"`` for a compiled package.

AOTInductor packages (``torch._inductor.aoti_compile_and_package``) hold ``data/aotinductor/<m>/``: C++
sources, JSON metadata and, usually, a compiled ``.so`` that loading the package would run. Their
constants are described as text in ``<hash>.wrapper.cpp`` (``constants_info_[i].name/dtype/offset/
data_size/shape/stride/original_fqn``) and stored, one after another at 64-byte aligned positions, in the
``.so`` between the symbols ``_binary_constants_bin_start`` and ``_end`` (found by reading the ELF symbol
tables as data), in a ``*_weights.blob`` member, in a ``.o`` (C++-only packages), or as nested
``torch.save`` files listed in ``weights_config.json``. Nothing of the package is compiled, loaded or run.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ...model.checkpoint import Checkpoint, PickleGlobals
from ...model.dtypes import BY_NAME, DType
from ...model.interpret import PROGRAM_TYPES
from ...model.objects import PickledDict, Unreadable
from ...model.tensor import StorageRef, TensorRef
from ...source.regions import ByteSource
from ...util.errors import CheckpointError, CorruptFileError
from ..pickle.unpickle import unpickle
from .elf import find_symbols
from .torch_zip import member_source, read_torch_zip
from .zipreader import PICKLE_MAX_RATIO, ZipArchive

# torch/_export/serde/schema.py ScalarType: the export schema's own numbering (not c10's).
SCALAR_TYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
                8: "float64", 9: "complex32", 10: "complex64", 11: "complex128", 12: "bool", 13: "bfloat16",
                28: "uint16", 29: "float8_e4m3fn", 30: "float8_e5m2", 31: "float8_e4m3fnuz",
                32: "float8_e5m2fnuz", 33: "float8_e8m0fnu", 34: "uint32", 35: "uint64"}
LAYOUTS = {0: "unknown", 1: "sparse_coo", 2: "sparse_csr", 3: "sparse_csc", 4: "sparse_bsr", 5: "sparse_bsc",
           6: "_mkldnn", 7: "strided"}
MAX_CONFIG = 256 << 20          # a weights config or program JSON larger than this is refused
MAX_CPP = 256 << 20             # the text of a wrapper.cpp we read for its constant table
MAX_EXTRA_TEXT = 4096           # extra/ files shown as text up to this size
AOTI_ALIGN = 64
_SAFE_NAME = re.compile(r"^[\w.\-]{1,200}$")
_CONST_LINE = re.compile(r"constants_info_\[(\d{1,9})\]\.(\w{1,40}) = (.{0,4000}?);\s*$", re.M)
_IO_LINE = re.compile(r"(inputs|outputs)_info_\[(\d{1,9})\]\.name = \"([^\"\n]{0,400})\";")
_SPEC_LINE = re.compile(r"(in|out)_spec_ = R\"\((.{0,100000}?)\)\";", re.S)
_SYMBOL_NAME = re.compile(r"Symbol\('(\w{1,80})'")
_BLOB_START, _BLOB_END = "_binary_constants_bin_start", "_binary_constants_bin_end"
# Type names the tree shows for a program and a compiled model (see interpret.PROGRAM_TYPES).
PROGRAM_TYPE, AOTI_TYPE = PROGRAM_TYPES


def pt2_prefix(archive: ZipArchive) -> str | None:
    """The top folder of a ``.pt2`` archive (``archive_format`` says ``pt2``, or the ≤2.7 layout without it:
    ``models/*.json`` beside ``data/``), or None when the zip is something else."""
    for name in archive.order:
        if name.rsplit("/", 1)[-1] == "archive_format" and name.count("/") <= 1:
            m = archive.members[name]
            if m.size <= 64:
                try:
                    if archive.read(name, limit=64).strip() == b"pt2":
                        return name[:-len("archive_format")]
                except CheckpointError:
                    return None
    for name in archive.order:
        parts = name.split("/")
        if len(parts) == 3 and parts[1] == "models" and parts[2].endswith(".json"):
            prefix = parts[0] + "/"
            if f"{prefix}data.pkl" not in archive and any(n.startswith(prefix + "data/") for n in archive.order):
                return prefix
    return None


def read_pt2(archive: ZipArchive, path: str, *, resources: list | None = None) -> Checkpoint:
    prefix = pt2_prefix(archive)
    if prefix is None:   # pragma: no cover - the caller checked
        raise CorruptFileError("not a .pt2 archive")
    reader = _Pt2Reader(archive, prefix, path)
    root = reader.read()
    fmt = "torch-export" if reader.programs or not reader.aoti else "aotinductor"
    ckpt = Checkpoint(path, fmt, root, storages=reader.storages, warnings=reader.warnings, meta=reader.meta,
                      pickles=reader.pickles, file_size=archive.end - archive.start, resources=resources)
    ckpt.archives = [archive]
    return ckpt


class _Pt2Reader:
    def __init__(self, archive: ZipArchive, prefix: str, path: str):
        self.archive = archive
        self.prefix = prefix
        self.path = path
        self.warnings: list[str] = list(archive.warnings)
        self.pickles: list[PickleGlobals] = []
        self.storages: dict[str, StorageRef] = {}
        self.meta: dict[str, Any] = {"archive": prefix.rstrip("/") or "(none)"}
        self.programs: list[str] = []
        self.aoti: list[str] = []

    # -- members ----------------------------------------------------------------------------------
    def _names(self, folder: str) -> list[str]:
        full = self.prefix + folder
        return [n[len(self.prefix):] for n in self.archive.order if n.startswith(full)]

    def _has(self, name: str) -> bool:
        return self.prefix + name in self.archive

    def _text(self, name: str, limit: int) -> str:
        return self.archive.read(self.prefix + name, limit=limit, check_crc=True).decode("utf-8", "replace")

    def _json(self, name: str, limit: int = MAX_CONFIG) -> Any:
        m = self.archive.members[self.prefix + name]
        if m.size > limit:
            raise CorruptFileError(f"{name} declares {m.size:,} bytes (the limit is {limit:,})")
        try:
            return json.loads(self._text(name, limit))
        except (ValueError, RecursionError) as e:
            raise CorruptFileError(f"{name} is not valid JSON ({str(e)[:100]})") from None

    # -- the archive ------------------------------------------------------------------------------
    def read(self) -> dict:
        for rec, key in (("archive_format", "archive_format"), ("archive_version", "archive_version"),
                         (".data/version", "data_version"), ("byteorder", "byteorder")):
            if self._has(rec):
                try:
                    self.meta[key] = self._text(rec, 64).strip()[:40]
                except CheckpointError as e:
                    self.warnings.append(f"record {rec}: {e.message}")
        if self.meta.get("byteorder", "little") != "little":
            self.warnings.append(f"byteorder {self.meta['byteorder']!r}: raw weights are read as little-endian")
        root: dict = {}
        names = set()
        for n in self._names("models/"):
            if n.endswith(".json") and n.count("/") == 1:
                names.add(n[len("models/"):-len(".json")])
        for folder, suffix in (("data/weights/", "_weights_config.json"),
                               ("data/constants/", "_constants_config.json")):
            for n in self._names(folder):
                if n.endswith(suffix) and n.count("/") == 2:
                    names.add(n[len(folder):-len(suffix)])
        for folder in ("data/weights/", "data/constants/"):       # the ≤2.7 layout: data/weights/<m>.pt
            for n in self._names(folder):
                if n.endswith(".pt") and n.count("/") == 2:
                    names.add(n[len(folder):-len(".pt")])
        for model in sorted(names):
            try:
                root[model] = self._program(model)
                self.programs.append(model)
            except CheckpointError as e:
                self.warnings.append(f"program {model!r}: {e.message}")
                root[model] = Unreadable("program", e.message)
        if self._names("data/aotinductor/"):
            try:
                root["aotinductor"] = self._aoti()
            except CheckpointError as e:
                self.warnings.append(f"AOTInductor package: {e.message}")
                root["aotinductor"] = Unreadable("AOTInductor package", e.message)
        extra = self._extra()
        if extra:
            root["extra"] = extra
        self.meta["programs"] = self.programs
        if not names and not self.aoti:
            orphans = [n for n in self._names("data/") if n.rsplit("/", 1)[-1].startswith(("weight_", "tensor_"))]
            if orphans:
                self.warnings.append(f"the archive holds {len(orphans)} weight file(s) ({', '.join(orphans[:4])}) but "
                                     f"no program or config describing them: torch.export.save stopped part way (it "
                                     f"fails on dtypes the export schema lacks, such as float4_e2m1fn_x2), so their "
                                     f"bytes cannot be interpreted")
            else:
                self.warnings.append("the archive holds no program, weights or compiled model (an incomplete save?)")
        return root

    def _extra(self) -> dict:
        out: dict = {}
        for n in self._names("extra/"):
            m = self.archive.members[self.prefix + n]
            label = n[len("extra/"):]
            if m.size <= MAX_EXTRA_TEXT:
                try:
                    out[label] = self._text(n, MAX_EXTRA_TEXT)
                    continue
                except CheckpointError as e:
                    out[label] = Unreadable("extra file", e.message)
                    continue
            out[label] = f"{m.size:,} bytes"
        return out

    # -- a program --------------------------------------------------------------------------------
    def _program(self, model: str) -> dict:
        out = PickledDict()
        out.type_name = PROGRAM_TYPE
        weights = f"data/weights/{model}_weights_config.json"
        constants = f"data/constants/{model}_constants_config.json"
        parts: dict = {}
        if self._has(weights):
            out["state_dict"] = self._payloads(self._config(weights), "data/weights/", model, parts)
        elif self._has(f"data/weights/{model}.pt"):
            out["state_dict"] = self._nested(f"data/weights/{model}.pt")
        if self._has(constants):
            out["constants"] = self._payloads(self._config(constants), "data/constants/", model, parts)
        elif self._has(f"data/constants/{model}.pt"):
            out["constants"] = self._nested(f"data/constants/{model}.pt")
        if parts:
            out["tensor_subclass_parts"] = parts
        if self._has(f"models/{model}.json"):
            try:
                out["signature"] = self._signature(self._json(f"models/{model}.json"), model)
            except CheckpointError as e:
                self.warnings.append(f"program {model!r}: {e.message}")
        sample = f"data/sample_inputs/{model}.pt"
        if self._has(sample):
            out["sample_inputs"] = self._nested(sample)
        return out

    def _config(self, name: str) -> dict:
        data = self._json(name)
        config = data.get("config") if isinstance(data, dict) else None
        if not isinstance(config, dict):
            raise CorruptFileError(f"{name} has no 'config' mapping")
        return config

    def _payloads(self, config: dict, folder: str, model: str, parts: dict) -> PickledDict:
        out = PickledDict()
        for fqn, entry in config.items():
            try:
                out[fqn] = self._payload(entry, folder, fqn, parts)
            except (CheckpointError, ValueError, TypeError, KeyError) as e:
                text = e.message if isinstance(e, CheckpointError) else str(e)[:200]
                self.warnings.append(f"{model}: {fqn!r}: {text}")
                out[fqn] = Unreadable("tensor", text)
        return out

    def _payload(self, entry: Any, folder: str, fqn: str, parts: dict) -> Any:
        if not isinstance(entry, dict):
            raise ValueError("the config entry is not an object")
        name = entry.get("path_name")
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise ValueError(f"path_name {str(name)[:60]!r} is not a plain file name")
        member = folder + name
        if not self._has(member):
            raise CorruptFileError(f"{member} is missing from the archive")
        if entry.get("use_pickle"):
            value = self._nested(member)
            if isinstance(value, TensorRef) and value.extra and isinstance(value.extra.get("state"), dict):
                inner = {k: v for k, v in value.extra["state"].items() if isinstance(v, TensorRef)}
                if inner:
                    parts[fqn] = inner
                    value.problem = (f"a tensor subclass ({value.subclass or 'unnamed'}): its values live in its "
                                     f"parts, listed under tensor_subclass_parts")
            return value
        meta = entry.get("tensor_meta")
        if not isinstance(meta, dict):
            raise ValueError("no tensor_meta")
        dtype = _dtype(meta.get("dtype"))
        layout = LAYOUTS.get(meta.get("layout"), str(meta.get("layout")))
        if layout != "strided":
            raise ValueError(f"layout {layout} is not read from raw weight files")
        sizes = tuple(_symint(s, "size") for s in _list(meta.get("sizes"), "sizes"))
        strides = tuple(_symint(s, "stride") for s in _list(meta.get("strides"), "strides"))
        offset = _symint(meta.get("storage_offset", {"as_int": 0}), "storage offset")
        key = member.removeprefix("data/")
        st = self.storages.get(key)
        if st is None:
            source = member_source(self.archive, self.prefix + member)
            size = self.archive.members[self.prefix + member].size
            st = StorageRef(key, dtype, size, _device(meta.get("device")), typed=True, source=source)
            if size % dtype.itemsize:
                st.problem = (f"{member} holds {size:,} bytes, not a whole number of {dtype.name} elements "
                              f"({dtype.itemsize} bytes each)")
            self.storages[key] = st
        elif st.dtype is not dtype and st.dtype.itemsize != dtype.itemsize:
            raise ValueError(f"{member} is read as {st.dtype.name} by another name; this one says {dtype.name}")
        t = TensorRef(st, offset, sizes, strides, dtype, requires_grad=meta.get("requires_grad") is True,
                      kind="parameter" if entry.get("is_param") is True else "tensor")
        return t

    def _nested(self, member: str) -> Any:
        """A pickle payload (a nested torch.save archive or a plain pickle), read with our interpreter."""
        full = self.prefix + member
        m = self.archive.members[full]
        try:
            if m.method == 0:
                start = self.archive.data_offset(m)
                head = bytes(self.archive.src.view(start, min(4, m.compressed_size)))
                if head == b"PK\x03\x04":
                    ck = read_torch_zip(self.archive.src, f"{self.path}:{member}", start=start,
                                        end=start + m.compressed_size, nested=True)
                    return self._merge(ck, member)
            data = self.archive.read(full, check_crc=True, max_ratio=PICKLE_MAX_RATIO)
            if data[:4] == b"PK\x03\x04":
                from .torch_zip import read_torch_zip_bytes
                return self._merge(read_torch_zip_bytes(data, f"{self.path}:{member}"), member)
            warnings: list[str] = []
            value, _ = unpickle(data, name=member, warnings=warnings, pickles=self.pickles)
            self.warnings.extend(f"{member}: {w}" for w in warnings)
            return value
        except CheckpointError as e:
            self.warnings.append(f"{member}: {e.message}")
            return Unreadable("pickle payload", e.message)

    def _merge(self, ck: Checkpoint, member: str) -> Any:
        self.warnings.extend(f"{member}: {w}" for w in ck.warnings)
        for p in ck.pickles:
            self.pickles.append(PickleGlobals(f"{member}: {p.pickle}", p.counts))
        for key, st in ck.storages.items():
            self.storages[f"{member}:{key}"] = st
        return ck.root

    # -- the signature ----------------------------------------------------------------------------
    def _signature(self, program: Any, model: str) -> dict:
        """Inputs and outputs as lines a person reads: kind, name, what it binds to, dtype and shape."""
        if not isinstance(program, dict):
            raise CorruptFileError(f"models/{model}.json is not an object")
        for key in ("torch_version", "schema_version", "opset_version", "verifiers"):
            if key in program:
                self.meta.setdefault(key, program[key] if key == "torch_version" else _short_json(program[key]))
        gm = program.get("graph_module") if isinstance(program.get("graph_module"), dict) else {}
        sig = gm.get("signature") if isinstance(gm.get("signature"), dict) else {}
        graph = gm.get("graph") if isinstance(gm.get("graph"), dict) else {}
        values = graph.get("tensor_values") if isinstance(graph.get("tensor_values"), dict) else {}
        out: dict = {"inputs": dict(_spec_item(s, values, i) for i, s in
                                    enumerate(_list(sig.get("input_specs", []), "input_specs"))),
                     "outputs": dict(_spec_item(s, values, i) for i, s in
                                     enumerate(_list(sig.get("output_specs", []), "output_specs")))}
        calls = gm.get("module_call_graph")
        if (isinstance(calls, list) and calls and isinstance(calls[0], dict)
                and isinstance(calls[0].get("signature"), dict)):
            names = calls[0]["signature"].get("forward_arg_names")
            if isinstance(names, list):
                out["forward_arg_names"] = [str(n)[:200] for n in names[:1000]]
        ranges = program.get("range_constraints")
        if isinstance(ranges, dict) and ranges:
            out["range_constraints"] = {str(k)[:80]: f"{_bound(v, 'min_val')}..{_bound(v, 'max_val')}"
                                        for k, v in list(ranges.items())[:1000]}
        nodes = graph.get("nodes")
        if isinstance(nodes, list):
            out["graph_nodes"] = len(nodes)
        return out

    # -- AOTInductor ------------------------------------------------------------------------------
    def _aoti(self) -> dict:
        models: dict[str, list[str]] = {}
        for n in self._names("data/aotinductor/"):
            parts = n.split("/")
            if len(parts) >= 4:
                models.setdefault(parts[2], []).append(n)
        out: dict = {}
        for model, members in models.items():
            self.aoti.append(model)
            self.meta.setdefault("aotinductor_models", []).append(model)
            native = [n for n in members if n.endswith((".so", ".dll", ".dylib", ".pyd"))]
            if native:
                self.warnings.append(f"AOTInductor model {model!r} holds compiled native code "
                                     f"({', '.join(n.rsplit('/', 1)[-1] for n in native[:3])}) that loading the "
                                     f"package with torch runs; ckptviewer read it as data only")
            try:
                out[model] = self._aoti_model(model, members)
            except CheckpointError as e:
                self.warnings.append(f"AOTInductor model {model!r}: {e.message}")
                out[model] = Unreadable("AOTInductor model", e.message)
        return out

    def _aoti_model(self, model: str, members: list[str]) -> dict:
        cpps = [n for n in members if n.endswith(".wrapper.cpp")]
        consts: dict[int, dict] = {}
        io: dict[str, dict[int, str]] = {"inputs": {}, "outputs": {}}
        specs: dict[str, str] = {}
        for cpp in cpps:
            text = self._text(cpp, MAX_CPP)
            for m in _CONST_LINE.finditer(text):
                consts.setdefault(int(m.group(1)), {})[m.group(2)] = m.group(3).strip()
            for m in _IO_LINE.finditer(text):
                io[m.group(1)][int(m.group(2))] = m.group(3)
            for m in _SPEC_LINE.finditer(text):
                specs[m.group(1) + "_spec"] = m.group(2)[:20000]
        info = PickledDict()
        info.type_name = AOTI_TYPE
        metadata = [n for n in members if n.endswith("_metadata.json")]
        if metadata:
            try:
                md = self._json(metadata[0], 1 << 20)
                if isinstance(md, dict):
                    info["metadata"] = {str(k)[:80]: str(v)[:200] for k, v in list(md.items())[:100]}
            except CheckpointError as e:
                self.warnings.append(f"{metadata[0]}: {e.message}")
        info["signature"] = {"inputs": [io["inputs"][i] for i in sorted(io["inputs"])],
                             "outputs": [io["outputs"][i] for i in sorted(io["outputs"])], **specs}
        folder = f"data/aotinductor/{model}/"
        if self._has(folder + "weights_config.json"):
            info["constants"] = self._aoti_pickled_weights(folder + "weights_config.json")
        else:
            info["constants"] = self._aoti_blob_constants(model, members, consts)
        if not cpps:
            self.warnings.append(f"AOTInductor model {model!r} has no wrapper.cpp: its constants are not described")
        return info

    def _aoti_pickled_weights(self, config_name: str) -> PickledDict:
        """``weights_config.json``: {fqn: [file in data/weights/, shape, stride, offset]}, each file a
        nested torch.save archive of the tensor."""
        config = self._json(config_name)
        out = PickledDict()
        if not isinstance(config, dict):
            raise CorruptFileError(f"{config_name} is not an object")
        for fqn, spec in config.items():
            name = spec[0] if isinstance(spec, list) and spec else None
            if not isinstance(name, str) or not _SAFE_NAME.match(name) or not self._has("data/weights/" + name):
                self.warnings.append(f"{config_name}: {fqn!r} names no weight file of the archive")
                out[fqn] = Unreadable("tensor", "no weight file")
                continue
            out[fqn] = self._nested("data/weights/" + name)
        return out

    def _aoti_blob_constants(self, model: str, members: list[str], consts: dict[int, dict]) -> PickledDict:
        blob = self._aoti_blob(model, members, sum(_data_size(c) for c in consts.values()
                                                   if c.get("from_folded") != "true"))
        out = PickledDict()
        pos = 0
        for i in sorted(consts):
            c = consts[i]
            name = _cstring(c.get("original_fqn")) or _cstring(c.get("name")) or f"constant_{i}"
            try:
                dtype = _aoti_dtype(c.get("dtype", ""))
                shape = _int_list(c.get("shape", "{}"))
                stride = _int_list(c.get("stride", "{}"))
                offset = _int_text(c.get("offset", "0"))
                size = _int_text(c.get("data_size", "0"))
            except ValueError as e:
                self.warnings.append(f"AOTInductor constant {name!r}: {e}")
                out[name] = Unreadable("tensor", str(e))
                continue
            device = c.get("device_type", "").rsplit("_", 1)[-1] or "cpu"
            if c.get("from_folded") == "true":
                t = TensorRef(None, offset, shape, stride, dtype, kind="meta")
                t.device_override = device
                t.problem = "folded into the compiled model at build time; the package stores no values for it"
                out[name] = t
                continue
            key = f"aotinductor/{model}/{name}"
            st = StorageRef(key, dtype, size, device, typed=True)
            if blob is None:
                st.problem = "the package's weights were not found (no constants blob in the compiled model)"
            elif pos + size > blob.size:
                st.problem = f"constant at blob bytes {pos:,}..{pos + size:,} lies past the blob's {blob.size:,} bytes"
            else:
                st.source = SubRegion(blob, pos, size)
            self.storages[key] = st
            out[name] = TensorRef(st, offset, shape, stride, dtype,
                                  kind="parameter" if "Parameter" in c.get("type", "") else "tensor")
            pos += _aligned(size)
        return out

    def _aoti_blob(self, model: str, members: list[str], needed: int) -> ByteSource | None:
        """Where the constants are stored, one after another: a ``*_weights.blob`` member, or the bytes
        between the blob symbols of the compiled ``.so`` / ``.o`` (or appended to the ``.so``)."""
        blobs = [n for n in members if n.endswith("_weights.blob")]
        if blobs:
            return member_source(self.archive, self.prefix + blobs[0])
        for n in members:
            if not n.endswith((".so", ".o")):
                continue
            src = member_source(self.archive, self.prefix + n)
            try:
                whole = src.view(0, src.size)
                symbols = find_symbols(whole, {_BLOB_START, _BLOB_END})
            except CheckpointError as e:
                self.warnings.append(f"{n}: {e.message}")
                continue
            if _BLOB_START not in symbols or _BLOB_END not in symbols:
                continue
            start, end = symbols[_BLOB_START], symbols[_BLOB_END]
            if not 0 <= start <= end <= src.size:
                self.warnings.append(f"{n}: the constants blob symbols point outside the file")
                continue
            if end - start == 16 and needed > 16:
                # Large weights are appended to the .so (page aligned); the blob holds (size + 8, magic).
                size = int.from_bytes(whole[start:start + 8], "little")
                if 0 < size <= src.size:
                    return SubRegion(src, src.size - size, size - 8)
            if end - start == 8 and needed > 8:
                self.warnings.append(f"{n}: the weights were kept outside the compiled model, in a file the "
                                     f"archive does not hold")
                return None
            return SubRegion(src, start, end - start)
        return None


class SubRegion(ByteSource):
    """Bytes ``[start, start + size)`` of another source (a constant inside a compiled model's blob)."""

    def __init__(self, parent: ByteSource, start: int, size: int):
        self.parent = parent
        self.start = start
        self.size = size

    @property
    def verified(self) -> bool:             # the CRC-32 belongs to the whole member, checked by ``verify``
        return self.parent.verified

    @property
    def crc_error(self) -> str | None:
        return self.parent.crc_error

    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise CorruptFileError(f"read of bytes {offset}..{offset + length} outside a region of {self.size}")
        return self.parent.view(self.start + offset, length)

    def verify(self, progress=None) -> str | None:
        return self.parent.verify()

    def release(self, offset: int, length: int) -> None:
        self.parent.release(self.start + offset, length)

    def file_location(self, offset: int) -> tuple[str, int] | None:
        return self.parent.file_location(self.start + offset)

    def describe(self) -> str:
        return f"bytes {self.start}..{self.start + self.size} of {self.parent.describe()}"


# -- small parsers ----------------------------------------------------------------------------------
def _dtype(code: Any) -> DType:
    name = SCALAR_TYPES.get(code) if type(code) is int else None
    if name is None:
        raise ValueError(f"unknown export dtype code {str(code)[:20]}")
    return BY_NAME[name]


def _list(x: Any, what: str) -> list:
    if not isinstance(x, list) or len(x) > 1_000_000:
        raise ValueError(f"{what} is not a list")
    return x


def _symint(x: Any, what: str) -> int:
    """``{"as_int": n}``; a symbolic ``{"as_expr": ...}`` is refused (its sympy text is never evaluated)."""
    if isinstance(x, dict) and type(x.get("as_int")) is int and x["as_int"] >= 0:
        return x["as_int"]
    if isinstance(x, dict) and "as_expr" in x:
        raise ValueError(f"a symbolic {what} ({_expr_text(x['as_expr'])}) in stored weights")
    raise ValueError(f"{what} {str(x)[:40]} is not a non-negative int")


def _expr_text(expr: Any) -> str:
    text = expr.get("expr_str", "") if isinstance(expr, dict) else str(expr)
    names = _SYMBOL_NAME.findall(str(text)[:2000])
    return ", ".join(dict.fromkeys(names)) if names else str(text)[:80]


def _size_text(x: Any) -> str:
    if isinstance(x, dict) and type(x.get("as_int")) is int:
        return str(x["as_int"])
    if isinstance(x, dict) and "as_expr" in x:
        return _expr_text(x["as_expr"])
    return "?"


def _meta_text(meta: Any) -> str:
    if not isinstance(meta, dict):
        return ""
    name = SCALAR_TYPES.get(meta.get("dtype"), f"dtype {meta.get('dtype')}")
    sizes = meta.get("sizes") if isinstance(meta.get("sizes"), list) else []
    return f"{name} [{', '.join(_size_text(s) for s in sizes[:64])}]"


def _arg_text(arg: Any, values: dict) -> str:
    """An Argument: a tensor by name (with its meta), or a constant."""
    if not isinstance(arg, dict):
        return "?"
    if isinstance(arg.get("as_tensor"), dict):
        name = str(arg["as_tensor"].get("name", "?"))[:200]
        return f"{name}: {_meta_text(values.get(name))}"
    if "name" in arg and len(arg) <= 2:
        name = str(arg.get("name"))[:200]
        meta = values.get(name)
        return f"{name}: {_meta_text(meta)}" if meta else name
    for key, v in arg.items():
        if key.startswith("as_"):
            return f"{key[3:]} {_short_json(v)}"
    return _short_json(arg)


def _spec_item(spec: Any, values: dict, index: int) -> tuple[Any, str]:
    """One input or output spec (a one-key union) as (its graph name, or its position when it has none;
    what it is: kind, what it binds to, dtype and shape)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        return index, _short_json(spec)
    kind, body = next(iter(spec.items()))
    if not isinstance(body, dict):
        return index, f"{kind}: {_short_json(body)}"
    target = next((str(body[k])[:200] for k in ("parameter_name", "buffer_name", "tensor_constant_name",
                                                 "custom_obj_name", "target") if k in body), "")
    if kind == "constant_input":
        return str(body.get("name"))[:200], f"constant input: {_arg_text(body.get('value'), values)}"
    what = kind.replace("_", " ") + (f" {target}" if target else "")
    if kind == "buffer" and body.get("persistent") is False:
        what += " (not persistent)"
    arg = body.get("arg")
    name = _arg_name(arg)
    meta = _meta_text(values.get(name)) if name is not None else _arg_text(arg, values)
    return (name if name is not None else index), f"{what}: {meta}" if meta else what


def _arg_name(arg: Any) -> str | None:
    if isinstance(arg, dict):
        if isinstance(arg.get("as_tensor"), dict) and isinstance(arg["as_tensor"].get("name"), str):
            return arg["as_tensor"]["name"][:200]
        if isinstance(arg.get("name"), str) and len(arg) <= 2:
            return arg["name"][:200]
    return None


def _short_json(v: Any) -> str:
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        text = str(v)
    return text[:200]


def _bound(v: Any, key: str) -> str:
    x = v.get(key) if isinstance(v, dict) else None
    return str(x) if type(x) is int else ("inf" if x is None else str(x)[:20])


def _aoti_dtype(text: str) -> DType:
    name = text.strip().removeprefix("cached_torch_dtype_")
    dt = BY_NAME.get(name)
    if dt is None:
        raise ValueError(f"unknown dtype {text[:40]!r}")
    return dt


def _int_text(text: Any) -> int:
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d{1,19}\s*", text):
        raise ValueError(f"{str(text)[:40]!r} is not a size")
    return int(text)


def _int_list(text: str) -> tuple[int, ...]:
    m = re.fullmatch(r"\s*\{\s*((?:\d{1,19}\s*,\s*){0,63}\d{1,19})?\s*\}\s*", text or "")
    if m is None:
        raise ValueError(f"{str(text)[:60]!r} is not a list of sizes")
    return tuple(int(x) for x in m.group(1).split(",")) if m.group(1) else ()


def _cstring(text: Any) -> str | None:
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1][:400]
    return None


def _aligned(n: int) -> int:
    return (n + AOTI_ALIGN - 1) // AOTI_ALIGN * AOTI_ALIGN


def _device(d: Any) -> str:
    if isinstance(d, dict) and isinstance(d.get("type"), str) and re.fullmatch(r"\w{1,20}", d["type"]):
        index = d.get("index")
        return d["type"] if type(index) is not int else f"{d['type']}:{index}"
    return "cpu"


def _data_size(c: dict) -> int:
    try:
        return _aligned(_int_text(c.get("data_size")))
    except ValueError:
        return 0
