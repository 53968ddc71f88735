"""The safety report: every global each pickle of a file names, and what loading it would have done.

``scan_file(path)`` answers "what would ``torch.load(weights_only=False)``, ``torch.jit.load``,
``numpy.load(allow_pickle=True)`` or ``pickle.load`` import and call if I loaded this, or unpacked it and
loaded what is inside?" without loading anything. It is a *light pass*: a walk over the pickle opcodes
that models the stack only as far as names go (``scanning/walk.py``), so it builds no tensors and no object
graph, never reads tensor bytes, and keeps going as far as the bytes allow: a pickle that names
``os.system`` and is then cut short still reports ``os.system``, and says the file is broken.
``scan_checkpoint(ckpt)`` gives the same report for a file already opened by the reader (from
:attr:`Checkpoint.pickles`, without reading the file again).

Where pickles are looked for (``scanning/``): scanners are bypassed through the container, not the
pickle, so a pickle is found by its bytes wherever a loader or a person could find it. A legacy
torch.save file holds five consecutive pickles; a plain pickle file one or more; a numpy ``.npy`` of
object dtype one after its header. In a zip (torch and TorchScript archives, ``.npz``, plain zips) every
member is sniffed whatever its name (pickles, numpy arrays, nested archives), except the tensor records a
walked ``data.pkl`` names; members are read as the central directory says and, where their local headers
disagree, as those say too; local entries missing from the directory, bytes between members and data
before or after the archive are scanned as well, and every disagreement is reported as an anomaly. Tar
archives (torch < 0.1.10 wrote one; torch reads v7 tars and the last of duplicate names), gzip / bzip2 /
xz streams and 7-Zip archives (with the optional ``py7zr``) are unpacked in memory under caps, never to
disk. TorchScript code that ``torch.jit.load`` runs at load (``__setstate__``) is read from the archive's
``code/`` text (parsed, never run) and listed with what it calls. safetensors holds no pickle.

Each global is classified with :func:`categorize`: *safe* (one of our own reconstructors: tensor
rebuilders, containers), *unknown* (shown as an inert stand-in, e.g. a model's own class) or *dangerous*
(on the list in ``danger.py``, with its reason). A ``STACK_GLOBAL`` whose module or name is not a literal
string (computed while loading, e.g. by ``str(b"os", "ascii")``) is dangerous: only running the file
would tell what it names; so is a pickle whose frames and opcodes disagree (two unpicklers read different
programs from it). Each pickle says where it sat (member and view of the archive) and which loader would
run it; a dangerous global anywhere makes the file dangerous.

Exit statuses of ``ckptviewer scan``: 1 when anything dangerous was seen (even in a broken file or a
member only a person unpacking would load), 0 when every byte range that could hold a pickle was read
and names nothing dangerous, 2 when the file could not be read, or could be read only in part (what was
seen before the break is still listed).
"""
from __future__ import annotations

import gc
import os
from collections import Counter

from ..source.filebytes import file_bytes
from ..util.errors import CheckpointError
from ..util.locations import is_url, shown_location
from .scanning import archives, zips
from .scanning.blobs import MAX_PICKLES, Scanner, kind_of
from .scanning.report import (CATEGORIES, COMPUTED, FRAMES, JIT_LOAD, NUMPY_LOAD, PLAIN_FILE, TORCH_LOAD,
                              CodeFinding, GlobalUse, PickleScan, ScanResult, categorize)
from .scanning.torchscript import torchbind_finding
from .scanning.walk import MAX_NAME, looks_like_pickle, walk_pickle

MAX_INFLATE = zips.MAX_INFLATE

__all__ = ["CATEGORIES", "COMPUTED", "FRAMES", "MAX_INFLATE", "MAX_NAME", "MAX_PICKLES", "CodeFinding", "GlobalUse",
           "PickleScan", "ScanResult", "categorize", "finish", "missing_bytes_problem", "scan_buffer",
           "scan_checkpoint", "scan_file", "walk_pickle"]


