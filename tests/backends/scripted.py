"""Scripted backend: answers every request with exactly the bytes it was given.

Reads each request's head (and a ``Content-Length`` body), writes ``answer``, then closes the
connection when ``close`` is set, else waits for the next request on it. Counts connections.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Scripted:
    def __init__(self, answer: bytes, close: bool) -> None:
        self.answer = answer
        self.close = close
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                writer.write(self.answer)
                await writer.drain()
                if self.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def scripted_server(answer: bytes, *, close: bool = False) -> AsyncIterator[Scripted]:
    backend = Scripted(answer, close)
    server = await asyncio.start_server(backend._serve, "127.0.0.1", 0, family=socket.AF_INET)
    backend.port = server.sockets[0].getsockname()[1]
    try:
        yield backend
    finally:
        server.close()
        await server.wait_closed()
