"""A checkpoint named by a URL, opened for reading by range: ``https://``, ``http://``, ``hf://``, ``s3://``,
``gs://`` and any other protocol an installed fsspec package provides.

:func:`open_remote` answers a :class:`RemoteFile` (a :class:`FileBytes` whose reads come from the block
cache, and from the network for what the cache lacks) or a :class:`RemoteFolder` (a Hub repository or a
bucket prefix, with its files listed). Opening costs one round trip for plain HTTP (the first 64 KiB are
fetched with the size, the validator and the content type), two for the Hub (the revision's commit, the
file's size and hash) and one for object stores, plus the first bytes; a reopen of an unchanged URL is
one conditional request, and a reopen without a network serves what was read before from the cache. The
first 64 KiB are kept apart from the 1 MiB blocks, so a safetensors header or a small zip's pickle costs
only that much.

A format that cannot be read by range (the legacy torch.save format, a tar) and a server that ignores
``Range`` get the whole file downloaded into the cache, with its size said first (``task.notice``) and
progress reported, never silently (:meth:`RemoteFile.full_copy`).
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from typing import Any

from ..util import task
from ..util.errors import (
    OfflineMissError,
    RemoteError,
    RemoteNotFoundError,
    RemoteProtocolError,
    RemoteTimeoutError,
    StorageError,
)
from ..util.locations import cache_key_url, location_name, redact_url, url_scheme
from ..util.progress import Progress
from ..util.units import human_bytes
from . import net
from .cache import BlockCache, shared_cache
from .filebytes import FileBytes
from .regions import ByteSource

HEAD_BYTES = 64 << 10            # a file's first bytes are fetched and kept apart from its blocks
HTTP_ACCESS_HINT = ("If the file needs a login, put the credentials in the URL (https://USER:PASSWORD@host/...) "
                    "or use a link that carries its own access token.")
DISK_MARGIN = 256 << 20


class RemoteRegion(ByteSource):
    """A storage record's bytes inside a remote file, fetched (through the cache) when read."""

    __slots__ = ("file", "size", "start")
    remote = True

    def __init__(self, file: RemoteFile, start: int, size: int):
        self.file = file
        self.start = start
        self.size = size

    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise StorageError(f"read of bytes {offset}..{offset + length} outside a record of {self.size} bytes")
        return self.file.view(self.start + offset, length)

    def describe(self) -> str:
        return f"bytes {self.start}..{self.start + self.size} of {self.file.name}"


