"""While marimo is absent, slow or refusing, the proxy answers by itself, and never with 502."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from tornado.httpclient import HTTPClientError, HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.websocket import websocket_connect

from tests.backends import slow
from tests.support.proxy_harness import (
    LOADING_PAGE,
    Proxy,
    Switch,
    async_test,
    closed_port,
    each_front_end,
    front_end,  # noqa: F401 (the fixture each_front_end asks for)
    run_proxy,
    serve,
)

NAVIGATION = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
API = {"Accept": "application/json"}


async def fetch(url: str, **kwargs: object) -> HTTPResponse:
    client = SimpleAsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(url, raise_error=False, **kwargs)
    finally:
        client.close()


async def assert_not_ready_answers(proxy: Proxy) -> None:
    page = await fetch(f"{proxy.base}/notebook.py?kiosk=true", headers=NAVIGATION)
    assert page.code == 200
    assert page.body == LOADING_PAGE
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-store"

    for method, body in (("GET", None), ("POST", b"{}")):
        api = await fetch(f"{proxy.base}/api/status", method=method, body=body, headers=API)
        assert api.code == 503
        assert api.headers["Retry-After"] == "2"
        assert api.headers["Cache-Control"] == "no-store"
        assert json.loads(api.body)["error"] == "marimo is not ready"

    # A POST is never a navigation, even from a browser form.
    form = await fetch(f"{proxy.base}/", method="POST", body=b"a=1", headers=NAVIGATION)
    assert form.code == 503

    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(f"{proxy.ws_base}/ws?session_id=s1")
    assert refused.value.code == 503
    assert refused.value.response is not None
    assert refused.value.response.headers["Retry-After"] == "2"


@async_test()
async def test_not_ready_gets_loading_page_or_503() -> None:
    async with run_proxy(Switch(None)) as proxy:
        await assert_not_ready_answers(proxy)


@each_front_end
@async_test()
async def test_connection_refused_is_the_same_as_not_ready() -> None:
    switch = Switch()
    switch.point(closed_port())
    async with run_proxy(switch) as proxy:
        await assert_not_ready_answers(proxy)


@asynccontextmanager
async def hang_up_server(says: bytes) -> AsyncIterator[int]:
    """Accepts connections, reads the request, says ``says`` and closes."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(says)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, family=socket.AF_INET)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "says",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"],
    ids=["nothing", "status-line-only"],
)
@each_front_end
@async_test()
async def test_marimo_hanging_up_without_answer_is_not_ready_not_502(says: bytes) -> None:
    switch = Switch()
    async with hang_up_server(says) as port, run_proxy(switch) as proxy:
        switch.point(port)
        await assert_not_ready_answers(proxy)


@each_front_end
@async_test()
async def test_slow_marimo_gets_504_for_requests_and_upgrades() -> None:
    release = asyncio.Event()
    switch = Switch()
    async with (
        serve(slow.make_app(delay=30, release=release)) as backend,
        run_proxy(switch, response_timeout=0.3) as proxy,
    ):
        switch.point(backend.port)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await fetch(f"{proxy.base}/api/slow", headers=API)
            assert response.code == 504
            assert loop.time() - started < 5
            assert response.headers["Cache-Control"] == "no-store"
            assert proxy.pool.idle_count() == 0
            with pytest.raises(HTTPClientError) as upgrade:
                await websocket_connect(f"{proxy.ws_base}/ws?session_id=s1")
            assert upgrade.value.code == 504
        finally:
            release.set()
