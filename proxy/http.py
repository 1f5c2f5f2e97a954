"""Streaming HTTP forwarding to marimo over pooled keep-alive connections.

Invariants:

* No body is ever held whole in memory. Request chunks are written to marimo one at a time and
  the client's next chunk is read only once the previous one reached marimo's socket; response
  chunks are flushed to the client as they arrive and marimo's next chunk is read only once the
  previous one reached the client's socket.
* The request target (path and query) reaches marimo byte for byte as the client sent it.
* Until marimo's status line arrives, every failure is answered by :mod:`proxy.gate` (never
  502). After it, the client's status is committed and a failure can only cut its connection,
  so a cut-off body is never mistaken for a complete one.
* An upstream connection returns to the pool only after a complete exchange that both sides
  allow to continue. Client gone, marimo cutting off, timeout: the connection is closed.
* A connection reused from the pool that fails before any answer is retried once on a fresh
  connection, when the request can be replayed: idempotent and no body byte forwarded yet, or
  nothing at all reached marimo.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError
from tornado.web import GZipContentEncoding, RequestHandler, stream_request_body

from proxy import gate
from proxy.headers import keeps_alive, tokens, toward_client, toward_marimo
from proxy.pool import ConnectionPool
from proxy.upstream import Upstream, UpstreamLookup

log = logging.getLogger(__name__)

MAX_BODY_SIZE = 10 * 1024**3
"""Largest request body the proxy accepts (it is streamed, so this bounds time, not memory)."""

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Tornado's client chunks the body of these methods by itself when no Content-Length is set.
_FRAMED_BY_TORNADO = frozenset({"POST", "PUT", "PATCH"})
_UPSTREAM_PARAMS = HTTP1ConnectionParameters(max_body_size=1 << 62, decompress=False)


class _Failure(enum.Enum):
    UNAVAILABLE = "unavailable"
    TOO_SLOW = "too-slow"


def _wire_target(uri: str) -> str | None:
    """The request target as a str that Tornado's client encodes back to the client's bytes.

    Tornado decodes the request line as latin-1 and encodes the outgoing one as UTF-8; the
    round trip is exact for every target that is valid UTF-8 (all percent-encoded ones are).
    """
    try:
        return uri.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


def _frame_body(method: str, received: httputil.HTTPHeaders, sent: httputil.HTTPHeaders) -> bool:
    """Sets the framing of the body sent to marimo; True when the proxy must chunk it itself."""
    if "Content-Length" in received:
        return False
    if "chunked" in tokens(received, "Transfer-Encoding"):
        if method in _FRAMED_BY_TORNADO:
            return False
        sent["Transfer-Encoding"] = "chunked"
        return True
    if method in _FRAMED_BY_TORNADO:
        # No body: say so, instead of letting Tornado send an empty chunked one.
        sent["Content-Length"] = "0"
    return False


async def _settle(reading: Awaitable[bool]) -> bool:
    """Waits for a response read to end; True when it ended with the stream still usable."""
    try:
        return await reading
    except StreamClosedError:
        return False


class _ResponseRelay(httputil.HTTPMessageDelegate):
    """Copies one marimo response to the client as it arrives.

    Nothing reaches the client before ``headers_received`` (``started`` then turns true). The
    status line and headers go out with the first body chunk when it is already there, else
    alone on the next loop turn, so a stream whose first event comes late still opens at once.
    Until ``started``, a timer closes the upstream stream after ``timeout`` (``timed_out``).
    """

    def __init__(self, forwarder: HttpForwarder, upstream: IOStream, timeout: float) -> None:
        self._forwarder = forwarder
        self._upstream = upstream
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(timeout, self._too_slow)
        self._pending_head: asyncio.Handle | None = None
        self.started = False
        self.timed_out = False
        self.complete = False
        self.reusable = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        if 100 <= start_line.code < 200:
            return None  # interim answers (100 Continue, 103 Early Hints) are not relayed
        self.stop_timer()
        self.started = True
        self.reusable = keeps_alive(start_line.version, headers)
        self._forwarder.start_response(start_line, headers)
        self._pending_head = self._loop.call_soon(self._send_head)
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        self._cancel_pending_head()
        self._forwarder.write(chunk)
        return self._flush()

    def finish(self) -> None:
        self._cancel_pending_head()  # the handler's finish() sends whatever is left
        self.complete = True

    def on_connection_close(self) -> None:
        self.stop_timer()
        self._cancel_pending_head()

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if not self.started:
            self.timed_out = True
            self._upstream.close()

    def _cancel_pending_head(self) -> None:
        if self._pending_head is not None:
            self._pending_head.cancel()
            self._pending_head = None

    def _send_head(self) -> None:
        self._pending_head = None
        self._forwarder.flush().add_done_callback(self._head_sent)

    def _head_sent(self, sent: asyncio.Future[None]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            self._upstream.close()  # the client is gone

    async def _flush(self) -> None:
        try:
            await self._forwarder.flush()
        except StreamClosedError:
            # The client is gone: stop reading from marimo, the connection is not reusable.
            self._upstream.close()


@stream_request_body
class HttpForwarder(RequestHandler):
    """Forwards any non-upgrade request to marimo and streams the answer back."""

    def initialize(
        self,
        lookup: UpstreamLookup,
        loading_page: Callable[[], bytes],
        pool: ConnectionPool,
        response_timeout: float,
        guard: Callable[[RequestHandler], Awaitable[bool]] | None = None,
    ) -> None:
        self._guard = guard
        self._lookup = lookup
        self._loading_page = loading_page
        self._pool = pool
        self._response_timeout = response_timeout
        self._upstream: Upstream | None = None
        # The upstream stream while this handler owns it: closed or given back exactly once.
        self._stream: IOStream | None = None
        self._conn: HTTP1Connection | None = None
        self._reused = False
        self._start_line = httputil.RequestStartLine("GET", "/", "HTTP/1.1")
        self._upstream_headers = httputil.HTTPHeaders()
        self._chunk_body = False
        self._body_sent = False
        self._upload_broken = False
        self._client_gone = False

    def compute_etag(self) -> str | None:
        # marimo's ETag, when it sends one, is the only one: Tornado must not hash the body.
        return None

    async def prepare(self) -> None:
        if self._guard is not None and not await self._guard(self):
            return  # refused and answered: nothing reaches marimo
        # Proxied bodies pass as marimo sent them: no gzip transform here (headers-only
        # transforms the application adds, such as the framing policy, still apply).
        self._transforms = [t for t in self._transforms if not isinstance(t, GZipContentEncoding)]
        if isinstance(self.request.connection, HTTP1Connection):
            self.request.connection.set_max_body_size(MAX_BODY_SIZE)
        upstream = self._lookup()
        if upstream is None:
            gate.answer_not_ready(self, self._loading_page)
            return
        method = self.request.method or "GET"
        target = _wire_target(self.request.uri or "/")
        if target is None:
            self.send_error(400, reason="Request target is not valid UTF-8")
            return
        self._upstream = upstream
        self._start_line = httputil.RequestStartLine(method, target, "HTTP/1.1")
        self._upstream_headers = toward_marimo(self.request, upstream, drop=("Expect",))
        self._chunk_body = _frame_body(method, self.request.headers, self._upstream_headers)
        await self._open(fresh=False)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._conn is None or self._upload_broken or not chunk:
            return None
        self._body_sent = True
        if self._chunk_body:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return self._send(chunk)

    async def _forward(self, *args: str, **kwargs: str) -> None:
        while True:
            failure = await self._exchange()
            if failure is None:
                return
            if failure is _Failure.UNAVAILABLE and self._may_retry():
                log.debug("proxy.http.retry method=%s path=%s", self._start_line.method, self._path)
                if await self._open(fresh=True):
                    continue
                return
            self._fail(failure, "no-answer")
            return

    get = head = post = put = patch = delete = options = _forward

    def on_connection_close(self) -> None:
        self._client_gone = True
        self._drop_stream()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._drop_stream()

    def start_response(
        self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> None:
        """Takes marimo's status and headers as this response's own (Tornado's defaults go)."""
        self.set_status(start_line.code, start_line.reason or None)
        self.clear_header("Content-Type")
        self.clear_header("Server")
        if "Date" in headers:
            self.clear_header("Date")
        for name, value in toward_client(headers).get_all():
            try:
                self.add_header(name, value)
            except ValueError:
                log.debug("proxy.http.drop-header name=%s reason=unsafe-value", name)

    @property
    def _path(self) -> str:
        # Logged instead of the URI: a query string may carry a token.
        return self.request.path

    async def _open(self, *, fresh: bool) -> bool:
        """Connects to marimo and sends the request head; answers the client itself on failure."""
        assert self._upstream is not None
        try:
            stream, reused = await self._pool.acquire(self._upstream, fresh=fresh)
        except TimeoutError:
            self._fail(_Failure.TOO_SLOW, "connect-timeout")
            return False
        except (OSError, StreamClosedError):
            self._fail(_Failure.UNAVAILABLE, "connect-refused")
            return False
        if self._client_gone:
            stream.close()
            return False
        self._stream, self._reused = stream, reused
        self._conn = HTTP1Connection(stream, True, _UPSTREAM_PARAMS)
        # Tornado may add Transfer-Encoding to these headers; a retry would add the same again.
        await self._conn.write_headers(self._start_line, self._upstream_headers)
        if stream.closed():
            # Nothing reached marimo, so any request may go again on a fresh connection.
            self._drop_stream()
            if reused:
                return await self._open(fresh=True)
            self._fail(_Failure.UNAVAILABLE, "closed-on-send")
            return False
        return True

    async def _send(self, data: bytes) -> None:
        assert self._conn is not None and self._stream is not None
        stream = self._stream
        with contextlib.suppress(StreamClosedError):
            await self._conn.write(data)
        if stream.closed():
            # marimo stopped reading; the rest of the body is drained and discarded.
            self._upload_broken = True

    async def _exchange(self) -> _Failure | None:
        """Ends the request, then relays marimo's response; the failure if none came."""
        conn, stream, upstream = self._conn, self._stream, self._upstream
        if conn is None or stream is None or upstream is None:
            return _Failure.UNAVAILABLE
        if self._chunk_body and not self._upload_broken:
            await self._send(b"0\r\n\r\n")
        try:
            conn.finish()
        except httputil.HTTPOutputError:
            stream.close()
        relay = _ResponseRelay(self, stream, self._response_timeout)
        try:
            usable = await _settle(conn.read_response(relay))
        finally:
            relay.stop_timer()
        if not relay.started:
            stream.close()
            self._drop_stream()
            if self._client_gone:
                return None
            return _Failure.TOO_SLOW if relay.timed_out else _Failure.UNAVAILABLE
        if (
            usable
            and relay.complete
            and relay.reusable
            and not self._client_gone
            and not self._upload_broken
            and not stream.closed()
        ):
            self._stream = None
            self._pool.release(upstream, stream)
            return None
        self._drop_stream()
        if not relay.complete and not self._client_gone:
            if not self._headers_written:
                return _Failure.UNAVAILABLE  # cut before anything reached the client
            # marimo cut the body short: end the client's connection so it cannot be taken for
            # a complete response.
            log.info("proxy.http.cut method=%s path=%s", self._start_line.method, self._path)
            if isinstance(self.request.connection, HTTP1Connection):
                self.request.connection.close()
        return None

    def _may_retry(self) -> bool:
        return (
            self._reused
            and not self._body_sent
            and not self._client_gone
            and self._start_line.method in _IDEMPOTENT
        )

    def _fail(self, failure: _Failure, reason: str) -> None:
        log.info(
            "proxy.http.%s reason=%s method=%s path=%s",
            failure.value,
            reason,
            self._start_line.method,
            self._path,
        )
        if self._client_gone or self._finished:
            return
        if failure is _Failure.TOO_SLOW:
            gate.answer_too_slow(self)
        else:
            gate.answer_not_ready(self, self._loading_page)

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