class RemoteFile(FileBytes):
    """A remote file's bytes (see the module notes). ``name`` is the redacted URL."""

    is_remote = True

    def __init__(self, *, shown: str, backend: Any, size: int | None, validator: str | None, url_key: str,
                 cache: BlockCache, offline: bool = False, ranges: bool = True, head: bytes = b"",
                 warnings: list[str] | None = None):
        self.name = shown
        self.label = location_name(shown)
        self.backend = backend
        self.size = size if size is not None else -1
        self.validator = validator
        self.url_key = url_key
        self.cache = cache
        self.persist = validator is not None and size is not None
        self.key = cache.file_key(url_key, validator) if self.persist else "mem-" + uuid.uuid4().hex
        self.offline = offline
        self.ranges = ranges
        self.head_bytes = head           # the start of the file when ranges are not served
        self.warnings = list(warnings or [])
        self.fetched = 0
        self.reporting = True            # report bytes fetched while the file is being opened
        self._full: str | None = None
        # The first HEAD_BYTES (or the whole file when shorter): the sniffed magic, a safetensors header, a
        # zip's data.pkl when it is small. Fetched as one exact range, never as 1 MiB blocks.
        self._head: bytes | None = None

    @property
    def head_size(self) -> int:
        return min(HEAD_BYTES, self.size) if self.size_known else HEAD_BYTES

    def keep_head(self, data: bytes) -> None:
        """The first bytes, fetched by someone else (the first request for a file brings them)."""
        if len(data) == self.head_size:
            self._head = bytes(data)
            if self.persist:
                self.cache.put_head(self.key, self._head)

    def _load_head(self) -> bool:
        """Make the first bytes available (from the cache folder, else one request); False when offline
        and never kept."""
        if self._head is not None:
            return True
        want = self.head_size
        data = self.cache.head(self.key, want) if self.persist else None
        if data is None:
            if self.offline:
                return False
            data = self._fetch([(0, want)])[0]
            if len(data) != want:
                raise RemoteProtocolError(f"the server sent {len(data):,} bytes for a range of {want:,}")
            if self.persist:
                self.cache.put_head(self.key, data)
        self._head = data
        return True

    @property
    def size_known(self) -> bool:
        return self.size >= 0

    # -- reading ------------------------------------------------------------------------------------
    def view(self, start: int, length: int) -> memoryview:
        if start < 0 or length < 0 or start + length > self.size:
            self.check(start, length)
        if length == 0:
            return memoryview(b"")
        if not self.ranges:
            raise RemoteProtocolError("this server does not serve byte ranges; the file has to be downloaded whole")
        if start + length <= self.head_size and self._load_head():
            return memoryview(self._head)[start:start + length]
        data = self.cache.read(self.key, self.size, start, start + length, None if self.offline else self._fetch,
                               persist=self.persist)
        return memoryview(data)

    def region(self, start: int, size: int) -> ByteSource:
        return RemoteRegion(self, start, size)

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        if not self.ranges or self.offline or not ranges:
            return
        if any(e <= self.head_size for _, e in ranges) and self._load_head():
            ranges = [(s, e) for s, e in ranges if e > self.head_size]      # those are in the head already
        if ranges:
            self.cache.prefetch(self.key, self.size, ranges, self._fetch, persist=self.persist)

    def head(self, length: int) -> bytes:
        """The file's first ``length`` bytes (fewer when it is shorter). A server found here not to honour
        ranges after all (a CDN behind the Hub) turns the file into one that must be downloaded."""
        n = min(length, self.size) if self.size_known else length
        if not self.ranges:
            return self.head_bytes[:n]
        from .http import RangeNotHonoured
        try:
            return bytes(self.view(0, n))
        except RangeNotHonoured as e:
            self.ranges = False
            self.warnings.append(f"the server does not honour byte ranges ({e.message})")
            return b""

    def _fetch(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        task.check_cancelled()
        datas = self.backend.fetch(ranges)
        self.fetched += sum(len(d) for d in datas)
        if self.reporting:
            task.report(Progress(0, 0, f"Reading {self.label}: {human_bytes(self.fetched)} fetched"))
        return datas

    # -- whole files --------------------------------------------------------------------------------
    def full_copy(self, reason: str) -> str:
        """A local path holding the whole file, downloaded into the cache when it is not there yet. Says
        the size first (``task.notice``) and reports progress; refuses when the disk cannot hold it."""
        if self._full is not None:
            return self._full
        if self.persist:
            existing = self.cache.full_file(self.key, self.size)
            if existing is not None:
                self._full = existing
                return existing
        if self.offline:
            raise OfflineMissError(f"the whole file is needed ({reason}) and it was never downloaded")
        size_text = human_bytes(self.size) if self.size_known else "size unknown"
        try:
            tmp, final = self.cache.new_full_download(self.key)
        except OSError as e:
            raise RemoteError(f"cannot write to the cache folder ({net.safe_message(e)})",
                              hint="Set CKPTVIEWER_CACHE_DIR to a writable folder.") from None
        try:
            free = shutil.disk_usage(os.path.dirname(tmp)).free
            if self.size_known and self.size + DISK_MARGIN > free:
                raise RemoteError(f"the whole file ({size_text}) must be downloaded ({reason}), but the cache "
                                  f"folder has only {human_bytes(free)} free",
                                  hint="Free some space or set CKPTVIEWER_CACHE_DIR to a bigger disk.")
            task.notice(f"{self.label}: downloading the whole file ({size_text}) because {reason}")
            what = f"Downloading {self.label} ({size_text})"
            task.report(Progress(0, max(self.size, 0), what))
            with open(tmp, "wb") as f:
                got = self.backend.download(f.write, lambda done: task.report(Progress(done, max(self.size, 0), what)))
                f.flush()
                os.fsync(f.fileno())
            if self.size_known and got != self.size:
                raise RemoteProtocolError(f"the download ended after {got:,} of {self.size:,} bytes",
                                          hint="Try again.")
            if not self.size_known:
                self.size = got
            os.replace(tmp, final)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
        self.fetched += got
        self.cache.added_file(got)
        self._full = final
        return final

    def close(self) -> None:
        self.cache.forget(self.key)
        if self._full is not None and not self.persist:
            try:
                os.remove(self._full)     # an unversioned download cannot be found again: do not keep it
            except OSError:
                pass


class RemoteFolder:
    """A folder at a URL (a Hub repository or a folder in it, a bucket prefix) and the files directly in it."""

    def __init__(self, shown: str, files: list[tuple[str, int]], join: Callable[[str], str]):
        self.name = shown
        self.files = files            # (name, size)
        self.join = join              # file name -> its location


def open_remote(url: str) -> RemoteFile | RemoteFolder:
    """Open ``url`` for reading (see the module notes). Raises a :class:`RemoteError` (one line, redacted)."""
    url = net.take_credentials(url.strip())
    shown = redact_url(url)
    cache = shared_cache()
    scheme = url_scheme(url)
    from . import hub
    if scheme == "hf" or (scheme in ("http", "https") and hub.looks_like_hub_url(url)):
        return _open_hub(url, shown, cache)
    if scheme in ("http", "https"):
        return _open_http(url, shown, cache)
    return _open_store(url, shown, cache, scheme)


BUILT_IN_SCHEMES = ("https", "http", "hf", "s3", "s3a", "gs", "gcs")


def prepare_location(text: str) -> str:
    """What a window keeps for a location it was given: a path made absolute; a URL stripped of its
    ``user:password@`` part (remembered for requests to that origin, in this process only), so titles,
    tabs and recent files never hold it."""
    from ..util.locations import is_url, normalize_location
    location = normalize_location(text)
    return net.take_credentials(location) if is_url(location) else location


def url_problem(text: str) -> str | None:
    """Why ``text`` is not a URL ckptviewer can open (None when it is one). Checks the form only."""
    from ..util.locations import is_url
    text = text.strip()
    if not text:
        return "Type or paste a URL."
    if not is_url(text):
        return "Not a URL: write it as https://..., hf://ORG/REPO/FILE, s3://BUCKET/KEY or gs://BUCKET/KEY."
    scheme = url_scheme(text)
    if scheme not in BUILT_IN_SCHEMES:
        try:
            from fsspec.registry import known_implementations, registry
        except ImportError:                   # pragma: no cover - fsspec is a dependency
            return f"{scheme}:// URLs cannot be read here."
        if scheme not in known_implementations and scheme not in registry:
            return f"No installed file system reads {scheme}:// URLs."
    if scheme == "hf" and text[len("hf://"):].count("/") < 1:
        return "A Hub location names a repository: hf://ORG/REPO[/FILE]."
    rest = text.split("://", 1)[1]
    if scheme in ("http", "https", "s3", "s3a", "gs", "gcs") and not rest.split("/", 1)[0].rsplit("@", 1)[-1]:
        return "The URL has no host or bucket."
    return None


def read_small(location: str, limit: int) -> tuple[bytes, str]:
    """The whole of a small remote file (a shard index), at most ``limit`` bytes; (bytes, shown URL)."""
    from ..util.errors import LimitExceededError
    target = open_remote(location)
    if isinstance(target, RemoteFolder):
        raise RemoteNotFoundError("this is a folder, not a file", hint="")
    try:
        if target.size_known and target.size > limit:
            raise LimitExceededError(f"the file is {target.size:,} bytes (the limit is {limit:,})")
        if target.ranges:
            data = target.head(target.size)
            if target.ranges:
                return data, target.name
        with open(target.full_copy("the server does not serve byte ranges"), "rb") as f:
            return f.read(limit + 1)[:limit], target.name
    finally:
        target.close()


# -- HTTP ---------------------------------------------------------------------------------------------
def _http_validator(etag: str | None, modified: str | None, size: int | None) -> str | None:
    if etag and not etag.startswith("W/"):
        return f"etag:{etag}"
    if modified:
        return f"modified:{modified}:{size}"
    if etag:
        return f"weak-etag:{etag}:{size}"
    return None


def _open_http(url: str, shown: str, cache: BlockCache) -> RemoteFile:
    from .http import HttpBackend
    url_key = cache_key_url(url)
    latest = cache.latest(url_key)
    backend = HttpBackend(url, shown=shown, headers=net.auth_header_for(url), access_hint=HTTP_ACCESS_HINT)
    known_etag = latest["validator"][5:] if latest and latest["validator"].startswith("etag:") else None
    try:
        probe = backend.probe(HEAD_BYTES, if_none_match=known_etag)
    except RemoteTimeoutError as e:
        return _offline(e, latest, shown, url_key, cache, backend)
    if probe.status == "unchanged" and latest is not None:
        size, validator = latest["size"], latest["validator"]
    else:
        size = probe.size
        validator = _http_validator(probe.etag, probe.last_modified, size)
    backend.size = size
    backend.etag = probe.etag if probe.etag and not probe.etag.startswith("W/") else None
    ranges = probe.status != "whole"
    rf = RemoteFile(shown=shown, backend=backend, size=size, validator=validator, url_key=url_key, cache=cache,
                    ranges=ranges, head=probe.data if not ranges else b"")
    if rf.persist:
        cache.remember(url_key, validator, size, shown)
    if probe.status == "partial" and probe.data:
        rf.keep_head(probe.data)
        cache.seed(rf.key, size, 0, probe.data, persist=rf.persist)      # a file within the head is one block
    rf.fetched = len(probe.data)
    return rf


def _offline(error: RemoteError, latest: dict | None, shown: str, url_key: str, cache: BlockCache,
             backend: Any) -> RemoteFile:
    """The server cannot be reached: open what the cache holds of the last version seen, or fail."""
    if latest is None:
        raise error
    rf = RemoteFile(shown=shown, backend=backend, size=latest["size"], validator=latest["validator"],
                    url_key=url_key, cache=cache, offline=True)
    rf.warnings.append(f"the server cannot be reached ({error.message}); opened from the cache, where only what "
                       f"was read before is available")
    return rf


# -- the Hub ------------------------------------------------------------------------------------------
def _open_hub(url: str, shown: str, cache: BlockCache) -> RemoteFile | RemoteFolder:
    from . import hub
    from .http import HttpBackend
    url_key = hub.cache_key(url)
    try:
        target = hub.resolve(url)
    except RemoteTimeoutError as e:
        return _offline(e, cache.latest(url_key), shown, url_key, cache, None)
    if isinstance(target, hub.HubFolder):
        prefix = target.path + "/" if target.path else ""
        files = [(p[len(prefix):], size) for p, size in target.files if "/" not in p[len(prefix):]]
        return RemoteFolder(shown, files, lambda name: target.location(prefix + name))
    what = f"{target.repo_type + ' ' if target.repo_type != 'model' else ''}{target.repo_id}"
    backend = HttpBackend(target.resolve_url, shown=shown, headers=target.headers, access_hint=hub.LOGIN_HINT,
                          not_found_hint="Check the repository, the revision and the file name.",
                          error_codes=hub.error_codes(what))
    backend.size = target.size
    cache.remember(url_key, target.validator, target.size, shown)
    return RemoteFile(shown=shown, backend=backend, size=target.size, validator=target.validator, url_key=url_key,
                      cache=cache)


# -- object stores and other fsspec protocols ---------------------------------------------------------
def _open_store(url: str, shown: str, cache: BlockCache, scheme: str) -> RemoteFile | RemoteFolder:
    from .stores import StoreBackend, store_key
    backend = StoreBackend(scheme, url, shown)
    url_key = f"{cache_key_url(url)}#{store_key(scheme)}"
    try:
        info = backend.info()
    except RemoteTimeoutError as e:
        return _offline(e, cache.latest(url_key), shown, url_key, cache, backend)
    if info.get("type") == "directory":
        files = backend.listing()
        base = url.rstrip("/")
        return RemoteFolder(shown, files, lambda name: f"{base}/{name}")
    size = info.get("size")
    if type(size) is not int or size < 0:
        raise RemoteProtocolError("the store did not say how big the file is")
    validator = backend.validator(info)
    backend.size = size
    rf = RemoteFile(shown=shown, backend=backend, size=size, validator=validator, url_key=url_key, cache=cache)
    if rf.persist:
        cache.remember(url_key, validator, size, shown)
    return rf
