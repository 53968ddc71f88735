"""torch.save's zip format (torch >= 1.6) and TorchScript archives.

Layout: ``<archive>/data.pkl`` (the object pickle), ``<archive>/data/<key>`` (one record per storage,
stored uncompressed and aligned), ``byteorder``, ``version``, ``.format_version``,
``.storage_alignment``, ``.data/serialization_id``. The archive folder name is whatever the file
was called when saved, so we find it from ``data.pkl`` rather than from our file name. TorchScript
archives add ``code/``, ``constants.pkl`` (tensors in ``constants/``) and ``.data/version``.
"""
from __future__ import annotations

import threading
from typing import Callable

from ...model.checkpoint import Checkpoint, PickleGlobals
from ...source.regions import ByteSource, BytesRegion, DeferredRegion
from ...util.checksum import crc32
from ...util.errors import CheckpointError, CorruptFileError, NotACheckpointError, StorageError, TruncatedFileError
from ..pickle.unpickle import StorageTable, unpickle
from .zipreader import PICKLE_MAX_RATIO, ZipArchive, directory_anomalies, inflate

# verify() reads a member in pieces of this size: big enough for crc32 to run at full speed.
VERIFY_CHUNK = 16 << 20
# Running CRCs are updated under a lock (two threads may read one member); a few shared locks, not one
# per member, keep a 100,000-tensor file's handles small.
_LOCKS = tuple(threading.Lock() for _ in range(64))

_SMALL_RECORDS = ("byteorder", "version", ".format_version", ".storage_alignment", ".data/version",
                  ".data/serialization_id")


def _find_prefix(archive: ZipArchive) -> str:
    candidates = [n[: -len("data.pkl")] for n in archive.order
                  if n.endswith("data.pkl") and n.count("/") <= 1 and (n == "data.pkl" or n.endswith("/data.pkl"))]
    if not candidates:
        hint = "numpy .npz archive" if any(n.endswith(".npy") for n in archive.order) else "zip archive"
        raise NotACheckpointError(f"this is a {hint} without data.pkl, not a torch checkpoint")
    if len(candidates) > 1:
        raise CorruptFileError(f"the archive holds {len(candidates)} data.pkl files ({', '.join(candidates)})")
    return candidates[0]


class ZipMemberSource(ByteSource):
    """A stored member's bytes. Its local header is checked on first read, not at open: a 100,000-tensor
    file would otherwise spend a third of its opening time reading headers of tensors nobody looks at.

    The member's CRC-32 is checked as its bytes are read, never at open: reads that run from the first
    byte to the last in order (a whole storage hashed, copied or plotted) feed the CRC as they go, at no
    extra read; ``verify()`` reads what such reads did not cover. A mismatch is recorded in ``crc_error``
    (the values stay readable: the views show the warning, exports refuse unless forced)."""

    __slots__ = ("archive", "member", "size", "_start", "_crc", "_crc_pos", "verified", "crc_error")

    def __init__(self, archive: ZipArchive, member):
        self.archive = archive
        self.member = member
        self.size = member.compressed_size
        self._start = -1
        self._crc = 0
        self._crc_pos = 0
        self.verified = False
        self.crc_error: str | None = None

    def view(self, offset: int, length: int) -> memoryview:
        if self._start < 0:
            self._start = self.archive.data_offset(self.member)
        if offset < 0 or length < 0 or offset + length > self.size:
            raise StorageError(f"read of bytes {offset}..{offset + length} outside a record of {self.size} bytes")
        return self.archive.src.view(self._start + offset, length)

    @property
    def remote(self) -> bool:
        return self.archive.src.is_remote

    def read_through(self, offset: int, length: int) -> memoryview:
        mv = self.view(offset, length)
        if not self.verified and offset == self._crc_pos:
            self._feed(offset, mv)
        return mv

    def _feed(self, offset: int, mv) -> None:
        """Extend the running CRC with bytes that continue it exactly (other reads are ignored)."""
        with _LOCKS[id(self) % len(_LOCKS)]:
            if self.verified or offset != self._crc_pos:
                return
            self._crc = crc32(mv, self._crc)
            self._crc_pos += len(mv)
            if self._crc_pos >= self.size:
                self._conclude()

    def _conclude(self) -> None:
        self.verified = True
        expected = self.member.crc
        if self._crc != expected:
            self.crc_error = (f"zip member {self.member.name} fails its CRC-32 check (the archive records "
                              f"{expected:08x}, the bytes give {self._crc:08x}): the file is damaged and these "
                              f"values may be wrong")

    def verify(self, progress: Callable[[int], None] | None = None, chunk: int = VERIFY_CHUNK) -> str | None:
        """Read the rest of the member (from where in-order reads stopped) and conclude the check."""
        while not self.verified:
            with _LOCKS[id(self) % len(_LOCKS)]:
                if self.verified:
                    break
                pos = self._crc_pos
                n = min(chunk, self.size - pos)
                if n <= 0:
                    self._conclude()
                    break
                start = self._begin() + pos
                self._crc = crc32(self.archive.src.view(start, n), self._crc)
                self._crc_pos += n
                if self._crc_pos >= self.size:
                    self._conclude()
            self.archive.src.release(start, n)
            if progress:
                progress(n)
        return self.crc_error

    def describe(self) -> str:
        return f"zip member {self.member.name}"

    def _begin(self) -> int:
        if self._start < 0:
            self._start = self.archive.data_offset(self.member)
        return self._start

    def release(self, offset: int, length: int) -> None:
        self.archive.src.release(self._begin() + offset, length)

    def file_location(self, offset: int) -> tuple[str, int] | None:
        return self.archive.src.file_location(self._begin() + offset)


