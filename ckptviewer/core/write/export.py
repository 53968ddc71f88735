"""Writing a (possibly edited) checkpoint: torch zip, torch legacy or safetensors, atomically and verified.

The steps, whatever the format:

1. **Plan**: turn the edited tree into plain data a loader accepts with ``weights_only=True``: a
   pickled module becomes its state_dict, numpy scalars become Python numbers, stand-in objects become
   dicts of their attributes (each conversion is noted); unreadable tensors or dangerous stand-ins stop
   the export unless the user drops them.
2. **Write** to a temporary file in the destination folder. For torch formats, torch itself writes the
   archive and the pickle (``torch.serialization.skip_data`` for the zip format, so storage records are
   reserved but not filled), from tensors whose memory is never touched; then we fill each storage's
   record in chunks and patch the record's CRC-32 into the zip directory. Memory stays at about one
   chunk, whatever the file size. safetensors files are written here directly (header, then each
   tensor's bytes), because the library's writer holds every tensor in memory. Each record's CRC-32 is
   known when it has been written: a record copied unchanged from a zip member has the CRC-32 torch
   stored for it (the kernel copies those bytes file to file, unread); any other record's is computed
   from the bytes as they are written (casts, merges, views, byte swaps, sources without a stored one).
3. **Verify**: flush and fsync, re-read the temporary file's structure with our reader (keys, dtype,
   shape, recorded device, where each tensor lies in its record, the CRC-32s in a zip's directory), then
   read every record's bytes once and compare their CRC-32 with the one known from writing (bytes, not
   values: NaN payloads and -0.0 survive). A record copied unread that fails is a damaged source or a
   bad write; re-reading the source then says which. For torch formats also check that
   ``torch.load(weights_only=True, mmap=True)`` accepts it.
4. **Rename** into place with ``os.replace`` and fsync the folder. On any error or cancel, the temporary
   file is removed: the destination is either the old file or the complete new one.

The source file is never opened for writing, and the destination may not be the source (or a link to it).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable

import numpy as np

from ..model import keypath
from ..model.objects import GlobalRef, PickledDict, StandIn, TorchDevice, TorchEnum, TorchSize, Unreadable
from ..model.tensor import CHUNK_BYTES, StorageRef, TensorRef, tensor_from_numpy
from ..model.walk import MAX_DEPTH, module_attribute_tensors, module_attrs, module_state_dict, stand_in_children, unwrap
from ..util.checksum import crc32
from ..util.errors import CancelledError, CheckpointError, OperationError
from .destination import check_destination, fsync_dir, fsync_file, source_files

FORMATS = ("pt", "pt-legacy", "safetensors")


def format_for_path(path: str) -> str:
    return "safetensors" if str(path).endswith(".safetensors") else "pt"


@dataclass
class ExportOptions:
    fmt: str = "pt"
    non_tensors: str = "error"        # safetensors: "error" | "drop" | "metadata" (scalars as strings)
    overwrite: bool = False
    metadata: dict[str, str] = field(default_factory=dict)   # extra safetensors __metadata__
    verify_with_torch: bool = True
    force_bad_crc: bool = False       # write tensors whose source bytes fail their zip CRC-32 check

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise OperationError(f"unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}")
        if self.non_tensors not in ("error", "drop", "metadata"):
            raise OperationError(f"unknown non-tensor handling {self.non_tensors!r}")


@dataclass
class ExportPlan:
    fmt: str
    root: Any                                   # plain output tree (TensorRefs at the leaves)
    tensors: list[tuple[tuple, TensorRef]]      # output key path (safetensors: (name,)) -> tensor
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    force_bad_crc: bool = False
    warnings: list[str] = field(default_factory=list)     # written anyway, but the user should know

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for _, t in self.tensors)

    def describe(self) -> list[str]:
        lines = [f"format: {self.fmt}; {len(self.tensors)} tensors, {self.total_bytes:,} bytes of tensor data"]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"problem: {p}" for p in self.problems]
        return lines


@dataclass
class ExportProgress:
    done: int
    total: int
    stage: str


@dataclass
class ExportResult:
    path: str
    fmt: str
    size: int
    tensors: int
    seconds: float
    notes: list[str]
    warnings: list[str] = field(default_factory=list)


# -- planning ---------------------------------------------------------------------------------------------
_UNSUPPORTED_KINDS = {"sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "meta", "wrapper",
                      "nested", "quantized"}


def plan_export(root: Any, options: ExportOptions) -> ExportPlan:
    notes: list[str] = []
    problems: list[str] = []
    plain = _to_plain(unwrap(root), (), notes, problems, {}, set())
    if options.fmt == "safetensors":
        plan = _plan_safetensors(plain, options, notes, problems)
        plan.force_bad_crc = options.force_bad_crc
        _check_integrity(plan)
        return plan
    from ..model.walk import iter_tensors
    walk_notes: list[str] = []
    tensors = [(tuple(p), t) for p, t in iter_tensors(plain, warnings=walk_notes)]
    problems.extend(f"{w}; the export would be incomplete" for w in walk_notes)   # never write a partial copy
    for path, t in tensors:
        _check_tensor(path, t, problems)
    if isinstance(plain, TensorRef) or plain is None:
        notes.append("the output is a single value, not a mapping")
    device_note = accelerator_note(t for _, t in tensors)
    plan = ExportPlan(options.fmt, plain, tensors, _dedupe(notes), _dedupe(problems),
                      warnings=[device_note] if device_note else [], force_bad_crc=options.force_bad_crc)
    _check_integrity(plan)
    return plan


def accelerator_note(tensors: Iterable[TensorRef]) -> str | None:
    """A warning when a torch file would keep GPU (or other accelerator) locations: ``torch.load`` without
    ``map_location`` then works only on a machine with that device."""
    counts: dict[str, int] = {}
    seen: set[int] = set()
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            if t.device.split(":", 1)[0] not in ("cpu", "meta"):
                counts[t.device] = counts.get(t.device, 0) + 1
    if not counts:
        return None
    listed = ", ".join(f"{n:,} on {d}" for d, n in sorted(counts.items()))
    first = sorted(counts)[0].split(":", 1)[0]
    return (f"the output keeps accelerator locations ({listed}): torch.load opens it only on a machine "
            f"with that device unless it is given map_location. To record them on the CPU, remap the devices "
            f"(--map-location {first}=cpu, or Checkpoint > Remap Devices)")


FORCE_HINT = "pass --force-bad-crc (or tick 'Export even if the CRC-32 check fails') to write them anyway"


def _check_integrity(plan: ExportPlan) -> None:
    """Tensors whose bytes already failed their CRC-32 check: a problem, or a note when forced. (Bytes not
    read yet are checked while they are copied, by ``_refuse_bad_crc``.)"""
    for path, t in plan.tensors:
        err = t.integrity_error
        if err:
            where = keypath.format_path(path) or "the root"
            if plan.force_bad_crc:
                plan.notes.append(f"{where}: written although {err}")
            else:
                plan.problems.append(f"{where}: {err}; {FORCE_HINT}")


def _refuse_bad_crc(err: str | None, what: str, plan: ExportPlan) -> None:
    if err and not plan.force_bad_crc:
        raise OperationError(f"cannot export {what}: {err}; {FORCE_HINT}")
    if err:
        plan.notes.append(f"{what}: written although {err}")


def _check_tensor(path: tuple, t: TensorRef, problems: list[str]) -> None:
    where = keypath.format_path(path) or "the root"
    t.validate()
    if t.kind in _UNSUPPORTED_KINDS:
        problems.append(f"{where}: {t.kind} tensors cannot be exported yet; drop it")
    elif t.problem:
        problems.append(f"{where}: {t.problem}; drop it to export the rest")


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _to_plain(v: Any, path: tuple, notes: list[str], problems: list[str], memo: dict, active: set) -> Any:
    """The value as plain data torch.load(weights_only=True) accepts; shared containers stay shared."""
    v = unwrap(v)
    where = keypath.format_path(path) or "the root"
    if isinstance(v, np.generic):      # before the int/float test: np.float64 is a float subclass
        notes.append(f"numpy scalars written as Python numbers (e.g. {where})")
        return v.item()
    if isinstance(v, TensorRef) or v is None or isinstance(v, (bool, int, float, str, bytes, complex)):
        return v
    if isinstance(v, (TorchSize, TorchDevice)):
        return v
    if isinstance(v, TorchEnum):
        if v.kind in ("dtype", "layout"):
            return v
        notes.append(f"{where}: torch.{v.name} written as the string {v.name!r}")
        return v.name
    if isinstance(v, np.ndarray):
        t = tensor_from_numpy(v, where)
        if t is None:
            problems.append(f"{where}: a numpy array of {v.dtype} cannot be written")
            return None
        notes.append(f"numpy arrays written as tensors (e.g. {where})")
        return t
    if isinstance(v, bytearray):
        return bytes(v)
    if isinstance(v, Unreadable):
        problems.append(f"{where}: unreadable {v.what} ({v.reason}); drop it to export the rest")
        return None
    if isinstance(v, GlobalRef):
        notes.append(f"{where}: the class reference {v.qualname} written as its name")
        return v.qualname
    if isinstance(v, (range, slice)):
        notes.append(f"{where}: {type(v).__name__} written as a list")
        return list(v) if isinstance(v, range) else [v.start, v.stop, v.step]
    key = id(v)
    if key in memo:
        return memo[key]
    if key in active or len(path) > MAX_DEPTH:
        problems.append(f"{where}: a container that contains itself cannot be written")
        return None
    active.add(key)
    try:
        if isinstance(v, StandIn):
            if module_attrs(v) is not None:
                notes.append(f"{where}: pickled module {v.qualname} written as its state_dict")
                left = module_attribute_tensors(v)
                if left:
                    notes.append(f"{where}: {len(left)} tensor{'s' if len(left) != 1 else ''} the module holds as "
                                 f"attributes outside its state_dict {'are' if len(left) != 1 else 'is'} not written "
                                 f"(e.g. {keypath.format_path(left[0][0])})")
                out = PickledDict(module_state_dict(v))
            elif v.dangerous:
                problems.append(f"{where}: names {v.qualname}, a dangerous callable; drop it")
                out = None
            else:
                notes.append(f"{where}: object of class {v.qualname} written as a dict of its contents")
                out = {k: _to_plain(x, path + (k,), notes, problems, memo, active) for k, x in stand_in_children(v)}
        elif isinstance(v, dict):
            out = OrderedDict() if isinstance(v, PickledDict) and v.type_name != "builtins.dict" else {}
            if isinstance(v, PickledDict) and v.type_name not in ("collections.OrderedDict",):
                notes.append(f"{where}: {v.type_name} written as an OrderedDict")
            for k, x in v.items():
                out[k] = _to_plain(x, path + (k,), notes, problems, memo, active)
            if isinstance(v, PickledDict):
                meta = v.__dict__.get("_pickle_attrs", {}).get("_metadata")
                if isinstance(meta, dict):
                    out._metadata = _plain_metadata(meta)
        elif isinstance(v, list):
            out = [_to_plain(x, path + (i,), notes, problems, memo, active) for i, x in enumerate(v)]
        elif isinstance(v, tuple):
            out = tuple(_to_plain(x, path + (i,), notes, problems, memo, active) for i, x in enumerate(v))
        elif isinstance(v, (set, frozenset)):
            out = set(v)
        else:
            problems.append(f"{where}: a {type(v).__name__} cannot be written")
            out = None
    finally:
        active.discard(key)
    memo[key] = out
    return out


def _plain_metadata(meta: dict) -> OrderedDict:
    out = OrderedDict()
    for k, v in meta.items():
        if isinstance(k, str) and isinstance(v, dict):
            out[k] = {str(a): b for a, b in v.items() if isinstance(b, (int, float, str, bool))}
    return out


def _plan_safetensors(plain: Any, options: ExportOptions, notes: list[str], problems: list[str]) -> ExportPlan:
    tensors: list[tuple[tuple, TensorRef]] = []
    # Loaders look for {"format": "pt"} (transformers refuses a file without it; safetensors' own
    # torch loader records it): always there, next to what the user asks for (which may set it too).
    metadata: dict[str, str] = {"format": "pt", **options.metadata}
    non_tensors: list[str] = []
    names: dict[str, tuple] = {}

    def name_of(path: tuple) -> str:
        return ".".join(str(p) for p in path)

    from collections import deque

    from ..model.walk import MAX_NODES, SHARED_PATHS_FACTOR, SHARED_PATHS_MIN
    todo = deque([((), plain)])
    visited, distinct = 0, set()
    while todo:
        path, v = todo.popleft()
        visited += 1
        if isinstance(v, (dict, list, tuple)):
            distinct.add(id(v))
        if visited > MAX_NODES or (visited > SHARED_PATHS_MIN and visited > SHARED_PATHS_FACTOR * len(distinct)):
            # Shared containers are written once per path: an exponential object graph would never end.
            problems.append(f"the values are shared under more key paths than can be written ({visited:,} paths "
                            f"through {len(distinct):,} containers)")
            break
        if isinstance(v, TensorRef):
            name = name_of(path)
            if name in names:
                problems.append(f"two entries become the safetensors name {name!r}")
                continue
            names[name] = path
            tensors.append(((name,), v))
            continue
        if isinstance(v, dict):
            todo.extend((path + (k,), x) for k, x in v.items())
            continue
        if isinstance(v, (list, tuple)) and not isinstance(v, TorchSize) and any(
                isinstance(x, (TensorRef, dict, list, tuple)) for x in v):
            todo.extend((path + (i,), x) for i, x in enumerate(v))
            continue
        label = name_of(path) or "the root"
        non_tensors.append(label)
        if options.non_tensors == "metadata":
            text = _metadata_text(v)
            if text is None:
                notes.append(f"{label}: not a simple value; left out of the metadata")
            elif label in metadata:
                notes.append(f"{label}: the metadata already has an entry of that name; left out")
            else:
                metadata[label] = text
    if any(len(p) > 1 for _, (p) in ((n, names[n]) for n in names)):
        notes.append("nested entries are named by joining their key path with '.' (e.g. "
                     f"{next(n for n in names if '.' in n) if any('.' in n for n in names) else ''})")
    if non_tensors:
        listed = ", ".join(non_tensors[:8]) + (f", and {len(non_tensors) - 8} more" if len(non_tensors) > 8 else "")
        if options.non_tensors == "error":
            problems.append(f"safetensors holds tensors only; these entries are not tensors: {listed} "
                            f"(drop them, or store scalars in the metadata)")
        elif options.non_tensors == "drop":
            notes.append(f"left out {len(non_tensors)} non-tensor entries: {listed}")
        else:
            notes.append(f"stored {len(non_tensors)} non-tensor entries in __metadata__ as strings: {listed}")
    shared: dict[int, list[str]] = {}
    for (name,), t in tensors:
        _check_tensor((name,), t, problems)
        if t.storage is not None:
            shared.setdefault(id(t.storage), []).append(name)
        if t.dtype.safetensors is None:
            problems.append(f"{name}: safetensors has no {t.dtype.name} type")
    for group in shared.values():
        if len(group) > 1:
            notes.append(f"{', '.join(group[:4])} share storage in the source; safetensors cannot express "
                         f"sharing, so each is written as its own copy")
    return ExportPlan("safetensors", plain, tensors, _dedupe(notes), _dedupe(problems), metadata)


def _metadata_text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, int, float)) or v is None:
        return json.dumps(v)
    if isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) or x is None for x in v):
        return json.dumps(list(v))
    return None


# -- writing ----------------------------------------------------------------------------------------------
def export(root: Any, dest: str, options: ExportOptions | None = None, *, sources: Iterable[str] = (),
           progress: Callable[[ExportProgress], None] | None = None,
           cancelled: Callable[[], bool] | None = None) -> ExportResult:
    """Run :func:`export_iter` to the end (with an optional progress callback and cancel check)."""
    gen = export_iter(root, dest, options or ExportOptions(fmt=format_for_path(dest)), sources=sources)
    try:
        while True:
            step = next(gen)
            if progress:
                progress(step)
            if cancelled and cancelled():
                gen.close()
                raise CancelledError("export cancelled; nothing was written")
    except StopIteration as stop:
        return stop.value


def export_iter(root: Any, dest: str, options: ExportOptions, *,
                sources: Iterable[str] = ()) -> Generator[ExportProgress, None, ExportResult]:
    """Export as a generator: each yield reports progress and is a point where the caller may stop
    (``close()``), which removes the temporary file."""
    started = time.perf_counter()
    real = check_destination(dest, list(sources), options.overwrite)
    plan = plan_export(root, options)
    # A sharded or distributed checkpoint reads from many files; none of them may be the destination.
    check_destination(dest, sorted(source_files(t for _, t in plan.tensors)), options.overwrite)
    if plan.problems:
        raise OperationError("cannot export: " + "; ".join(plan.problems[:6])
                             + (f"; and {len(plan.problems) - 6} more" if len(plan.problems) > 6 else ""))
    # The temporary file sits in a private folder beside the destination and has the destination's
    # name: torch names the archive inside a zip after the file, and the same export must give the
    # same bytes whether it runs from the window or the command line.
    workdir = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.", suffix=".ckptviewer-tmp",
                               dir=os.path.dirname(real))
    tmp = os.path.join(workdir, os.path.basename(real))
    open(tmp, "wb").close()
    finished = False
    readback = _ReadBack(tmp)
    try:
        if options.fmt == "safetensors":
            yield from _write_safetensors(plan, tmp, readback)
            layouts = {}
        else:
            layouts = yield from _write_torch(plan, tmp, readback, legacy=options.fmt == "pt-legacy")
        # Flushing gigabytes to disk is I/O wait: let it run while verification keeps the CPUs busy.
        flushing = threading.Thread(target=fsync_file, args=(tmp,), name="ckptviewer-fsync", daemon=True)
        flushing.start()
        try:
            yield ExportProgress(0, plan.total_bytes, "verifying")
            yield from _verify(plan, tmp, readback, layouts, options)
        finally:
            flushing.join()
        fsync_file(tmp)                 # everything on disk before the rename
        os.replace(tmp, real)
        finished = True
        fsync_dir(os.path.dirname(real))
    finally:
        readback.close()
        if not finished:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(workdir)
        except OSError:
            pass
    return ExportResult(real, options.fmt, os.path.getsize(real), len(plan.tensors),
                        time.perf_counter() - started, plan.notes, plan.warnings)


# torch's save calls location taggers for each storage; ours answers from this table while we save.
_LOCATIONS = threading.local()
_TAGGER_REGISTERED = False


def _register_tagger(torch) -> None:
    global _TAGGER_REGISTERED
    if _TAGGER_REGISTERED:
        return

    def tagger(storage):
        table = getattr(_LOCATIONS, "table", None)
        if table is None:
            return None
        try:
            return table.get(storage._cdata)
        except AttributeError:
            return None

    torch.serialization.register_package(0, tagger, lambda obj, location: None)
    _TAGGER_REGISTERED = True


def _torch_dtype(torch, name: str):
    return getattr(torch, name)


def _write_torch(plan: ExportPlan, tmp: str, readback: "_ReadBack", *,
                 legacy: bool) -> Generator[ExportProgress, None, dict]:
    """torch writes the container; we fill storage records, each handed to ``readback`` once written.
    Returns each output path's (storage offset, strides) as built."""
    import torch
    _register_tagger(torch)
    groups: dict[int, Any] = {}          # id(source StorageRef) -> (torch UntypedStorage, StorageRef)
    fills: dict[int, tuple] = {}         # id(torch storage) -> ("storage", StorageRef) | ("tensor", TensorRef)
    locations: dict[int, str] = {}
    dtypes_per_storage: dict[int, set] = {}
    for _, t in plan.tensors:
        if t.storage is not None and t.cast_from is None:
            dtypes_per_storage.setdefault(id(t.storage), set()).add(t.dtype.name)
    built: dict[int, Any] = {}           # id(TensorRef) -> torch tensor (a tied tensor is built once)

    def build(t: TensorRef):
        if id(t) in built:
            return built[id(t)]
        tdt = _torch_dtype(torch, t.dtype.name)
        st = t.storage
        whole_storage = (st is not None and t.cast_from is None and len(dtypes_per_storage.get(id(st), ())) == 1
                         and st.nbytes % t.dtype.itemsize == 0)
        if whole_storage:
            if id(st) not in groups:
                ustorage = torch.empty(st.nbytes, dtype=torch.uint8).untyped_storage()
                groups[id(st)] = ustorage
                fills[ustorage._cdata] = ("storage", st)
            ustorage = groups[id(st)]
            out = torch.empty(0, dtype=tdt).set_(ustorage, t.offset, t.shape, t.stride)
        else:
            out = torch.empty(t.shape, dtype=tdt)
            fills[out.untyped_storage()._cdata] = ("tensor", t)
        locations[out.untyped_storage()._cdata] = t.device
        if t.kind == "parameter":
            out = torch.nn.Parameter(out, requires_grad=t.requires_grad)
        elif t.requires_grad and out.is_floating_point():
            out.requires_grad_(True)
        built[id(t)] = out
        return out

    obj = _to_torch(plan.root, torch, build, {})
    _LOCATIONS.table = locations
    try:
        if legacy:
            torch.save(obj, tmp, _use_new_zipfile_serialization=False)
        else:
            with torch.serialization.skip_data():
                torch.save(obj, tmp)
    finally:
        _LOCATIONS.table = None
    # Which record holds which storage: read the file torch wrote with our own reader.
    from ..read.open import open_checkpoint
    records: dict[str, tuple] = {}
    layouts: dict[tuple, tuple] = {}
    with open_checkpoint(tmp) as written:
        by_path = {tuple(p): t for p, t in written.tensor_entries()}
        for path, t in plan.tensors:
            out_t = by_path.get(path)
            if out_t is None:
                raise OperationError(f"internal error: {keypath.format_path(path)} is missing from the written file")
            src_torch = built[id(t)]
            layouts[path] = (src_torch.storage_offset(), tuple(src_torch.stride()))
            fill = fills[src_torch.untyped_storage()._cdata]
            records.setdefault(out_t.storage.key, (fill, out_t.storage.nbytes))
        offsets = _record_offsets(written, tmp, legacy)
    users: dict[int, list[str]] = {}     # id(StorageRef or TensorRef) -> the key paths it is written for
    for path, t in plan.tensors:
        users.setdefault(id(t.storage), []).append(keypath.format_path(path))
        users.setdefault(id(t), []).append(keypath.format_path(path))
    tally = _Tally(sum(nbytes for _, nbytes in records.values()), "writing")
    readback.start()                   # torch wrote the file at its full size, records reserved
    fd = os.open(tmp, os.O_RDWR)
    copier = _Copier(fd)
    try:
        for key, ((kind, what), nbytes) in records.items():
            start, patch_crc = offsets[key]
            named = users.get(id(what), [])
            label = (", ".join(named[:3]) + (f" and {len(named) - 3} more" if len(named) > 3 else "")
                     or f"record {key}")
            if kind == "storage":
                if what.nbytes != nbytes:
                    raise OperationError(f"record {key}: the source has {what.nbytes:,} bytes, expected {nbytes:,}")
                swap = what.byteorder == "big" and what.dtype is not None and what.dtype.itemsize > 1
                check = yield from _put_record(copier, start, nbytes, label, plan, None if swap else what.source,
                                               lambda what=what: _storage_copy_pieces(what), tally)
                _refuse_bad_crc(what.source.crc_error, label, plan)
            else:
                check = yield from _put_record(copier, start, nbytes, label, plan, None,
                                               lambda what=what: ((piece, None) for piece in what.iter_bytes()), tally)
                _refuse_bad_crc(what.integrity_error, label, plan)
            check.key = key
            if patch_crc is not None:
                # torch wrote the archive without the data: its directory holds placeholders for these.
                patch_crc(fd, check.crc)
            readback.submit(check)
    finally:
        copier.close()
        os.close(fd)
    return layouts


