"""What every remote backend shares: timeouts and retries, waiting cancellably, counting bytes, credentials
taken out of URLs, and turning library exceptions into our one-line errors without leaking secrets.

Hazards: network libraries put URLs (with ``user:password@`` or signed query strings) into their exception
messages and keep request headers (tokens) on the exception's response; every error leaves this layer as
a :class:`RemoteError` built from redacted text and raised ``from None``, so neither the message nor the
exception chain carries a credential.
"""
from __future__ import annotations

import base64
import concurrent.futures
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..util import task
from ..util.errors import CancelledError, RemoteError, RemoteTimeoutError
from ..util.locations import redact

TIMEOUT_ENV = "CKPTVIEWER_NET_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
RETRIES = 2                       # a timed-out or failed (5xx, 429, reset) request is tried this many more times
RETRY_DELAYS_S = (0.5, 2.0)
POLL_S = 0.1                      # how often a wait looks for a cancellation


def timeout_s() -> float:
    """Seconds to wait for a connection or for the next bytes of an answer (``$CKPTVIEWER_NET_TIMEOUT``)."""
    try:
        return max(0.05, float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def retry_delay(attempt: int) -> float:
    return RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]


# -- counting ---------------------------------------------------------------------------------------
@dataclass
class NetworkStats:
    """Bytes and requests this process moved over the network (the window shows them)."""

    bytes: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int, requests: int = 1) -> None:
        with self.lock:
            self.bytes += nbytes
            self.requests += requests


STATS = NetworkStats()


def fetched_bytes() -> int:
    """Bytes fetched over the network by this process so far."""
    return STATS.bytes


# -- waiting ----------------------------------------------------------------------------------------
def wait_future(fut: concurrent.futures.Future, *, deadline: float | None = None,
                on_tick: Callable[[], None] | None = None) -> Any:
    """The result of ``fut``, polling the calling task's cancel flag; a cancelled task cancels ``fut``
    (an asyncio future from ``run_coroutine_threadsafe`` then cancels the request) and raises
    :class:`CancelledError`. ``on_tick`` runs on the waiting thread between polls (progress reports)."""
    while True:
        try:
            return fut.result(timeout=POLL_S)
        except concurrent.futures.TimeoutError:
            if on_tick is not None:
                on_tick()
            if task.cancel_requested():
                fut.cancel()
                raise CancelledError() from None
            if deadline is not None and time.monotonic() > deadline:
                fut.cancel()
                raise RemoteTimeoutError(f"no answer within {timeout_s():.0f} s") from None


def call_cancellable(fn: Callable[..., Any], *args: Any, limit_s: float | None = None,
                     on_tick: Callable[[], None] | None = None, **kwargs: Any) -> Any:
    """Run a blocking library call (the Hub client's, s3fs's) on a helper thread so the caller can be
    cancelled while it waits, and give up after ``limit_s`` seconds. The helper is a daemon thread: a
    call given up on (the Hub's tree listing has no timeout of its own) may linger, but never keeps the
    process from exiting."""
    fut: concurrent.futures.Future = concurrent.futures.Future()
    ctx = task.current_context()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            with task.adopt_context(ctx):
                result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            fut.set_exception(e)
        else:
            fut.set_result(result)
    threading.Thread(target=run, name="ckptviewer-net", daemon=True).start()
    return wait_future(fut, deadline=None if limit_s is None else time.monotonic() + limit_s, on_tick=on_tick)


# -- credentials in URLs ----------------------------------------------------------------------------
_url_credentials: dict[str, str] = {}
_cred_lock = threading.Lock()


def origin(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme.lower()}://{p.netloc.rsplit('@', 1)[-1].lower()}"


def take_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part. The credentials are remembered (in this process only)
    as a Basic ``Authorization`` header for the URL's origin, so every later request to it, including a
    reopen from the recent files list, still sends them; nothing downstream ever sees them in a URL."""
    p = urllib.parse.urlsplit(url)
    if "@" not in p.netloc:
        return url
    userinfo, host = p.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    clean = urllib.parse.urlunsplit((p.scheme, host, p.path, p.query, p.fragment))
    with _cred_lock:
        _url_credentials[origin(clean)] = f"Basic {token}"
    return clean


def auth_header_for(url: str) -> dict[str, str]:
    with _cred_lock:
        value = _url_credentials.get(origin(url))
    return {"Authorization": value} if value else {}


def forget_credentials() -> None:
    with _cred_lock:
        _url_credentials.clear()


def safe_message(exc: BaseException) -> str:
    """An exception's message for a person: one line, redacted, with the class name when it is empty."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)[:300]


def as_remote_error(exc: BaseException, what: str = "") -> RemoteError:
    """A generic :class:`RemoteError` for an exception no backend recognised (message redacted)."""
    prefix = f"{what}: " if what else ""
    return RemoteError(f"{prefix}{type(exc).__name__}: {safe_message(exc)}")
