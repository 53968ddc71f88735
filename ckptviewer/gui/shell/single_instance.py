"""One window per user: a second ``ckptviewer FILE`` hands its files to the running window.

The running app listens on a QLocalServer (a socket only the current user may use). A new launch
first tries to connect; if a server answers, it sends one JSON line ``{"paths": [...], "demo": false}``
with absolute paths, waits for ``ok``, and exits. ``--new-window`` skips all of this. The server
caps what it reads (size and number of paths): a message is only ever a list of paths to open with
the same safe reader as everything else.
"""
from __future__ import annotations

import hashlib
import json
import os

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from ...core.util.locations import normalize_location

ENV_VAR = "CKPTVIEWER_INSTANCE"
MAX_MESSAGE = 256 * 1024
MAX_PATHS = 200


def instance_name() -> str:
    """The server name for this user (``$CKPTVIEWER_INSTANCE`` overrides it, e.g. in tests)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    who = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return "ckptviewer-" + hashlib.sha256(who.encode()).hexdigest()[:12]


def encode_message(paths: list[str], demo: bool = False) -> bytes:
    return (json.dumps({"paths": [normalize_location(p) for p in paths][:MAX_PATHS], "demo": bool(demo)})
            + "\n").encode()


def decode_message(data: bytes) -> tuple[list[str], bool]:
    """Paths and the demo flag from a message; anything malformed gives ([], False)."""
    try:
        msg = json.loads(data.decode("utf-8").strip() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [], False
    if not isinstance(msg, dict):
        return [], False
    paths = [p for p in msg.get("paths", []) if isinstance(p, str) and p and "\x00" not in p][:MAX_PATHS]
    return paths, msg.get("demo") is True


def forward_to_running(paths: list[str], demo: bool = False, name: str | None = None,
                       timeout_ms: int = 2000) -> bool:
    """Send ``paths`` to a running window. True when one took them; False when none is running."""
    sock = QLocalSocket()
    sock.connectToServer(name or instance_name())
    if not sock.waitForConnected(min(timeout_ms, 500)):
        return False
    sock.write(encode_message(paths, demo))
    sock.flush()
    sock.waitForBytesWritten(timeout_ms)
    ok = False
    while sock.waitForReadyRead(timeout_ms):
        if bytes(sock.readAll().data()).startswith(b"ok"):
            ok = True
            break
    sock.disconnectFromServer()
    return ok


class InstanceServer(QObject):
    """Listens for launches that forward their files. ``files_received(paths, demo)`` on the GUI thread."""

    files_received = Signal(list, bool)

    def __init__(self, name: str | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.name = name or instance_name()
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._on_new_connection)
        self._buffers: dict[QLocalSocket, bytearray] = {}

    def listen(self) -> bool:
        if self._server.listen(self.name):
            return True
        # A stale socket file from a crashed instance: nobody answered our connect, so remove it.
        QLocalServer.removeServer(self.name)
        return self._server.listen(self.name)

    def close(self) -> None:
        self._server.close()

    @property
    def listening(self) -> bool:
        return self._server.isListening()

    def _on_new_connection(self) -> None:
        while self._server.hasPendingConnections():
            sock = self._server.nextPendingConnection()
            self._buffers[sock] = bytearray()
            sock.readyRead.connect(lambda s=sock: self._on_ready_read(s))
            sock.disconnected.connect(lambda s=sock: self._on_disconnected(s))

    def _on_ready_read(self, sock: QLocalSocket) -> None:
        buf = self._buffers.get(sock)
        if buf is None:
            return
        buf.extend(bytes(sock.readAll().data()))
        if len(buf) > MAX_MESSAGE:
            self._buffers.pop(sock, None)
            sock.abort()
            return
        if b"\n" in buf:
            line = bytes(buf.split(b"\n", 1)[0])
            self._buffers.pop(sock, None)
            sock.write(b"ok\n")
            sock.flush()
            paths, demo = decode_message(line)
            self.files_received.emit(paths, demo)

    def _on_disconnected(self, sock: QLocalSocket) -> None:
        self._buffers.pop(sock, None)
        sock.deleteLater()