@dataclass
class _Check:
    """One written record: where it lies in the output, and the CRC-32 its bytes must have."""
    start: int
    nbytes: int
    crc: int
    label: str
    # The source whose stored CRC-32 ``crc`` is, when its bytes were copied without being read here: a
    # mismatch is then either a damaged source or a bad write, and re-reading the source tells which.
    unread_source: Any = None
    key: str | None = None          # the zip record's name (torch zip output), to check the patched directory


class _Tally:
    def __init__(self, total: int, stage: str):
        self.done, self.total, self.stage = 0, total, stage

    def step(self, n: int) -> ExportProgress:
        self.done += n
        return ExportProgress(self.done, self.total, self.stage)


def _stored_crc(source, nbytes: int) -> int | None:
    """The CRC-32 the source's zip directory stores for exactly these ``nbytes`` bytes (a whole member), or
    None: what torch wrote is the checksum of the same bytes in our output, so it needs no computing."""
    from ..read.formats.torch_zip import InflatedMemberSource, ZipMemberSource
    if isinstance(source, (ZipMemberSource, InflatedMemberSource)) and source.member.size == nbytes \
            and source.size == nbytes:
        return source.member.crc & 0xFFFFFFFF
    return None


def _put_record(copier: "_Copier", at: int, nbytes: int, label: str, plan: ExportPlan, same_source,
                pieces: Callable[[], Iterable[tuple[Any, tuple[str, int] | None]]],
                tally: _Tally) -> Generator[ExportProgress, None, _Check]:
    """Write one record's ``nbytes`` bytes at ``at`` and say which CRC-32 they must have when read back.

    ``same_source``: a source that holds these exact bytes (uncast, in order, same byte order), or None.
    When its zip directory stores their CRC-32 (and damaged bytes are not being forced through), the
    kernel copies them file to file unread and the stored CRC is what the read-back must find: one pass
    over the bytes in all, and a damaged source fails that check as surely as a bad write. Otherwise the
    bytes pass through this process: a zip source checks its CRC as they are read (``read_through``), and
    the CRC of what is written is computed here, in a pool thread while this one writes (crc32 releases
    the GIL), for bytes computed in memory (casts, merges, byte swaps, views) and sources without one.
    """
    stored = None if same_source is None or plan.force_bad_crc else _stored_crc(same_source, nbytes)
    if stored is not None and copier.kernel_copy and same_source.file_location(0) is not None:
        for pos in range(0, nbytes, CHUNK_BYTES):
            n = min(CHUNK_BYTES, nbytes - pos)
            # view() touches no page; only a fallback to pwrite (no copy_file_range) reads it.
            copier.write(same_source.view(pos, n), same_source.file_location(pos), at + pos)
            same_source.release(pos, n)
            yield tally.step(n)
        return _Check(at, nbytes, stored, label, unread_source=same_source)
    crc, pos = 0, at
    for piece, location in pieces():
        n = len(piece)
        if stored is None:
            summed = copier.pool.submit(crc32, piece, crc)
            copier.write(piece, location, pos)
            crc = summed.result()
        else:
            copier.write(piece, location, pos)     # the source checks its stored CRC as these are read
        pos += n
        yield tally.step(n)
    if pos - at != nbytes:
        raise OperationError(f"{label}: wrote {pos - at:,} bytes, expected {nbytes:,}")
    return _Check(at, nbytes, crc if stored is None else stored, label)


