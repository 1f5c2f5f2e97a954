"""One TCP connection to marimo, as an asyncio protocol read into a buffer as data arrives.

Tornado's ``IOStream`` registers and unregisters its socket with the event loop around every
read (an ``epoll_ctl`` and a loop handler update each time), which profiling showed as a large
share of each proxied request. This transport stays registered for its whole life and fills one
buffer; reads are served from it. The interface is the part of ``IOStream``'s that
:mod:`proxy.wire` and the forwarders use, with the same exceptions.

Invariants:

* At most one read is pending at a time (one exchange owns the connection).
* The buffer holds at most :data:`READ_AHEAD` bytes plus one received segment: beyond that the
  transport stops reading until a read consumes it, so a slow client never makes the proxy
  buffer marimo's answer without bound.
* ``write`` returns an awaitable that resolves once the transport's buffer is below its
  high-water mark (:data:`WRITE_HIGH_WATER`): a request body is read from the client only as
  fast as marimo takes it.
* After ``close`` (or marimo closing), a read that the buffer cannot satisfy raises
  ``StreamClosedError`` at once, with ``error`` set when the end was not an orderly one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Generator

from tornado.iostream import StreamClosedError

READ_AHEAD = 256 * 1024
WRITE_HIGH_WATER = 64 * 1024


class MarimoConnection(asyncio.Protocol):
    """A keep-alive connection to marimo (made by :func:`open_connection`)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._ended = False
        """No more bytes will arrive (marimo closed, an error, or :meth:`close`)."""
        self._closed = False
        self._paused_reading = False
        self._reader: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        """Why the connection ended, when it was not an orderly close."""

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_AHEAD and self._transport is not None:
            self._transport.pause_reading()
            self._paused_reading = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake_reader()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = self._closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake_reader()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(StreamClosedError(real_error=exc))
            self._writable.exception()  # retrieved: nobody may be waiting

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- the IOStream-like interface ------------------------------------------------------------

    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Ends the connection now; a pending read raises ``StreamClosedError``."""
        if self._closed:
            return
        self._ended = self._closed = True
        if self._transport is not None:
            self._transport.abort()  # nothing of an abandoned exchange is worth flushing
        self._wake_reader()

    def idle_and_open(self) -> bool:
        """Open, nothing unread and no end seen: fit to carry a new request."""
        return not self._ended and not self._buffer

    def write(self, data: bytes) -> Awaitable[None]:
        """Queues ``data``; the awaitable resolves when marimo is taking data again."""
        if self._closed or self._transport is None:
            raise StreamClosedError(real_error=self.error)
        self._transport.write(data)
        if self._writable is not None and not self._writable.done():
            return self._writable
        return _DONE

    async def read_until_regex(self, pattern: bytes, max_bytes: int) -> bytes:
        """Bytes up to and including the first match of ``pattern``.

        Raises ``StreamClosedError`` (and closes) when no match is within ``max_bytes``.
        """
        regex = _compiled(pattern)
        while True:
            match = regex.search(self._buffer)
            if match is not None:
                if match.end() > max_bytes:
                    break
                return self._take(match.end())
            if len(self._buffer) > max_bytes:
                break
            await self._more()
        self.close()
        raise StreamClosedError(real_error=ValueError(f"no match within {max_bytes} bytes"))

    async def read_until(self, delimiter: bytes, max_bytes: int) -> bytes:
        """Bytes up to and including ``delimiter``; as :meth:`read_until_regex` otherwise."""
        start = 0
        while True:
            end = self._buffer.find(delimiter, start)
            if end >= 0:
                if end + len(delimiter) > max_bytes:
                    break
                return self._take(end + len(delimiter))
            if len(self._buffer) > max_bytes:
                break
            start = max(0, len(self._buffer) - len(delimiter) + 1)
            await self._more()
        self.close()
        raise StreamClosedError(real_error=ValueError(f"no delimiter within {max_bytes} bytes"))

    async def read_bytes(self, count: int, partial: bool = False) -> bytes:
        """``count`` bytes; with ``partial``, whatever is there (at least one, at most
        ``count``) as soon as anything is."""
        while not self._buffer if partial else len(self._buffer) < count:
            await self._more()
        return self._take(min(count, len(self._buffer)))

    # -- internals --------------------------------------------------------------------------

    def _take(self, count: int) -> bytes:
        if count == len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:count])
            del self._buffer[:count]
        if self._paused_reading and len(self._buffer) <= READ_AHEAD and not self._closed:
            assert self._transport is not None
            self._transport.resume_reading()
            self._paused_reading = False
        return data

    async def _more(self) -> None:
        """Waits for more bytes; raises ``StreamClosedError`` when none will come."""
        if self._ended:
            raise StreamClosedError(real_error=self.error)
        if self._paused_reading and self._transport is not None:
            self._transport.resume_reading()
            self._paused_reading = False
        self._reader = asyncio.get_running_loop().create_future()
        try:
            await self._reader
        finally:
            self._reader = None

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)


async def open_connection(host: str, port: int) -> MarimoConnection:
    """Connects to marimo (asyncio sets ``TCP_NODELAY`` on its TCP transports)."""
    _, connection = await asyncio.get_running_loop().create_connection(MarimoConnection, host, port)
    return connection


class _Done:
    """An awaitable that is already complete (no future per write when marimo keeps up)."""

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator, finished before its first step


_DONE = _Done()
_PATTERNS: dict[bytes, re.Pattern[bytes]] = {}


def _compiled(pattern: bytes) -> re.Pattern[bytes]:
    regex = _PATTERNS.get(pattern)
    if regex is None:
        regex = _PATTERNS[pattern] = re.compile(pattern)
    return regex


class AfterArrivals:
    """Runs ``callback`` once the event loop has delivered what marimo already sent, unless
    cancelled first.

    A reader woken by data queues its next step before the loop polls again; what the poll then
    finds (the rest of a body, or marimo's end) is delivered on the following turn. Waiting two
    turns lets a decision such as "send the response head alone" see an end that had already
    arrived (as ``IOStream``'s inline read would have).
    """

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle = asyncio.get_running_loop().call_soon(self._second_turn)

    def _second_turn(self) -> None:
        self._handle = asyncio.get_running_loop().call_soon(self._callback)

    def cancel(self) -> None:
        self._handle.cancel()
