"""Zip archives (torch archives, TorchScript archives, ``.npz``, plain zips), read both ways.

Every member is read as its central directory entry says (what torch.load, zipfile and numpy.load read)
and, where its local header says something else (another method, other sizes), as the local header says
too; local entries the directory does not list, bytes between members, before the archive, after its end
record and in its comment are scanned as well. What a member holds is found from its bytes, not its name:
pickles, numpy arrays and nested archives wherever they sit. Only the storages that a walked ``data.pkl``
names are left unread: torch.load reads them as raw bytes, never unpickles them.

Which reader reaches each pickle: the ``data.pkl`` under the first entry's folder is torch.load's (and
``constants.pkl`` torch.jit.load's), members with numpy content are numpy.load's (an ``.npz`` reads any
member with npy content, whatever its name), the rest only a person who unpacks the archive would load.
"""
from __future__ import annotations

import bz2
import zlib

from ...read.formats.zipcheck import layout, walk_local
from ...read.formats.zipreader import REFUSED_FLAGS, PICKLE_MAX_RATIO, ZipArchive, directory_anomalies
from ...util.errors import CheckpointError
from .report import JIT_LOAD, NUMPY_LOAD, TORCH_LOAD, UNPACKING
from .torchscript import analyze_code

MAX_INFLATE = 256 << 20        # a compressed member is inflated to at most this many bytes
SNIFF = 64 << 10               # bytes of a compressed member inflated to tell what it holds
MAX_CODE = 16 << 20            # bytes of one TorchScript code file read
MAX_CODE_TOTAL = 64 << 20      # bytes of TorchScript code read from one archive
MAX_CRC = 64 << 20             # members up to this size that hold no pickle still get their CRC checked
MAX_GAP_NOTE = 24              # unexplained bytes between members worth an anomaly (a data descriptor is up to 24)


def _is_pickle_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith("pkl") or base.endswith(".pickle")


def scan_zip(ctx, buf, start: int, end: int, *, label: str, depth: int) -> None:
    """Scan the zip archive in ``buf[start:end]``. ``label``: the archive's own label, empty for the file
    itself; members are labelled ``label > member`` inside it."""
    z = _Zip(ctx, buf, start, end, label, depth)
    z.scan()


