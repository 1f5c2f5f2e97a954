"""WebSocket relay between the browser and marimo.

Invariants:

* marimo is connected before the client's handshake completes. So the client sees the
  subprotocol marimo chose, and a marimo that is absent (503), too slow (504), answering
  without switching (a 2xx: 503) or refusing (its own status, e.g. 403) is told to the client
  as a plain HTTP answer, never as a socket that opens and dies.
* Neither leg negotiates an extension (no permessage-deflate): marimo is offered none, and
  the client is granted none, so frames pass between them as they are (:mod:`proxy.wstunnel`),
  with backpressure both ways and a size limit on every message in either direction.
* Close codes and reasons cross both ways. A side that ends without a code (1005) or without a
  close frame (1006) becomes 1011 on the other side, except when marimo vanished because it is
  restarting (the current upstream is gone, of another generation, or refuses connections):
  then the client gets 1012 so the editor reconnects.
* A relay is counted in its upstream's :class:`~proxy.upstream.Traffic` while its tunnel runs;
  when that marimo is retired (the proxy switched to another one beside it), the relay is
  closed with 1012 on both sides, as for a restart, so the tab reconnects to the new one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httputil import HTTPHeaders, HTTPServerRequest, parse_response_start_line
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.web import RequestHandler
from tornado.websocket import WebSocketProtocol13

from proxy import gate
from proxy.headers import WEBSOCKET_HANDSHAKE, tokens, toward_marimo
from proxy.hold import KernelHold
from proxy.upstream import RESTART_CODE, RESTART_REASON, Upstream, UpstreamLookup
from proxy.wstunnel import INTERNAL_ERROR, Leg, Tunnel, UpstreamLeg, sendable

log = logging.getLogger(__name__)

_RESTART_PROBE_TIMEOUT = 1.0


def is_upgrade(request: HTTPServerRequest) -> bool:
    """A WebSocket opening handshake (GET with ``Upgrade: websocket``)."""
    return request.method == "GET" and "websocket" in tokens(request.headers, "Upgrade")


def _handshake_problem(request: HTTPServerRequest) -> tuple[int, str] | None:
    """Why the client's opening handshake cannot be answered (status, message), if it can't."""
    headers = request.headers
    if "upgrade" not in tokens(headers, "Connection"):
        return 400, '"Connection" must be "Upgrade".'
    if headers.get("Sec-WebSocket-Version") != "13":
        return 426, "Upgrade Required"
    if not headers.get("Sec-WebSocket-Key"):
        return 400, "Missing Sec-WebSocket-Key"
    return None


def _offered_subprotocols(request: HTTPServerRequest) -> list[str]:
    return [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]


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


class _Refused(Exception):
    """marimo did not take the upgrade; what the client is told instead."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        location: str | None = None,
        *,
        retry: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.location, self.retry = location, retry


