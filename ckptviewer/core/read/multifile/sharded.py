"""Sharded checkpoints: an index JSON naming which shard file holds each tensor.

Layout (what ``transformers`` writes with ``save_pretrained(max_shard_size=...)``):
``model.safetensors.index.json`` or ``pytorch_model.bin.index.json`` holds
``{"metadata": {"total_size": N, ...}, "weight_map": {tensor name: shard file name}}`` and the shard
files (``model-00001-of-00003.safetensors``, ``pytorch_model-00001-of-00003.bin``) sit beside it.

Opening the index opens every shard the usual way (memory-mapped, directory and pickle read, no tensor
bytes) and shows one mapping, name -> tensor, in the index's order. Each tensor's storage key starts
with its shard's file name (``model-00001-of-00003.safetensors:embed.weight``), so the details view and
``info --json`` say where it lives; ``meta["shards"]`` lists the files. A missing or unreadable shard is
a warning and its tensors are unreadable entries; the rest opens.

The index is untrusted text: its size is capped, its types checked, and a shard name must be a plain
file name in the index's folder (no ``../``, no absolute path, no link that leads out of the folder).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import urllib.parse
from collections import Counter
from typing import Any

from ...model.checkpoint import Checkpoint, PickleGlobals
from ...model.objects import Unreadable
from ...model.tensor import TensorRef
from ...source.local import close_quietly
from ...util.errors import CheckpointError, CorruptFileError, LimitExceededError, NotACheckpointError
from ...util.locations import is_url, location_name, shown_location
from ...util.units import human_bytes

MAX_INDEX_BYTES = 64 << 20        # a 100,000-tensor index is a few MB
MAX_SHARDS = 100_000
REMOTE_SHARDS_AT_ONCE = 8
INDEX_SUFFIX = ".index.json"


def looks_index(head: bytes) -> bool:
    """True when a file's first bytes could be a JSON object (an index is sniffed by content, then parsed)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    # JSON text never holds a NUL byte; a safetensors file whose header length starts with 0x7b ("{")
    # does (the high bytes of its 8-byte length), and must not be taken for an index.
    return text.startswith(b"{") and b"\x00" not in head


