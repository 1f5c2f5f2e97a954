"""The fast path: body-less requests forwarded beneath Tornado's ``RequestHandler``.

Most of what a browser asks marimo carries no body: the editor's assets, ``/health``, GETs of
its API. For those, the ``RequestHandler`` machinery (an object built per request, default
headers set and cleared, output transforms, ``flush``/``finish`` bookkeeping, a coroutine per
stage) cost as much CPU as the forwarding itself. Here such a request is answered by one
:class:`~tornado.httputil.HTTPMessageDelegate` writing straight to Tornado's HTTP/1.1
connection. Everything else (bodies, HTTP/1.0, ``Expect``, a guard that must wait or answer,
marimo not ready) is left to :class:`proxy.http.HttpForwarder`: :class:`DirectRouter` returns
no delegate, and Tornado's rule table moves on to the next rule.

Invariants (the same as :mod:`proxy.http`'s for what the two ends see):

* Taken only when :func:`eligible` holds, marimo is ready and the guard admits the request
  without waiting; the decision is made before anything is read or written.
* What reaches marimo is what ``HttpForwarder`` sends: :func:`proxy.headers.toward_marimo`, the
  target byte for byte, no body. What reaches the client: marimo's status and
  :func:`proxy.headers.toward_client` headers, :func:`proxy.compression.negotiate`'s decision,
  then ``finish_headers`` (the application's own response headers).
* Until marimo's status line arrives, every failure is answered by :mod:`proxy.gate` (never
  502). A pooled connection that fails first is retried once on a fresh one: a request without
  a body can always be replayed.
* After the status line, a failure can only cut the client's connection; the upstream stream
  returns to the pool only after a complete exchange both sides allow to continue.
* The status line and headers leave with the first body piece when it is already there, else
  alone on the next loop turn (a stream whose first event comes late still opens at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from http.client import responses

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError
from tornado.routing import Router

from proxy import compression, gate, html, wire
from proxy.headers import learn_session, toward_client, toward_marimo
from proxy.http import Exchange, valid_target
from proxy.pool import ConnectionPool
from proxy.upstream import Upstream, UpstreamLookup

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD"})


def eligible(request: httputil.HTTPServerRequest) -> bool:
    """An HTTP/1.1 GET or HEAD without a body, an upgrade or an expectation."""
    if request.method not in _METHODS or request.version != "HTTP/1.1":
        return False
    headers = request.headers
    if "Transfer-Encoding" in headers or "Upgrade" in headers or "Expect" in headers:
        return False
    length = headers.get("Content-Length")
    if length is not None and length.strip() != "0":
        return False
    return valid_target(request.uri or "/")


@dataclass(frozen=True)
class DirectSettings:
    """What the fast path shares with the rest of the proxy and the application around it."""

    lookup: UpstreamLookup
    loading_page: Callable[[], bytes]
    pool: ConnectionPool
    response_timeout: float
    admits_at_once: Callable[[httputil.HTTPServerRequest], bool] | None
    """True when the request may pass without waiting; None admits everything."""
    finish_headers: Callable[[httputil.HTTPHeaders], None] | None = None
    """Applied to every response's headers just before they are sent."""
    on_finished: Callable[[httputil.HTTPServerRequest, int], None] | None = None
    """Told each request and the status it got (access log, metrics)."""
    html_transform: html.HtmlTransform | None = None
    """Applied to marimo's HTML documents (:mod:`proxy.html`)."""


class DirectRouter(Router):
    """Routes eligible requests to a :class:`DirectExchange`; returns None for the rest."""

    def __init__(self, settings: DirectSettings) -> None:
        self.settings = settings

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: object
    ) -> httputil.HTTPMessageDelegate | None:
        if not isinstance(request.connection, HTTP1Connection) or not eligible(request):
            return None
        upstream = self.settings.lookup()
        if upstream is None:
            return None  # the loading page or a 503: HttpForwarder answers it
        admits = self.settings.admits_at_once
        if admits is not None and not admits(request):
            return None  # the guard must look closer (and may answer): HttpForwarder
        return DirectExchange(self.settings, request, request.connection, upstream)


