"""WebSocket backend: echoes messages and obeys a few text commands.

* ``close <code> <reason>``: closes with that code and reason; ``close`` alone, with no code.
* ``drop``: cuts the TCP connection without a close frame.
* ``headers``: answers with the upgrade request's headers as JSON.
* ``ping <data>``: pings the client with ``data``.
* ``send <n>``: answers with one binary message of ``n`` bytes.
* ``flood <n>``: sends ``n`` binary messages of 1 MiB, each once the last was written out,
  counting them in :attr:`Record.flooded`.

Subprotocol: picks, among those the client offered, the first of :data:`PREFERENCE` (so not
necessarily the client's first). Records the close code/reason it got and the pings and pongs it got.
``/forbidden`` rejects the upgrade with 403; on ``/greet`` the backend sends ``hello`` as soon as
the socket opens (in the same write as its handshake answer, as far as TCP allows).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler

PREFERENCE = ("marimo-v2", "marimo-v1")


class Record:
    def __init__(self) -> None:
        self.closes: asyncio.Queue[tuple[int | None, str | None]] = asyncio.Queue()
        self.pings: asyncio.Queue[bytes] = asyncio.Queue()
        self.pongs: asyncio.Queue[bytes] = asyncio.Queue()
        self.flooded = 0


class EchoSocket(WebSocketHandler):
    def initialize(self, record: Record) -> None:
        self.record = record

    def open(self, *args: str) -> None:
        if self.request.path == "/greet":
            self.write_message("hello")

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        for choice in PREFERENCE:
            if choice in subprotocols:
                return choice
        return None

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            if message == "close":  # a close frame without a code (1005 for the other end)
                self.close()
                return
            if message.startswith("close "):
                _, code, reason = message.split(" ", 2)
                self.close(int(code), reason)
                return
            if message == "drop":
                assert self.ws_connection is not None and self.ws_connection.stream
                self.ws_connection.stream.close()
                return
            if message.startswith("ping "):
                self.ping(message[5:].encode())
                return
            if message.startswith("send "):
                await self.write_message(b"\x00" * int(message[5:]), binary=True)
                return
            if message.startswith("flood "):
                chunk = b"\x01" * (1024 * 1024)
                for _ in range(int(message[6:])):
                    await self.write_message(chunk, binary=True)
                    self.record.flooded += 1
                return
            if message == "headers":
                await self.write_message(json.dumps(list(self.request.headers.get_all())))
                return
        await self.write_message(message, binary=isinstance(message, bytes))

    def on_ping(self, data: bytes) -> None:
        self.record.pings.put_nowait(data)

    def on_pong(self, data: bytes) -> None:
        self.record.pongs.put_nowait(data)

    def on_close(self) -> None:
        self.record.closes.put_nowait((self.close_code, self.close_reason))


class Forbidden(RequestHandler):
    def get(self, *args: Any) -> None:
        self.set_status(403)
        self.finish("no")


def make_app(record: Record) -> Application:
    return Application(
        [(r"/forbidden", Forbidden), (r"/.*", EchoSocket, {"record": record})],
        websocket_max_message_size=64 * 1024 * 1024,
    )
