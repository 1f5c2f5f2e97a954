"""WebSocket relay: handshake decided by marimo, messages and close codes carried both ways."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from proxy.websocket import WebSocketRelay
from proxy.wsframes import Close, FrameScanner
from tests.backends import ws_echo
from tests.support.proxy_harness import Proxy, Switch, async_test, run_proxy, serve

MiB = 1024 * 1024


@dataclass
class Relay:
    proxy: Proxy
    backend: Any  # the HTTPServer from serve(), with .port
    record: ws_echo.Record

    async def connect(
        self, path: str = "/ws?session_id=abc", **kwargs: Any
    ) -> WebSocketClientConnection:
        headers = kwargs.pop("headers", {})
        request = HTTPRequest(f"{self.proxy.ws_base}{path}", headers=headers)
        return await websocket_connect(request, max_message_size=64 * MiB, **kwargs)


@asynccontextmanager
async def relay(authorization: str | None = None, **options: Any) -> AsyncIterator[Relay]:
    record = ws_echo.Record()
    switch = Switch()
    async with serve(ws_echo.make_app(record)) as backend, run_proxy(switch, **options) as proxy:
        switch.point(backend.port, authorization=authorization)
        yield Relay(proxy, backend, record)


async def closed(conn: WebSocketClientConnection) -> tuple[int | None, str | None]:
    """Reads until the proxy closes the socket; returns the close code and reason it sent."""
    while (await conn.read_message()) is not None:
        pass
    conn.close()
    return conn.close_code, conn.close_reason


@async_test()
async def test_subprotocol_is_the_one_marimo_chose() -> None:
    async with relay() as r:
        # marimo prefers v2 although the client listed v1 first.
        conn = await r.connect(subprotocols=["marimo-v1", "marimo-v2"])
        assert conn.selected_subprotocol == "marimo-v2"
        conn.close()
        conn = await r.connect(subprotocols=["marimo-v1", "other"])
        assert conn.selected_subprotocol == "marimo-v1"
        conn.close()
        conn = await r.connect()
        assert conn.selected_subprotocol is None
        conn.close()


@async_test()
async def test_text_and_binary_messages_keep_their_kind_and_order() -> None:
    async with relay() as r:
        conn = await r.connect()
        messages: list[str | bytes] = ['{"op": "hello"}', b"\x00\xffbinary", "é ✓", b""]
        for message in messages:
            await conn.write_message(message, binary=isinstance(message, bytes))
        for message in messages:
            assert await conn.read_message() == message
        conn.close()


@async_test()
async def test_twelve_megabyte_message_passes_both_ways() -> None:
    payload = os.urandom(12 * MiB)
    async with relay() as r:
        conn = await r.connect()
        await conn.write_message(payload, binary=True)
        assert await conn.read_message() == payload
        text = "x" * (12 * MiB)
        await conn.write_message(text)
        assert await conn.read_message() == text
        conn.close()


@async_test()
async def test_close_code_and_reason_from_marimo_reach_the_client() -> None:
    async with relay() as r:
        conn = await r.connect()
        await conn.write_message("close 4001 session replaced")
        assert await closed(conn) == (4001, "session replaced")


@async_test()
async def test_close_code_and_reason_from_the_client_reach_marimo() -> None:
    async with relay() as r:
        conn = await r.connect()
        conn.close(4002, "tab closed")
        assert await asyncio.wait_for(r.record.closes.get(), 5) == (4002, "tab closed")


@async_test()
async def test_client_vanishing_is_1011_for_marimo() -> None:
    async with relay() as r:
        conn = await r.connect()
        await conn.write_message("ping-through")
        assert await conn.read_message() == "ping-through"
        assert conn.protocol is not None and conn.protocol.stream is not None
        conn.protocol.stream.close()  # no close frame at all
        code, _ = await asyncio.wait_for(r.record.closes.get(), 5)
        assert code == 1011
        conn.close()


@async_test()
async def test_marimo_dropping_the_connection_is_1011_for_the_client() -> None:
    async with relay() as r:
        conn = await r.connect()
        await conn.write_message("drop")
        code, _ = await closed(conn)
        assert code == 1011


@pytest.mark.parametrize("after", ["gone", "new-generation", "port-closed"])
@async_test()
async def test_marimo_restarting_is_1012_for_the_client(after: str) -> None:
    async with relay() as r:
        conn = await r.connect()
        if after == "gone":
            r.proxy.switch.upstream = None
            await conn.write_message("drop")
        elif after == "new-generation":
            r.proxy.switch.point(r.backend.port, generation=2)
            await conn.write_message("drop")
        else:  # marimo died; the supervisor has not noticed yet
            r.backend.stop()
            await conn.write_message("drop")
        assert await closed(conn) == (1012, "marimo is restarting")


@async_test()
async def test_marimo_rejecting_the_upgrade_is_told_with_its_status() -> None:
    async with relay() as r:
        with pytest.raises(HTTPClientError) as rejected:
            await r.connect("/forbidden")
        assert rejected.value.code == 403


@async_test()
async def test_upgrade_carries_injected_authorization_cookies_and_query() -> None:
    secret = "Bearer ws-secret"
    async with relay(authorization=secret) as r:
        conn = await r.connect(
            "/ws?session_id=s%201&file=%2Ftmp%2Fnb.py",
            headers={"Cookie": "session_2718=abc", "Authorization": "Bearer browser"},
        )
        await conn.write_message("headers")
        seen = json.loads(await conn.read_message() or "[]")
        names = {k.lower(): v for k, v in seen}
        assert names["authorization"] == secret
        assert names["cookie"] == "session_2718=abc"
        assert names["x-forwarded-for"] == "127.0.0.1"
        assert "sec-websocket-extensions" not in names
        conn.close()


@async_test()
async def test_client_pings_reach_marimo() -> None:
    async with relay() as r:
        conn = await r.connect()
        conn.ping(b"are you there")
        assert await asyncio.wait_for(r.record.pings.get(), 5) == b"are you there"
        conn.close()


TEXT, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One frame as a client sends it (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size | (0x80 if mask else 0))
    elif size < 65536:
        header = struct.pack("!BBH", first, 126 | (0x80 if mask else 0), size)
    else:
        header = struct.pack("!BBQ", first, 127 | (0x80 if mask else 0), size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A WebSocket client writing frames exactly as told: fragments, control frames between
    them, and frames that break the rules."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str = "/ws") -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> None:
        self.writer.write(encode_frame(opcode, payload, fin=fin, mask=mask))

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the proxy (opcode, payload); a server's frames are unmasked."""
        first, second = await self.reader.readexactly(2)
        assert not second & 0x80, "a server's frame must not be masked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(size)

    async def close_code(self) -> int:
        """Reads frames up to the proxy's close frame; its code."""
        while True:
            opcode, payload = await asyncio.wait_for(self.frame(), 10)
            if opcode == CLOSE:
                self.writer.close()
                return int(struct.unpack("!H", payload[:2])[0])


