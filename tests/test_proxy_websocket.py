"""WebSocket relay: handshake decided by marimo, messages and close codes carried both ways."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.backends import ws_echo
from tests.conftest_proxy import Proxy, Switch, async_test, run_proxy, serve

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
async def relay(authorization: str | None = None) -> AsyncIterator[Relay]:
    record = ws_echo.Record()
    switch = Switch()
    async with serve(ws_echo.make_app(record)) as backend, run_proxy(switch) as proxy:
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