def _storage_copy_pieces(st: StorageRef) -> Iterable[tuple[Any, tuple[str, int] | None]]:
    """A storage's bytes in chunks, little-endian whatever the source's byte order, each with where
    the same bytes lie in the source file (None when they must be written from memory)."""
    isz = st.dtype.itemsize if st.dtype else 1
    swap = st.byteorder == "big" and isz > 1
    for pos in range(0, st.nbytes, CHUNK_BYTES):
        n = min(CHUNK_BYTES, st.nbytes - pos)
        piece = st.source.read_through(pos, n)
        if swap:
            yield np.frombuffer(piece, dtype=f">u{isz}").astype(f"<u{isz}").tobytes(), None
        else:
            yield piece, st.source.file_location(pos)
        st.source.release(pos, n)
    st.source.verify()


class _Copier:
    """Puts bytes at a position of the output: ``copy_file_range`` from the source file when the bytes
    are stored there as they are (no trip through this process), ``pwrite`` otherwise."""

    def __init__(self, fd: int):
        from concurrent.futures import ThreadPoolExecutor
        self.fd = fd
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ckptviewer-crc")
        self.sources: dict[str, int] = {}
        self.kernel_copy = hasattr(os, "copy_file_range")

    def write(self, piece, location: tuple[str, int] | None, pos: int) -> None:
        n = len(piece)
        if location is not None and self.kernel_copy:
            path, src_pos = location
            src = self.sources.get(path)
            if src is None:
                src = self.sources[path] = os.open(path, os.O_RDONLY)
            try:
                copied = 0
                while copied < n:
                    got = os.copy_file_range(src, self.fd, n - copied, src_pos + copied, pos + copied)
                    if got <= 0:
                        raise OSError("copy_file_range made no progress")
                    copied += got
                return
            except OSError:
                self.kernel_copy = False          # e.g. an old kernel or filesystem: write from memory
        view = memoryview(piece)
        written = 0
        while written < n:
            written += os.pwrite(self.fd, view[written:], pos + written)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for src in self.sources.values():
            os.close(src)


