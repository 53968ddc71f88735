"""Archives people unpack before loading: tar (torch < 0.1.10 wrote one), gzip / bzip2 / xz streams and
7-Zip. Members are read as bytes, in memory, under caps; nothing is ever extracted to disk.

torch's legacy tar loader opens the file with ``tarfile.open(mode="r:")``, which also reads old v7 tars
without the ustar magic, and takes each of ``storages``, ``tensors`` and ``pickle`` with ``getmember``,
which returns the *last* member of that name; its pickles are interleaved with raw tensor bytes. 7-Zip
needs ``py7zr`` (the optional extra ``ckptviewer[7z]``); without it a 7-Zip file is reported unscanned.
"""
from __future__ import annotations

import bz2
import io
import lzma
import re
import struct
import tarfile
import zlib

from ...model import dtypes
from .report import TORCH_LOAD, UNPACKING, PickleScan
from .walk import looks_like_pickle, walk_pickle

MAX_MEMBERS = 100_000          # members listed from one tar or 7-Zip archive
MAX_ONE = 256 << 20            # bytes one compressed stream or 7-Zip archive is unpacked to
MAX_PLAIN = 16 << 20           # unpacked bytes before the ratio guard applies
MAX_UNPACK_RATIO = 1000        # ... then output may not outgrow input more than this
MAX_RECORDS = 10_000_000       # records followed in a legacy torch tar member
_LEGACY_MEMBERS = ("storages", "tensors", "pickle")
_NONZERO = re.compile(rb"[^\x00]")
SEVEN_ZIP_EXTRA = ("7-Zip archives need the optional py7zr package (pip install 'ckptviewer[7z]'); this one was "
                   "not scanned")


class _Window(io.RawIOBase):
    """A read-only, seekable file over ``buf[start:end]`` (an mmap or bytes), so tarfile and py7zr read
    the archive in place."""

    def __init__(self, buf, start: int, end: int):
        self.buf, self.start, self.end, self.pos = buf, start, end, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, {0: offset, 1: self.pos + offset, 2: self.end - self.start + offset}[whence])
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b) -> int:
        lo = self.start + self.pos
        hi = min(lo + len(b), self.end)
        if hi <= lo:
            return 0
        b[:hi - lo] = self.buf[lo:hi]
        self.pos += hi - lo
        return hi - lo


def _loader(ctx, label: str, depth: int, loader: str) -> str:
    return loader if depth == 0 or loader == UNPACKING else f"{loader} of {ctx.outer_name(label)}, once unpacked"


def _sub(label: str, name: str) -> str:
    return f"{label} > {name}" if label else name


def _is_pickle_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith("pkl") or base.endswith(".pickle")


# -- tar ------------------------------------------------------------------------------------------------------
def scan_tar(ctx, buf, start: int, end: int, *, label: str, depth: int) -> None:
    """Every regular member of the tar in ``buf[start:end]`` by content; torch's legacy members by their
    layout; data after the archive's end blocks."""
    what = label or "the tar archive"
    try:
        tf = tarfile.open(fileobj=_Window(buf, start, end), mode="r:")
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        ctx.problem(f"{what}: the tar archive is unreadable ({e})")
        return
    members: list[tarfile.TarInfo] = []
    try:
        while len(members) < MAX_MEMBERS:
            info = tf.next()
            if info is None:
                break
            members.append(info)
        else:
            ctx.problem(f"{what}: more than {MAX_MEMBERS:,} members; the rest were not scanned")
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        ctx.problem(f"{what}: the tar archive is unreadable after {len(members)} member(s) ({e}); the members "
                    f"before were scanned")
    archive_end = start + tf.offset
    names = [m.name for m in members if m.isreg()]
    legacy = all(n in names for n in _LEGACY_MEMBERS)
    if depth == 0:
        ctx.result.format = "torch-tar" if legacy else "tar"
    last: dict[str, int] = {}
    for i, m in enumerate(members):
        last[m.name] = i
    dups = sorted({m.name for i, m in enumerate(members) if last[m.name] != i})
    if dups:
        shown = ", ".join(repr(n) for n in dups[:5]) + (f" and {len(dups) - 5} more" if len(dups) > 5 else "")
        ctx.anomaly(f"{what} holds more than one member named {shown}; tarfile (and torch.load) read the last")
    skipped = 0
    for i, m in enumerate(members):
        if not m.isreg():
            skipped += not m.isdir()
            continue
        lo = start + m.offset_data
        hi = lo + m.size
        if hi > end:
            ctx.problem(f"tar member {m.name!r} is cut short: {max(end - lo, 0):,} of {m.size:,} bytes are in the "
                        f"file; scanned as far as they go")
            hi = end
        if hi <= lo:
            continue
        earlier = last[m.name] != i
        where = f"{_sub(label, m.name)} (tar member" + (", an earlier member of a duplicated name)" if earlier else ")")
        mlabel = _sub(label, m.name) + (f" (member {i + 1})" if earlier else "")
        if legacy and m.name in _LEGACY_MEMBERS:
            loader = _loader(ctx, label, depth, UNPACKING if earlier else TORCH_LOAD)
            _legacy_member(ctx, buf, lo, hi, m.name, label=mlabel, where=where, loader=loader)
        else:
            ctx.content(buf, lo, hi, label=mlabel, where=where, loader=_loader(ctx, label, depth, UNPACKING),
                        named=_is_pickle_name(m.name), npy_loader=None, depth=depth)
    if skipped:
        ctx.note(f"{what}: {skipped} link(s) or special member(s) were not followed")
    found = _NONZERO.search(buf, archive_end, end) if archive_end < end else None
    if found is not None:
        at = found.start()
        ctx.anomaly(f"{what}: {end - at:,} bytes follow the end of the tar archive")
        ctx.blob(buf, at, end, label=_sub(label, "data after the tar archive's end"),
                 where=f"{label + ': ' if label else ''}bytes {at}..{end} after the tar archive",
                 loader=_loader(ctx, label, depth, "a person or a custom loader"), depth=depth)


