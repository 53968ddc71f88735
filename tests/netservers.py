"""Loopback servers for the remote-reading tests and benchmarks (stdlib only): a file server that honours
byte ranges (or, on request, misbehaves), and a stand-in for the Hugging Face Hub's HTTP API.

Both count what they send (requests and body bytes, on the server side) so tests can assert how much an
operation moved, and ``stop()`` also cuts keep-alive connections, so a test that "goes offline" really
does (a pooled client connection would otherwise keep talking to a live handler thread).
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler, owner):
        super().__init__(("127.0.0.1", 0), handler)
        self.owner = owner
        self.socks: set = set()

    def get_request(self):
        sock, addr = super().get_request()
        self.socks.add(sock)
        return sock, addr

    def shutdown_request(self, request):
        self.socks.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):     # clients hanging up mid-body is normal here
        pass


class _Base:
    """Start/stop, counters, the URL of a path."""

    handler: type

    def __init__(self, latency: float = 0.0):
        self.latency = latency
        self.lock = threading.Lock()
        self.log: list[dict] = []          # one entry per request: method, path, headers
        self.bytes_sent = 0
        self._httpd = _Server(self.handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        for s in list(self._httpd.socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.bytes_sent = 0

    @property
    def requests(self) -> int:
        with self.lock:
            return len(self.log)

    def record(self, handler) -> None:
        with self.lock:
            self.log.append({"method": handler.command, "path": handler.path, "headers": dict(handler.headers)})

    def sent(self, n: int) -> None:
        with self.lock:
            self.bytes_sent += n

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class DiskFile:
    """A file on disk served without reading it into memory (the 6 GB benchmark file)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.size = os.path.getsize(self.path)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, sl: slice) -> bytes:
        start, stop, _ = sl.indices(self.size)
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), max(0, stop - start), start)

    def etag(self) -> str:
        st = os.stat(self.path)
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _send_bytes(h: BaseHTTPRequestHandler, owner: _Base, data, *, etag: str, modified: float,
                ranges: bool = True, extra: dict | None = None, content_type: str = "application/octet-stream"):
    """Answer a GET/HEAD for ``data`` (bytes or a :class:`DiskFile`) as a careful static file server would
    (Range, If-None-Match)."""
    head = h.command == "HEAD"
    size = len(data)
    headers = {"ETag": etag, "Last-Modified": email.utils.formatdate(modified, usegmt=True),
               "Content-Type": content_type, **(extra or {})}
    if ranges:
        headers["Accept-Ranges"] = "bytes"
    if h.headers.get("If-None-Match") == etag:
        return _reply(h, owner, 304, headers, b"", head)
    m = _RANGE.fullmatch(h.headers.get("Range", "")) if ranges else None
    if m and (m.group(1) or m.group(2)):
        if m.group(1) == "":
            start, end = max(0, size - int(m.group(2))), size - 1
        else:
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        if start >= size or start > end:
            return _reply(h, owner, 416, dict(headers, **{"Content-Range": f"bytes */{size}"}), b"", head)
        return _reply(h, owner, 206, dict(headers, **{"Content-Range": f"bytes {start}-{end}/{size}"}),
                      data[start:end + 1], head)
    if isinstance(data, DiskFile):                       # streamed in pieces, never held whole
        headers["Content-Length"] = str(size)
        _reply(h, owner, 200, headers, b"", head=True)
        if not head:
            for pos in range(0, size, 8 << 20):
                piece = data[pos:pos + (8 << 20)]
                owner.sent(len(piece))
                try:
                    h.wfile.write(piece)
                except (BrokenPipeError, ConnectionResetError):
                    return
        return
    return _reply(h, owner, 200, headers, data, head)


def _reply(h: BaseHTTPRequestHandler, owner: _Base, status: int, headers: dict, body: bytes, head: bool = False):
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    if "Content-Length" not in headers:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if head or not body:
        return
    owner.sent(len(body))           # counted before writing: the client may hang up halfway
    try:
        view = memoryview(body)
        for pos in range(0, len(body), 1 << 20):
            h.wfile.write(view[pos:pos + (1 << 20)])
    except (BrokenPipeError, ConnectionResetError):
        pass


# -- a plain file server --------------------------------------------------------------------------------
class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def _handle(self):
        srv: FileServer = self.server.owner
        srv.record(self)
        if srv.latency:
            time.sleep(srv.latency)
        path = urllib.parse.urlsplit(self.path).path
        with srv.lock:
            forced = srv.fail_next.pop(0) if srv.fail_next else None
        if forced == "stall":
            time.sleep(srv.stall_s)
            return _reply(self, srv, 503, {}, b"")
        if forced:
            return _reply(self, srv, forced, {}, b"server error")
        if srv.auth is not None and self.headers.get("Authorization") != srv.auth:
            return _reply(self, srv, 401, {"WWW-Authenticate": 'Basic realm="x"'}, b"unauthorized")
        if path in srv.redirects:
            return _reply(self, srv, 302, {"Location": srv.redirects[path]}, b"")
        if path in srv.html:
            page = b"<!DOCTYPE html><html><body><form>Sign in to download</form></body></html>"
            return _reply(self, srv, 200, {"Content-Type": "text/html; charset=utf-8"}, page, self.command == "HEAD")
        data = srv.files.get(path)
        if data is None:
            return _reply(self, srv, 404, {"Content-Type": "text/plain"}, b"not found", self.command == "HEAD")
        etag = data.etag() if isinstance(data, DiskFile) else '"' + hashlib.sha1(data).hexdigest() + '"'
        _send_bytes(self, srv, data, etag=etag, modified=srv.mtime, ranges=not srv.ignore_range)