def _record_offsets(written, tmp: str, legacy: bool) -> dict[str, tuple[int, Any]]:
    """storage key -> (data offset in the file, a CRC patcher or None)."""
    out = {}
    if legacy:
        for key, st in written.storages.items():
            out[key] = (st.source.start, None)
        return out
    import mmap

    from ..read.formats.zipreader import ZipArchive
    with open(tmp, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        archive = ZipArchive(mm)
        prefix = written.meta.get("archive", "archive") + "/"
        for key in written.storages:
            m = archive.members[f"{prefix}data/{key}"]
            start = archive.data_offset(m)
            out[key] = (start, _crc_patcher(mm, m, start))
    finally:
        del archive
        mm.close()
    return out


def _crc_patcher(mm, member, start: int):
    """Writes a record's CRC-32 into its central directory entry and its data descriptor."""
    cd_crc_at = member.directory_offset + 16
    desc = start + member.compressed_size
    desc_crc_at = desc + 4 if mm[desc:desc + 4] == b"PK\x07\x08" else None

    def patch(fd: int, crc: int) -> None:
        raw = struct.pack("<I", crc & 0xFFFFFFFF)
        os.pwrite(fd, raw, cd_crc_at)
        if desc_crc_at is not None:
            os.pwrite(fd, raw, desc_crc_at)
    return patch


def _to_torch(v: Any, torch, build, memo: dict) -> Any:
    if isinstance(v, TensorRef):
        return build(v)
    if isinstance(v, TorchSize):
        return torch.Size(v)
    if isinstance(v, TorchDevice):
        return torch.device(str(v))
    if isinstance(v, TorchEnum):
        return getattr(torch, v.name)
    if not isinstance(v, (dict, list, tuple)):
        return v
    if id(v) in memo:
        return memo[id(v)]
    if isinstance(v, dict):
        out = type(v)() if type(v) in (dict, OrderedDict) else {}
        memo[id(v)] = out
        for k, x in v.items():
            out[k] = _to_torch(x, torch, build, memo)
        if hasattr(v, "_metadata"):
            out._metadata = v._metadata
        return out
    if isinstance(v, list):
        out = []
        memo[id(v)] = out
        out.extend(_to_torch(x, torch, build, memo) for x in v)
        return out
    out = tuple(_to_torch(x, torch, build, memo) for x in v)
    memo[id(v)] = out
    return out


def _write_safetensors(plan: ExportPlan, tmp: str, readback: "_ReadBack") -> Generator[ExportProgress, None, None]:
    header: dict[str, Any] = {}
    if plan.metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in plan.metadata.items()}
    pos = 0
    for (name,), t in plan.tensors:
        header[name] = {"dtype": t.dtype.safetensors, "shape": list(t.logical_shape),
                        "data_offsets": [pos, pos + t.nbytes]}
        pos += t.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(len(raw) + 8) % 8)     # data starts 8-byte aligned, as the library writes it
    tally = _Tally(plan.total_bytes, "writing")
    fd = os.open(tmp, os.O_RDWR | os.O_TRUNC)
    copier = _Copier(fd)
    try:
        os.pwrite(fd, struct.pack("<Q", len(raw)) + raw, 0)
        pos = 8 + len(raw)
        os.ftruncate(fd, pos + plan.total_bytes)       # its full size first, to be mapped for the read-back
        readback.start()
        for path, t in plan.tensors:
            st = t.storage
            whole = (st is not None and t.cast_from is None and t.is_contiguous and t.offset == 0
                     and t.nbytes == st.nbytes and (st.byteorder == "little" or t.dtype.itemsize == 1))
            check = yield from _put_record(copier, pos, t.nbytes, path[0], plan, st.source if whole else None,
                                           lambda t=t: _tensor_copy_pieces(t), tally)
            _refuse_bad_crc(t.integrity_error, path[0], plan)
            readback.submit(check)
            pos += t.nbytes
    finally:
        copier.close()
        os.close(fd)


