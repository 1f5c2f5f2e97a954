"""A slow link on 127.0.0.1: a TCP relay that delays and paces the bytes crossing it.

Every connection to the relay's port is relayed to ``127.0.0.1:target``. In each direction the
bytes of all connections share one link of ``mbit`` Mbit/s (first come, first served, as on a
real access line), and arrive ``latency_ms / 2`` after they were sent, so a round trip costs
``latency_ms``; a new connection costs one round trip before its first byte is relayed.

It throttles outside the browser, on the sockets: Chromium's DevTools network emulation
(``Network.emulateNetworkConditions``) leaves a page load pending forever now and then on a
busy machine, with its sockets full of bytes it never reads, against any server (see
bench/RESULTS.md), so a benchmark or test throttled that way measures the emulation.

Invariants:
- per connection and direction at most ``_QUEUED`` chunks of ``_CHUNK`` bytes are held here;
  past that the relay stops reading, so the sender sees the link's backpressure;
- an end of stream is passed on (half-close) after the bytes before it; a reset or error on
  either side closes both;
- :meth:`SlowLink.close` closes the listener and every relayed connection, and stops the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType

_CHUNK = 16 * 1024
_QUEUED = 8


class _Link:
    """One direction of the link: when the line is free again, shared by every connection."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.free_at = 0.0

    def send(self, size: int, now: float) -> float:
        """Reserves the line for ``size`` bytes; returns when their last byte has left."""
        start = max(now, self.free_at)
        self.free_at = start + size / self.rate
        return self.free_at


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link, delay: float
) -> None:
    """Relays ``source`` to ``sink`` over ``link``; raises OSError if ``sink`` failed."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=_QUEUED)
    failed: list[OSError] = []

    async def deliver() -> None:
        while (item := await queue.get()) is not None:
            if failed:
                continue  # the sink is gone: keep taking chunks so the reader never blocks
            due, data = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)  # the emulated line: this is the delay itself
            try:
                sink.write(data)
                await sink.drain()
            except OSError as error:
                failed.append(error)
        if not failed and sink.can_write_eof():
            with contextlib.suppress(OSError):
                sink.write_eof()

    delivering = asyncio.ensure_future(deliver())
    try:
        while not failed and (data := await source.read(_CHUNK)):
            await queue.put((link.send(len(data), loop.time()) + delay, data))
    finally:
        await queue.put(None)
        await delivering
    if failed:
        raise failed[0]


class SlowLink:
    """``with SlowLink(target_port, mbit=20, latency_ms=40) as link:`` serves ``link.port``."""

    def __init__(self, target_port: int, *, mbit: float, latency_ms: float) -> None:
        self.target_port = target_port
        self._down = _Link(mbit * 1_000_000 / 8)
        self._up = _Link(mbit * 1_000_000 / 8)
        self._delay = latency_ms / 1000 / 2
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="slow-link", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._accepted, sock=self._listener)

        self._loop.run_until_complete(serve())
        ready.set()
        self._loop.run_forever()

    async def _accepted(
        self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        clean = False
        try:
            await asyncio.sleep(2 * self._delay)  # the handshake's round trip
            server_in, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(
                _pump(client_in, upstream, self._up, self._delay),
                _pump(server_in, client, self._down, self._delay),
            )
            clean = True
        except (OSError, asyncio.CancelledError):
            pass  # a reset, or close(): both sides are dropped below
        finally:
            self._tasks.discard(task)
            for writer in (client, upstream):
                if writer is None:
                    continue
                if clean:
                    writer.close()  # both ends said all: what is buffered still goes out
                else:
                    writer.transport.abort()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SlowLink:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
