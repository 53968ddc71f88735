"""Byte ranges over HTTP(S), on fsspec's HTTP file system (its aiohttp session and its event loop).

fsspec is the file layer; this module adds what its HTTP reads lack for untrusted servers. fsspec's
``cat_file(url, start, end)`` returns whatever body the server sends: a server that ignores ``Range``
answers 200 with the whole file, and the caller silently gets the wrong bytes (and the full download).
So every range here is one GET whose answer must be ``206`` with a ``Content-Range`` naming exactly the
bytes asked for and the file's known size (which also catches a file replaced between two reads), and
whose ETag, when the server sends one, is still the one the file was opened with. Timeouts, resets and
5xx/429 answers are retried a few times; 4xx answers become one-line errors. The Hub's resolve URLs are
read this way too (``source.hub`` resolves ``hf://`` paths to them), with its token sent to the Hub and
dropped by aiohttp on the cross-origin redirect to its CDN.
"""
from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..util import task
from ..util.errors import (
    RemoteAccessError,
    RemoteError,
    RemoteNotFoundError,
    RemoteProtocolError,
    RemoteTimeoutError,
)
from ..util.locations import redact_url
from . import net

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<!--", b"<?xml")
DOWNLOAD_CHUNK = 1 << 20

_fs_lock = threading.Lock()
_fs: Any = None


def http_filesystem() -> Any:
    """fsspec's HTTP file system, made once per process (it owns the aiohttp session and the IO loop)."""
    global _fs
    with _fs_lock:
        if _fs is None:
            import fsspec
            # trust_env: aiohttp honours HTTP(S)_PROXY / NO_PROXY (and .netrc) only when asked to.
            _fs = fsspec.filesystem("http", client_kwargs={"trust_env": True}, skip_instance_cache=True)
        return _fs


@dataclass
class Probe:
    """The answer to the first request for a file (its first block)."""

    status: str                      # "partial" (206), "whole" (200: Range ignored), "unchanged" (304)
    size: int | None
    etag: str | None
    last_modified: str | None
    content_type: str
    final_url: str
    data: bytes                      # the bytes received (the first block, or the start of a whole body)


class RangeNotHonoured(RemoteProtocolError):
    """A server answered a range request with something other than exactly that range."""


class _Retryable(Exception):
    def __init__(self, error: RemoteError):
        super().__init__(str(error))
        self.error = error