def scan_file(path: str | os.PathLike, *, skip: frozenset[str] = frozenset(),
              known_storages: frozenset[str] | None = None) -> ScanResult:
    """The safety report of the file at ``path`` (never raises for what the file holds).

    ``skip``: zip members, named as the report names its pickles (``data.pkl``), not to walk because
    the caller already has their globals (the window has them from the reader); ``known_storages``: the
    tensor records those pickles name (``data/0``, ``constants/1``), which are then not read either."""
    from ..source.local import close_quietly, map_file
    path = os.fspath(path)
    if is_url(path):
        return _scan_url(path, skip, known_storages)
    result = ScanResult(path)
    try:
        if os.path.isdir(path):
            metadata = os.path.join(path, ".metadata")
            if not os.path.isfile(metadata):
                result.error = "this is a folder, not a file (a torch.distributed.checkpoint folder has .metadata)"
                return result
            # torch.distributed.checkpoint's reader pickle.loads the folder's .metadata.
            scan = scan_file(metadata)
            scan.path = path
            scan.format = "torch.distributed.checkpoint" if scan.format == "pickle" else scan.format
            return scan
        buf, resources = map_file(path)
    except OSError as e:
        result.error = f"cannot read the file ({e.strerror or e})"
        return result
    try:
        return scan_buffer(buf, path, result, skip=skip, known_storages=known_storages)
    finally:
        close_quietly(resources)


def _scan_url(url: str, skip: frozenset[str], known_storages: frozenset[str] | None) -> ScanResult:
    """A file at a URL: a zip's directory and pickles are fetched by range (tensors never are); formats
    whose pickles are interleaved with data (legacy, tar, plain pickles) are downloaded first, their size
    said before (``task.notice``)."""
    from ..read.detect import sniff
    from ..source.local import close_quietly, map_file
    from ..source.remote import RemoteFolder, open_remote
    result = ScanResult(shown_location(url))
    resources: list = []
    try:
        target = open_remote(url)
        if isinstance(target, RemoteFolder):
            result.error = "this is a folder, not a file; scan the checkpoint files in it by their URLs"
            return result
        resources.append(target)
        head = target.head(512)
        if target.ranges and head and sniff(head, target.size) in ("zip", "safetensors"):
            return scan_buffer(target, result.path, result, skip=skip, known_storages=known_storages)
        why = "scanning this format needs the whole file" if target.ranges else "the server does not serve byte ranges"
        buf, mapped = map_file(target.full_copy(why))
        resources.extend(mapped)
        return scan_buffer(buf, result.path, result, skip=skip, known_storages=known_storages)
    except CheckpointError as e:
        result.error = f"{e.message} {e.hint}".strip()
        return result
    finally:
        close_quietly(resources)


def scan_buffer(buf, path: str, result: ScanResult | None = None, *, skip: frozenset[str] = frozenset(),
                known_storages: frozenset[str] | None = None) -> ScanResult:
    """The safety report of a file held in ``buf`` (bytes, an mmap, or a remote file's ``FileBytes``);
    ``path`` names it."""
    from ..read.detect import describe_other, sniff
    result = result or ScanResult(path)
    src = file_bytes(buf)
    size = src.size
    if size == 0:
        result.error = "the file is empty"
        return result
    ctx = Scanner(result, skip=skip, known_storages=known_storages)
    head = bytes(src.view(0, min(512, size)))
    kind = sniff(head, size)
    if src.is_remote:
        # Fetched by range: the zip is read through its directory (what torch.load reads), member by member.
        if kind == "zip":
            zips.scan_remote_zip(ctx, src)
        elif kind == "safetensors":
            result.format = "safetensors"
            result.notes.append("safetensors files hold no pickle: loading one cannot run code")
        else:
            result.error = "this format is scanned from a downloaded copy"
        return finish(result)
    buf = src.buffer
    other = kind_of(head)
    # A zip's directory becomes one object per member, and nothing the scan builds is cyclic: pause the
    # cyclic collector meanwhile, as the reader does (it would walk 10^5 members again and again).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if kind == "zip":
            zips.scan_zip(ctx, buf, 0, size, label="", depth=0)
        elif kind == "torch-legacy":
            result.format = "torch-legacy"
            found = ctx.legacy(buf, 0, size, label="", where="", loader=TORCH_LOAD)
            if len(found) == 5 and found[-1].complete:
                _legacy_storages(buf, result)
        elif kind == "tar" or other == "tar":
            archives.scan_tar(ctx, buf, 0, size, label="", depth=0)
        elif kind == "safetensors":
            result.format = "safetensors"
            result.notes.append("safetensors files hold no pickle: loading one cannot run code")
        elif other == "npy":
            ctx.npy(buf, 0, size, label="array", where="", loader=NUMPY_LOAD)
        elif other in ("gzip", "bzip2", "xz"):
            archives.scan_compressed(ctx, other, buf, 0, size, label="", depth=0)
        elif other == "7z":
            archives.scan_7z(ctx, buf, 0, size, label="", depth=0)
        else:
            _scan_plain(ctx, buf, describe_other(head) if kind is None else None)
    except CheckpointError as e:      # a container we could not walk at all
        result.problems.append(e.message)
    except (MemoryError, RecursionError):
        result.problems.append("the file is too large or too deeply nested to scan")
    finally:
        if was_enabled:
            gc.enable()
    return finish(result)