@async_test()
async def test_a_fragmented_message_with_a_ping_between_its_fragments_passes() -> None:
    async with relay() as r:
        raw = await RawSocket.open(r.proxy.port)
        raw.send(TEXT, b"hel", fin=False)
        raw.send(PING, b"between")
        raw.send(CONTINUATION, b"lo ", fin=False)
        raw.send(CONTINUATION, "wörld".encode(), fin=True)
        # marimo answers the ping (the proxy does not) before it has the whole message.
        assert await asyncio.wait_for(raw.frame(), 5) == (PONG, b"between")
        assert await asyncio.wait_for(raw.frame(), 5) == (TEXT, "hello wörld".encode())
        assert await asyncio.wait_for(r.record.pings.get(), 5) == b"between"
        raw.send(CLOSE, struct.pack("!H", 4003) + b"bye")
        assert await raw.close_code() == 4003
        assert await asyncio.wait_for(r.record.closes.get(), 5) == (4003, "bye")


@async_test()
async def test_marimos_pings_reach_the_client_and_its_pongs_reach_marimo() -> None:
    async with relay() as r:
        conn = await r.connect()
        await conn.write_message("ping from-marimo")
        assert await asyncio.wait_for(r.record.pongs.get(), 5) == b"from-marimo"
        conn.close()


@async_test()
async def test_a_message_over_the_limit_from_the_client_is_1009_for_it_and_1011_for_marimo() -> (
    None
):
    async with relay(max_message_size=MiB) as r:
        conn = await r.connect()
        await conn.write_message(os.urandom(MiB), binary=True)  # at the limit: passes
        assert len(await conn.read_message() or b"") == MiB
        await conn.write_message(os.urandom(MiB + 1), binary=True)
        assert (await closed(conn))[0] == 1009
        assert (await asyncio.wait_for(r.record.closes.get(), 5))[0] == 1011


