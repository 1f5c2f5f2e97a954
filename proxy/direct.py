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
* The sequence (retry, deferred head, cut body, pool, log events) is
  :class:`proxy.forward.Forwarding`'s; :class:`DirectExchange` is its front end on the
  connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.client import responses

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.routing import Router

from proxy import compression, gate, html, wire
from proxy.forward import Forwarding
from proxy.front import Failure, valid_target
from proxy.headers import learn_session, toward_client, toward_marimo
from proxy.hold import KernelHold
from proxy.pool import ConnectionPool
from proxy.precompressed import AssetStore
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
    admits_at_once: Callable[[httputil.HTTPServerRequest], bool]
    """True when the request may pass without waiting for the guard."""
    finish_headers: Callable[[httputil.HTTPHeaders], None] | None = None
    """Applied to every response's headers just before they are sent."""
    on_finished: Callable[[httputil.HTTPServerRequest, int], None] | None = None
    """Told each request and the status it got (access log, metrics)."""
    html_transform: html.HtmlTransform | None = None
    """Applied to marimo's HTML documents (:mod:`proxy.html`)."""
    asset_store: AssetStore | None = None
    """Compressed copies of marimo's hashed assets (:mod:`proxy.precompressed`)."""
    hold: KernelHold | None = None
    """Closed while the environment is restored: what it holds waits in HttpForwarder."""


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
        hold = self.settings.hold
        if hold is not None and hold.held and hold.holds_http(request):
            return None  # HttpForwarder waits for the environment
        if not self.settings.admits_at_once(request):
            return None  # the guard must look closer (and may answer): HttpForwarder
        return DirectExchange(self.settings, request, request.connection, upstream)


_NO_START_LINE = httputil.ResponseStartLine("HTTP/1.1", 0, "")
_NO_HEADERS = httputil.HTTPHeaders()


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
        method = request.method or "GET"
        self._method = method
        self._status = 0
        self._start_line = _NO_START_LINE  # both set by start() before anything is sent
        self._headers = _NO_HEADERS
        self._gzip: compression.Gzip | None = None
        self._head_sent: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._forwarding: Forwarding | None = None  # set below; dropped when the exchange ends
        toward = toward_marimo(request, upstream, drop=("Expect",))
        transform = settings.html_transform
        rewritten = html.toward_marimo(toward, transform.key) if transform else frozenset()
        head = wire.request_head(method, request.uri or "/", toward.get_all())
        self._forwarding = Forwarding(
            self,
            settings.pool,
            upstream,
            method,
            request.path,
            head,
            settings.response_timeout,
            transform,
            rewritten=rewritten,
            assets=(settings.asset_store, request) if settings.asset_store else None,
        )

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
        forwarding = self._forwarding
        assert forwarding is not None
        self._connection.set_close_callback(forwarding.on_client_gone)
        self._task = asyncio.ensure_future(self._run(forwarding))

    def on_connection_close(self) -> None:
        if self._forwarding is not None:
            self._forwarding.on_client_gone()

    async def _run(self, forwarding: Forwarding) -> None:
        try:
            if await forwarding.open():
                await forwarding.run()
        except Exception:
            log.exception("proxy.direct.error path=%s", self._request.path)
            forwarding.drop_stream()
            self._connection.close()
        finally:
            forwarding.end()
            self._connection.set_close_callback(None)
            # The forwarding holds this object as its front: letting go of it here leaves no
            # cycle, so both (and the request, its headers, Tornado's connection object) are
            # freed at once by reference counting instead of by the cyclic collector.
            self._forwarding = None
            if self._settings.on_finished is not None and self._status:
                self._settings.on_finished(self._request, self._status)

    # -- proxy.front.Front -------------------------------------------------------------------

    def start(self, response: wire.Response) -> None:
        code = response.start_line.code
        learn_session(self._upstream, response.headers)
        headers = toward_client(response.headers)
        self._gzip = compression.negotiate(self._request, code, headers)
        if self._settings.finish_headers is not None:
            self._settings.finish_headers(headers)
        self._start_line = httputil.ResponseStartLine(
            "HTTP/1.1", code, response.start_line.reason or responses.get(code, "Unknown")
        )
        self._headers = headers
        self._status = code

    def send_head(self) -> asyncio.Future[None]:
        self._head_sent = self._connection.write_headers(self._start_line, self._headers)
        return self._head_sent

    def send(self, chunk: bytes, *, head: bool) -> Awaitable[None]:
        data = chunk if self._gzip is None else self._gzip.compress(chunk)
        if head:
            return self._connection.write_headers(self._start_line, self._headers, data)
        if self._head_sent is not None:
            return self._after_head(data)
        return self._connection.write(data)

    async def _after_head(self, data: bytes) -> None:
        head_sent, self._head_sent = self._head_sent, None
        if head_sent is not None:
            await head_sent
        await self._connection.write(data)

    async def end(self, response: wire.Response, *, head: bool) -> None:
        tail = self._gzip.finish() if self._gzip is not None else None
        last: asyncio.Future[None] | None
        if head:
            last = self._connection.write_headers(self._start_line, self._headers, tail)
        elif tail is not None:
            last = self._connection.write(tail)
        else:
            last = self._head_sent
        if last is not None:
            await last
        self._connection.finish()

    def retract(self) -> None:
        self._gzip = None

    def answer(self, failure: Failure) -> None:
        if failure is Failure.TOO_SLOW:
            answer = gate.TOO_SLOW
        else:
            answer = gate.not_ready(self._request, self._settings.loading_page)
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

    def cut(self) -> None:
        self._connection.close()