class _Zip:
    def __init__(self, ctx, buf, start: int, end: int, label: str, depth: int):
        self.ctx, self.buf, self.start, self.end, self.label, self.depth = ctx, buf, start, end, label, depth
        self.top = depth == 0
        self.found = 0                        # pickles found in this archive
        self.remote = False                   # a remote file (FileBytes): members fetched by range

    def data_start(self, i: int) -> int:
        """Where entry ``i``'s bytes start, as torch reads it (after its local header), or -1."""
        if not self.remote:
            return self.layout.data_start[i]
        try:
            return self.archive.data_offset(self.archive.entries[i])
        except CheckpointError as e:
            self.ctx.problem(e.message)
            return -1

    def bytes_of(self, start: int, stop: int, cap: int = MAX_INFLATE):
        """(buffer, start, stop) holding bytes [start, stop) of the file: a view of the map, or for a remote
        file the bytes fetched by range (at most ``cap`` of them)."""
        if not self.remote:
            return self.buf, start, stop
        data = bytes(self.buf.view(start, min(stop - start, cap)))
        return data, 0, len(data)

    # -- labels and loaders --------------------------------------------------------------------------
    def name_label(self, name: str, prefix: str = "") -> str:
        inner = name[len(prefix):] if prefix and name.startswith(prefix) else name
        return f"{self.label} > {inner}" if self.label else inner

    def loader(self, loader: str) -> str:
        if self.top or loader == UNPACKING:
            return loader
        return f"{loader} of {self.ctx.outer_name(self.label)}, once unpacked"

    def where(self, name: str, view: str) -> str:
        return f"{self.name_label(name)} ({view})"

    # -- the scan ------------------------------------------------------------------------------------
    def scan(self) -> None:
        ctx = self.ctx
        try:
            archive = ZipArchive(self.buf, name=self.label or ctx.result.path, start=self.start, end=self.end)
        except CheckpointError as e:
            if self.remote:
                ctx.problem(f"the zip directory is unreadable ({e.message}); download the file and scan the copy "
                            f"to walk the members from their local headers")
                return
            ctx.problem(f"{self.label + ': ' if self.label else ''}the zip directory is unreadable ({e.message}); "
                        f"scanning members found by their local headers instead")
            self.scan_without_directory()
            return
        self.archive = archive
        lay = None if self.remote else layout(archive)
        self.layout = lay
        names = archive.order
        data_pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        prefix = data_pkls[0][: -len("data.pkl")] if len(data_pkls) == 1 else ""
        self.prefix = prefix
        first = archive.entries[0].name if archive.entries else ""
        top = first.split("/", 1)[0] + "/" if "/" in first else None
        torch_pkl = top + "data.pkl" if top and top + "data.pkl" in archive.members else None
        code_prefix = prefix + "code/"
        script = any(n.startswith(code_prefix) for n in names) or prefix + "constants.pkl" in archive
        self.script = script
        if self.top:
            ctx.result.format = ("torchscript" if script else "torch-zip" if data_pkls else
                                 "numpy .npz" if any(n.endswith(".npy") for n in names) else "zip")
        for w in archive.warnings:
            ctx.anomaly(self.tag(w))
        for a in directory_anomalies(archive, prefix if data_pkls else None, overlaps=False):
            ctx.anomaly(self.tag(a))
        for a in lay.anomalies if lay is not None else ():
            ctx.anomaly(self.tag(a))
        if self.remote:
            self.prefetch(prefix)

        entries = archive.entries
        order = list(range(len(entries)))
        # The object pickles first: the storages they name are raw tensor bytes, never unpickled.
        firsts = [i for i in order if entries[i].name.endswith(("data.pkl", "constants.pkl"))]
        storages: set[str] = set(ctx.known_storages or ())
        for i in firsts:
            m = entries[i]
            loader = UNPACKING
            if archive.members[m.name] is m and not m.flags & REFUSED_FLAGS:
                if m.name == torch_pkl:
                    loader = JIT_LOAD if script else TORCH_LOAD
                elif script and top and m.name == top + "constants.pkl":
                    loader = JIT_LOAD
            scans = self.member(i, loader)
            folder = "constants/" if m.name.endswith("constants.pkl") else "data/"
            base = m.name[: -len("constants.pkl" if folder == "constants/" else "data.pkl")]
            for s in scans:
                storages.update(f"{base}{folder}{k}" for k in s.storage_keys)
        if ctx.known_storages:
            storages.update(prefix + k for k in ctx.known_storages)
        done = set(firsts)
        for i in order:
            if i in done:
                continue
            m = entries[i]
            if m.name in storages and archive.members[m.name] is m:
                continue                     # a tensor's bytes: torch reads them raw
            # torch.jit.load reads TorchScript's debug pickles (source ranges) with its own unpickler.
            jit = script and m.name.endswith(".debug_pkl") and m.name.startswith(prefix + "code/")
            self.member(i, JIT_LOAD if jit and archive.members[m.name] is m else UNPACKING)
        if self.remote:
            self.finish_remote(script, prefix, data_pkls)
            return
        for i, local in lay.local.items():
            self.local_reading(i, local)
        for lo, hi in lay.gaps:
            self.gap(lo, hi)
        if lay.comment:
            ctx.blob(self.buf, *lay.comment, label=self.sub_label("the archive's comment"),
                     where=f"{self.outer_where()}the end record's comment", loader=self.loader(UNPACKING),
                     depth=self.depth)
        if lay.trailing:
            ctx.blob(self.buf, *lay.trailing, label=self.sub_label("data after the archive's end"),
                     where=f"{self.outer_where()}bytes {lay.trailing[0]}..{lay.trailing[1]} after the end record",
                     loader=self.loader("a person or a custom loader"), depth=self.depth)
        if archive.shift > self.start:
            ctx.blob(self.buf, self.start, archive.shift, label=self.sub_label("data before the archive"),
                     where=f"{self.outer_where()}bytes {self.start}..{archive.shift} before the archive",
                     loader=self.loader("a person or a custom loader"), depth=self.depth)
        if script:
            self.torchscript_code(prefix)
        if self.top and not data_pkls and not self.found and not ctx.result.pickles:
            ctx.note("a zip archive without data.pkl or other pickles")

    def prefetch(self, prefix: str) -> None:
        """A remote file: say ahead which members will be read (all but the tensor records), so they come in
        few requests."""
        known = {prefix + k for k in self.ctx.known_storages or ()}
        ranges = [(m.header_offset, min(m.header_offset + 30 + 2 * m.name_size + 128 + m.compressed_size, self.end))
                  for m in self.archive.entries if m.name not in known and "/data/" not in m.name]
        self.buf.prefetch(ranges)

    def finish_remote(self, script: bool, prefix: str, data_pkls: list) -> None:
        ctx = self.ctx
        for w in self.archive.warnings:          # local headers of the members read by range
            ctx.anomaly(self.tag(w))
        if script:
            self.torchscript_code(prefix)
        if self.top and not data_pkls and not self.found and not ctx.result.pickles:
            ctx.note("a zip archive without data.pkl or other pickles")
        ctx.note("a remote file is scanned through its directory, as torch.load reads it: the members it lists "
                 "were fetched by range and sniffed, but the local headers of the tensor records, bytes between "
                 "members and data after the archive were not read; download the file and scan the copy for that")

    def tag(self, text: str) -> str:
        return f"{self.label}: {text}" if self.label else text

    def sub_label(self, what: str) -> str:
        return f"{self.label} > {what}" if self.label else what

    def outer_where(self) -> str:
        return f"{self.label}: " if self.label else ""

    # -- one member, read as the directory says ---------------------------------------------------------
    def member(self, i: int, loader: str) -> list:
        ctx, archive, m = self.ctx, self.archive, self.archive.entries[i]
        last = archive.members[m.name] is m
        if self.top and ctx.skip and last and self.name_label(m.name, self.prefix) in ctx.skip and self.remote:
            return []                           # the caller has its globals; remote: not fetched again
        start = self.data_start(i)
        label = self.name_label(m.name, self.prefix) + ("" if last else f" (entry {i + 1}, an earlier duplicate)")
        view = "central directory" if last else "central directory, an earlier entry of a duplicated name"
        if m.flags & REFUSED_FLAGS:
            view += ", flagged encrypted or patched: torch.load and zipfile refuse it; scanned as it is"
            loader = UNPACKING
        where = self.where(m.name, view)
        if start < 0:
            return []                           # no local header there: its bytes are scanned as a gap
        if self.top and ctx.skip and last and label in ctx.skip and not self.may_diverge(start, m):
            return []
        stop = start + m.compressed_size
        if stop > self.end:
            ctx.problem(f"zip member {m.name!r} is cut short: {self.end - start:,} of {m.compressed_size:,} bytes "
                        f"are in the file; scanned as far as they go")
            stop = self.end
        # numpy.load reads an .npz member with Python's zipfile, which refuses a local name that differs.
        local = self.layout.local.get(i) if self.layout is not None else None
        npy_loader = self.loader(NUMPY_LOAD) if last and not m.flags & REFUSED_FLAGS \
            and (local is None or local[0] == m.name) else None
        return self.content(start, stop, m.method, m.size, label=label, where=where, loader=self.loader(loader),
                            named=_is_pickle_name(m.name), crc=m.crc, npy_loader=npy_loader, name=m.name)

    def may_diverge(self, start: int, m) -> bool:
        """A pickle with frames (protocol 4 or 5) may read differently in two unpicklers: walk it even when
        the caller has its globals (the reader does not look at frames)."""
        head = bytes(self.bytes_of(start, start + 2)[0][:2]) if self.remote else bytes(self.buf[start:start + 2])
        return m.method != 0 or len(head) < 2 or head[0] != 0x80 or head[1] >= 4

    def content(self, start: int, stop: int, method: int, size: int, *, label: str, where: str, loader: str,
                named: bool, crc: int | None, npy_loader: str | None, name: str, other_view: bool = False) -> list:
        """Inflate (under caps) and hand the bytes to the content sniffer; check the CRC of what was read.
        ``other_view``: a second reading of a member (as its local header says): when that reading fails,
        no reader gets anything from it, so it is a note, not a problem."""
        ctx = self.ctx
        if method == 0:
            buf, start, stop = self.bytes_of(start, stop)
            found = ctx.content(buf, start, stop, label=label, where=where, loader=loader, named=named,
                                npy_loader=npy_loader, depth=self.depth)
            if crc is not None and (found or stop - start <= MAX_CRC):
                self.check_crc(name, zlib.crc32(memoryview(buf)[start:stop]), crc)
            self.found += len(found)
            return found
        report = ctx.note if other_view else ctx.problem
        if method not in (8, 12):
            report(f"zip member {name!r} uses compression method {method}; not scanned")
            return []
        buf, start, stop = self.bytes_of(start, stop)
        raw = memoryview(buf)[start:stop]
        head, _, problem = _decompress(raw, method, SNIFF)
        if not ctx.worth_reading(head, named, label):
            return []
        data, complete, problem = _decompress(raw, method, MAX_INFLATE)
        if problem:
            report(f"zip member {name!r}{' read as its local header says' if other_view else ''}: {problem}; "
                   f"scanned as far as it inflates")
        found = ctx.content(data, 0, len(data), label=label, where=where, loader=loader, named=named,
                            npy_loader=npy_loader, depth=self.depth)
        if crc is not None and complete:
            self.check_crc(name, zlib.crc32(data), crc)
        self.found += len(found)
        return found

    def check_crc(self, name: str, got: int, want: int) -> None:
        if got != want:
            self.ctx.problem(f"zip member {name!r} fails its CRC-32 check (torch.load does not check it; "
                             f"scanned anyway)")

    # -- the local header's reading, where it differs -----------------------------------------------------
    def local_reading(self, i: int, local: tuple) -> None:
        m = self.archive.entries[i]
        lname, lflags, lmethod, _lcrc, lcsize, lusize, sized = local
        start = self.layout.data_start[i]
        if start < 0 or (lmethod == m.method and (not sized or lcsize == m.compressed_size)):
            return                               # the same bytes read the same way: already scanned
        size = lcsize if sized else m.compressed_size
        stop = min(start + size, self.end)
        self.content(start, stop, lmethod, lusize if sized else m.size,
                     label=f"{self.name_label(lname, self.prefix)} (as its local header says)",
                     where=self.where(lname, "local header: its method and sizes"), loader=self.loader(UNPACKING),
                     named=False, crc=None, npy_loader=None, name=lname, other_view=True)

    # -- bytes no directory entry accounts for -------------------------------------------------------------
    def gap(self, lo: int, hi: int) -> None:
        ctx, buf = self.ctx, self.buf
        if bytes(buf[lo:lo + 4]) == b"PK\x03\x04" and buf.rfind(b"PK\x05\x06", lo, hi) >= 0:
            ctx.anomaly(self.tag(f"bytes {lo - self.start}..{hi - self.start} hold another zip archive (Python's "
                                 f"zipfile reads the last of concatenated archives)"))
            ctx.blob(buf, lo, hi, label=self.sub_label(f"archive at bytes {lo}..{hi}"),
                     where=f"{self.outer_where()}a zip archive before this one", loader=self.loader(UNPACKING),
                     depth=self.depth)
            return
        entries, loose = walk_local(buf, lo, hi)
        for e in entries:
            ctx.anomaly(self.tag(f"a local entry {e.name!r} at byte {e.offset - self.start} is not in the central "
                                 f"directory (unpackers that walk local headers extract it; torch.load and zipfile "
                                 f"do not see it)"))
            if e.truncated:
                ctx.problem(f"local zip entry {e.name!r} is cut short; scanned as far as it goes")
            self.content(e.data_start, e.data_end, e.method, e.size,
                         label=f"{self.name_label(e.name, self.prefix)} (local header only)",
                         where=self.where(e.name, "local header only, not in the central directory"),
                         loader=self.loader(UNPACKING), named=_is_pickle_name(e.name), crc=None, npy_loader=None,
                         name=e.name)
        for a, b in loose:
            if b - a > MAX_GAP_NOTE:
                ctx.anomaly(self.tag(f"bytes {a - self.start}..{b - self.start} belong to no member"))
            ctx.blob(buf, a, b, label=self.sub_label(f"bytes {a}..{b} between members"),
                     where=f"{self.outer_where()}bytes {a}..{b}, outside every member",
                     loader=self.loader("a person or a custom loader"), depth=self.depth)

    def scan_without_directory(self) -> None:
        """No readable central directory: every local entry from the start, and what lies between them."""
        ctx = self.ctx
        entries, loose = walk_local(self.buf, self.start, self.end)
        if self.top:
            ctx.result.format = "torch-zip" if any(e.name.endswith("data.pkl") for e in entries) else "zip"
        self.prefix = ""
        before = len(ctx.result.pickles)
        # The object pickles first: the tensor records they name are raw bytes (sniffing them would only
        # find chance opcodes in tensor data).
        entries.sort(key=lambda e: not e.name.endswith(("data.pkl", "constants.pkl")))
        storages: set[str] = set()
        for e in entries:
            if e.name in storages:
                continue
            if e.truncated:
                ctx.problem(f"zip member {e.name!r} is cut short; scanned as far as it goes")
            found = self.content(e.data_start, e.data_end, e.method, e.size, label=self.name_label(e.name),
                                 where=self.where(e.name, "local header; the directory is unreadable"),
                                 loader=self.loader(UNPACKING), named=_is_pickle_name(e.name), crc=None,
                                 npy_loader=None, name=e.name)
            if e.name.endswith(("data.pkl", "constants.pkl")):
                folder = "constants/" if e.name.endswith("constants.pkl") else "data/"
                base = e.name[: -len("constants.pkl" if folder == "constants/" else "data.pkl")]
                storages.update(f"{base}{folder}{k}" for s in found for k in s.storage_keys)
        for a, b in loose:
            ctx.blob(self.buf, a, b, label=self.sub_label(f"bytes {a}..{b} outside the local entries"),
                     where=f"{self.outer_where()}bytes {a}..{b}", loader=self.loader("a person or a custom loader"),
                     depth=self.depth)
        if len(ctx.result.pickles) == before:
            ctx.problem(f"{self.tag('')}no pickle could be found in what is left of the archive".lstrip(": "))

    # -- TorchScript -------------------------------------------------------------------------------------
    def torchscript_code(self, prefix: str) -> None:
        ctx, archive = self.ctx, self.archive
        files: dict[str, str] = {}
        total = 0
        for i, m in enumerate(archive.entries):
            name = m.name
            if not (name.startswith(prefix + "code/") and name.endswith(".py")) or archive.members[name] is not m:
                continue
            start = self.data_start(i)
            if start < 0 or m.flags & REFUSED_FLAGS:
                continue
            buf, lo, hi = self.bytes_of(start, min(start + m.compressed_size, self.end), MAX_CODE_TOTAL)
            raw = memoryview(buf)[lo:hi]
            if m.method == 0:
                data, complete, problem = bytes(raw[:MAX_CODE]), len(raw) <= MAX_CODE, None
            else:
                data, complete, problem = _decompress(raw, m.method, MAX_CODE)
            if problem or not complete:
                ctx.problem(f"TorchScript code {name!r} could not be read whole ({problem or 'too large'}); "
                            f"what it runs at load was checked in part")
            total += len(data)
            if total > MAX_CODE_TOTAL:
                ctx.problem("the archive's TorchScript code is larger than the scan reads; the rest was not checked")
                break
            files[self.name_label(name, prefix)] = data.decode("utf-8", "replace")
        problems: list[str] = []
        ctx.result.code.extend(analyze_code(files, problems))
        for p in problems:
            ctx.problem(p)


