"""The one forwarding sequence: a request to marimo over a pooled connection, its answer back.

:class:`Forwarding` owns the upstream side of one request and the order of events; a
:class:`proxy.front.Front` (:class:`proxy.http.HttpForwarder` through ``RequestHandler``,
:class:`proxy.direct.DirectExchange` straight on Tornado's HTTP/1.1 connection) only says how
bytes and answers reach the client.

Invariants:

* Until marimo's status line arrives, every failure is answered by the front with
  :mod:`proxy.gate`'s answers (never 502), once, and logged as ``proxy.http.unavailable`` or
  ``proxy.http.too-slow`` with its reason. After it, the client's status is committed and a
  failure can only cut the client's connection (``proxy.http.cut``), so a cut-off body is never
  mistaken for a complete one.
* A connection reused from the pool that fails before any answer is retried once on a fresh
  connection, when the request can be replayed: idempotent and no body byte forwarded yet, or
  nothing at all reached marimo.
* The upstream stream is closed or given back to the pool exactly once; it returns to the pool
  only after a complete exchange that both sides allow to continue.
* A request that goes to marimo is counted in its upstream's
  :class:`~proxy.upstream.Traffic` from the moment it starts connecting until it ends (its
  answer relayed, failed, or its client gone): counted in and out once, so a marimo being
  replaced is stopped only once what was sent to it has been answered.
* The status line and headers leave with the first body piece when it is already there, else
  alone on the next loop turn, so a stream whose first event comes late still opens at once.
* An HTML document the transform applies to (:mod:`proxy.html`) is read whole before anything
  reaches the client: a cut while reading it is "no answer".
* A request a stored compressed copy answers (:mod:`proxy.precompressed`) never reaches marimo
  (:func:`proxy.asset_http.serve_copy`); a copy that is not on disk as recorded is forgotten
  before anything is sent, and the request goes to marimo as any other. marimo's answers the
  store wants are teed to it chunk by chunk as they pass; the tee is told whether the exchange
  completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

from tornado.httputil import HTTPServerRequest
from tornado.iostream import IOStream, StreamClosedError

from proxy import html, wire
from proxy.asset_http import Copy, serve_copy
from proxy.front import Failure, Front
from proxy.pool import ConnectionPool
from proxy.precompressed import AssetStore, Tee
from proxy.upstream import Upstream

log = logging.getLogger("proxy.http")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


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


class Forwarding:
    """One request's way to marimo and back: :meth:`open`, body via :meth:`send`, :meth:`run`."""

    def __init__(
        self,
        front: Front,
        pool: ConnectionPool,
        upstream: Upstream,
        method: str,
        path: str,
        head: bytes,
        response_timeout: float,
        html_transform: html.HtmlTransform | None,
        *,
        chunk_body: bool = False,
        rewritten: frozenset[str] = frozenset(),
        assets: tuple[AssetStore, HTTPServerRequest] | None = None,
    ) -> None:
        self._front = front
        self._pool = pool
        self._upstream = upstream
        self._method = method
        self._path = path  # logged instead of the URI: a query string may carry a token
        self._head = head
        self._response_timeout = response_timeout
        self._html_transform = html_transform
        self._rewritten = rewritten  # marimo's tags html.toward_marimo put in If-None-Match
        self.chunk_body = chunk_body
        # The store of compressed copies and the client's request, when one is configured.
        self._assets = assets
        self._stored: Copy | None = assets[0].find(assets[1]) if assets is not None else None
        # The upstream stream while this request owns it: closed or given back exactly once.
        self._stream: IOStream | None = None
        self._reused = False
        self._body_sent = False
        self.upload_broken = False
        self.client_gone = False
        self._pending_head: asyncio.Handle | None = None
        self._head_out = False
        self._counted = False

    @property
    def upstream(self) -> Upstream:
        return self._upstream

    @property
    def connected(self) -> bool:
        return self._stream is not None or self._stored is not None

    def on_client_gone(self) -> None:
        self.client_gone = True
        self.end()

    def end(self) -> None:
        """Nothing more goes to or comes from marimo for this request."""
        self.drop_stream()
        self._count_out()

    def _count_in(self) -> None:
        if not self._counted:
            self._counted = True
            self._upstream.traffic.requests += 1

    def _count_out(self) -> None:
        if self._counted:
            self._counted = False
            self._upstream.traffic.requests -= 1

    def drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def open(self, *, fresh: bool = False) -> bool:
        """Connects to marimo and sends the request head; has the client answered on failure.
        A request a stored copy answers (:mod:`proxy.precompressed`) needs no connection."""
        if self._stored is not None:
            return True
        self._count_in()
        try:
            stream, reused = await self._pool.acquire(self._upstream, fresh=fresh)
        except TimeoutError:
            self._count_out()
            self.fail(Failure.TOO_SLOW, "connect-timeout")
            return False
        except (OSError, StreamClosedError):
            self._count_out()
            self.fail(Failure.UNAVAILABLE, "connect-refused")
            return False
        if self.client_gone:
            stream.close()
            self._count_out()
            return False
        self._stream, self._reused = stream, reused
        try:  # noqa: SIM105 (once per request: contextlib.suppress is an object and two calls)
            await stream.write(self._head)
        except StreamClosedError:
            pass
        if stream.closed():
            # Nothing reached marimo, so any request may go again on a fresh connection.
            self.drop_stream()
            if reused:
                return await self.open(fresh=True)
            self._count_out()
            self.fail(Failure.UNAVAILABLE, "closed-on-send")
            return False
        return True

    def send(self, data: bytes) -> Awaitable[None] | None:
        """Forwards one piece of the request body (framed chunked when ``chunk_body``)."""
        if self._stream is None or self.upload_broken or not data:
            return None
        self._body_sent = True
        if self.chunk_body:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        return self._write(data)

    async def _write(self, data: bytes) -> None:
        assert self._stream is not None
        stream = self._stream
        with contextlib.suppress(StreamClosedError):
            await stream.write(data)
        if stream.closed():
            # marimo stopped reading; the rest of the body is drained and discarded.
            self.upload_broken = True

    async def run(self) -> None:
        """Ends the request and relays marimo's answer, retrying once where that is allowed."""
        try:
            await self._run()
        finally:
            self._count_out()

    async def _run(self) -> None:
        if self._stored is not None:
            assert self._assets is not None
            served = await serve_copy(self._front, *self._assets, self._stored)
            self._stored = None
            if served or self.client_gone or not await self.open():
                return
        while True:
            failure = await self._exchange()
            if failure is None:
                return
            if failure is Failure.UNAVAILABLE and self._may_retry():
                log.debug("proxy.http.retry method=%s path=%s", self._method, self._path)
                if await self.open(fresh=True):
                    continue
                return
            self.fail(failure, "no-answer")
            return

    def fail(self, failure: Failure, reason: str) -> None:
        log.info(
            "proxy.http.%s reason=%s method=%s path=%s",
            failure.value,
            reason,
            self._method,
            self._path,
        )
        if not self.client_gone:
            self._front.answer(failure)

    def _may_retry(self) -> bool:
        return (
            self._reused
            and not self._body_sent
            and not self.client_gone
            and self._method in IDEMPOTENT
        )

    async def _exchange(self) -> Failure | None:
        """Relays marimo's response; the failure if none came."""
        stream = self._stream
        if stream is None:
            return Failure.UNAVAILABLE
        if self.chunk_body and not self.upload_broken:
            await self._write(b"0\r\n\r\n")
        exchange = Exchange(stream, self._response_timeout)
        try:
            await self._relay(exchange)
        except (StreamClosedError, wire.Malformed) as error:
            if isinstance(error, wire.Malformed):
                log.info("proxy.http.malformed path=%s error=%s", self._path, error)
            stream.close()
        finally:
            exchange.stop_timer()
            if self._pending_head is not None:
                self._pending_head.cancel()
                self._pending_head = None
        if not exchange.started:
            self.drop_stream()
            if self.client_gone:
                return None
            return Failure.TOO_SLOW if exchange.timed_out else Failure.UNAVAILABLE
        if (
            exchange.complete
            and exchange.reusable
            and not self.client_gone
            and not self.upload_broken
            and not stream.closed()
        ):
            self._stream = None
            self._pool.release(self._upstream, stream)
            return None
        self.drop_stream()
        if not exchange.complete and not self.client_gone:
            if not self._head_out:
                # Cut before anything reached the client: as if marimo had not answered.
                self._front.retract()
                return Failure.UNAVAILABLE
            log.info("proxy.http.cut method=%s path=%s", self._method, self._path)
            self._front.cut()
        return None

    async def _relay(self, exchange: Exchange) -> None:
        """Copies marimo's response to the client as it arrives (``exchange.started`` once its
        head is read; nothing reaches the client before). A stored copy's tee, when the store
        wants this answer, gets each body piece as it passes and is told how the exchange ended.
        """
        stream = exchange.stream
        response = await wire.read_response_head(stream, self._method)
        exchange.stop_timer()
        body: AsyncIterator[bytes] = wire.read_body(stream, response)
        transform = self._html_transform
        if transform is not None:
            code = response.start_line.code
            if html.applies(self._method, code, response.headers):
                document = b"".join([piece async for piece in body])
                body = _once(html.transformed(transform, document, response.headers))
            else:
                html.confirmed(code, response.headers, self._rewritten, transform.key)
        exchange.started = True
        exchange.reusable = response.reusable
        tee: Tee | None = None
        if self._assets is not None:
            store, request = self._assets
            tee = store.tee(request, response.start_line.code, response.headers)
        try:
            self._head_out = False
            front = self._front
            front.start(response)
            self._pending_head = asyncio.get_running_loop().call_soon(self._send_head)
            # A StreamClosedError from the body's iterator is marimo's; from the front, the
            # client's (then marimo's stream is closed: it is not reusable).
            async for chunk in body:
                if tee is not None:
                    tee.write(chunk)
                try:
                    await front.send(chunk, head=self._take_pending_head())
                except StreamClosedError:
                    stream.close()
                    return
            try:
                await front.end(response, head=self._take_pending_head())
            except StreamClosedError:
                stream.close()
                return
            exchange.complete = True
        finally:
            if tee is not None:
                tee.finish(exchange.complete)

    def _take_pending_head(self) -> bool:
        """True when the head has not left yet and must go with the next write."""
        pending = self._pending_head
        if pending is None:
            return False
        pending.cancel()
        self._pending_head = None
        self._head_out = True
        return True

    def _send_head(self) -> None:
        self._pending_head = None
        self._head_out = True
        self._front.send_head().add_done_callback(self._head_sent)

    def _head_sent(self, sent: asyncio.Future[None]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            self.drop_stream()  # the client is gone


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
