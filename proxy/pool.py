"""Keep-alive TCP connections from the proxy to marimo.

Invariants:

* A stream in the pool is idle: its last response was read to the end, nothing is in flight
  and no read or write is pending on it. Whoever takes it out owns it until it gives it back
  with :meth:`ConnectionPool.release` or closes it.
* Streams are keyed by ``(host, port, generation)``. Taking a stream for one generation closes
  every idle stream of the others: a restarted marimo never sees a connection opened against
  its predecessor. A stream to a retired marimo (one a switch replaced while it still answered,
  :class:`proxy.upstream.Traffic`) is closed when its exchange ends, never pooled.
* A stream that marimo closed while it sat idle is noticed (non-blocking peek) and closed
  instead of being handed out; one idle longer than ``idle_timeout`` is never handed out, and is
  closed by the pool's single sweep timer at most ``idle_timeout`` later, so idle streams never
  pile up. (One timer per pool, not per release: a release is on every proxied request's path.)
* The most recently released stream is handed out first: it is the likeliest to be alive, and
  the others age out instead of being kept warm by rotation.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
from dataclasses import dataclass

from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

from proxy.upstream import Upstream

log = logging.getLogger(__name__)

_Key = tuple[str, int, int]


@dataclass
class _Idle:
    stream: IOStream
    since: float
    """Loop time of its release."""


def _still_open(stream: IOStream) -> bool:
    """False when the peer closed (or wrote unsolicited bytes) while the stream sat idle."""
    sock = stream.socket
    if stream.closed() or sock is None:
        return False
    try:
        peeked = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    # b"" is an orderly close; a byte would be a response nobody asked for. Either way: unusable.
    del peeked
    return False


class ConnectionPool:
    """Idle keep-alive streams to marimo, shared by every proxied HTTP request."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        idle_timeout: float = 30.0,
        max_idle_per_upstream: int = 32,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_idle = max_idle_per_upstream
        # Per key, oldest release first.
        self._idle: dict[_Key, list[_Idle]] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._tcp = TCPClient()
        self.connections_opened = 0
        """Fresh TCP connections made so far (observability and tests)."""

    async def acquire(self, upstream: Upstream, *, fresh: bool = False) -> tuple[IOStream, bool]:
        """A stream to ``upstream`` and whether it was reused from the pool.

        Raises ``TimeoutError`` when marimo does not accept within ``connect_timeout``, and
        ``OSError`` or ``StreamClosedError`` when it refuses.
        """
        key = (upstream.host, upstream.port, upstream.generation)
        if len(self._idle) > 1 or (self._idle and key not in self._idle):
            self._drop_other_generations(key)
        idle = self._idle.get(key)
        if idle and not fresh:
            oldest_allowed = asyncio.get_running_loop().time() - self._idle_timeout
            while idle:
                entry = idle.pop()
                if entry.since >= oldest_allowed and _still_open(entry.stream):
                    return entry.stream, True
                log.debug("pool.discard reason=closed-while-idle upstream=%s", upstream.netloc)
                entry.stream.close()
        stream = await self._tcp.connect(
            upstream.host,
            upstream.port,
            timeout=datetime.timedelta(seconds=self._connect_timeout),
        )
        stream.set_nodelay(True)
        self.connections_opened += 1
        return stream, False

    def release(self, upstream: Upstream, stream: IOStream) -> None:
        """Gives back a stream whose exchange ended cleanly and that may carry another one
        (closed instead when its marimo is retired: no new request goes there)."""
        if stream.closed():
            return
        if upstream.traffic.retired:
            stream.close()
            return
        key = (upstream.host, upstream.port, upstream.generation)
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            stream.close()
            return
        loop = asyncio.get_running_loop()
        idle.append(_Idle(stream, loop.time()))
        if self._sweep_timer is None:
            self._sweep_timer = loop.call_later(self._idle_timeout, self._sweep)

    def close(self) -> None:
        """Closes every idle stream (streams in use stay with their owners)."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for idle in self._idle.values():
            for entry in idle:
                entry.stream.close()
        self._idle.clear()

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def _sweep(self) -> None:
        """Closes the streams idle for ``idle_timeout``; runs again when the next one will be."""
        self._sweep_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        oldest: float | None = None
        for key in list(self._idle):
            idle = self._idle[key]
            expired = [e for e in idle if now - e.since >= self._idle_timeout]
            for entry in expired:
                entry.stream.close()
            if expired:
                idle[:] = [e for e in idle if now - e.since < self._idle_timeout]
            if not idle:
                del self._idle[key]
            elif oldest is None or idle[0].since < oldest:
                oldest = idle[0].since
        if oldest is not None:
            delay = max(0.05, oldest + self._idle_timeout - now)
            self._sweep_timer = loop.call_later(delay, self._sweep)

    def _drop_other_generations(self, key: _Key) -> None:
        for other in [k for k in self._idle if k != key]:
            for entry in self._idle.pop(other):
                entry.stream.close()
            log.debug("pool.discard reason=old-generation generation=%d", other[2])