def _tensor_copy_pieces(t: TensorRef) -> Iterable[tuple[Any, tuple[str, int] | None]]:
    """A tensor's C-contiguous little-endian bytes, with their place in the source file when they are
    stored there in that order (a contiguous, uncast, little-endian tensor)."""
    st = t.storage
    direct = (st is not None and t.cast_from is None and t.is_contiguous
              and (st.byteorder == "little" or t.dtype.itemsize == 1))
    if not direct:
        yield from ((piece, None) for piece in t.iter_bytes())
        return
    start = t.offset * t.dtype.itemsize
    for pos in range(0, t.nbytes, CHUNK_BYTES):
        n = min(CHUNK_BYTES, t.nbytes - pos)
        yield st.source.read_through(start + pos, n), st.source.file_location(start + pos)
        st.source.release(start + pos, n)
    st.source.verify()


def _verify(plan: ExportPlan, tmp: str, readback: "_ReadBack", layouts: dict,
            options: ExportOptions) -> Generator[ExportProgress, None, None]:
    """Re-read the temporary file: its structure with our reader (keys, dtypes, shapes, devices, where
    each tensor lies in its record, the CRC-32s patched into a zip's directory), and wait for every
    record's bytes to have been read back against the CRC-32 known from writing; then check that the
    loader users will run accepts it."""
    from ..read.open import open_checkpoint
    try:
        written = open_checkpoint(tmp)
    except CheckpointError as e:
        raise OperationError(f"the written file does not read back: {e.message}") from None
    with written:
        got = {tuple(p): t for p, t in written.tensor_entries()}
        if options.fmt == "safetensors":
            got = {(p[0],): t for p, t in got.items()}
        want_keys = {p for p, _ in plan.tensors}
        if set(got) != want_keys:
            extra, lost = set(got) - want_keys, want_keys - set(got)
            raise OperationError(f"verification failed: the written file has {len(extra)} unexpected and "
                                 f"{len(lost)} missing tensors")
        for path, t in plan.tensors:
            out = got[path]
            where = keypath.format_path(path)
            if out.dtype.name != t.dtype.name or tuple(out.shape) != tuple(t.shape):
                raise OperationError(f"verification failed for {where}: wrote {out.dtype.name} {list(out.shape)}, "
                                     f"expected {t.dtype.name} {list(t.shape)}")
            if options.fmt != "safetensors" and out.device != t.device:
                raise OperationError(f"verification failed for {where}: device {out.device}, expected {t.device}")
            layout = layouts.get(path)
            if layout is not None and out.numel and (out.offset, tuple(out.stride)) != layout:
                raise OperationError(f"verification failed for {where}: written at offset {out.offset} with strides "
                                     f"{list(out.stride)}, expected {layout[0]} and {list(layout[1])}")
        if options.fmt == "pt":
            for c in readback.checks:
                st = written.storages.get(c.key)
                recorded = _stored_crc(st.source, c.nbytes) if st is not None else None
                if recorded != c.crc:
                    raise OperationError(f"verification failed for {c.label}: the written zip directory does not "
                                         f"record its CRC-32")
    yield from readback.results()
    if options.fmt == "safetensors":
        _check_with_safetensors(tmp, len(plan.tensors))
    elif options.verify_with_torch and (options.fmt == "pt" or plan.total_bytes < (256 << 20)):
        # The legacy format cannot be memory-mapped, so torch would read it all: only for small files.
        _check_with_torch(tmp, options.fmt == "pt-legacy")


