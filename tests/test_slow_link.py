"""The slow link the throttled browser test and bench/editor_load.py use really is slow, and
relays every byte: a page over it costs its round trips, and a big body its bandwidth."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.slow_link import SlowLink

BODY = os.urandom(1_000_000)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server on 127.0.0.1 that answers each connection's first line with BODY and closes."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    ports: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(BODY)
        await writer.drain()
        writer.close()

    async def serve() -> asyncio.Server:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        ports.append(server.sockets[0].getsockname()[1])
        return server

    def run() -> None:
        server = loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    yield ports[0]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def _fetch(port: int) -> tuple[bytes, float]:
    import socket

    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"give\n")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks), time.monotonic() - start


def test_bytes_cross_whole_at_the_links_rate_after_its_round_trips(echo_port: int) -> None:
    with SlowLink(echo_port, mbit=20, latency_ms=200) as link:
        body, seconds = _fetch(link.port)
    assert body == BODY
    # 1 MB at 20 Mbit/s is 0.4 s, after a handshake and a request/response round trip (0.4 s).
    assert seconds >= 0.75, seconds


def test_connections_share_the_link(echo_port: int) -> None:
    with SlowLink(echo_port, mbit=40, latency_ms=0) as link:
        results: list[tuple[bytes, float]] = []
        threads = [
            threading.Thread(target=lambda: results.append(_fetch(link.port))) for _ in range(4)
        ]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        seconds = time.monotonic() - start
    assert [body == BODY for body, _ in results] == [True] * 4
    # 4 MB at 40 Mbit/s (5 MB/s) takes 0.8 s on one shared line, 0.2 s if each had its own.
    assert seconds >= 0.75, seconds
