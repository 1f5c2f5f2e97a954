"""Keep-alive TCP connections from the proxy to marimo.

Invariants:

* A stream in the pool is idle: its last response was read to the end, nothing is in flight
  and no read or write is pending on it. Whoever takes it out owns it until it gives it back
  with :meth:`ConnectionPool.release` or closes it.
* Streams are keyed by ``(host, port, generation)``. Taking a stream for one generation closes
  every idle stream of the others: a restarted marimo never sees a connection opened against
  its predecessor.
* A stream that marimo closed while it sat idle is noticed (non-blocking peek) and closed
  instead of being handed out; one idle longer than ``idle_timeout`` is closed by a timer, so
  idle streams never pile up.
"""

from __future__ import annotations

import datetime
import logging
import socket
from dataclasses import dataclass

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

from proxy.upstream import Upstream

log = logging.getLogger(__name__)

_Key = tuple[str, int, int]


@dataclass
class _Idle:
    stream: IOStream
    timer: object


def _key(upstream: Upstream) -> _Key:
    return (upstream.host, upstream.port, upstream.generation)


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
        self._idle: dict[_Key, list[_Idle]] = {}
        self._tcp = TCPClient()
        self.connections_opened = 0
        """Fresh TCP connections made so far (observability and tests)."""

    async def acquire(self, upstream: Upstream, *, fresh: bool = False) -> tuple[IOStream, bool]:
        """A stream to ``upstream`` and whether it was reused from the pool.

        Raises ``TimeoutError`` when marimo does not accept within ``connect_timeout``, and
        ``OSError`` or ``StreamClosedError`` when it refuses.
        """
        key = _key(upstream)
        self._drop_other_generations(key)
        idle = self._idle.get(key, [])
        while idle and not fresh:
            entry = idle.pop()
            IOLoop.current().remove_timeout(entry.timer)
            if _still_open(entry.stream):
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
        """Gives back a stream whose exchange ended cleanly and that may carry another one."""
        if stream.closed():
            return
        key = _key(upstream)
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self._max_idle:
            stream.close()
            return
        timer = IOLoop.current().call_later(self._idle_timeout, self._expire, key, stream)
        idle.append(_Idle(stream, timer))

    def close(self) -> None:
        """Closes every idle stream (streams in use stay with their owners)."""
        for idle in self._idle.values():
            for entry in idle:
                IOLoop.current().remove_timeout(entry.timer)
                entry.stream.close()
        self._idle.clear()

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def _expire(self, key: _Key, stream: IOStream) -> None:
        idle = self._idle.get(key, [])
        for entry in idle:
            if entry.stream is stream:
                idle.remove(entry)
                stream.close()
                return

    def _drop_other_generations(self, key: _Key) -> None:
        for other in [k for k in self._idle if k != key]:
            for entry in self._idle.pop(other):
                IOLoop.current().remove_timeout(entry.timer)
                entry.stream.close()
            log.debug("pool.discard reason=old-generation generation=%d", other[2])