def finish(result: ScanResult) -> ScanResult:
    """Add what the pickles' globals say about TorchScript (a TorchBind object's native ``__setstate__``
    runs at torch.jit.load) and drop repeated code findings. Also for merged reports (the window's)."""
    if result.format == "torchscript":
        seen = {(c.member, c.method) for c in result.code}
        for p in result.pickles:
            if p.loader not in ("", JIT_LOAD) and not p.loader.startswith(JIT_LOAD):
                continue
            for module, name in p.counts:
                found = torchbind_finding(p.name, module, name) if type(module) is str else None
                if found is not None and (found.member, found.method) not in seen:
                    seen.add((found.member, found.method))
                    result.code.append(found)
    return result


def scan_checkpoint(ckpt) -> ScanResult:
    """The report for a file the reader has opened, from the globals it recorded (no second read)."""
    result = ScanResult(ckpt.path, ckpt.format)
    for p in ckpt.pickles:
        result.pickles.append(PickleScan(p.pickle, Counter(p.counts)))
    missing_bytes_problem(ckpt, result)
    return finish(result)


def _legacy_storages(buf, result: ScanResult) -> None:
    """The storages after a legacy file's five pickles hold no code, but a file cut short keeps all five
    pickles and loses the storages: the reader locates each storage (headers only, no data) and a missing
    one makes the file incomplete."""
    from ..read.formats.torch_legacy import read_torch_legacy
    try:
        ckpt = read_torch_legacy(buf, result.path)
    except CheckpointError as e:
        result.problems.append(f"the storages after the pickles cannot be located ({e.message})")
        return
    missing_bytes_problem(ckpt, result)


def missing_bytes_problem(ckpt, result: ScanResult) -> None:
    """A file whose tensors lack bytes was read only in part: say so as a problem (exit status 2)."""
    missing = ckpt.missing_bytes()
    if missing is not None:
        result.problems.append(f"{missing.headline()}. {missing.advice()}")


def _scan_plain(ctx: Scanner, buf, other: str | None) -> None:
    """One pickle after another until the end of the file (what a loop of pickle.load would run), and a
    zip archive after them (torch.load runs the first pickle of a file that does not start as a zip;
    zipfile and unpackers find an archive anywhere before the end record)."""
    result, size = ctx.result, len(buf)
    first = walk_pickle(buf, name="pickle")
    if other is not None and not first.complete and not looks_like_pickle(first):
        if _embedded_zip(ctx, buf, 0):
            return
        if bytes(buf[:64]).lstrip().startswith(b"{"):
            result.error = ("a JSON file (a sharded checkpoint's index?) holds no pickle; scan its shard files, "
                            "e.g. ckptviewer scan *.bin")
        else:
            result.error = f"this is {other}, not a checkpoint or a pickle"
        return
    result.format = "pickle"
    found = ctx.pickles(buf, 0, size, label="pickle", where="", loader=PLAIN_FILE, named=True,
                        next_loader="pickle.load, called again")
    for i, p in enumerate(found[1:], 2):
        p.name = f"pickle {i}"
    end = found[-1].end if found and found[-1].complete else None
    if end is not None and end < size:
        _embedded_zip(ctx, buf, end)


def _embedded_zip(ctx: Scanner, buf, start: int) -> bool:
    """A zip archive whose end record lies near the end of ``buf`` and that starts after ``start``
    (prepended data, a polyglot): scanned as Python's zipfile reads it. True when one was found."""
    size = len(buf)
    eocd = buf.rfind(b"PK\x05\x06", max(start, size - 22 - 0xFFFF), size)
    if eocd < 0:
        return False
    first = buf.find(b"PK\x03\x04", start, eocd)
    lo = first if first >= 0 else start
    ctx.anomaly(f"a zip archive follows the first {lo:,} bytes (torch.load reads the pickle at the start; "
                f"Python's zipfile and unpackers read the archive)")
    zips.scan_zip(ctx, buf, lo, size, label=f"zip archive at byte {lo}", depth=1)
    return True