class _ReadBack:
    """Reads each written record back once, after the writing, and compares its CRC-32 with the one known
    from writing; a mismatch stops the export with what went wrong.

    The writers ``submit`` each record as it is finished; ``results()`` then sums them, two records at a
    time in pool threads (crc32 releases the GIL, so both cores work; the fsync runs meanwhile), with
    progress. (Summing while the writer copies the next records measured no faster on two loaded cores:
    the sums then compete with the copy.) The file is memory-mapped: the checksum reads the page cache
    in place (``pread`` would copy every byte once more, which measured 3x slower), and each chunk's
    pages are dropped from this process when summed, so memory stays at about a chunk per thread.
    ``close()`` stops the readers at their next chunk (cancel, error)."""

    def __init__(self, path: str):
        self.path = path
        self.checks: list[_Check] = []
        self.mm = None
        self.pool = None
        self.pending: dict = {}
        self.total = 0
        self.read = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def start(self) -> None:
        import mmap
        from concurrent.futures import ThreadPoolExecutor
        if os.path.getsize(self.path):
            with open(self.path, "rb") as f:
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ckptviewer-verify")

    def submit(self, c: _Check) -> None:
        self.checks.append(c)
        self.total += c.nbytes

    def _crc_of(self, c: _Check) -> int | None:
        from ..source.regions import release_map_range
        if c.nbytes and (self.mm is None or c.start + c.nbytes > len(self.mm)):
            raise OperationError("verification failed: the written file is shorter than its records")
        crc, end = 0, c.start + c.nbytes
        for pos in range(c.start, end, CHUNK_BYTES):
            if self.stop.is_set():
                return None
            n = min(CHUNK_BYTES, end - pos)
            with memoryview(self.mm)[pos:pos + n] as piece:
                crc = crc32(piece, crc)
            release_map_range(self.mm, pos, n)
            with self.lock:
                self.read += n
        return crc

    def _conclude(self, fut) -> None:
        c = self.pending.pop(fut)
        got = fut.result()
        if got != c.crc:
            _mismatch(c, got)

    def results(self) -> Generator[ExportProgress, None, None]:
        from concurrent.futures import FIRST_COMPLETED, wait
        for c in self.checks:
            self.pending[self.pool.submit(self._crc_of, c)] = c
        while self.pending:
            finished, _ = wait(list(self.pending), timeout=0.1, return_when=FIRST_COMPLETED)
            for fut in finished:
                self._conclude(fut)
            yield ExportProgress(self.read, self.total, "verifying")

    def close(self) -> None:
        self.stop.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.mm is not None:
            self.mm.close()
            self.mm = None


