"""WebSocket relay between the browser and marimo.

Invariants:

* marimo is connected before the client's handshake completes. So the client sees the
  subprotocol marimo chose, and a marimo that is absent (503), too slow (504) or refusing (its
  own status, e.g. 403) is told to the client as a plain HTTP answer, never as a socket that
  opens and dies.
* Messages keep their kind (text or binary) and order. Each direction reads its next message
  only after the previous one was written out on the other side (backpressure).
* Close codes and reasons cross both ways. A side that ends without a code (1005) or without a
  close frame (1006) becomes 1011 on the other side, except when marimo vanished because it is
  restarting (the current upstream is gone, of another generation, or refuses connections):
  then the client gets 1012 so the editor reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httputil import HTTPServerRequest
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import HTTPTimeoutError
from tornado.tcpclient import TCPClient
from tornado.web import RequestHandler
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketError,
    WebSocketHandler,
    websocket_connect,
)

from proxy import gate
from proxy.headers import WEBSOCKET_HANDSHAKE, tokens, toward_marimo
from proxy.upstream import Upstream, UpstreamLookup

log = logging.getLogger(__name__)

RESTART_CODE = 1012
RESTART_REASON = "marimo is restarting"
_INTERNAL_ERROR = 1011
# Codes that may not be sent in a close frame (RFC 6455 section 7.4.1).
_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})
_MAX_REASON_BYTES = 123
_RESTART_PROBE_TIMEOUT = 1.0


def is_upgrade(request: HTTPServerRequest) -> bool:
    """A WebSocket opening handshake (GET with ``Upgrade: websocket``)."""
    return request.method == "GET" and "websocket" in tokens(request.headers, "Upgrade")


def _well_formed(request: HTTPServerRequest) -> bool:
    headers = request.headers
    return (
        "upgrade" in tokens(headers, "Connection")
        and bool(headers.get("Sec-WebSocket-Key"))
        and headers.get("Sec-WebSocket-Version") == "13"
    )


def _offered_subprotocols(request: HTTPServerRequest) -> list[str]:
    return [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]


def _sendable(code: int | None, reason: str | None) -> tuple[int, str | None]:
    """A close code and reason that may be sent on, mapping "no code/abnormal" to 1011."""
    if code is None or code in _UNSENDABLE or not 1000 <= code <= 4999:
        return _INTERNAL_ERROR, None
    if reason is not None:
        reason = reason.encode("utf-8")[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
    return code, reason


async def _refuses_connections(upstream: Upstream) -> bool:
    try:
        stream = await TCPClient().connect(
            upstream.host,
            upstream.port,
            timeout=datetime.timedelta(seconds=_RESTART_PROBE_TIMEOUT),
        )
    except TimeoutError:
        return False
    except (OSError, StreamClosedError):
        return True
    stream.close()
    return False


class WebSocketRelay(WebSocketHandler):
    """Relays one WebSocket between a client and marimo."""

    open_relays = 0
    """Relays between ``open`` and ``on_close``, across all handlers (for metrics)."""

    def initialize(
        self,
        lookup: UpstreamLookup,
        connect_timeout: float,
        handshake_timeout: float,
        max_message_size: int,
        guard: Callable[[RequestHandler], Awaitable[bool]] | None = None,
    ) -> None:
        self._guard = guard
        self._lookup = lookup
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._message_limit = max_message_size
        self._upstream: Upstream | None = None
        self._marimo: WebSocketClientConnection | None = None
        self._pump: asyncio.Future[None] | None = None
        self._client_closed = False

    @property
    def max_message_size(self) -> int:
        return self._message_limit

    def check_origin(self, origin: str) -> bool:
        # Deliberately open: who may open a socket is decided by the orchestrator's auth layer
        # in front of the proxy, not here (marimo does not check Origin either).
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self._guard is not None and not await self._guard(self):
            return  # refused before any handshake, and answered
        if not _well_formed(self.request):
            await super().get(*args, **kwargs)  # Tornado answers the malformed handshake
            return
        upstream = self._lookup()
        if upstream is None:
            gate.refuse_upgrade(self, 503, "marimo is not ready", retry=True)
            return
        marimo = await self._connect(upstream)
        if marimo is None:
            return
        if self._client_closed:  # the client left while marimo was being reached
            marimo.close(*_sendable(None, None))
            return
        self._upstream, self._marimo = upstream, marimo
        try:
            await super().get(*args, **kwargs)
        finally:
            if self.get_status() != 101:
                marimo.close()

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = self._marimo.selected_subprotocol if self._marimo is not None else None
        return chosen if chosen in subprotocols else None

    def open(self, *args: str, **kwargs: str) -> None:
        WebSocketRelay.open_relays += 1
        self._counted = True
        self.set_nodelay(True)
        self._pump = asyncio.ensure_future(self._relay_from_marimo())

    async def on_message(self, message: str | bytes) -> None:
        if self._marimo is None:
            return
        # A closed marimo side is not an error here: the pump tells the client how it ended.
        with contextlib.suppress(WebSocketClosedError):
            await self._marimo.write_message(message, binary=isinstance(message, bytes))

    def on_ping(self, data: bytes) -> None:
        if self._marimo is None:
            return
        with contextlib.suppress(WebSocketClosedError):
            self._marimo.ping(data)

    def on_close(self) -> None:
        if getattr(self, "_counted", False):
            WebSocketRelay.open_relays -= 1
            self._counted = False
        self._client_closed = True
        if self._marimo is not None:
            code, reason = _sendable(self.close_code, self.close_reason)
            self._marimo.close(code, reason)

    async def _connect(self, upstream: Upstream) -> WebSocketClientConnection | None:
        """Opens the socket to marimo; on failure answers the client and returns None."""
        request = HTTPRequest(
            f"ws://{upstream.netloc}{self.request.uri}",
            headers=toward_marimo(self.request, upstream, drop=WEBSOCKET_HANDSHAKE),
            connect_timeout=self._connect_timeout,
            request_timeout=self._handshake_timeout,
            decompress_response=False,
            follow_redirects=False,
        )
        offered = _offered_subprotocols(self.request)
        try:
            return await websocket_connect(
                request,
                subprotocols=offered or None,
                max_message_size=self._message_limit,
            )
        except HTTPTimeoutError:
            self._refuse(504, "marimo did not answer in time", "timeout")
        except HTTPClientError as e:
            if e.code == 599:
                self._refuse(503, "marimo is not ready", "closed", retry=True)
            else:
                location = e.response.headers.get("Location") if e.response else None
                self._refuse(e.code, e.message or "rejected by marimo", "rejected", location)
        except TimeoutError:
            self._refuse(504, "marimo did not answer in time", "timeout")
        except (OSError, StreamClosedError):
            self._refuse(503, "marimo is not ready", "refused", retry=True)
        except WebSocketError:
            self._refuse(503, "marimo did not accept the WebSocket", "not-websocket", retry=True)
        return None

    def _refuse(
        self,
        status: int,
        message: str,
        reason: str,
        location: str | None = None,
        *,
        retry: bool = False,
    ) -> None:
        log.info("proxy.ws.refuse status=%d reason=%s path=%s", status, reason, self.request.path)
        gate.refuse_upgrade(self, status, message, retry=retry, location=location)

    async def _relay_from_marimo(self) -> None:
        marimo = self._marimo
        assert marimo is not None
        while True:
            message = await marimo.read_message()
            if message is None:
                break
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                return  # the client is leaving: on_close tells marimo with the client's code
        marimo.close()  # already closed on the wire; releases the client connection's state
        if self._client_closed:
            return
        code, reason = await self._close_for_client(marimo.close_code, marimo.close_reason)
        self.close(code, reason)

    async def _close_for_client(
        self, code: int | None, reason: str | None
    ) -> tuple[int, str | None]:
        if code is not None and code not in _UNSENDABLE:
            return _sendable(code, reason)
        if await self._marimo_restarting():
            log.info("proxy.ws.restart path=%s", self.request.path)
            return RESTART_CODE, RESTART_REASON
        log.info("proxy.ws.abnormal-close code=%s path=%s", code, self.request.path)
        return _INTERNAL_ERROR, "marimo closed the connection abnormally"

    async def _marimo_restarting(self) -> bool:
        current = self._lookup()
        if self._upstream is None or current is None:
            return True
        if current.generation != self._upstream.generation:
            return True
        # Still the same generation: marimo may have died before the supervisor noticed (it
        # learns of the exit through SIGCHLD, in the same instant or a moment later). Give it
        # that moment; a port that refuses connections also answers the question. (An open
        # port proves nothing: marimo's kernels inherit its listening socket.)
        deadline = asyncio.get_running_loop().time() + _RESTART_PROBE_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            current = self._lookup()
            if current is None or current.generation != self._upstream.generation:
                return True
            if await _refuses_connections(current):
                return True
            await asyncio.sleep(0.05)
        return False
