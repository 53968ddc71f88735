"""Writing a checkpoint as shards plus an index (the layout ``transformers`` reads).

``model.safetensors.index.json`` names the output: the shards are ``model-00001-of-00003.safetensors``
and so on beside it (``pytorch_model-00001-of-00003.bin`` for ``pytorch_model.bin.index.json``), each a
flat mapping name -> tensor, filled in order up to the shard size (a tensor bigger than that gets a
shard of its own). Every shard is written by :func:`export.export_iter`, so each is atomic and verified
like a single-file export; they are written into a private folder beside the destination, the set is
read back through the index with our reader, and only then are the shards and the index renamed into
place (the index last), so a failure leaves the destination as it was.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Generator, Iterable

from ..model.tensor import TensorRef
from ..util.errors import OperationError
from .destination import check_destination, fsync_dir, source_files
from .export import ExportOptions, ExportPlan, ExportProgress, export_iter, plan_export

INDEX_SUFFIX = ".index.json"
DEFAULT_SHARD_SIZE = 5 * 1000 ** 3          # transformers' default max_shard_size ("5GB")
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4,
          "KIB": 1024, "MIB": 1024 ** 2, "GIB": 1024 ** 3, "TIB": 1024 ** 4}


def parse_size(text: str) -> int:
    """``"2GB"`` -> 2,000,000,000; ``"500MiB"``, ``"1.5GB"`` and plain byte counts too (as transformers)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise OperationError(f"cannot read the size {str(text)[:40]!r}", hint="Write it like 2GB, 500MB or 1GiB.")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise OperationError("the shard size must be more than 0 bytes")
    return size


def is_index_path(path: str) -> bool:
    return os.path.basename(str(path)).endswith(INDEX_SUFFIX)


def sharded_format(index_path: str) -> str:
    """The shard format an index name implies: ``*.safetensors.index.json`` -> safetensors, else pt."""
    base = os.path.basename(str(index_path))[:-len(INDEX_SUFFIX)] if is_index_path(index_path) else ""
    return "safetensors" if base.endswith(".safetensors") else "pt"


def shard_file_names(index_path: str, count: int, fmt: str) -> list[str]:
    """``model.safetensors.index.json`` -> ``model-00001-of-00002.safetensors``, ... (transformers' names)."""
    base = os.path.basename(index_path)[:-len(INDEX_SUFFIX)]
    stem, ext = os.path.splitext(base)
    if not ext:
        stem, ext = base, ".safetensors" if fmt == "safetensors" else ".bin"
    return [f"{stem}-{i:05d}-of-{count:05d}{ext}" for i in range(1, count + 1)]


@dataclass
class ShardPlan:
    fmt: str
    index: str                                   # the index file's final path
    names: list[str]                             # shard file names
    groups: list[list[tuple[str, TensorRef]]]    # tensors per shard, in order
    plan: ExportPlan
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"shards: {len(self.names)} {self.fmt} file(s) and the index {os.path.basename(self.index)}"]
        for name, group in zip(self.names[:20], self.groups):
            lines.append(f"  {name}: {len(group)} tensor{'s' if len(group) != 1 else ''}, "
                         f"{sum(t.nbytes for _, t in group):,} bytes")
        if len(self.names) > 20:
            lines.append(f"  ... and {len(self.names) - 20} more shards")
        return lines + [f"note: {n}" for n in self.notes]


@dataclass
class ShardedExportResult:
    path: str                 # the index
    shards: list[str]
    fmt: str
    size: int                 # bytes of all shards
    tensors: int
    seconds: float
    notes: list[str]


def plan_shards(root: Any, index_path: str, options: ExportOptions, shard_size: int) -> ShardPlan:
    """Which tensor goes to which shard (no file is touched)."""
    if not is_index_path(index_path):
        raise OperationError(f"sharded output is named by its index: {os.path.basename(index_path)} does not end "
                             f"in {INDEX_SUFFIX}", hint="Use e.g. OUTDIR/model.safetensors.index.json.")
    plan = plan_export(root, options)
    notes = [f"WARNING: {w}" for w in plan.warnings] + list(plan.notes)
    if plan.problems:
        raise OperationError("cannot export: " + "; ".join(plan.problems[:6])
                             + (f"; and {len(plan.problems) - 6} more" if len(plan.problems) > 6 else ""))
    if options.fmt == "safetensors":
        items = [(path[0], t) for path, t in plan.tensors]
    else:
        flat = plan.root
        if not isinstance(flat, dict) or not all(isinstance(k, str) and isinstance(v, TensorRef)
                                                 for k, v in flat.items()):
            raise OperationError("sharded torch output needs a flat state_dict (names -> tensors)",
                                 hint="Pick one with --select (e.g. --select model_state_dict) and drop "
                                      "non-tensor entries with --drop.")
        items = list(flat.items())
    if not items:
        raise OperationError("there are no tensors to write")
    groups: list[list[tuple[str, TensorRef]]] = [[]]
    size = 0
    for name, t in items:
        if groups[-1] and size + t.nbytes > shard_size:
            groups.append([])
            size = 0
        groups[-1].append((name, t))
        size += t.nbytes
    big = [name for g in groups if len(g) == 1 and g[0][1].nbytes > shard_size for name, _ in g]
    if big:
        notes.append(f"{len(big)} tensor(s) exceed the shard size and have a shard of their own (e.g. {big[0]})")
    if options.fmt != "safetensors":
        where: dict[int, int] = {}
        for i, g in enumerate(groups):
            for _, t in g:
                if t.storage is not None and where.setdefault(id(t.storage), i) != i:
                    notes.append("tensors that share storage fall in different shards; each shard stores its own copy")
                    break
    index_path = os.path.abspath(index_path)
    return ShardPlan(options.fmt, index_path, shard_file_names(index_path, len(groups), options.fmt), groups, plan,
                     list(dict.fromkeys(notes)))


