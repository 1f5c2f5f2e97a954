"""Streaming HTTP forwarding to marimo over pooled keep-alive connections.

Invariants:

* No body is ever held whole in memory. Request chunks are written to marimo one at a time and
  the client's next chunk is read only once the previous one reached marimo's socket; response
  chunks are flushed to the client as they arrive and marimo's next chunk is read only once the
  previous one reached the client's socket. Compression (:mod:`proxy.compression`) keeps this:
  each chunk is compressed and flushed on its own.
* The request target (path and query) reaches marimo byte for byte as the client sent it.
* The sequence (retry, deferred head, cut body, pool, log events) is
  :class:`proxy.forward.Forwarding`'s; this handler is its front end through
  ``RequestHandler``, for requests with a body and those a guard must look at.
* A body of unknown length reaches an HTTP/1.1 client chunked, and an HTTP/1.0 client (which
  has no chunking) followed by the end of its connection, keep-alive or not.
* The wire format toward marimo is :mod:`proxy.wire`'s; the browser's side is Tornado's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.web import GZipContentEncoding, RequestHandler, stream_request_body

from proxy import compression, gate, html, wire
from proxy.forward import Forwarding
from proxy.front import Failure, valid_target
from proxy.headers import learn_session, tokens, toward_client, toward_marimo
from proxy.hold import KernelHold
from proxy.pool import ConnectionPool
from proxy.precompressed import AssetStore
from proxy.upstream import UpstreamLookup

log = logging.getLogger(__name__)

MAX_BODY_SIZE = 10 * 1024**3
"""Largest request body the proxy accepts (it is streamed, so this bounds time, not memory)."""

# Methods whose empty body is announced with Content-Length: 0 (as browsers do).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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


@stream_request_body
class HttpForwarder(RequestHandler):
    """Forwards any non-upgrade request to marimo and streams the answer back."""

    def initialize(
        self,
        lookup: UpstreamLookup,
        guard: Callable[[RequestHandler], Awaitable[bool]],
        loading_page: Callable[[], bytes],
        pool: ConnectionPool,
        response_timeout: float,
        require_server_token: bool = False,
        html_transform: html.HtmlTransform | None = None,
        asset_store: AssetStore | None = None,
        hold: KernelHold | None = None,
    ) -> None:
        self._guard = guard
        self._hold = hold
        self._html_transform = html_transform
        self._asset_store = asset_store
        self._require_server_token = require_server_token
        self._lookup = lookup
        self._loading_page = loading_page
        self._pool = pool
        self._response_timeout = response_timeout
        self._forwarding: Forwarding | None = None
        self._gzip: compression.Gzip | None = None

    def compute_etag(self) -> str | None:
        # marimo's ETag, when it sends one, is the only one: Tornado must not hash the body.
        return None

    async def prepare(self) -> None:
        if not await self._guard(self):
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
        hold = self._hold
        if hold is not None and hold.holds_http(request) and not await hold.wait():
            gate.answer_not_ready(self, self._loading_page)
            return
        upstream = self._lookup()
        if upstream is None:
            gate.answer_not_ready(self, self._loading_page)
            return
        target = request.uri or "/"
        if not valid_target(target):
            self.send_error(400, reason="Request target is not valid UTF-8")
            return
        method = request.method or "GET"
        headers = toward_marimo(request, upstream, drop=("Expect",))
        chunk_body = _frame_body(method, request.headers, headers)
        transform = self._html_transform
        rewritten = html.toward_marimo(headers, transform.key) if transform else frozenset()
        self._forwarding = forwarding = Forwarding(
            self,
            self._pool,
            upstream,
            method,
            request.path,
            wire.request_head(method, target, headers.get_all()),
            self._response_timeout,
            transform,
            chunk_body=chunk_body,
            rewritten=rewritten,
            assets=(self._asset_store, request) if self._asset_store else None,
        )
        await forwarding.open()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._forwarding is None:
            return None
        return self._forwarding.send(chunk)

    async def _forward(self, *args: str, **kwargs: str) -> None:
        if self._forwarding is not None and self._forwarding.connected:
            await self._forwarding.run()

    get = head = post = put = patch = delete = options = _forward

    def on_connection_close(self) -> None:
        if self._forwarding is not None:
            self._forwarding.on_client_gone()
        super().on_connection_close()

    def on_finish(self) -> None:
        if self._forwarding is not None:
            self._forwarding.end()

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
        if self._forwarding is not None:
            learn_session(self._forwarding.upstream, headers)
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

    # -- proxy.front.Front -------------------------------------------------------------------

    def start(self, response: wire.Response) -> None:
        self.start_response(response.start_line, response.headers)

    def send_head(self) -> asyncio.Future[None]:
        return self.flush()

    async def send(self, chunk: bytes, *, head: bool) -> None:
        self.write(chunk if self._gzip is None else self._gzip.compress(chunk))
        await self.flush()

    async def end(self, response: wire.Response, *, head: bool) -> None:
        if self._gzip is not None:
            self.write(self._gzip.finish())  # the handler's finish() sends whatever is left
            self._gzip = None
        if (
            self.request.version != "HTTP/1.1"
            and response.framing is not wire.Framing.NONE
            and "Content-Length" not in response.headers
        ):
            # An HTTP/1.0 client has no chunking: the end of this body can only be the end of
            # the connection (Tornado would keep it open for a client that asked keep-alive).
            await self.flush()
            self.cut()

    def retract(self) -> None:
        self.clear()
        self._gzip = None

    def answer(self, failure: Failure) -> None:
        if self._finished:
            return
        if failure is Failure.TOO_SLOW:
            gate.answer_too_slow(self)
        else:
            gate.answer_not_ready(self, self._loading_page)

    def cut(self) -> None:
        if isinstance(self.request.connection, HTTP1Connection):
            self.request.connection.close()