def _legacy_member(ctx, buf, start: int, end: int, name: str, *, label: str, where: str, loader: str) -> None:
    """A torch < 0.1.10 tar member: ``pickle`` is one pickle; ``storages`` and ``tensors`` are a count pickle,
    then a header pickle and raw bytes per record (and, for storages, a final pickle of views). Every
    pickle of the member is walked and reported as one."""
    if name == "pickle":
        ctx.pickles(buf, start, end, label=label, where=where, loader=loader, named=True)
        return
    combined = PickleScan(label)
    pos, records = start, 0
    while pos < end and records < MAX_RECORDS:
        scan = walk_pickle(buf, start=pos, end=end, name=label)
        if records and not looks_like_pickle(scan):
            ctx.problem(f"{label}: the bytes at {pos - start} are not the pickle torch reads next; the rest of "
                        f"the member was not scanned")
            break
        combined.counts.update(scan.counts)
        if not scan.complete:
            combined.complete, combined.problem = False, scan.problem
            break
        pos = scan.end
        records += 1
        if records == 1:
            continue                                 # the record count
        if name == "storages":
            sizes = [dtypes.BY_STORAGE[n].itemsize for (_m, n) in scan.counts if n in dtypes.BY_STORAGE]
            if not sizes:
                break                                # the list of views: the member's last pickle
            if pos + 8 > end:
                ctx.problem(f"{label}: a storage is cut off")
                break
            (numel,) = struct.unpack_from("<q", buf, pos)
            if numel < 0 or pos + 8 + numel * sizes[0] > end:
                ctx.problem(f"{label}: a storage declares {numel:,} elements but the member ends first")
                break
            pos += 8 + numel * sizes[0]
        else:
            if pos + 8 > end:
                ctx.problem(f"{label}: a tensor record is cut off")
                break
            (ndim,) = struct.unpack_from("<i", buf, pos)
            if not 0 <= ndim <= 64:
                ctx.problem(f"{label}: a tensor record has rank {ndim}")
                break
            pos += 8 + 16 * ndim + 8
    ctx.add(combined, where, loader)


# -- gzip, bzip2, xz ------------------------------------------------------------------------------------------
def scan_compressed(ctx, kind: str, buf, start: int, end: int, *, label: str, depth: int) -> None:
    """A compressed stream: unpacked in memory under the caps, then scanned by content (a .tar.gz's tar)."""
    if depth == 0:
        ctx.result.format = kind
    data, problem = _unpack(kind, memoryview(buf)[start:end], MAX_ONE)
    if not ctx.spend(len(data), label):
        return
    if problem:
        ctx.problem(f"{label or 'the file'}: {problem}; what it unpacks to was scanned")
    ctx.content(data, 0, len(data), label=label, where=f"{ctx.outer_name(label)}, unpacked from {kind}",
                loader=UNPACKING, named=False, npy_loader=None, depth=depth)