class DirectExchange(httputil.HTTPMessageDelegate):
    """One body-less request relayed to marimo and its answer streamed back."""

    def __init__(
        self,
        settings: DirectSettings,
        request: httputil.HTTPServerRequest,
        connection: HTTP1Connection,
        upstream: Upstream,
    ) -> None:
        self._settings = settings
        self._request = request
        self._connection = connection
        self._upstream = upstream
        self._method = request.method or "GET"
        self._stream: IOStream | None = None
        self._client_gone = False
        self._status = 0
        self._pending_head: asyncio.Handle | None = None
        self._task: asyncio.Task[None] | None = None

    # -- HTTPMessageDelegate ------------------------------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        return None  # the router has seen them already, as self._request

    def data_received(self, chunk: bytes) -> None:
        return None  # eligible requests have no body

    def finish(self) -> None:
        self._connection.set_close_callback(self._on_client_gone)
        self._task = asyncio.ensure_future(self._run())

    def on_connection_close(self) -> None:
        self._on_client_gone()

    # -- the exchange ------------------------------------------------------------------------

    def _on_client_gone(self) -> None:
        self._client_gone = True
        self._drop_stream()

    async def _run(self) -> None:
        try:
            await self._forward()
        except Exception:
            log.exception("proxy.direct.error path=%s", self._request.path)
            self._drop_stream()
            self._connection.close()
        finally:
            self._connection.set_close_callback(None)
            if self._settings.on_finished is not None and self._status:
                self._settings.on_finished(self._request, self._status)

    async def _forward(self) -> None:
        settings, upstream = self._settings, self._upstream
        head = wire.request_head(
            self._method,
            self._request.uri or "/",
            toward_marimo(self._request, upstream, drop=("Expect",)).get_all(),
        )
        for attempt in range(2):
            try:
                stream, reused = await settings.pool.acquire(upstream, fresh=attempt > 0)
            except TimeoutError:
                self._fail(gate.TOO_SLOW, "connect-timeout")
                return
            except (OSError, StreamClosedError):
                self._fail(gate.not_ready(self._request, settings.loading_page), "connect-refused")
                return
            if self._client_gone:
                stream.close()
                return
            self._stream = stream
            exchange = Exchange(stream, settings.response_timeout)
            try:
                await stream.write(head)
                response = await wire.read_response_head(stream, self._method)
            except (StreamClosedError, wire.Malformed) as error:
                if isinstance(error, wire.Malformed):
                    log.info("proxy.http.malformed path=%s error=%s", self._request.path, error)
                self._drop_stream()
                if self._client_gone:
                    return
                if exchange.timed_out:
                    self._fail(gate.TOO_SLOW, "no-answer")
                    return
                if reused and attempt == 0:
                    log.debug("proxy.http.retry method=%s path=%s", self._method, self._path)
                    continue
                self._fail(gate.not_ready(self._request, settings.loading_page), "no-answer")
                return
            finally:
                exchange.stop_timer()
            await self._relay(stream, response)
            return

    async def _relay(self, stream: IOStream, response: wire.Response) -> None:
        code = response.start_line.code
        learn_session(self._upstream, response.headers)
        headers = toward_client(response.headers)
        body: AsyncIterator[bytes] = wire.read_body(stream, response)
        transform = self._settings.html_transform
        if transform is not None and html.applies(self._method, code, headers):
            try:
                document = b"".join([piece async for piece in body])
            except (StreamClosedError, wire.Malformed):
                self._drop_stream()
                if not self._client_gone:  # nothing reached the client: as if unanswered
                    self._fail(gate.not_ready(self._request, self._settings.loading_page), "cut")
                return
            body = _once(html.transformed(transform, document, headers))
        gzip = compression.negotiate(self._request, code, headers)
        if self._settings.finish_headers is not None:
            self._settings.finish_headers(headers)
        start_line = httputil.ResponseStartLine(
            "HTTP/1.1", code, response.start_line.reason or responses.get(code, "Unknown")
        )
        self._status = code
        connection = self._connection
        head_sent: asyncio.Future[None] | None = None

        def send_head() -> None:
            nonlocal head_sent
            self._pending_head = None
            head_sent = connection.write_headers(start_line, headers)
            head_sent.add_done_callback(self._head_written)

        self._pending_head = asyncio.get_running_loop().call_soon(send_head)
        try:
            async for piece in body:
                data = piece if gzip is None else gzip.compress(piece)
                try:
                    if self._pending_head is not None:
                        self._pending_head.cancel()
                        self._pending_head = None
                        await connection.write_headers(start_line, headers, data)
                    else:
                        if head_sent is not None:
                            await head_sent
                            head_sent = None
                        await connection.write(data)
                except StreamClosedError:
                    self._drop_stream()  # the client is gone: marimo's connection is not reusable
                    return
        except (StreamClosedError, wire.Malformed) as error:
            if isinstance(error, wire.Malformed):
                log.info("proxy.http.malformed path=%s error=%s", self._request.path, error)
            self._drop_stream()
            if self._client_gone:
                return  # the client left first (which closed marimo's connection)
            if self._pending_head is None:
                # marimo cut the body short after the head left: end the client's connection
                # so it cannot be taken for a complete response.
                log.info("proxy.http.cut method=%s path=%s", self._method, self._path)
                connection.close()
                return
            # Nothing reached the client yet: as if marimo had not answered.
            self._pending_head.cancel()
            self._pending_head = None
            self._fail(gate.not_ready(self._request, self._settings.loading_page), "no-answer")
            return
        tail = gzip.finish() if gzip is not None else None
        if self._pending_head is not None:
            self._pending_head.cancel()
            self._pending_head = None
            last: asyncio.Future[None] | None = connection.write_headers(start_line, headers, tail)
        elif tail is not None:
            last = connection.write(tail)
        else:
            last = head_sent
        try:
            if last is not None:
                await last
        except StreamClosedError:
            self._drop_stream()  # the client is gone
            return
        connection.finish()
        if response.reusable and not stream.closed():
            self._stream = None
            self._settings.pool.release(self._upstream, stream)
        else:
            self._drop_stream()

    def _head_written(self, sent: asyncio.Future[None]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            self._drop_stream()  # the client is gone

    def _fail(self, answer: gate.Answer, reason: str) -> None:
        log.info(
            "proxy.http.%s reason=%s method=%s path=%s",
            "too-slow" if answer.status == 504 else "unavailable",
            reason,
            self._method,
            self._path,
        )
        if self._client_gone:
            return
        self._status = answer.status
        headers = httputil.HTTPHeaders()
        for name, value in answer.headers:
            headers[name] = value
        headers["Content-Length"] = str(len(answer.body))
        headers["Date"] = httputil.format_timestamp(time.time())
        if self._settings.finish_headers is not None:
            self._settings.finish_headers(headers)
        start_line = httputil.ResponseStartLine(
            "HTTP/1.1", answer.status, responses.get(answer.status, "Unknown")
        )
        body = b"" if self._method == "HEAD" else answer.body
        self._connection.write_headers(start_line, headers, body)
        self._connection.finish()

    @property
    def _path(self) -> str:
        # Logged instead of the URI: a query string may carry a token.
        return self._request.path

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