class FileServer(_Base):
    """Serves ``files`` ({"/path": bytes or a DiskFile}). Options: ``latency`` (seconds per request), ``ignore_range``
    (answer every GET with 200 and the whole file, like a naive server), ``auth`` (("user", "pw"): Basic
    auth required), ``redirects`` ({path: location}), ``html`` (paths answered with a login page);
    ``fail_next`` (a list of statuses, or "stall", for the next requests)."""

    handler = _FileHandler

    def __init__(self, files: dict | None = None, *, latency: float = 0.0, ignore_range: bool = False,
                 auth: tuple[str, str] | None = None, redirects: dict[str, str] | None = None,
                 html: tuple[str, ...] = (), stall_s: float = 5.0):
        self.files = dict(files or {})
        self.ignore_range = ignore_range
        self.auth = ("Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()) if auth else None
        self.redirects = dict(redirects or {})
        self.html = set(html)
        self.fail_next: list = []
        self.stall_s = stall_s
        self.mtime = time.time()
        super().__init__(latency)


# -- a stand-in for the Hugging Face Hub -----------------------------------------------------------------
def commit_of(repo: str, revision: str) -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _error(self, status: int, code: str, message: str):
        body = json.dumps({"error": message}).encode()
        return _reply(self, self.server.owner, status, {"Content-Type": "application/json", "X-Error-Code": code,
                                                        "X-Error-Message": message}, body)

    def _json(self, doc):
        return _reply(self, self.server.owner, 200, {"Content-Type": "application/json"}, json.dumps(doc).encode())

    def _handle(self):
        hub: FakeHub = self.server.owner
        hub.record(self)
        if hub.latency:
            time.sleep(hub.latency)
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode()) if length else {}
        else:
            form = {}
        parts = urllib.parse.urlsplit(self.path)
        segs = parts.path.split("/")[1:]        # still %-encoded: "refs%2Fpr%2F1" is one segment
        if segs[:1] == ["api"] and len(segs) >= 4 and segs[1] in ("models", "datasets"):
            kind = segs[1][:-1]
            repo = f"{segs[2]}/{segs[3]}"
            return self._api(hub, kind, repo, segs[4:], form)
        kind = "model"
        if segs[:1] == ["datasets"]:
            kind, segs = "dataset", segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve":
            repo = f"{segs[0]}/{segs[1]}"
            rev = urllib.parse.unquote(segs[3])
            return self._resolve(hub, kind, repo, rev, urllib.parse.unquote("/".join(segs[4:])))
        return self._error(404, "EntryNotFound", "no such route")

    def _access(self, hub: "FakeHub", repo: str) -> str | None:
        """An error code when the request may not see ``repo``."""
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if repo in hub.private and token != hub.private[repo]:
            return "RepoNotFound"
        return None

    def _revision(self, hub, kind, repo, rev):
        revs = hub.repos.get((kind, repo))
        if revs is None:
            return None, None
        for name in revs:
            if rev in (name, commit_of(repo, name)):
                return name, revs[name]
        return None, None

    def _api(self, hub, kind, repo, rest, form):
        if (kind, repo) not in hub.repos or self._access(hub, repo):
            return self._error(401 if repo in hub.private else 404, "RepoNotFound", "Repository not found")
        rev = "main"
        if rest[:1] in (["revision"], ["tree"], ["paths-info"]) and len(rest) >= 2:
            rev = urllib.parse.unquote(rest[1])
        name, files = self._revision(hub, kind, repo, rev)
        if files is None:
            return self._error(404, "RevisionNotFound", "Revision not found")
        if not rest or rest[0] == "revision":
            return self._json({"id": repo, "sha": commit_of(repo, name), "private": repo in hub.private,
                               "gated": "manual" if repo in hub.gated else False,
                               "siblings": [{"rfilename": p} for p in sorted(files)]})
        if rest[0] == "paths-info":
            wanted = form.get("paths", [])
            return self._json([e for p in wanted if (e := _entry(files, p)) is not None])
        if rest[0] == "tree":
            folder = urllib.parse.unquote("/".join(rest[2:])).strip("/")
            prefix = folder + "/" if folder else ""
            seen, out = set(), []
            for p in sorted(files):
                if not p.startswith(prefix):
                    continue
                child = p[len(prefix):].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    out.append(_entry(files, prefix + child))
            if folder and not out:
                return self._error(404, "EntryNotFound", "Entry not found")
            return self._json(out)
        return self._error(404, "EntryNotFound", "no such route")

    def _resolve(self, hub, kind, repo, rev, path):
        if (kind, repo) not in hub.repos or self._access(hub, repo):
            return self._error(401 if repo in hub.private else 404, "RepoNotFound", "Repository not found")
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if repo in hub.gated and token != hub.gated[repo]:
            return self._error(403 if token else 401, "GatedRepo", "Access to this repo is restricted")
        name, files = self._revision(hub, kind, repo, rev)
        if files is None:
            return self._error(404, "RevisionNotFound", "Revision not found")
        data = files.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        _send_bytes(self, hub, data, etag=etag, modified=hub.mtime,
                    extra={"X-Repo-Commit": commit_of(repo, name)})


