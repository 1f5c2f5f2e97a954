"""One-shot backend: per connection, answers the first request (keeping the connection open),
then hangs up on the next request without answering, as a server whose keep-alive timeout
raced with a reused connection would. Counts the connections it accepted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class OneShot:
    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nanswered")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def one_shot_server() -> AsyncIterator[OneShot]:
    backend = OneShot()
    server = await asyncio.start_server(backend._serve, "127.0.0.1", 0, family=socket.AF_INET)
    backend.port = server.sockets[0].getsockname()[1]
    try:
        yield backend
    finally:
        server.close()
        await server.wait_closed()