def _mismatch(c: _Check, got: int) -> None:
    """Say why a record's written bytes fail their CRC-32: a source that was copied unread is checked now,
    so that a damaged source is refused as such (with the way to force it) rather than blamed on the write."""
    if c.unread_source is not None:
        err = c.unread_source.verify()
        if err:
            raise OperationError(f"cannot export {c.label}: {err}; {FORCE_HINT}")
    raise OperationError(f"verification failed for {c.label}: the written bytes differ from the source (CRC-32 "
                         f"{got:08x}, expected {c.crc:08x}); nothing was written")


def _check_with_safetensors(tmp: str, count: int) -> None:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a declared dependency
        return
    try:
        with safe_open(tmp, framework="numpy") as f:
            keys = list(f.keys())
    except Exception as e:  # the library's own errors have no common base class
        raise OperationError(f"the safetensors library rejects the written file: {e}") from None
    if len(keys) != count:
        raise OperationError(f"the safetensors library sees {len(keys)} tensors, expected {count}")


def _check_with_torch(tmp: str, legacy: bool) -> None:
    import torch
    try:
        # mmap reads only the directory and the pickle; the legacy format cannot be mapped.
        torch.load(tmp, map_location="cpu", weights_only=True, mmap=not legacy)
    except Exception as e:
        raise OperationError(f"torch.load(weights_only=True) rejects the written file: {e}") from None
