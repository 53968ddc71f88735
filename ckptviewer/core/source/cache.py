"""A bounded on-disk cache of remote files' bytes, in 1 MiB blocks, so reopening is instant and works offline.

Layout under the cache folder (``cache_dir()``: ``$CKPTVIEWER_CACHE_DIR``, else the user's cache folder
plus ``ckptviewer``)::

    remote-v1/blocks/<k[:2]>/<k>/<i>.blk   block i of the file version keyed k (the last block is shorter)
    remote-v1/blocks/<k[:2]>/<k>/meta.json {"url": redacted URL, "validator", "size", "block_size"}
    remote-v1/blocks/<k[:2]>/<k>/head.bin  the file's first bytes (64 KiB), fetched apart from the blocks
    remote-v1/files/<k>.bin                a whole file, for formats that need a full read
    remote-v1/latest/<sha256(url)>.json    {"validator", "size"}: the last version seen, for offline opens

The key ``k`` is ``sha256(url key, validator)``: the URL without credentials or signatures, and what
identifies the file's content (an ETag, a Hub blob hash, a size and modification time). A file that
changed gets a new key; its old blocks age out. A file without any validator is never written to disk.

Hazards handled here: a block file is complete or absent (written under a temporary name, then
``os.replace``); every block read back and every range fetched is length-checked, so a server that
ignores Range or a truncated file never poisons the cache; the cache is an LRU under a byte cap (a hit
touches the block's mtime; past the cap the oldest blocks go, down to 80 %); two threads asking for the
same missing block make one request; nothing but redacted URLs is written (no credentials, no signed
query strings). Recently used blocks are also kept in memory, so many small reads of one block (a
100,000-tensor file's records) cost one disk read.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable

from ..util.errors import OfflineMissError, RemoteProtocolError

BLOCK_SIZE = 1 << 20
MAX_RUN_BLOCKS = 32                  # one request fetches at most this many consecutive missing blocks
MEMORY_BYTES = 64 << 20              # recently used blocks kept in memory
DEFAULT_CAP = 4 << 30
LAYOUT = "remote-v1"
CACHE_DIR_ENV = "CKPTVIEWER_CACHE_DIR"
CACHE_MAX_ENV = "CKPTVIEWER_CACHE_MAX"

Fetch = Callable[[list[tuple[int, int]]], list[bytes]]


def cache_dir() -> str:
    """The folder ckptviewer caches in: ``$CKPTVIEWER_CACHE_DIR``, else the platform's user cache folder."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
        return os.path.join(base, "ckptviewer", "Cache")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/ckptviewer")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "ckptviewer")


