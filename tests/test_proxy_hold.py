"""While the environment is restored, what would start a kernel or touch the packages waits;
the editor's page does not (proxy/hold.py)."""

from __future__ import annotations

import asyncio

from tornado.httpclient import HTTPClientError
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketHandler, websocket_connect

from proxy.hold import KernelHold
from tests.support.proxy_harness import (
    Switch,
    async_test,
    each_front_end,
    front_end,  # noqa: F401 (the fixture each_front_end asks for)
    run_proxy,
    serve,
)


class Page(RequestHandler):
    def get(self) -> None:
        self.write(f"marimo {self.request.path}")


class Echo(WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


def marimo_like() -> Application:
    return Application([(r"/ws", Echo), (r"/.*", Page)])


async def fetch_body(url: str) -> tuple[int, bytes]:
    client = SimpleAsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(url, raise_error=False, request_timeout=30)
        return response.code, response.body
    finally:
        client.close()


@each_front_end
@async_test()
async def test_kernels_and_package_calls_wait_for_the_environment_and_pages_do_not() -> None:
    hold = KernelHold()
    hold.close()
    switch = Switch()
    async with serve(marimo_like()) as backend, run_proxy(switch, hold=hold) as proxy:
        switch.point(backend.port)
        assert await fetch_body(f"{proxy.base}/notebook.py") == (200, b"marimo /notebook.py")

        socket_ = asyncio.ensure_future(websocket_connect(f"{proxy.ws_base}/ws?session_id=a"))
        packages = asyncio.ensure_future(fetch_body(f"{proxy.base}/api/packages/list"))
        done, _ = await asyncio.wait({socket_, packages}, timeout=0.5)
        assert not done, "nothing that starts a kernel passes while the hold is closed"

        hold.open()
        assert await packages == (200, b"marimo /api/packages/list")
        connection = await socket_
        await connection.write_message("hello")
        assert await connection.read_message() == "hello"
        connection.close()


@async_test()
async def test_a_hold_that_lasts_too_long_answers_not_ready() -> None:
    hold = KernelHold(limit=0.2)
    hold.close()
    switch = Switch()
    async with serve(marimo_like()) as backend, run_proxy(switch, hold=hold) as proxy:
        switch.point(backend.port)
        code, _ = await fetch_body(f"{proxy.base}/api/packages/list")
        assert code == 503
        try:
            await websocket_connect(f"{proxy.ws_base}/ws?session_id=a")
        except HTTPClientError as refused:
            assert refused.code == 503
        else:
            raise AssertionError("the upgrade was accepted while the hold was closed")