class HttpBackend:
    """Reads one URL. ``headers`` go with every request (an ``Authorization`` for the Hub or for
    credentials taken out of the URL); ``access_hint`` is what a 401/403 message tells the user to do;
    ``error_codes`` maps a server's ``X-Error-Code`` header (the Hub's) to a clearer message."""

    def __init__(self, url: str, *, shown: str, headers: dict[str, str] | None = None, access_hint: str = "",
                 not_found_hint: str | None = None, error_codes: dict[str, tuple[type, str, str]] | None = None):
        self.url = url
        self.shown = shown
        self.headers = dict(headers or {})
        self.access_hint = access_hint
        self.not_found_hint = not_found_hint
        self.error_codes = error_codes or {}
        self.etag: str | None = None          # once known, every answer must carry the same one (or none)
        self.size: int | None = None

    # -- public calls (blocking, cancellable) --------------------------------------------------------
    def probe(self, length: int, *, if_none_match: str | None = None) -> Probe:
        """GET bytes [0, length): learns the size, validator and content type, and keeps the bytes."""
        return self._run(self._with_retries(lambda: self._probe(length, if_none_match)))

    def fetch(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Bytes of each [start, end) in ``ranges``, fetched concurrently; each answer is checked."""
        async def all_ranges():
            return await asyncio.gather(*(self._with_retries(lambda s=s, e=e: self._range(s, e))
                                          for s, e in ranges))
        datas = self._run(all_ranges())
        net.STATS.add(sum(len(d) for d in datas), len(ranges))
        return datas

    def download(self, write: Callable[[bytes], Any], on_progress: Callable[[int], None]) -> int:
        """The whole file in one GET (no Range), each chunk handed to ``write`` on the calling thread's
        side; ``on_progress(bytes so far)`` is called from the waiting thread. Returns the bytes written."""
        state = {"done": 0}
        fs = http_filesystem()
        loop = fs.loop

        async def body():
            session = await fs.set_session()
            async with session.get(fs.encode_url(self.url), headers=self._headers(), timeout=_timeout()) as r:
                if r.status != 200:
                    raise self._status_error(r.status, r.reason, r.headers)
                self._check_etag(r.headers)
                async for chunk in r.content.iter_chunked(DOWNLOAD_CHUNK):
                    await loop.run_in_executor(None, write, chunk)
                    state["done"] += len(chunk)
            return state["done"]
        fut = asyncio.run_coroutine_threadsafe(self._translate(body()), loop)
        try:
            total = net.wait_future(fut, on_tick=lambda: on_progress(state["done"]))
        finally:
            net.STATS.add(state["done"])
        return total

    # -- requests ------------------------------------------------------------------------------------
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # identity: a gzip-encoded answer's Content-Range would count compressed bytes.
        h = {"Accept-Encoding": "identity", **self.headers}
        if extra:
            h.update(extra)
        return h

    async def _probe(self, length: int, if_none_match: str | None) -> Probe:
        fs = http_filesystem()
        session = await fs.set_session()
        extra = {"Range": f"bytes=0-{length - 1}"}
        if if_none_match:
            extra["If-None-Match"] = if_none_match
        async with session.get(fs.encode_url(self.url), headers=self._headers(extra), timeout=_timeout()) as r:
            final = str(r.url)
            ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
            etag = r.headers.get("ETag")
            modified = r.headers.get("Last-Modified")
            if r.status == 304:
                return Probe("unchanged", None, etag or if_none_match, modified, ctype, final, b"")
            if r.status == 416 and r.headers.get("Content-Range", "").strip() == "bytes */0":
                return Probe("partial", 0, etag, modified, ctype, final, b"")      # an empty file
            if r.status not in (200, 206):
                raise self._status_error(r.status, r.reason, r.headers)
            if r.status == 206:
                m = _CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != 0 or m.group(3) == "*":
                    raise RangeNotHonoured(f"the server answered a range request with Content-Range "
                                           f"{r.headers.get('Content-Range', '(none)')!r}")
                size = int(m.group(3))
                want = min(length, size)
                if int(m.group(2)) + 1 != want:
                    raise RangeNotHonoured(f"the server sent bytes 0..{int(m.group(2)) + 1:,} for a request of "
                                           f"0..{want:,}")
                data = await r.read()
                if len(data) != want:
                    raise RemoteProtocolError(f"the server sent {len(data):,} bytes for a range of {want:,}")
                net.STATS.add(len(data))
                self._note_html(ctype, data, final)
                return Probe("partial", size, etag, modified, ctype, final, data)
            # 200: the server ignored Range and sends the whole file. Keep the start (to say what the
            # file is) and drop the connection rather than receive the rest here.
            size = _int_or_none(r.headers.get("Content-Length"))
            if r.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
                size = None
            pieces: list[bytes] = []
            got = 0
            try:
                while got < length and size != 0:
                    piece = await r.content.read(length - got)
                    if not piece:
                        break
                    pieces.append(piece)
                    got += len(piece)
            finally:
                r.close()
            data = b"".join(pieces)
            net.STATS.add(len(data))
            self._note_html(ctype, data, final)
            return Probe("whole", size, etag, modified, ctype, final, data)

    async def _range(self, start: int, end: int) -> bytes:
        fs = http_filesystem()
        session = await fs.set_session()
        extra = {"Range": f"bytes={start}-{end - 1}"}
        async with session.get(fs.encode_url(self.url), headers=self._headers(extra), timeout=_timeout()) as r:
            if r.status == 200:
                r.close()
                raise RangeNotHonoured("the server stopped honouring byte ranges (it answered 200 with the "
                                       "whole file)")
            if r.status != 206:
                raise self._status_error(r.status, r.reason, r.headers)
            m = _CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", ""))
            if (not m or (int(m.group(1)), int(m.group(2)) + 1) != (start, end)
                    or (m.group(3) != "*" and self.size is not None and int(m.group(3)) != self.size)):
                r.close()
                raise RangeNotHonoured(
                    f"the server answered bytes {start:,}..{end:,} with Content-Range "
                    f"{r.headers.get('Content-Range', '(none)')!r}" + (f" (the file has {self.size:,} bytes: was "
                                                                       f"it replaced?)" if self.size else ""))
            self._check_etag(r.headers)
            data = await r.read()
            if len(data) != end - start:
                raise RemoteProtocolError(f"the server sent {len(data):,} bytes for a range of {end - start:,}")
            return data

    def _check_etag(self, headers) -> None:
        got = headers.get("ETag")
        if self.etag and got and got != self.etag:
            raise RemoteProtocolError("the file changed on the server while it was being read",
                                      hint="Open it again to read the new version.")

    def _note_html(self, ctype: str, data: bytes, final: str) -> None:
        start = data[:256]
        looks_html = start.lstrip().lower().startswith(_HTML_STARTS)
        is_text = bool(start) and all(32 <= b < 127 or b in (9, 10, 13) for b in start)
        # A page served as text/html; a binary file mislabelled text/html by its server is still read.
        if looks_html or (ctype in ("text/html", "application/xhtml+xml") and is_text):
            moved = ""
            try:
                from urllib.parse import urlsplit
                if urlsplit(final).netloc.rsplit("@", 1)[-1] != urlsplit(self.url).netloc.rsplit("@", 1)[-1] \
                        or urlsplit(final).path != urlsplit(self.url).path:
                    moved = f" after a redirect to {redact_url(final)}"
            except ValueError:
                pass
            raise RemoteProtocolError(
                f"the server answered with a web page (HTML){moved}, not the file",
                hint="The link may lead to a download or login page; use the file's direct download link.")

    def _status_error(self, status: int, reason: str | None, headers) -> RemoteError | _Retryable:
        code = headers.get("X-Error-Code", "") if headers is not None else ""
        if code in self.error_codes:
            cls, message, hint = self.error_codes[code]
            return cls(message, hint=hint)
        reason = f" {reason}" if reason else ""
        if status in (404, 410):
            return RemoteNotFoundError(f"not found on the server (HTTP {status})", hint=self.not_found_hint)
        if status in (401, 403, 407):
            what = "the server wants credentials" if status in (401, 407) else "the server refused access"
            return RemoteAccessError(f"{what} (HTTP {status}{reason})", hint=self.access_hint)
        if status == 416:
            return RemoteProtocolError(f"the server refused the byte range (HTTP 416){reason}")
        if status == 429 or status >= 500:
            return _Retryable(RemoteError(f"the server failed (HTTP {status}{reason})", hint="Try again later."))
        return RemoteError(f"the server answered HTTP {status}{reason}")

    # -- retries and errors --------------------------------------------------------------------------
    async def _with_retries(self, make) -> Any:
        attempt = 0
        while True:
            try:
                return await self._translate(make())
            except _Retryable as e:
                if attempt >= net.RETRIES:
                    raise self._gave_up(e.error, attempt + 1) from None
            await asyncio.sleep(net.retry_delay(attempt))
            attempt += 1

    def _gave_up(self, error: RemoteError, tries: int) -> RemoteError:
        error.message = f"{error.message} (tried {tries} times)"
        error.args = (error._format(),)
        return error

    async def _translate(self, coro) -> Any:
        """Await ``coro``; aiohttp's and asyncio's exceptions become ours (redacted, without a chain)."""
        import aiohttp
        host = _host(self.url)
        try:
            result = await coro
        except (_Retryable, asyncio.CancelledError):
            raise
        except RemoteError as e:
            raise e from None
        except (asyncio.TimeoutError, TimeoutError):
            error = RemoteTimeoutError(f"{host} did not answer within {net.timeout_s():g} s")
        except aiohttp.ClientConnectorError as e:
            # Refused or unresolvable: not worth waiting for (and an offline reopen should be quick).
            raise RemoteTimeoutError(f"cannot connect to {host} ({net.safe_message(e.os_error or e)})") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError) as e:
            error = RemoteTimeoutError(f"the connection to {host} broke ({type(e).__name__})")
        except aiohttp.TooManyRedirects:
            raise RemoteProtocolError(f"{host} redirected too many times") from None
        except aiohttp.InvalidURL:
            raise RemoteNotFoundError("this URL is not valid", hint="Check the URL.") from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise net.as_remote_error(e, f"reading from {host} failed") from None
        else:
            return result
        raise _Retryable(error)

    def _run(self, coro) -> Any:
        fs = http_filesystem()
        fut = asyncio.run_coroutine_threadsafe(self._unwrap(coro), fs.loop)
        return net.wait_future(fut)

    async def _unwrap(self, coro) -> Any:
        try:
            return await coro
        except _Retryable as e:
            raise e.error from None


def _timeout():
    import aiohttp
    t = net.timeout_s()
    return aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t)


def _host(url: str) -> str:
    from urllib.parse import urlsplit
    try:
        return urlsplit(url).netloc.rsplit("@", 1)[-1] or "the server"
    except ValueError:
        return "the server"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def report_download(done: int, total: int | None, what: str) -> None:
    from ..util.progress import Progress
    task.report(Progress(done, total or 0, what))