def find_index(folder: str) -> str | None:
    """The one ``*.index.json`` in ``folder`` (None when there is none); several are an error."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(INDEX_SUFFIX))
    except OSError as e:
        raise CheckpointError(f"cannot list the folder ({e.strerror or e})", path=folder) from None
    names = [n for n in names if os.path.isfile(os.path.join(folder, n))]
    if not names:
        return None
    if len(names) > 1:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise NotACheckpointError(f"this folder holds {len(names)} shard indexes ({shown})",
                                  path=folder, hint="Open the index file you mean.")
    return os.path.join(folder, names[0])


def plain_file_in(folder: str, name: Any) -> tuple[str | None, str | None]:
    """(path, None) when ``name`` is a plain file name inside ``folder``; (None, why not) otherwise.

    A hostile index or metadata could name ``../../.ssh/id_rsa`` or ``/etc/passwd``; such names are
    refused, and so is a link in the folder that leads out of it.
    """
    if not isinstance(name, str) or not name:
        return None, "the file name is not a string"
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or os.path.isabs(name):
        return None, f"{name[:80]!r} is not a plain file name in the checkpoint's folder"
    path = os.path.join(folder, name)
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(path)
    if os.path.dirname(real) != real_folder:
        return None, f"{name[:80]!r} is a link that leads out of the checkpoint's folder"
    return path, None


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise CorruptFileError(f"the index names {str(k)[:80]!r} twice")
        out[k] = v
    return out


def read_index(path: str, data: bytes | None = None) -> tuple[dict[str, str], dict]:
    """Parse and check an index file (or its bytes, ``data``): (weight_map in file order, metadata)."""
    if data is None and is_url(path):
        from ...source.remote import read_small
        data, _ = read_small(path, MAX_INDEX_BYTES + 1)
    if data is None:
        size = os.path.getsize(path)
        if size > MAX_INDEX_BYTES:
            raise LimitExceededError(f"the index is {size:,} bytes (the limit is {MAX_INDEX_BYTES:,})")
        with open(path, "rb") as f:
            raw = f.read(MAX_INDEX_BYTES + 1)
    else:
        if len(data) > MAX_INDEX_BYTES:
            raise LimitExceededError(f"the index is over {MAX_INDEX_BYTES:,} bytes")
        raw = bytes(data)
    try:
        doc = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_no_duplicates)
    except CorruptFileError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise NotACheckpointError(f"this is a text file that is not a valid JSON index ({str(e)[:120]})") from None
    if not isinstance(doc, dict) or "weight_map" not in doc:
        raise NotACheckpointError("this JSON file has no \"weight_map\", so it is not a sharded checkpoint index",
                                  hint="A sharded checkpoint's index is model.safetensors.index.json or "
                                       "pytorch_model.bin.index.json.")
    weight_map = doc["weight_map"]
    if not isinstance(weight_map, dict):
        raise CorruptFileError("the index's \"weight_map\" is not a mapping")
    bad = [k for k, v in weight_map.items() if not isinstance(v, str)]
    if bad:
        raise CorruptFileError(f"the index maps {len(bad)} name(s) to something other than a file name "
                               f"(e.g. {bad[0][:80]!r})")
    metadata = doc.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise CorruptFileError("the index's \"metadata\" is not a mapping")
    return weight_map, metadata


def remote_sibling(index_url: str, name: Any) -> tuple[str | None, str | None]:
    """(URL, None) of a shard named ``name`` next to a remote index; (None, why not) when the name is not a
    plain file name (a hostile index could name ``../other-repo/x`` or an absolute URL)."""
    if not isinstance(name, str) or not name:
        return None, "the file name is not a string"
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or "://" in name or "?" in name \
            or "#" in name:
        return None, f"{name[:80]!r} is not a plain file name next to the index"
    base = index_url.split("?", 1)[0].split("#", 1)[0]
    base = base[:base.rfind("/") + 1]
    if base.lower().startswith(("http://", "https://")):
        return base + urllib.parse.quote(name), None
    return base + name, None


def read_sharded(index_path: str, *, index_bytes: bytes | None = None) -> Checkpoint:
    """Open a sharded checkpoint from its index file (see the module notes). ``index_path`` may be a URL
    (its shards are then the URLs beside it, opened concurrently and read by range); ``index_bytes`` is the
    index's content when the caller has already read it."""
    remote = is_url(index_path)
    if not remote:
        index_path = os.path.abspath(index_path)
    folder = os.path.dirname(index_path)
    weight_map, metadata = read_index(index_path, index_bytes)
    warnings: list[str] = []
    shard_names = list(dict.fromkeys(weight_map.values()))
    if len(shard_names) > MAX_SHARDS:
        raise LimitExceededError(f"the index names {len(shard_names):,} shard files")
    opened: dict[str, Checkpoint] = {}
    problems: dict[str, str] = {}
    shards_meta: list[dict] = []
    resources: list[Any] = []
    per_shard = Counter(weight_map.values())
    try:
        located = {name: (remote_sibling(index_path, name) if remote else plain_file_in(folder, name))
                   for name in shard_names}
        results = _open_shards({n: p for n, (p, _) in located.items() if p is not None}, remote)
        for name in shard_names:
            entry: dict = {"file": name, "tensors": per_shard[name]}
            shards_meta.append(entry)
            path, why = located[name]
            if path is None:
                problems[name] = why
            elif not remote and not os.path.exists(path):
                problems[name] = f"shard {name} is missing"
            elif not remote and not os.path.isfile(path):
                problems[name] = f"shard {name} is not a regular file"     # a FIFO would block the reader
            else:
                ck = results.get(name)
                if isinstance(ck, CheckpointError):
                    problems[name] = f"shard {name} cannot be read: {ck.message}"
                elif ck is not None:
                    resources.append(ck)
                    opened[name] = ck
                    entry["format"] = ck.format
                    entry["bytes"] = ck.file_size
            if name in problems:
                entry["problem"] = problems[name]
                warnings.append(problems[name] if problems[name].startswith("shard ")
                                else f"shard {problems[name]}; not opened")
        root, storages, pickles = _merge(weight_map, opened, problems, warnings)
    except BaseException:
        close_quietly(resources)
        raise
    formats = sorted({e["format"] for e in shards_meta if "format" in e})
    meta: dict = {
        "index": location_name(index_path),
        "shards": shards_meta,
        "shard_format": formats[0] if len(formats) == 1 else ", ".join(formats) or "none readable",
    }
    if metadata:
        meta["metadata"] = {str(k): v if isinstance(v, str) else json.dumps(v)[:200] for k, v in metadata.items()}
    total = sum(e.get("bytes", 0) for e in shards_meta)
    missing = [e["file"] for e in shards_meta if "problem" in e]
    layout = [f"{len(shards_meta)} shard file{'s' if len(shards_meta) != 1 else ''} ({human_bytes(total)})"
              + (f", {len(missing)} missing or unreadable: {', '.join(missing[:4])}" if missing else "")]
    layout += [f"{e['file']}: {e['tensors']:,} tensor{'s' if e['tensors'] != 1 else ''}"
               + (f", {human_bytes(e['bytes'])}" if "bytes" in e else "")
               + (f" ({e['problem']})" if "problem" in e else "") for e in shards_meta[:12]]
    if len(shards_meta) > 12:
        layout.append(f"... and {len(shards_meta) - 12} more shard files")
    meta["layout"] = layout
    fmt = f"sharded {meta['shard_format']}" if len(formats) == 1 else "sharded"
    index_size = len(index_bytes) if index_bytes is not None else (0 if remote else os.path.getsize(index_path))
    return Checkpoint(shown_location(index_path), fmt, root, storages=storages, warnings=warnings, meta=meta,
                      pickles=pickles, file_size=index_size + total, resources=resources)