def export_sharded_iter(root: Any, index_path: str, options: ExportOptions, shard_size: int, *,
                        sources: Iterable[str] = ()) -> Generator[ExportProgress, None, ShardedExportResult]:
    """Write shards and their index (see the module notes). Each yield reports progress and is a point
    where the caller may stop (``close()``); nothing is left in the destination folder then."""
    started = time.perf_counter()
    sp = plan_shards(root, index_path, options, shard_size)
    folder = os.path.dirname(sp.index)
    protected = list(sources) + sorted(source_files(t for g in sp.groups for _, t in g))
    finals = [os.path.join(folder, n) for n in sp.names]
    for dest in [sp.index] + finals:
        check_destination(dest, protected, options.overwrite)
    metadata = dict(sp.plan.metadata)
    if options.fmt == "safetensors":
        metadata.setdefault("format", "pt")        # transformers checks it when loading a shard
    shard_options = ExportOptions(fmt=options.fmt, non_tensors="error", overwrite=True, metadata=metadata,
                                  verify_with_torch=options.verify_with_torch)
    workdir = tempfile.mkdtemp(prefix=f".{os.path.basename(sp.index)}.", suffix=".ckptviewer-tmp", dir=folder)
    total = 2 * sum(t.nbytes for g in sp.groups for _, t in g)
    base = 0
    size = 0
    notes = list(sp.notes)
    try:
        for i, (name, group) in enumerate(zip(sp.names, sp.groups)):
            shard_bytes = sum(t.nbytes for _, t in group)
            gen = export_iter(dict(group), os.path.join(workdir, name), shard_options, sources=protected)
            try:
                while True:
                    p = next(gen)
                    done = base + (p.done if p.stage == "writing" else shard_bytes + p.done)
                    yield ExportProgress(min(done, total), total, f"{p.stage} shard {i + 1} of {len(sp.names)}")
            except StopIteration as stop:
                result = stop.value
            finally:
                gen.close()
            notes.extend(n for n in result.notes if n not in notes)
            size += result.size
            base += 2 * shard_bytes
        index = {"metadata": {"total_size": total // 2},
                 "weight_map": {tname: name for name, group in zip(sp.names, sp.groups) for tname, _ in group}}
        tmp_index = os.path.join(workdir, os.path.basename(sp.index))
        with open(tmp_index, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _check_set(tmp_index, index["weight_map"])
        for name, final in zip(sp.names, finals):
            os.replace(os.path.join(workdir, name), final)
        os.replace(tmp_index, sp.index)
        fsync_dir(folder)
    finally:
        # Before the renames the shards are only in the private folder: the destination is as it was.
        shutil.rmtree(workdir, ignore_errors=True)
    return ShardedExportResult(sp.index, finals, options.fmt, size, sum(len(g) for g in sp.groups),
                               time.perf_counter() - started, notes)


def _check_set(index_path: str, weight_map: dict[str, str]) -> None:
    """Read the written set back through its index: every name, in the shard the index says."""
    from ..read.multifile.sharded import read_sharded, shard_of
    from ..util.errors import CheckpointError
    try:
        ck = read_sharded(index_path)
    except CheckpointError as e:
        raise OperationError(f"the written index does not read back: {e.message}") from None
    with ck:
        if ck.warnings:
            raise OperationError(f"the written shards do not read back cleanly: {ck.warnings[0]}")
        for name, shard in weight_map.items():
            t = ck.root.get(name)
            if not isinstance(t, TensorRef) or shard_of(t) != shard:
                raise OperationError(f"verification failed: {name} is not in {shard} as the index says")
        if len(ck.root) != len(weight_map):
            raise OperationError("verification failed: the written shards hold other tensors than the index lists")
