"""Streaming HTTP forwarding to marimo over pooled keep-alive connections.

Invariants:

* No body is ever held whole in memory. Request chunks are written to marimo one at a time and
  the client's next chunk is read only once the previous one reached marimo's socket; response
  chunks are flushed to the client as they arrive and marimo's next chunk is read only once the
  previous one reached the client's socket. Compression (:mod:`proxy.compression`) keeps this:
  each chunk is compressed and flushed on its own.
* The request target (path and query) reaches marimo byte for byte as the client sent it.
* Until marimo's status line arrives, every failure is answered by :mod:`proxy.gate` (never
  502). After it, the client's status is committed and a failure can only cut its connection,
  so a cut-off body is never mistaken for a complete one.
* An upstream connection returns to the pool only after a complete exchange that both sides
  allow to continue. Client gone, marimo cutting off, timeout: the connection is closed.
* A connection reused from the pool that fails before any answer is retried once on a fresh
  connection, when the request can be replayed: idempotent and no body byte forwarded yet, or
  nothing at all reached marimo.
* A body of unknown length reaches an HTTP/1.1 client chunked, and an HTTP/1.0 client (which
  has no chunking) followed by the end of its connection, keep-alive or not.
* The wire format toward marimo is :mod:`proxy.wire`'s; the browser's side is Tornado's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError
from tornado.web import GZipContentEncoding, RequestHandler, stream_request_body

from proxy import compression, gate, html, wire
from proxy.headers import learn_session, tokens, toward_client, toward_marimo
from proxy.pool import ConnectionPool
from proxy.upstream import Upstream, UpstreamLookup

log = logging.getLogger(__name__)

MAX_BODY_SIZE = 10 * 1024**3
"""Largest request body the proxy accepts (it is streamed, so this bounds time, not memory)."""

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Methods whose empty body is announced with Content-Length: 0 (as browsers do).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _Failure(enum.Enum):
    UNAVAILABLE = "unavailable"
    TOO_SLOW = "too-slow"


def valid_target(uri: str) -> bool:
    """Whether the target is valid UTF-8 once back in bytes (Tornado decoded it as latin-1);
    every percent-encoded target is. Others are refused rather than guessed at."""
    try:
        uri.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


def _frame_body(method: str, received: httputil.HTTPHeaders, sent: httputil.HTTPHeaders) -> bool:
    """Sets the framing of the body sent to marimo; True when the proxy must chunk it itself.

    A length the client gave passes as it is; a chunked body is chunked again chunk by chunk
    (Tornado's server has removed the client's framing); no body at all is announced as
    ``Content-Length: 0`` for the methods that usually carry one.
    """
    if "Content-Length" in received:
        return False
    if "chunked" in tokens(received, "Transfer-Encoding"):
        sent["Transfer-Encoding"] = "chunked"
        return True
    if method in _BODY_METHODS:
        sent["Content-Length"] = "0"
    return False


class Exchange:
    """How one response from marimo went: what reached the client and whether it ended well.

    Until ``started``, a timer closes the upstream stream after ``timeout`` (``timed_out``).
    """

    def __init__(self, stream: IOStream, timeout: float) -> None:
        self.stream = stream
        self.started = False
        self.timed_out = False
        self.complete = False
        self.reusable = False
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            timeout, self._too_slow
        )

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if not self.started:
            self.timed_out = True
            self.stream.close()


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
        require_server_token: bool = False,
        html_transform: html.HtmlTransform | None = None,
    ) -> None:
        self._guard = guard
        self._html_transform = html_transform
        self._require_server_token = require_server_token
        self._lookup = lookup
        self._loading_page = loading_page
        self._pool = pool
        self._response_timeout = response_timeout
        self._upstream: Upstream | None = None
        # The upstream stream while this handler owns it: closed or given back exactly once.
        self._stream: IOStream | None = None
        self._reused = False
        self._method = "GET"
        self._head = b""
        self._chunk_body = False
        self._body_sent = False
        self._upload_broken = False
        self._client_gone = False
        self._gzip: compression.Gzip | None = None
        self._pending_head: asyncio.Handle | None = None

    def compute_etag(self) -> str | None:
        # marimo's ETag, when it sends one, is the only one: Tornado must not hash the body.
        return None

    async def prepare(self) -> None:
        if self._guard is not None and not await self._guard(self):
            return  # refused and answered: nothing reaches marimo
        # Proxied bodies pass as marimo sent them, or through proxy.compression: never through
        # Tornado's gzip transform (headers-only transforms the application adds, such as the
        # framing policy, still apply).
        if self._transforms:
            self._transforms = [
                t for t in self._transforms if not isinstance(t, GZipContentEncoding)
            ]
        request = self.request
        if isinstance(request.connection, HTTP1Connection):
            request.connection.set_max_body_size(MAX_BODY_SIZE)
        if self._require_server_token and gate.lacks_server_token(request):
            gate.answer_missing_server_token(self)
            return
        upstream = self._lookup()
        if upstream is None:
            gate.answer_not_ready(self, self._loading_page)
            return
        target = request.uri or "/"
        if not valid_target(target):
            self.send_error(400, reason="Request target is not valid UTF-8")
            return
        self._upstream = upstream
        self._method = method = request.method or "GET"
        headers = toward_marimo(request, upstream, drop=("Expect",))
        self._chunk_body = _frame_body(method, request.headers, headers)
        self._head = wire.request_head(method, target, headers.get_all())
        await self._open(fresh=False)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._stream is None or self._upload_broken or not chunk:
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
                log.debug("proxy.http.retry method=%s path=%s", self._method, self._path)
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
        """Takes marimo's status and headers as this response's own (Tornado's defaults go),
        and decides whether the body is compressed on the way (:mod:`proxy.compression`)."""
        self.set_status(start_line.code, start_line.reason or None)
        self.clear_header("Content-Type")
        self.clear_header("Server")
        if "Date" in headers:
            self.clear_header("Date")
        if self._upstream is not None:
            learn_session(self._upstream, headers)
        kept = toward_client(headers)
        self._gzip = compression.negotiate(self.request, start_line.code, kept)
        seen: set[str] = set()
        for name, value in kept.get_all():
            # A name's first line is set (cheaper than add, which would validate again what
            # proxy.wire already did); repeated lines, and every Set-Cookie, are added (next to
            # any cookie the orchestrator's guard set on this response).
            try:
                if name in seen or name == "Set-Cookie":
                    self.add_header(name, value)
                else:
                    seen.add(name)
                    self.set_header(name, value)
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
        with contextlib.suppress(StreamClosedError):
            await stream.write(self._head)
        if stream.closed():
            # Nothing reached marimo, so any request may go again on a fresh connection.
            self._drop_stream()
            if reused:
                return await self._open(fresh=True)
            self._fail(_Failure.UNAVAILABLE, "closed-on-send")
            return False
        return True

    async def _send(self, data: bytes) -> None:
        assert self._stream is not None
        stream = self._stream
        with contextlib.suppress(StreamClosedError):
            await stream.write(data)
        if stream.closed():
            # marimo stopped reading; the rest of the body is drained and discarded.
            self._upload_broken = True

    async def _exchange(self) -> _Failure | None:
        """Ends the request, then relays marimo's response; the failure if none came."""
        stream, upstream = self._stream, self._upstream
        if stream is None or upstream is None:
            return _Failure.UNAVAILABLE
        if self._chunk_body and not self._upload_broken:
            await self._send(b"0\r\n\r\n")
        exchange = Exchange(stream, self._response_timeout)
        try:
            await self._relay(exchange)
        except (StreamClosedError, wire.Malformed) as error:
            if isinstance(error, wire.Malformed):
                log.info("proxy.http.malformed path=%s error=%s", self._path, error)
            stream.close()
        finally:
            exchange.stop_timer()
            self._cancel_pending_head()
        if not exchange.started:
            self._drop_stream()
            if self._client_gone:
                return None
            return _Failure.TOO_SLOW if exchange.timed_out else _Failure.UNAVAILABLE
        if (
            exchange.complete
            and exchange.reusable
            and not self._client_gone
            and not self._upload_broken
            and not stream.closed()
        ):
            self._stream = None
            self._pool.release(upstream, stream)
            return None
        self._drop_stream()
        if not exchange.complete and not self._client_gone:
            if not self._headers_written:
                # Cut before anything reached the client: as if marimo had not answered.
                self.clear()
                self._gzip = None
                return _Failure.UNAVAILABLE
            # marimo cut the body short: end the client's connection so it cannot be taken for
            # a complete response.
            log.info("proxy.http.cut method=%s path=%s", self._method, self._path)
            if isinstance(self.request.connection, HTTP1Connection):
                self.request.connection.close()
        return None

    async def _relay(self, exchange: Exchange) -> None:
        """Copies marimo's response to the client as it arrives.

        Nothing reaches the client before marimo's head is read (``exchange.started``). The
        status line and headers go out with the first body chunk when it is already there,
        else alone on the next loop turn, so a stream whose first event comes late still opens
        at once.
        """
        stream = exchange.stream
        response = await wire.read_response_head(stream, self._method)
        exchange.stop_timer()
        body: AsyncIterator[bytes] = wire.read_body(stream, response)
        transform = self._html_transform
        if transform is not None and html.applies(
            self._method, response.start_line.code, response.headers
        ):
            # Read whole before anything reaches the client: a cut here is "no answer".
            document = b"".join([piece async for piece in body])
            body = _once(html.transformed(transform, document, response.headers))
        exchange.started = True
        exchange.reusable = response.reusable
        self.start_response(response.start_line, response.headers)
        self._pending_head = asyncio.get_running_loop().call_soon(self._send_head)
        async for chunk in body:
            self._cancel_pending_head()
            self.write(chunk if self._gzip is None else self._gzip.compress(chunk))
            try:
                await self.flush()
            except StreamClosedError:
                # The client is gone: stop reading from marimo, the connection is not reusable.
                stream.close()
                return
        if self._gzip is not None:
            self.write(self._gzip.finish())  # the handler's finish() sends whatever is left
            self._gzip = None
        exchange.complete = True
        if (
            self.request.version != "HTTP/1.1"
            and response.framing is not wire.Framing.NONE
            and "Content-Length" not in response.headers
        ):
            # An HTTP/1.0 client has no chunking: the end of this body can only be the end of
            # the connection (Tornado would keep it open for a client that asked keep-alive).
            await self.flush()
            if isinstance(self.request.connection, HTTP1Connection):
                self.request.connection.close()

    def _send_head(self) -> None:
        self._pending_head = None
        self.flush().add_done_callback(self._head_sent)

    def _head_sent(self, sent: asyncio.Future[None]) -> None:
        if (sent.cancelled() or sent.exception() is not None) and self._stream is not None:
            self._stream.close()  # the client is gone

    def _cancel_pending_head(self) -> None:
        if self._pending_head is not None:
            self._pending_head.cancel()
            self._pending_head = None

    def _may_retry(self) -> bool:
        return (
            self._reused
            and not self._body_sent
            and not self._client_gone
            and self._method in _IDEMPOTENT
        )

    def _fail(self, failure: _Failure, reason: str) -> None:
        log.info(
            "proxy.http.%s reason=%s method=%s path=%s",
            failure.value,
            reason,
            self._method,
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


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