def _decompress(raw, method: int, cap: int) -> tuple[bytes, bool, str | None]:
    """Up to ``cap`` bytes of a deflate (8) or bzip2 (12) member: (bytes, whether that is all of it, why it
    stopped early). Input goes in 64 KiB at a time and output comes out 1 MiB at a time, so past 1 MiB the
    output never outgrows the input by more than the pickle ratio guard allows: a zip bomb is read in part
    (what is read is still scanned), never whole."""
    d = zlib.decompressobj(-15) if method == 8 else bz2.BZ2Decompressor()
    out: list[bytes] = []
    total = used = 0
    view = memoryview(raw)
    pending = b""
    try:
        while True:
            if method == 8:
                if not pending:
                    if used >= len(view):
                        break
                    pending = bytes(view[used:used + (64 << 10)])
                    used += len(pending)
                chunk = d.decompress(pending, min(1 << 20, cap - total + 1))
                pending = d.unconsumed_tail
            else:
                if d.needs_input:
                    if used >= len(view):
                        break
                    piece = bytes(view[used:used + (64 << 10)])
                    used += len(piece)
                else:
                    piece = b""
                chunk = d.decompress(piece, min(1 << 20, cap - total + 1))
            total += len(chunk)
            out.append(chunk)
            if total > cap:
                return b"".join(out)[:cap], False, None if cap < MAX_INFLATE else "inflates past the scan's cap"
            if total > (1 << 20) and total > PICKLE_MAX_RATIO * max(used, 1):
                return b"".join(out), False, "inflates too far (a zip bomb?)"
            if d.eof:
                break
    except (zlib.error, OSError, EOFError, ValueError) as e:
        return b"".join(out), False, f"does not inflate ({e})"
    data = b"".join(out)
    if not d.eof:
        return data, False, "its compressed data ends early"
    return data, True, None


def scan_remote_zip(ctx, src) -> None:
    """A zip fetched by range (a remote ``FileBytes``): its directory, then each member but the tensor records
    its pickles name, as torch.load reads them; what only the local headers show needs the whole file."""
    z = _Zip(ctx, src, 0, src.size, "", 0)
    z.remote = True
    try:
        z.scan()
    except CheckpointError as e:
        ctx.problem(f"{e.message}; download the file and scan the copy to walk the members from their local headers")