class WebSocketRelay(RequestHandler):
    """Relays one WebSocket between a client and marimo."""

    open_relays = 0
    """Relays between both handshakes and the end of both connections (for metrics)."""

    def initialize(
        self,
        lookup: UpstreamLookup,
        guard: Callable[[RequestHandler], Awaitable[bool]],
        connect_timeout: float,
        handshake_timeout: float,
        max_message_size: int,
        hold: KernelHold | None = None,
    ) -> None:
        self._guard = guard
        self._hold = hold
        self._lookup = lookup
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._message_limit = max_message_size
        self._upstream: Upstream | None = None
        self._tunnel: Tunnel | None = None
        self._client_closed = False
        self._ending: tuple[int, str | None] | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not await self._guard(self):
            return  # refused before any handshake, and answered
        problem = _handshake_problem(self.request)
        if problem is not None:
            self.set_status(problem[0])
            if problem[0] == 426:
                self.set_header("Sec-WebSocket-Version", "13")
            self.finish(problem[1])
            return
        if self._hold is not None and not await self._hold.wait():
            gate.refuse_upgrade(self, 503, "the Python packages are being restored", retry=True)
            return
        upstream = self._lookup()
        if upstream is None:
            gate.refuse_upgrade(self, 503, "marimo is not ready", retry=True)
            return
        try:
            marimo, subprotocol = await self._connect(upstream)
        except _Refused as refused:
            log.info(
                "proxy.ws.refuse status=%d reason=%s path=%s",
                refused.status,
                refused.reason,
                self.request.path,
            )
            gate.refuse_upgrade(
                self,
                refused.status,
                refused.message,
                retry=refused.retry,
                location=refused.location,
            )
            return
        if self._client_closed or self._ending is not None:
            marimo.abort()  # the client left, or its session ended, while marimo was reached
            if not self._client_closed:
                self.set_status(403)
                self.finish("the session ended")
            return
        self._upstream = upstream
        client = await self._accept(subprotocol)
        if client is None:
            marimo.abort()
            return
        tunnel = Tunnel(client, marimo, self._marimo_ended)
        self._tunnel = tunnel
        WebSocketRelay.open_relays += 1
        traffic = upstream.traffic
        try:
            tunnel.start()
            traffic.socket_opened(self, self._retired)
            if self._ending is not None:  # the session ended during the client's handshake
                tunnel.close(*self._ending)
            await tunnel.done
        finally:
            traffic.socket_ended(self)
            WebSocketRelay.open_relays -= 1

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Ends the socket with ``code`` on both sides (e.g. 1008 when the session ended)."""
        code, reason = sendable(code, reason)
        if self._tunnel is not None:
            self._tunnel.close(code, reason)
        else:
            self._ending = (code, reason)

    def on_connection_close(self) -> None:
        self._client_closed = True

    def _retired(self, code: int, reason: str) -> None:
        """Its marimo is being replaced by another one: both sides end with ``code``."""
        log.info("proxy.ws.retired code=%d path=%s", code, self.request.path)
        self.close(code, reason)

    async def _accept(self, subprotocol: str | None) -> Leg | None:
        """Completes the client's handshake and takes its socket over; None if it left.

        The socket is plain TCP (the orchestrator serves no TLS; the platform's ingress ends
        it), so its file descriptor can be handed from Tornado's stream to asyncio's transport.
        """
        self.clear_header("Content-Type")
        self.set_status(101)
        self.set_header("Upgrade", "websocket")
        self.set_header("Connection", "Upgrade")
        self.set_header(
            "Sec-WebSocket-Accept",
            WebSocketProtocol13.compute_accept_value(self.request.headers["Sec-WebSocket-Key"]),
        )
        if subprotocol is not None:
            self.set_header("Sec-WebSocket-Protocol", subprotocol)
        sent = self.finish()
        stream = self.detach()
        try:
            await sent
            # Bytes the client sent after its handshake, already read by the HTTP server.
            early = stream._consume(stream._read_buffer_size)
            if stream.socket is None:
                return None
            sock = stream.socket.dup()  # the stream's own socket closes with it
        except (StreamClosedError, OSError):
            return None
        finally:
            stream.close()
        loop = asyncio.get_running_loop()
        limit = self._message_limit
        try:
            _, client = await loop.connect_accepted_socket(
                lambda: Leg("client", masked=True, limit=limit), sock=sock
            )
        except OSError:
            sock.close()
            return None
        if early:
            client.early.insert(0, early)
        return client

    async def _connect(self, upstream: Upstream) -> tuple[UpstreamLeg, str | None]:
        """marimo's leg with the handshake done, and the subprotocol marimo chose.

        Raises :class:`_Refused` with what the client is to be told when that fails.
        """
        offered = _offered_subprotocols(self.request)
        key = base64.b64encode(os.urandom(16)).decode()
        headers = toward_marimo(self.request, upstream, drop=WEBSOCKET_HANDSHAKE)
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Key"] = key
        headers["Sec-WebSocket-Version"] = "13"
        if offered:
            headers["Sec-WebSocket-Protocol"] = ", ".join(offered)
        lines = [f"GET {self.request.uri} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.get_all()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        loop = asyncio.get_running_loop()
        limit = self._message_limit
        try:
            _, marimo = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamLeg(limit=limit), upstream.host, upstream.port
                ),
                self._connect_timeout,
            )
        except TimeoutError:
            raise _Refused(504, "marimo did not answer in time", "timeout") from None
        except OSError:
            raise _Refused(503, "marimo is not ready", "refused", retry=True) from None
        try:
            assert marimo.transport is not None
            marimo.transport.write(request)
            head = await asyncio.wait_for(marimo.head, self._handshake_timeout)
            return marimo, self._check_answer(head, key, offered)
        except TimeoutError:
            marimo.abort()
            raise _Refused(504, "marimo did not answer in time", "timeout") from None
        except ConnectionError:
            marimo.abort()
            raise _Refused(503, "marimo is not ready", "closed", retry=True) from None
        except _Refused:
            marimo.abort()
            raise
        except Exception:  # an answer that is not HTTP
            marimo.abort()
            raise _Refused(
                503, "marimo did not accept the WebSocket", "not-websocket", retry=True
            ) from None

    @staticmethod
    def _check_answer(head: bytes, key: str, offered: list[str]) -> str | None:
        """The subprotocol of marimo's 101 answer; raises :class:`_Refused` for anything else."""
        text = head.decode("latin-1")
        line, _, rest = text.partition("\r\n")
        status = parse_response_start_line(line)
        headers = HTTPHeaders.parse(rest)
        if status.code != 101 and status.code < 300:
            # A success that is not a switch is no WebSocket (and no answer to relay as one).
            raise _Refused(503, "marimo did not accept the WebSocket", "not-websocket", retry=True)
        if status.code != 101:
            raise _Refused(
                status.code,
                status.reason or "rejected by marimo",
                "rejected",
                headers.get("Location"),
            )
        chosen = headers.get("Sec-WebSocket-Protocol")
        if (
            "websocket" not in tokens(headers, "Upgrade")
            or "upgrade" not in tokens(headers, "Connection")
            or headers.get("Sec-WebSocket-Accept") != WebSocketProtocol13.compute_accept_value(key)
            or headers.get("Sec-WebSocket-Extensions")
            or (chosen is not None and chosen not in offered)
        ):
            raise _Refused(503, "marimo did not accept the WebSocket", "not-websocket", retry=True)
        return chosen

    async def _marimo_ended(self, code: int | None) -> tuple[int, str | None]:
        """The client's close code when marimo ended without a code (1005) or vanished."""
        if await self._marimo_restarting():
            log.info("proxy.ws.restart path=%s", self.request.path)
            return RESTART_CODE, RESTART_REASON
        log.info("proxy.ws.abnormal-close code=%s path=%s", code, self.request.path)
        return INTERNAL_ERROR, "marimo closed the connection abnormally"

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