def _entry(files: dict[str, bytes], path: str) -> dict | None:
    path = path.strip("/")
    if path in files:
        data = files[path]
        e = {"type": "file", "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), "size": len(data),
             "path": path}
        if len(data) > 1024:
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e
    if any(p.startswith(path + "/") for p in files):
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
    return None


class FakeHub(_Base):
    """Repositories in memory: ``add(repo, {path: bytes}, revision="main", kind="model")``. ``gated`` and
    ``private`` map a repository to the one token allowed to read it."""

    handler = _HubHandler

    def __init__(self, *, latency: float = 0.0, gated: dict[str, str] | None = None,
                 private: dict[str, str] | None = None):
        self.repos: dict[tuple[str, str], dict[str, dict[str, bytes]]] = {}
        self.gated = dict(gated or {})
        self.private = dict(private or {})
        self.mtime = time.time()
        super().__init__(latency)

    def add(self, repo: str, files: dict[str, bytes], *, revision: str = "main", kind: str = "model") -> None:
        self.repos.setdefault((kind, repo), {})[revision] = dict(files)


# -- a stand-in for Google Cloud Storage's JSON API (what gcsfs reads with) ------------------------------
class _GcsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        gcs: FakeGCS = self.server.owner
        gcs.record(self)
        parts = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parts.path)
        query = urllib.parse.parse_qs(parts.query)
        media = re.fullmatch(r"/download/storage/v1/b/([^/]+)/o/(.+)", path)
        if media or "media" in query.get("alt", []):
            m = media or re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)", path)
            data = gcs.objects.get(f"{m.group(1)}/{m.group(2)}") if m else None
            if data is None:
                return self._error(404, "No such object")
            return _send_bytes(self, gcs, data, etag=hashlib.md5(data).hexdigest(), modified=gcs.mtime)
        m = re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)", path)
        if m:
            data = gcs.objects.get(f"{m.group(1)}/{m.group(2)}")
            if data is None:
                return self._error(404, "No such object")
            return self._json(_gcs_meta(m.group(1), m.group(2), data))
        m = re.fullmatch(r"/storage/v1/b/([^/]+)/o", path)
        if m:
            bucket = m.group(1)
            prefix = query.get("prefix", [""])[0]
            items, prefixes = [], set()
            for full, data in sorted(gcs.objects.items()):
                b, key = full.split("/", 1)
                if b != bucket or not key.startswith(prefix):
                    continue
                rest = key[len(prefix):]
                if "delimiter" in query and "/" in rest:
                    prefixes.add(prefix + rest.split("/", 1)[0] + "/")
                else:
                    items.append(_gcs_meta(bucket, key, data))
            return self._json({"kind": "storage#objects", "items": items, "prefixes": sorted(prefixes)})
        m = re.fullmatch(r"/storage/v1/b/([^/]+)", path)
        if m and any(k.startswith(m.group(1) + "/") for k in gcs.objects):
            return self._json({"kind": "storage#bucket", "name": m.group(1)})
        return self._error(404, "Not found")

    def do_POST(self):          # anything else (a gRPC probe) is refused
        self.server.owner.record(self)
        return self._error(404, "Not found")

    def _json(self, doc):
        return _reply(self, self.server.owner, 200, {"Content-Type": "application/json"}, json.dumps(doc).encode())

    def _error(self, status: int, message: str):
        body = json.dumps({"error": {"code": status, "message": message}}).encode()
        return _reply(self, self.server.owner, status, {"Content-Type": "application/json"}, body)


def _gcs_meta(bucket: str, key: str, data: bytes) -> dict:
    return {"kind": "storage#object", "bucket": bucket, "name": key, "size": str(len(data)), "generation": "1",
            "metageneration": "1", "etag": hashlib.md5(data).hexdigest(), "contentType": "application/octet-stream",
            "updated": "2026-01-01T00:00:00.000Z", "timeCreated": "2026-01-01T00:00:00.000Z"}


class FakeGCS(_Base):
    """Objects in memory ({"bucket/key": bytes}), read-only, served as the GCS JSON API serves them."""

    handler = _GcsHandler

    def __init__(self, objects: dict[str, bytes] | None = None, *, latency: float = 0.0):
        self.objects = dict(objects or {})
        self.mtime = time.time()
        super().__init__(latency)