@async_test()
async def test_fragments_adding_up_to_more_than_the_limit_are_refused() -> None:
    async with relay(max_message_size=MiB) as r:
        raw = await RawSocket.open(r.proxy.port)
        raw.send(TEXT, b"a" * (MiB // 2), fin=False)
        raw.send(CONTINUATION, b"b" * (MiB // 2), fin=False)
        raw.send(CONTINUATION, b"c", fin=True)
        assert await raw.close_code() == 1009
        assert (await asyncio.wait_for(r.record.closes.get(), 5))[0] == 1011


@async_test()
async def test_a_message_over_the_limit_from_marimo_is_1011_for_the_client() -> None:
    async with relay(max_message_size=MiB) as r:
        conn = await r.connect()
        await conn.write_message(f"send {MiB + 1}")
        code, reason = await closed(conn)
        assert (code, reason) == (1011, "marimo: message too big")
        assert (await asyncio.wait_for(r.record.closes.get(), 5))[0] == 1009


@async_test()
async def test_an_unmasked_client_frame_is_1002_and_never_reaches_marimo() -> None:
    async with relay() as r:
        raw = await RawSocket.open(r.proxy.port)
        raw.send(TEXT, b"unmasked", mask=False)
        assert await raw.close_code() == 1002
        assert (await asyncio.wait_for(r.record.closes.get(), 5))[0] == 1011


@async_test(timeout=60)
async def test_a_client_that_stops_reading_holds_marimo_back() -> None:
    """The proxy buffers a bounded amount for a client that reads nothing: marimo's writes
    stall instead of filling the proxy's memory, and nothing is lost once the client reads."""
    count = 160  # MiB: far more than the socket buffers of three connections hold
    async with relay() as r:
        conn = await r.connect()
        await conn.write_message(f"flood {count}")
        # The client reads nothing until marimo's writes stop making progress.
        last, steady_since = -1, asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - steady_since < 1.0:
            if r.record.flooded != last:
                last, steady_since = r.record.flooded, asyncio.get_running_loop().time()
            await asyncio.sleep(0.05)
        assert 0 < last < 64, f"marimo wrote {last} MiB to a client that read nothing"
        for _ in range(count):
            assert await asyncio.wait_for(conn.read_message(), 10) == b"\x01" * MiB
        assert r.record.flooded == count
        conn.close()


def test_frames_split_anywhere_pass_unchanged_up_to_the_close() -> None:
    """However the bytes arrive (one at a time here), what passes is exactly the frames before
    the close frame, and the close frame's code and reason are read through its mask."""
    frames = [
        (TEXT, b"x" * 5, False),
        (PING, b"p", True),
        (CONTINUATION, b"y" * 300, False),  # 16-bit length
        (CONTINUATION, b"z" * 70000, True),  # 64-bit length
        (0x2, b"", True),
    ]
    before_close = b"".join(encode_frame(op, payload, fin=fin) for op, payload, fin in frames)
    close = encode_frame(CLOSE, struct.pack("!H", 4005) + "ré".encode())
    stream = before_close + close + encode_frame(TEXT, b"after the close")
    scanner = FrameScanner(masked=True, limit=MiB)
    passed = b"".join(b"".join(scanner.feed(stream[i : i + 1])) for i in range(len(stream)))
    assert passed == before_close
    assert scanner.closed == Close(4005, "ré")
    assert scanner.violation is None


@async_test()
async def test_the_open_socket_count_covers_a_socket_until_both_of_its_connections_end() -> None:
    async with relay() as r:
        before = WebSocketRelay.open_relays
        conn = await r.connect()
        await conn.write_message("counted")
        assert await conn.read_message() == "counted"
        assert WebSocketRelay.open_relays == before + 1
        conn.close(1000)
        assert await asyncio.wait_for(r.record.closes.get(), 5) == (1000, None)
        deadline = asyncio.get_running_loop().time() + 5
        while WebSocketRelay.open_relays != before:
            assert asyncio.get_running_loop().time() < deadline, "the relay is still counted"
            await asyncio.sleep(0.02)


@async_test()
async def test_what_marimo_sends_right_behind_its_handshake_answer_reaches_the_client() -> None:
    async with relay() as r:
        for _ in range(5):
            conn = await r.connect("/greet")
            assert await asyncio.wait_for(conn.read_message(), 5) == "hello"
            await conn.write_message("and back")
            assert await asyncio.wait_for(conn.read_message(), 5) == "and back"
            conn.close()


@async_test()
async def test_a_close_without_a_code_is_1011_on_the_other_side() -> None:
    async with relay() as r:
        conn = await r.connect()
        await conn.write_message("close")
        assert await closed(conn) == (1011, "marimo closed the connection abnormally")
        assert await asyncio.wait_for(r.record.closes.get(), 5) == (1011, None)
        conn = await r.connect()
        conn.close()  # no code
        assert await asyncio.wait_for(r.record.closes.get(), 5) == (1011, None)
