"""What an unauthenticated client can make the server hold, bounded before any handler runs.

:class:`BoundedServer` is Tornado's HTTP server with, in front of the application:

* the Host rule (orchestrator/trust/hosts.py): a foreign Host is answered 403 at once;
* a body limit on the orchestrator's own routes (``/-/``), checked from the headers before a
  byte of the body is read: more than :data:`OWN_BODY_LIMIT` answers 413, a body without a
  length 411, and the connection is closed instead of reading on;
* a deadline for the first request's headers (:data:`FIRST_HEADERS_TIMEOUT`), an idle
  timeout between requests (:data:`IDLE_TIMEOUT`) and a body timeout on ``/-/`` routes;
* at most :data:`UNAUTHENTICATED_CONNECTIONS` connections on which no request has been admitted
  by the guard yet; past that, the oldest of them is closed to make room, so a new probe or
  user is always served.

Invariant: none of this reads a request body or waits on anything but the client's socket.
"""

from __future__ import annotations

import time
from http.client import responses
from typing import Any

import tornado.httpserver
import tornado.iostream
from tornado import httputil

from orchestrator.trust.hosts import FLAG, HostRule

OWN_BODY_LIMIT = 16 * 1024
FIRST_HEADERS_TIMEOUT = 10.0
IDLE_TIMEOUT = 75.0
OWN_BODY_TIMEOUT = 10.0
UNAUTHENTICATED_CONNECTIONS = 256


class _Screen(httputil.HTTPMessageDelegate):
    """Checks a request's head; answers it itself, or hands everything on to ``inner``."""

    def __init__(
        self,
        server: BoundedServer,
        inner: httputil.HTTPMessageDelegate,
        connection: httputil.HTTPConnection,
    ) -> None:
        self.server = server
        self.inner = inner
        self.connection = connection
        self.answered = False
        self.head = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.head = start_line.method == "HEAD"
        self.server.heard(self.connection)
        if not self.server.hosts.allows(headers.get("Host")):
            host = headers.get("Host", "")[:100]
            self._answer(
                403,
                f"Host {host!r} is not served here; to allow it, list it in {FLAG}",
            )
            return None
        if start_line.path.startswith("/-/"):
            length = headers.get("Content-Length")
            if "Transfer-Encoding" in headers:
                self._answer(411, "send a Content-Length: /-/ routes take small bodies only")
                return None
            if length is not None:
                try:
                    size = int(length)
                except ValueError:
                    size = -1
                if size < 0 or size > OWN_BODY_LIMIT:
                    self._answer(
                        413, f"the body is too large: /-/ routes take {OWN_BODY_LIMIT} bytes"
                    )
                    return None
            self.connection.set_max_body_size(OWN_BODY_LIMIT)  # type: ignore[attr-defined]
            self.connection.set_body_timeout(OWN_BODY_TIMEOUT)  # type: ignore[attr-defined]
        return self.inner.headers_received(start_line, headers)

    def _answer(self, status: int, message: str) -> None:
        self.answered = True
        body = (message + "\n").encode()
        self.connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "")),
            httputil.HTTPHeaders(
                {
                    "Content-Type": "text/plain; charset=utf-8",
                    "Content-Length": str(len(body)),
                    "Cache-Control": "no-store",
                    "Connection": "close",
                }
            ),
            b"" if self.head else body,  # a HEAD's answer has the length, never the body
        )
        self.connection.finish()

    def data_received(self, chunk: bytes) -> Any:
        if not self.answered:
            return self.inner.data_received(chunk)
        return None

    def finish(self) -> None:
        if not self.answered:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if not self.answered:
            self.inner.on_connection_close()


class BoundedServer(tornado.httpserver.HTTPServer):
    hosts: HostRule

    def initialize(self, *args: Any, hosts: HostRule, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("idle_connection_timeout", IDLE_TIMEOUT)
        super().initialize(*args, **kwargs)
        self.hosts = hosts
        self._untrusted: dict[tornado.iostream.IOStream, float] = {}
        self._quiet: set[tornado.iostream.IOStream] = set()

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        if len(self._untrusted) >= UNAUTHENTICATED_CONNECTIONS:
            for old in [s for s in self._untrusted if s.closed()]:
                self._untrusted.pop(old, None)
                self._quiet.discard(old)
        while len(self._untrusted) >= UNAUTHENTICATED_CONNECTIONS:
            oldest = next(iter(self._untrusted))
            self._untrusted.pop(oldest)
            self._quiet.discard(oldest)
            oldest.close()
        self._untrusted[stream] = time.monotonic()
        self._quiet.add(stream)
        stream.io_loop.call_later(FIRST_HEADERS_TIMEOUT, self._first_headers_due, stream)
        super().handle_stream(stream, address)

    def _first_headers_due(self, stream: tornado.iostream.IOStream) -> None:
        if stream in self._quiet:
            self._quiet.discard(stream)
            self._untrusted.pop(stream, None)
            stream.close()

    def heard(self, connection: httputil.HTTPConnection) -> None:
        """A request's headers arrived complete on this connection."""
        stream = getattr(connection, "stream", None)
        if stream is not None:
            self._quiet.discard(stream)

    def trust(self, request: httputil.HTTPServerRequest) -> None:
        """The guard admitted a request on this connection: no longer counted or capped."""
        stream = getattr(request.connection, "stream", None)
        if stream is not None and self._untrusted:
            self._untrusted.pop(stream, None)
            self._quiet.discard(stream)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _Screen(self, super().start_request(server_conn, request_conn), request_conn)