def _open_shards(paths: dict[str, str], remote: bool) -> dict[str, Checkpoint | CheckpointError]:
    """Open each shard (local ones one after another; remote ones a few at a time, since each costs a
    round trip or two); a shard's error is its result, the others still open."""
    from ..detect import open_file

    def one(path: str) -> Checkpoint | CheckpointError:
        if not remote and not os.path.isfile(path):
            return CheckpointError("not a regular file")       # reported by the caller
        try:
            return open_file(path)
        except CheckpointError as e:
            return e

    if not remote or len(paths) <= 1:
        return {name: one(path) for name, path in paths.items()}
    from ...util.task import adopt_context, check_cancelled, current_context
    ctx = current_context()

    def in_context(path: str) -> Checkpoint | CheckpointError:
        with adopt_context(ctx):
            return one(path)
    out: dict[str, Checkpoint | CheckpointError] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=REMOTE_SHARDS_AT_ONCE) as pool:
        futures = {name: pool.submit(in_context, path) for name, path in paths.items()}
        try:
            for name, fut in futures.items():
                out[name] = fut.result()
                check_cancelled()
        except BaseException:
            for fut in futures.values():
                fut.cancel()
            for res in out.values():
                if isinstance(res, Checkpoint):
                    res.close()
            for fut in futures.values():
                if fut.done() and not fut.cancelled() and isinstance(fut.result(), Checkpoint):
                    fut.result().close()
            raise
    return out


def _shard_mapping(ck: Checkpoint) -> dict | None:
    root = ck.root
    return root if isinstance(root, dict) else None


def _merge(weight_map: dict[str, str], opened: dict[str, Checkpoint], problems: dict[str, str],
           warnings: list[str]) -> tuple[dict, dict, list[PickleGlobals]]:
    root: dict[str, Any] = {}
    storages: dict = {}
    pickles: list[PickleGlobals] = []
    mappings: dict[str, dict | None] = {}
    for name, ck in opened.items():
        mapping = _shard_mapping(ck)
        mappings[name] = mapping
        if mapping is None:
            warnings.append(f"shard {name} holds a {type(ck.root).__name__}, not a mapping of tensor names; "
                            f"its tensors are unreadable")
        warnings.extend(f"shard {name}: {w}" for w in ck.warnings)
        for p in ck.pickles:
            pickles.append(PickleGlobals(f"{name}/{p.pickle}", p.counts))
        for key, st in ck.storages.items():
            st.key = f"{name}:{key}"          # the shard shows wherever the storage key does
            storages[st.key] = st
    absent: dict[str, list[str]] = {}
    for tensor_name, shard in weight_map.items():
        if shard in problems:
            root[tensor_name] = Unreadable("tensor", problems[shard])
            continue
        mapping = mappings.get(shard)
        if mapping is None:
            root[tensor_name] = Unreadable("tensor", f"shard {shard} is not a mapping of tensors")
            continue
        if tensor_name in mapping:
            root[tensor_name] = mapping[tensor_name]
        else:
            absent.setdefault(shard, []).append(tensor_name)
            root[tensor_name] = Unreadable("tensor", f"listed in the index but absent from shard {shard}")
    for shard, names in absent.items():
        shown = ", ".join(repr(n[:80]) for n in names[:6]) + (f", and {len(names) - 6} more" if len(names) > 6 else "")
        warnings.append(f"the index lists {len(names)} name(s) in shard {shard} that it does not hold: {shown}")
    # Tensors a shard holds that the index does not list: loaders that read whole shards would see
    # them, so they are shown (after the indexed ones) and reported.
    for shard, mapping in mappings.items():
        if not mapping:
            continue
        extra = [k for k in mapping if weight_map.get(k) != shard]
        if not extra:
            continue
        shown = (", ".join(repr(str(n)[:80]) for n in extra[:6])
                 + (f", and {len(extra) - 6} more" if len(extra) > 6 else ""))
        elsewhere = [k for k in extra if k in weight_map]
        warnings.append(f"shard {shard} holds {len(extra)} entr{'ies' if len(extra) != 1 else 'y'} the index does "
                        f"not map to it: {shown}" + (f" ({len(elsewhere)} of them are mapped to another shard; "
                                                     f"the index's choice is shown)" if elsewhere else ""))
        for k in extra:
            if k not in root:
                root[k] = mapping[k]
    return root, storages, pickles


def shard_of(t: TensorRef) -> str | None:
    """The shard file a tensor of a sharded checkpoint lives in (from its storage key)."""
    if t.storage is None or ":" not in t.storage.key:
        return None
    return t.storage.key.split(":", 1)[0]