_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}


def _unpack(kind: str, view: memoryview, cap: int) -> tuple[bytearray, str | None]:
    """Up to ``cap`` bytes of a gzip / bzip2 / xz stream (several concatenated streams too): the bytes,
    and why unpacking stopped early (None when the stream was unpacked whole). Past 16 MiB the output may
    not outgrow the input more than 1000-fold (a bomb is unpacked in part, and that part is scanned)."""
    def make():
        if kind == "gzip":
            return zlib.decompressobj(31)
        return bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()

    out = bytearray()
    pos, step = 0, 64 << 10
    d, pending = make(), b""
    try:
        while True:
            room = min(1 << 20, cap - len(out) + 1)
            if kind == "gzip":
                if not pending:
                    if pos >= len(view):
                        break
                    pending = bytes(view[pos:pos + step])
                    pos += len(pending)
                out += d.decompress(pending, room)
                pending = d.unconsumed_tail
            else:
                if d.needs_input and not pending:
                    if pos >= len(view):
                        break
                    pending = bytes(view[pos:pos + step])
                    pos += len(pending)
                piece, pending = (pending, b"") if d.needs_input else (b"", pending)
                out += d.decompress(piece, room)
            if len(out) > cap:
                del out[cap:]
                return out, f"it unpacks past the scan's cap of {cap >> 20} MiB"
            if len(out) > MAX_PLAIN and len(out) > MAX_UNPACK_RATIO * pos:
                return out, f"it unpacks more than {MAX_UNPACK_RATIO}-fold (a bomb?)"
            if d.eof:
                rest = d.unused_data + pending
                if len(rest) < 8 and pos < len(view):
                    more = bytes(view[pos:pos + step])
                    pos += len(more)
                    rest += more
                if not rest:
                    return out, None
                if not rest.startswith(_MAGIC[kind]):
                    extra = len(rest) + len(view) - pos
                    return out, f"{extra:,} bytes after the {kind} stream are not part of it"
                d, pending = make(), rest        # another stream follows (concatenated gzip / bzip2 / xz)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as e:
        return out, f"it does not unpack ({e})"
    if not d.eof:
        return out, "the compressed stream ends early"
    return out, None


# -- 7-Zip ----------------------------------------------------------------------------------------------------
def scan_7z(ctx, buf, start: int, end: int, *, label: str, depth: int) -> None:
    """Every member of a 7-Zip archive, unpacked to memory (never to disk) under a size cap."""
    if depth == 0:
        ctx.result.format = "7z"
    what = label or "the 7-Zip archive"
    try:
        import py7zr
        from py7zr.io import BytesIOFactory
    except ImportError:
        ctx.problem(f"{what}: {SEVEN_ZIP_EXTRA}")
        return
    cap = MAX_ONE
    try:
        with py7zr.SevenZipFile(_Window(buf, start, end), mode="r", max_extract_size=cap) as z:
            if z.needs_password():
                ctx.problem(f"{what}: the 7-Zip archive is encrypted; its members were not scanned")
                return
            infos = z.list()
            if len(infos) > MAX_MEMBERS:
                ctx.problem(f"{what}: more than {MAX_MEMBERS:,} members; not scanned")
                return
            declared = sum(max(int(i.uncompressed or 0), 0) for i in infos)
            if declared > cap or not ctx.spend(declared, label):
                if declared > cap:
                    ctx.problem(f"{what}: its members unpack to {declared:,} bytes, past the scan's cap of "
                                f"{cap >> 20} MiB; not scanned")
                return
            factory = BytesIOFactory(cap)
            z.extract(factory=factory)
    except ImportError:
        ctx.problem(f"{what}: {SEVEN_ZIP_EXTRA}")
        return
    except Exception as e:  # noqa: BLE001 - py7zr raises its own and library errors on hostile archives
        ctx.problem(f"{what}: the 7-Zip archive could not be unpacked ({type(e).__name__}: {str(e)[:120]})")
        return
    for name, product in factory.products.items():
        product.seek(0)
        data = product.read()
        ctx.content(data, 0, len(data), label=_sub(label, name), where=f"{_sub(label, name)} (7-Zip member)",
                    loader=_loader(ctx, label, depth, UNPACKING), named=_is_pickle_name(name), npy_loader=None,
                    depth=depth)