def parse_size(text: str) -> int:
    """``"4G"``, ``"500M"``, ``"1.5GiB"``, ``"1000000"`` as a number of bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 4G or 500M)")
    return int(float(m.group(1)) * (1 << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2)]))


def cache_cap() -> int:
    env = os.environ.get(CACHE_MAX_ENV)
    if env:
        try:
            return max(parse_size(env), 8 * BLOCK_SIZE)
        except ValueError:
            pass
    return DEFAULT_CAP


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class BlockCache:
    """See the module notes. One instance per process is usual (:func:`shared_cache`)."""

    def __init__(self, root: str, cap: int = DEFAULT_CAP, *, block_size: int = BLOCK_SIZE,
                 memory_bytes: int = MEMORY_BYTES):
        self.root = os.path.join(root, LAYOUT)
        self.cap = cap
        self.bs = block_size
        self.memory_bytes = memory_bytes
        self._lock = threading.Lock()
        self._memory: collections.OrderedDict[tuple[str, int], bytes] = collections.OrderedDict()
        self._memory_total = 0
        self._inflight: dict[tuple[str, int], threading.Event] = {}
        self._disk_total: int | None = None        # counted on the first write (opening stays cheap)
        self.disk_ok = True
        self.stats = collections.Counter()

    # -- keys and versions --------------------------------------------------------------------------
    def file_key(self, url_key: str, validator: str) -> str:
        return _sha(f"{url_key}\0{validator}")

    def remember(self, url_key: str, validator: str, size: int, shown: str) -> str:
        """Record ``(validator, size)`` as the newest version of ``url_key`` seen; returns its key."""
        key = self.file_key(url_key, validator)
        meta = {"url": shown, "validator": validator, "size": size, "block_size": self.bs}
        self._write_json(os.path.join(self._dir(key), "meta.json"), meta)
        self._write_json(self._latest_path(url_key), {"validator": validator, "size": size})
        return key

    def latest(self, url_key: str) -> dict | None:
        """The newest version of ``url_key`` seen (for opening offline), or None."""
        try:
            with open(self._latest_path(url_key), "rb") as f:
                doc = json.loads(f.read(4096))
        except (OSError, ValueError):
            return None
        if (isinstance(doc, dict) and isinstance(doc.get("validator"), str) and type(doc.get("size")) is int
                and doc["size"] >= 0):
            return doc
        return None

    # -- reading ------------------------------------------------------------------------------------
    def read(self, key: str, size: int, start: int, end: int, fetch: Fetch | None, *,
             persist: bool = True) -> bytes | bytearray:
        """Bytes [start, end) of the file version ``key`` of ``size`` bytes, fetching missing blocks with
        ``fetch(list of (start, end)) -> list of bytes``. ``fetch=None`` means offline."""
        start, end = max(0, start), min(end, size)
        if start >= end:
            return b""
        bs = self.bs
        first, last = start // bs, (end - 1) // bs
        blocks = self._gather(key, size, first, last, fetch, persist)
        if first == last:
            off = first * bs
            return blocks[first][start - off:end - off]
        out = bytearray(end - start)
        pos = 0
        for i in range(first, last + 1):
            b = blocks[i]
            lo = start - i * bs if i == first else 0
            hi = end - i * bs if i == last else len(b)
            out[pos:pos + hi - lo] = memoryview(b)[lo:hi]
            pos += hi - lo
        return out

    def prefetch(self, key: str, size: int, ranges: list[tuple[int, int]], fetch: Fetch | None, *,
                 persist: bool = True) -> None:
        """Make sure every block of ``ranges`` is cached, fetching all missing ones in one go."""
        wanted: set[int] = set()
        for s, e in ranges:
            s, e = max(0, s), min(e, size)
            if s < e:
                wanted.update(range(s // self.bs, (e - 1) // self.bs + 1))
        missing = [i for i in sorted(wanted) if not self._present(key, i, size, persist)]
        if missing and fetch is not None:
            self._fetch_blocks(key, size, missing, fetch, persist)

    def seed(self, key: str, size: int, i: int, data: bytes, *, persist: bool = True) -> None:
        """Keep block ``i``, fetched by someone else (the first request for a file brings its first block)."""
        if len(data) != min(self.bs, size - i * self.bs):
            return
        self._memory_put(key, i, bytes(data))
        if persist:
            self._store(key, i, bytes(data))

    def cached_fraction(self, key: str, size: int) -> float:
        """How much of the file is on disk (for reports)."""
        n = (size + self.bs - 1) // self.bs
        if n == 0:
            return 1.0
        return sum(1 for i in range(n) if os.path.exists(self._path(key, i))) / n

    def _present(self, key: str, i: int, size: int, persist: bool) -> bool:
        with self._lock:
            if (key, i) in self._memory:
                return True
        return persist and self._load_disk(key, i, size) is not None

    def _gather(self, key, size, first, last, fetch, persist) -> dict[int, bytes]:
        blocks: dict[int, bytes] = {}
        missing = []
        for i in range(first, last + 1):
            b = self._memory_get(key, i)
            if b is None and persist:
                b = self._load_disk(key, i, size)
                if b is not None:
                    self._memory_put(key, i, b)
            if b is None:
                missing.append(i)
            else:
                blocks[i] = b
        self.stats["hit_blocks"] += len(blocks)
        if missing:
            if fetch is None:
                raise OfflineMissError(f"{len(missing)} block(s) of this file were never fetched and the server "
                                       f"cannot be reached")
            # A read far bigger than the cache would only push everything else out: fetch it, keep nothing.
            keep = persist and len(missing) * self.bs <= max(self.cap // 8, 64 * self.bs)
            blocks.update(self._fetch_blocks(key, size, missing, fetch, keep, remember=keep or not persist))
        return blocks

    def _fetch_blocks(self, key, size, missing, fetch, persist, *, remember: bool = True) -> dict[int, bytes]:
        mine, theirs = [], []
        with self._lock:
            for i in missing:
                ev = self._inflight.get((key, i))
                if ev is None:
                    self._inflight[(key, i)] = threading.Event()
                    mine.append(i)
                else:
                    theirs.append((i, ev))
        got: dict[int, bytes] = {}
        bs = self.bs
        try:
            if mine:
                runs: list[list[int]] = [[mine[0]]]
                for i in mine[1:]:
                    if i == runs[-1][-1] + 1 and len(runs[-1]) < MAX_RUN_BLOCKS:
                        runs[-1].append(i)
                    else:
                        runs.append([i])
                ranges = [(r[0] * bs, min((r[-1] + 1) * bs, size)) for r in runs]
                self.stats["requests"] += len(ranges)
                self.stats["fetched_blocks"] += len(mine)
                datas = fetch(ranges)
                if len(datas) != len(ranges):
                    raise RemoteProtocolError("the fetcher returned a different number of ranges than asked for")
                for run, (s, e), data in zip(runs, ranges, datas):
                    if len(data) != e - s:
                        raise RemoteProtocolError(f"the server sent {len(data):,} bytes for a range of {e - s:,}")
                    view = memoryview(data)
                    for i in run:
                        chunk = bytes(view[i * bs - s:min((i + 1) * bs, size) - s])
                        got[i] = chunk
                        if remember:
                            self._memory_put(key, i, chunk)
                        if persist:
                            self._store(key, i, chunk)
        finally:
            with self._lock:
                for i in mine:
                    ev = self._inflight.pop((key, i), None)
                    if ev is not None:
                        ev.set()
        for i, ev in theirs:
            ev.wait()
            b = self._memory_get(key, i) or (self._load_disk(key, i, size) if persist else None)
            if b is None:                        # the other thread's fetch failed or kept nothing: our turn
                b = self._fetch_blocks(key, size, [i], fetch, persist, remember=remember)[i]
            got[i] = b
        if persist and mine:
            self._maybe_evict()
        return got

    # -- memory -------------------------------------------------------------------------------------
    def _memory_get(self, key: str, i: int) -> bytes | None:
        with self._lock:
            b = self._memory.get((key, i))
            if b is not None:
                self._memory.move_to_end((key, i))
            return b

    def _memory_put(self, key: str, i: int, data: bytes) -> None:
        with self._lock:
            old = self._memory.pop((key, i), None)
            if old is not None:
                self._memory_total -= len(old)
            self._memory[(key, i)] = data
            self._memory_total += len(data)
            while self._memory_total > self.memory_bytes and len(self._memory) > 1:
                _, dropped = self._memory.popitem(last=False)
                self._memory_total -= len(dropped)

    def forget(self, key: str) -> None:
        """Drop a file's blocks from memory (its disk blocks stay)."""
        with self._lock:
            for k in [k for k in self._memory if k[0] == key]:
                self._memory_total -= len(self._memory.pop(k))

    # -- disk ---------------------------------------------------------------------------------------
    def _dir(self, key: str) -> str:
        return os.path.join(self.root, "blocks", key[:2], key)

    def _path(self, key: str, i: int) -> str:
        return os.path.join(self._dir(key), f"{i}.blk")

    def _latest_path(self, url_key: str) -> str:
        return os.path.join(self.root, "latest", _sha(url_key) + ".json")

    def _load_disk(self, key: str, i: int, size: int) -> bytes | None:
        p = self._path(key, i)
        want = min(self.bs, size - i * self.bs)
        try:
            with open(p, "rb") as f:
                data = f.read(want + 1)
        except OSError:
            return None
        if len(data) != want:          # cut short or foreign: never serve it
            try:
                os.remove(p)
            except OSError:
                pass
            return None
        try:
            os.utime(p)                # LRU by mtime (atime is unreliable under noatime/relatime)
        except OSError:
            pass
        self.stats["disk_blocks"] += 1
        return data

    def _store(self, key: str, i: int, data: bytes) -> None:
        if not self.disk_ok:
            return
        try:
            os.makedirs(self._dir(key), exist_ok=True)
            self._atomic_write(self._path(key, i), data)
        except OSError:
            self.disk_ok = False       # a read-only or full disk: carry on with memory only
            return
        with self._lock:
            if self._disk_total is not None:
                self._disk_total += len(data)

    def _write_json(self, path: str, doc: dict) -> None:
        if not self.disk_ok:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._atomic_write(path, json.dumps(doc).encode())
        except OSError:
            self.disk_ok = False

    @staticmethod
    def _atomic_write(path: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise

    # -- a file's first bytes ---------------------------------------------------------------------------
    def head(self, key: str, want: int) -> bytes | None:
        """The first ``want`` bytes of the file version ``key`` if they were kept (see ``put_head``)."""
        p = os.path.join(self._dir(key), "head.bin")
        try:
            with open(p, "rb") as f:
                data = f.read(want + 1)
            os.utime(p)
        except OSError:
            return None
        return data if len(data) == want else None

    def put_head(self, key: str, data: bytes) -> None:
        """Keep a file's first bytes (a header, a zip's first records) apart from its 1 MiB blocks: opening
        a safetensors shard then costs tens of kB, not a block."""
        if not self.disk_ok:
            return
        try:
            os.makedirs(self._dir(key), exist_ok=True)
            self._atomic_write(os.path.join(self._dir(key), "head.bin"), data)
        except OSError:
            self.disk_ok = False
            return
        with self._lock:
            if self._disk_total is not None:
                self._disk_total += len(data)

    # -- whole files --------------------------------------------------------------------------------
    def full_path(self, key: str) -> str:
        return os.path.join(self.root, "files", key + ".bin")

    def full_file(self, key: str, size: int) -> str | None:
        """The path of a complete download of the file version ``key``, or None."""
        p = self.full_path(key)
        try:
            if os.path.getsize(p) != size:
                return None
            os.utime(p)
        except OSError:
            return None
        return p

    def new_full_download(self, key: str) -> tuple[str, str]:
        """(temporary path to write, final path): rename the first to the second once it is complete."""
        final = self.full_path(key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final), prefix=".part-")
        os.close(fd)
        return tmp, final

    def added_file(self, nbytes: int) -> None:
        with self._lock:
            if self._disk_total is not None:
                self._disk_total += nbytes
        self._maybe_evict()

    # -- size ---------------------------------------------------------------------------------------
    def _entries(self):
        """(path, bytes, mtime) of every block and whole file on disk."""
        for top in ("blocks", "files"):
            base = os.path.join(self.root, top)
            stack = [base]
            while stack:
                d = stack.pop()
                try:
                    it = list(os.scandir(d))
                except OSError:
                    continue
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.name.endswith((".blk", ".bin")):
                            st = e.stat(follow_symlinks=False)
                            yield e.path, st.st_size, st.st_mtime
                    except OSError:
                        continue

    def usage(self) -> tuple[int, int]:
        """(bytes, files) the cache holds on disk."""
        n = total = 0
        for _, size, _ in self._entries():
            n += 1
            total += size
        return total, n

    def _maybe_evict(self) -> None:
        with self._lock:
            total = self._disk_total
        if total is None:
            total = self.usage()[0]
            with self._lock:
                self._disk_total = total
        if total <= self.cap:
            return
        entries = sorted(self._entries(), key=lambda e: e[2])       # oldest first, rescanned (other processes)
        total = sum(e[1] for e in entries)
        target = int(self.cap * 0.8)
        for path, size, _ in entries:
            if total <= target:
                break
            try:
                os.remove(path)           # an open whole file stays readable where it is mapped (POSIX)
            except OSError:
                continue
            total -= size
            self.stats["evicted"] += 1
        with self._lock:
            self._disk_total = total

    def clear(self) -> int:
        """Delete everything on disk and in memory; returns the bytes freed."""
        freed = self.usage()[0]
        with self._lock:
            self._memory.clear()
            self._memory_total = 0
            self._disk_total = 0
        shutil.rmtree(self.root, ignore_errors=True)
        return freed


_shared: BlockCache | None = None
_shared_lock = threading.Lock()


def shared_cache() -> BlockCache:
    """The process's cache, in :func:`cache_dir` under :func:`cache_cap` (made on first use; a change of
    ``$CKPTVIEWER_CACHE_DIR`` makes a new one, which is what tests rely on)."""
    global _shared
    root = cache_dir()
    with _shared_lock:
        if _shared is None or _shared.root != os.path.join(root, LAYOUT):
            _shared = BlockCache(root, cache_cap())
        return _shared
