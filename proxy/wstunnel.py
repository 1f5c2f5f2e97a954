"""Passes WebSocket frames between a client and marimo as they are, once both handshakes are done.

Both legs are plain asyncio transports over the sockets the handshakes ran on; neither leg
negotiated an extension, so the frames one side sends are valid for the other as they are: a
client's frames are masked, as marimo expects of a client, and marimo's are not, as a browser
expects of a server. A :class:`~proxy.wsframes.FrameScanner` per direction reads only the frame
headers, to enforce the framing rules and the message size limit and to catch close frames.

Invariants:

* Data and ping/pong frames pass unchanged and in order; a ping is answered by the far end.
* Close frames do not pass as they are: each side is sent a close frame made here, with the
  code the other side sent, or a code decided here when that side ended without one (1005) or
  without a close frame at all (``ended``). A close is only ever written at a frame boundary
  toward its receiver; a side whose incoming frame is cut short (its sender vanished or broke
  the rules mid-frame) loses its TCP connection instead (it sees 1006).
* Nothing is passed to a side after it was sent a close frame. The client's TCP connection is
  closed once it has both sent and been sent a close frame; so is marimo's. A side that broke
  a framing rule is sent a close frame (1002, or 1009 for a message over the limit) and the
  other side 1011; what it sends afterwards is read and dropped until it closes. Everything
  ends :data:`CLOSE_TIMEOUT` seconds after the first close frame was sent, answered or not.
* Backpressure both ways: a side whose outgoing buffer holds more than :data:`HIGH_WATER`
  bytes stops the reading from the other side until it drains below :data:`LOW_WATER`. Each
  relay holds at most about those plus one read (256 KiB) per direction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from proxy.wsframes import NO_CODE, Close, FrameScanner, Violation, close_frame

log = logging.getLogger(__name__)

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
CLOSE_TIMEOUT = 5.0
INTERNAL_ERROR = 1011
# Codes that may not be sent in a close frame (RFC 6455 section 7.4.1).
UNSENDABLE = frozenset({1004, 1005, 1006, 1015})
_HEAD_LIMIT = 64 * 1024

MarimoEnded = Callable[[int | None], Awaitable[tuple[int, str | None]]]
"""Decides the client's close code when marimo ended with no code (1005) or vanished (None)."""


def sendable(code: int | None, reason: str | None) -> tuple[int, str | None]:
    """A close code and reason that may be sent on, mapping "no code/abnormal" to 1011."""
    if code is None or code in UNSENDABLE or not 1000 <= code <= 4999:
        return INTERNAL_ERROR, None
    return code, reason


class Leg(asyncio.Protocol):
    """One side's TCP connection. ``masked`` is whether the frames it *sends* are masked."""

    def __init__(self, name: str, *, masked: bool, limit: int) -> None:
        self.name = name
        self.scanner = FrameScanner(masked=masked, limit=limit)
        self.transport: asyncio.Transport | None = None
        self.peer: Leg | None = None
        self.tunnel: Tunnel | None = None
        self.close_sent = False
        self.close_received = False
        self.violated = False  # broke a framing rule: what it sends is read and dropped
        self.gone = False
        self.early: list[bytes] = []  # what arrived before the tunnel started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.received(self, data)
        else:  # held until the tunnel starts, reading paused meanwhile (bounded)
            self.early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.tunnel is not None:
            self.tunnel.lost(self)

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class UpstreamLeg(Leg):
    """marimo's leg, which first carries the opening handshake: :attr:`head` resolves with the
    response's status line and headers (bytes); what follows them is kept for the tunnel."""

    def __init__(self, *, limit: int) -> None:
        super().__init__("marimo", masked=False, limit=limit)
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            super().data_received(data)
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _HEAD_LIMIT:
                self.head.set_exception(ValueError("marimo's handshake answer is too long"))
            return
        rest = self._buffer[end + 4 :]
        self.head.set_result(self._buffer[: end + 4])
        self._buffer = b""
        if rest:
            super().data_received(rest)
        elif self.transport is not None:
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("marimo closed the connection"))
        super().connection_lost(exc)


class Tunnel:
    """Joins a client's leg and marimo's once both handshakes are done; :attr:`done` resolves
    when both TCP connections have ended."""

    def __init__(self, client: Leg, marimo: Leg, marimo_ended: MarimoEnded) -> None:
        self.client, self.marimo = client, marimo
        client.peer, marimo.peer = marimo, client
        self._marimo_ended = marimo_ended
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for leg in (self.client, self.marimo):
            leg.tunnel = self
        for leg in (self.client, self.marimo):
            early, leg.early = leg.early, []
            for data in early:
                self.received(leg, data)
            if leg.gone:
                self.lost(leg)
            elif leg.transport is not None:
                leg.transport.resume_reading()

    def close(self, code: int, reason: str | None) -> None:
        """Ends both sides with ``code`` (the proxy's own decision, e.g. a session ended)."""
        self._send_close(self.client, code, reason)
        self._send_close(self.marimo, code, reason)

    def received(self, src: Leg, data: bytes) -> None:
        scanner = src.scanner
        parts = scanner.feed(data)
        dst = src.peer
        assert dst is not None and dst.transport is not None
        if parts and not dst.close_sent and not dst.gone:
            write = dst.transport.write
            for part in parts:
                write(part)
        if src.close_received or src.violated:
            return
        if scanner.closed is not None:
            src.close_received = True
            self._closed_by(src, scanner.closed)
        elif scanner.violation is not None:
            src.violated = True
            self._violated(src, scanner.violation)

    def lost(self, leg: Leg) -> None:
        peer = leg.peer
        assert peer is not None
        if not leg.close_received and not leg.violated and not peer.close_sent:
            # ended without a close frame
            if leg is self.marimo:
                self._decide_for_client(None)
            else:
                self._send_close(peer, INTERNAL_ERROR, None)
        if self.client.gone and self.marimo.gone:
            self._finish()

    def _closed_by(self, src: Leg, close: Close) -> None:
        dst = src.peer
        assert dst is not None
        if src is self.marimo and (close.code == NO_CODE or close.code in UNSENDABLE):
            self._decide_for_client(close.code)
        else:
            self._send_close(dst, *sendable(close.code, close.reason))
        self._settle(src)

    def _violated(self, src: Leg, violation: Violation) -> None:
        log.info("proxy.ws.violation side=%s code=%d %s", src.name, violation.code, violation)
        self._send_close(src, violation.code, violation.reason)
        dst = src.peer
        assert dst is not None
        self._send_close(dst, INTERNAL_ERROR, f"{src.name}: {violation.reason}")

    def _decide_for_client(self, code: int | None) -> None:
        async def decide() -> None:
            self._send_close(self.client, *await self._marimo_ended(code))

        task = asyncio.ensure_future(decide())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_close(self, leg: Leg, code: int, reason: str | None) -> None:
        if leg.close_sent or leg.gone or leg.transport is None:
            return
        leg.close_sent = True
        peer = leg.peer
        assert peer is not None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort_all)
        if not peer.scanner.at_boundary:  # a frame toward it is cut short: no clean close
            leg.abort()
            return
        leg.transport.write(close_frame(code, reason, masked=leg is self.marimo))
        self._settle(leg)

    def _settle(self, leg: Leg) -> None:
        if leg.close_sent and leg.close_received and leg.transport is not None:
            leg.transport.close()  # after what is buffered has been written

    def _abort_all(self) -> None:
        self.client.abort()
        self.marimo.abort()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        if not self.done.done():
            self.done.set_result(None)