class InflatedMemberSource(DeferredRegion):
    """A compressed member, inflated (under a cap) on first read; its CRC-32 is checked then."""

    def __init__(self, archive: ZipArchive, member):
        super().__init__(member.size, self._inflate, f"compressed zip member {member.name}")
        self.archive = archive
        self.member = member
        self.verified = False
        self.crc_error: str | None = None

    def _inflate(self) -> bytes:
        data = inflate(self.archive.raw(self.member.name), self.member.size, self.member.name)
        crc = crc32(data)
        self.verified = True
        if crc != self.member.crc:
            self.crc_error = (f"zip member {self.member.name} fails its CRC-32 check (the archive records "
                              f"{self.member.crc:08x}, the bytes give {crc:08x}): the file is damaged and these "
                              f"values may be wrong")
        return data

    def verify(self, progress: Callable[[int], None] | None = None) -> str | None:
        if not self.verified:
            self.view(0, 0)
            if progress:
                progress(self.member.compressed_size)
        return self.crc_error


def member_source(archive: ZipArchive, name: str) -> ByteSource | None:
    """The bytes of member ``name`` (stored: in place; deflated: inflated under a cap on first read)."""
    return _source(archive, name)


def _source(archive: ZipArchive, name: str) -> ByteSource | None:
    m = archive.members.get(name)
    if m is None:
        return None
    if m.method == 0:
        if m.compressed_size != m.size:
            return DeferredRegion(0, lambda: _bad_sizes(name), f"zip member {name}")
        return ZipMemberSource(archive, m)
    return InflatedMemberSource(archive, m)


def _prefetch_records(archive: ZipArchive, prefix: str) -> None:
    """Say ahead which records opening reads (the pickles and the small records, with their local headers),
    so a remote file fetches them together instead of one round trip each. Free for a local file."""
    if not archive.src.is_remote:
        return
    ranges = []
    for rec in ("data.pkl", "constants.pkl") + _SMALL_RECORDS:
        m = archive.members.get(prefix + rec)
        if m is not None:
            # The local header's name and extra field are not known yet; torch pads them to 64 bytes.
            ranges.append((m.header_offset, m.header_offset + 30 + 2 * len(m.name.encode()) + 128 + m.compressed_size))
    archive.src.prefetch(ranges)


def _bad_sizes(name: str) -> bytes:
    raise StorageError(f"stored zip member {name!r} has two different sizes")


