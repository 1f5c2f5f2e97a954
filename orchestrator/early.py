"""Probes answered while the server's own modules load; every other request waits for Tornado.

The port is bound first thing (orchestrator/listen.py), before Tornado and the web modules are
imported. Meanwhile this responder, built on the standard library's
event loop, accepts connections and answers the two probes a platform sends: ``GET``/``HEAD
/-/healthy`` (200) and ``/-/ready`` (503 with ``Retry-After``), with the bodies and headers of
orchestrator/web/handlers.py. Any other request is left unread in its socket and handed to
Tornado with :meth:`EarlyResponder.hand_over`, which serves it as if it had accepted it.

Invariants:
- a request is consumed here only when its complete head arrived in one read and it is a probe
  without a body; anything else is only peeked at (``MSG_PEEK``), so Tornado reads it whole;
- every accepted connection is either answered and closed here, or handed over;
- after :meth:`hand_over` this object touches no socket again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any, Protocol

from orchestrator import probes

_MAX_HEAD = 8192
_BODY_HEADERS = (b"\r\ncontent-length:", b"\r\ntransfer-encoding:", b"\r\nexpect:")


class StreamServer(Protocol):
    """What :meth:`EarlyResponder.hand_over` needs of Tornado's ``HTTPServer``."""

    def add_sockets(self, sockets: list[socket.socket]) -> None: ...

    def handle_stream(self, stream: Any, address: Any) -> None: ...


def _response(status: str, body: dict[str, Any], extra: list[str], frame_policy: str) -> bytes:
    payload = json.dumps(body).encode()
    head = [
        f"HTTP/1.1 {status}",
        "Content-Type: application/json; charset=UTF-8",
        "Cache-Control: no-store",
        f"Content-Security-Policy: {frame_policy}",
        "X-Content-Type-Options: nosniff",
        *extra,
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class EarlyResponder:
    def __init__(self, sockets: list[socket.socket], boot_id: str, frame_ancestors: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._listeners = sockets
        self._waiting: dict[socket.socket, Any] = {}
        self._held: list[tuple[socket.socket, Any]] = []
        policy = probes.frame_policy(frame_ancestors)
        healthy = _response("200 OK", probes.healthy(boot_id), [], policy)
        ready = _response(
            "503 Service Unavailable",
            probes.readiness(False, "starting"),
            [f"Retry-After: {probes.NOT_READY_RETRY_AFTER}"],
            policy,
        )
        self._answers = {b"/-/healthy": healthy, b"/-/ready": ready}
        self.answered = 0
        for listener in sockets:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors, say: the connection stays queued for Tornado
            connection.setblocking(False)
            self._waiting[connection] = address
            self._loop.add_reader(connection.fileno(), self._first_read, connection)

    def _first_read(self, connection: socket.socket) -> None:
        """Decide on the first bytes; never waits for more (peeked bytes stay readable)."""
        self._loop.remove_reader(connection.fileno())
        address = self._waiting.pop(connection)
        try:
            data = connection.recv(_MAX_HEAD, socket.MSG_PEEK)
        except OSError:
            data = b""
        if not data:  # closed by the client, or reset
            connection.close()
            return
        end = data.find(b"\r\n\r\n")
        answer = self._probe_answer(data[: end + 2]) if end >= 0 else None
        if answer is None:
            self._held.append((connection, address))
            return
        with contextlib.suppress(OSError):
            connection.recv(end + 4)  # exactly the head: a probe has no body
            connection.send(answer)  # a few hundred bytes: the socket buffer takes them whole
        connection.close()
        self.answered += 1

    def _probe_answer(self, head: bytes) -> bytes | None:
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD") or parts[2] != b"HTTP/1.1":
            return None
        if any(marker in b"\r\n" + rest.lower() for marker in _BODY_HEADERS):
            return None
        answer = self._answers.get(parts[1])
        if answer is None:
            return None
        return answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" if parts[0] == b"HEAD" else answer

    def hand_over(self, server: StreamServer) -> None:
        """Give the listening sockets and every unanswered connection to ``server``."""
        import tornado.iostream

        for listener in self._listeners:
            self._loop.remove_reader(listener.fileno())
        for connection, address in self._waiting.items():
            self._loop.remove_reader(connection.fileno())
            self._held.append((connection, address))
        self._waiting.clear()
        server.add_sockets(self._listeners)
        for connection, address in self._held:
            server.handle_stream(tornado.iostream.IOStream(connection), address)
        self._held.clear()