def read_torch_zip(buf, path: str, *, resources: list | None = None, start: int = 0,
                   end: int | None = None, archive: ZipArchive | None = None, nested: bool = False) -> Checkpoint:
    """Read the torch.save archive in ``buf[start:end]`` (the whole buffer by default). A window reads
    an archive embedded in a bigger file in place: its records stay views of ``buf``. ``archive`` is the
    directory when the caller has parsed it already; ``nested`` marks an archive stored as a member of
    another (whose CRC-32 covers it)."""
    warnings: list[str] = []
    pickles: list[PickleGlobals] = []
    if archive is None:
        try:
            archive = ZipArchive(buf, name=path, start=start, end=end)
        except TruncatedFileError as cut:
            # A download cut short loses the directory at the end, not what comes before it: read the members
            # from their local headers, so the file still shows what it holds and says what is missing.
            try:
                archive = ZipArchive(buf, name=path, start=start, end=end, recover=True)
            except CheckpointError:
                raise cut from None
            warnings.append("the zip archive was cut short (it has no end record); its members were found from "
                            "their local headers" + (f", and the file ends inside {archive.cut}" if archive.cut else ""))
    archive.nested = nested
    warnings.extend(archive.warnings)
    archive.warnings = warnings          # local header oddities found when a record is first read land here
    cut_short = archive.cut
    prefix = _find_prefix(archive)
    warnings.extend(directory_anomalies(archive, prefix))
    if archive.cut and archive.cut == prefix + "data.pkl":
        raise TruncatedFileError(f"the file was cut short inside data.pkl, after {archive.end - archive.start:,} "
                                 f"bytes: nothing it holds can be listed")
    _prefetch_records(archive, prefix)
    meta: dict = {"archive": prefix.rstrip("/") or "(none)"}
    if cut_short is not None:
        # torch.load needs the directory this file lost (the doctor says so; the tensors say what is missing)
        meta["cut_short"] = cut_short or "the zip directory"
    for rec in _SMALL_RECORDS:
        if prefix + rec in archive:
            try:
                text = archive.read(prefix + rec, limit=4096).decode("utf-8", "replace").strip()
            except CheckpointError as e:
                warnings.append(f"record {rec}: {e.message}")
                continue
            meta[rec.lstrip(".").replace("/", "_")] = text[:200]
    byteorder = meta.get("byteorder", "little")
    if byteorder not in ("little", "big"):
        warnings.append(f"unknown byteorder {byteorder!r}; assuming little-endian")
        byteorder = "little"
    is_script = any(n.startswith(prefix + "code/") for n in archive.order) or prefix + "constants.pkl" in archive
    fmt = "torchscript" if is_script else "torch-zip"

    table = StorageTable(lambda key: _source(archive, f"{prefix}data/{key}"), warnings, byteorder,
                         what="storage")
    data = archive.read(prefix + "data.pkl", check_crc=True, max_ratio=PICKLE_MAX_RATIO)
    root, end = unpickle(data, name="data.pkl", warnings=warnings, pickles=pickles,
                         persistent_load=table.load)
    pickles[-1].counts.update(table.text_globals)
    if end != len(data):
        warnings.append(f"data.pkl has {len(data) - end} bytes after its STOP opcode")
    storages = dict(table.storages)
    if is_script:
        meta["code_files"] = [n[len(prefix):] for n in archive.order if n.startswith(prefix + "code/")][:200]
        if prefix + "constants.pkl" in archive:
            ctable = StorageTable(lambda key: _source(archive, f"{prefix}constants/{key}"), warnings, byteorder,
                                  what="constant")
            constants, _ = unpickle(archive.read(prefix + "constants.pkl", check_crc=True,
                                                 max_ratio=PICKLE_MAX_RATIO), name="constants.pkl",
                                    warnings=warnings, pickles=pickles, persistent_load=ctable.load)
            storages.update({f"constants/{k}": v for k, v in ctable.storages.items()})
            meta["constants"] = constants
    used = {f"{prefix}data/{k}" for k in table.storages}
    unused = [n for n in archive.order if n.startswith(prefix + "data/") and n not in used]
    if unused:
        warnings.append(f"{len(unused)} storage record(s) in the archive are not used by data.pkl")
    ckpt = Checkpoint(path, fmt, root, storages=storages, warnings=warnings, meta=meta, pickles=pickles,
                      file_size=archive.end - archive.start, resources=resources)
    ckpt.archives = [archive]
    return ckpt


def read_torch_zip_bytes(data: bytes, name: str) -> Checkpoint:
    """Read a torch.save archive held in memory (nested payloads, DCP chunks)."""
    return read_torch_zip(BytesRegion(data).mm, name)
