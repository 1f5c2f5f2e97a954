"""Shared harness for the proxy tests (``tests/test_proxy_*.py`` and the other in-process ones).

Every test runs in its own asyncio loop (:func:`async_test`); servers listen on 127.0.0.1 with
ports chosen by the kernel, and are closed when their ``async with`` block ends.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets
from tornado.tcpclient import TCPClient
from tornado.web import Application

from proxy.pool import ConnectionPool
from proxy.routes import admit_everyone, admits_everyone_at_once, proxy_rules
from proxy.upstream import MarimoSession, Upstream, UpstreamLookup

LOADING_PAGE = b"<!doctype html><title>Starting marimo</title><p>marimo is starting"

_T = TypeVar("_T")


def async_test(
    timeout: float = 30.0,
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    """Runs an ``async def`` test in a fresh event loop, failing it after ``timeout`` seconds."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout))

        return run

    return decorate


class Switch:
    """The proxy's ``lookup``: whatever the test last set."""

    def __init__(self, upstream: Upstream | None = None) -> None:
        self.upstream = upstream

    def __call__(self) -> Upstream | None:
        return self.upstream

    def point(
        self,
        port: int,
        generation: int = 1,
        authorization: str | None = None,
        *,
        session: bool = False,
    ) -> None:
        """Points the proxy at ``port``; ``session`` lets it keep marimo's session cookie, as
        the orchestrator's upstream does."""
        self.upstream = Upstream(
            "127.0.0.1", port, generation, authorization, MarimoSession(port) if session else None
        )


@asynccontextmanager
async def serve(
    app: Application, server_class: type[HTTPServer] = HTTPServer
) -> AsyncIterator[Any]:
    """Serves ``app`` on a free port; yields the server, whose ``.port`` is set."""
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = server_class(app)
    server.add_sockets(sockets)
    server.port = sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
        await server.close_all_connections()


FORWARDING_PATHS = ("fast path", "handler")
"""The proxy's two front ends for a body-less request: proxy/direct.py beneath RequestHandler,
or proxy/http.py's handler (which every request with a body, and every request a guard must look
at closely, takes). Both drive proxy/forward.py's one sequence, so a case runs once, by the fast
path; the tests of what each front end does itself (head, body, end, answers, cut) run by both,
marked :data:`each_front_end`."""

_forwarding = {"path": "fast path"}


@contextmanager
def forwarding(path: str) -> Iterator[None]:
    """Proxies started inside forward body-less requests by ``path`` (one of
    :data:`FORWARDING_PATHS`)."""
    assert path in FORWARDING_PATHS
    _forwarding["path"] = path
    try:
        yield
    finally:
        _forwarding["path"] = "fast path"


@pytest.fixture(params=FORWARDING_PATHS)
def front_end(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once per front end (import it into the module with :data:`each_front_end`)."""
    with forwarding(request.param):
        yield request.param


each_front_end = pytest.mark.usefixtures("front_end")
"""Marks a test of a front end's own behaviour, run through both."""


@dataclass
class Proxy:
    port: int
    switch: Switch
    pool: ConnectionPool

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@asynccontextmanager
async def run_proxy(
    switch: Switch, *, lookup: UpstreamLookup | None = None, **options: Any
) -> AsyncIterator[Proxy]:
    """The proxy's rules alone in an Application, as the orchestrator mounts them.

    The proxy asks ``switch`` where marimo is, unless another ``lookup`` is given (the
    orchestrator's status board, say). ``idle_timeout`` goes to the pool, every other option
    to :func:`proxy_rules`.
    """
    pool = ConnectionPool(
        connect_timeout=options.get("connect_timeout", 5.0),
        idle_timeout=options.pop("idle_timeout", 30.0),
    )
    if "guard" not in options:  # the proxy alone: no sign-in, chosen by name
        options["guard"] = admit_everyone
        if _forwarding["path"] != "handler":  # else no fast path: every request to the handler
            options.setdefault("admits_at_once", admits_everyone_at_once)
    rules = proxy_rules(lookup or switch, lambda: LOADING_PAGE, pool=pool, **options)
    app = Application(rules)
    async with serve(app) as server:
        try:
            yield Proxy(server.port, switch, pool)
        finally:
            pool.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def get_list(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_list(name)
        return ",".join(values) if values else None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass
class RawClient:
    """An HTTP/1.1 client that writes exactly the bytes it is given and parses nothing away."""

    stream: IOStream
    _chunked: bool = field(default=False)

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await TCPClient().connect("127.0.0.1", port))

    def close(self) -> None:
        self.stream.close()

    async def send(self, head: str, body: bytes = b"") -> None:
        """Sends ``head`` (lines each ending in a plain newline), the blank line, ``body``."""
        await self.stream.write(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)

    async def read_head(self) -> RawResponse:
        data = await self.stream.read_until(b"\r\n\r\n", max_bytes=1 << 20)
        lines = data.decode("latin-1").split("\r\n")
        _, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if line]
        response = RawResponse(int(status), reason, [(k, v) for k, v in headers])
        self._chunked = "chunked" in (response.get("Transfer-Encoding") or "").lower()
        return response

    async def read_chunk(self) -> bytes:
        """One chunk of a chunked body; b"" at its end."""
        size = int((await self.stream.read_until(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await self.stream.read_until(b"\r\n")  # end of the (empty) trailer section
            return b""
        data = await self.stream.read_bytes(size)
        await self.stream.read_bytes(2)
        return data

    async def read_response(self, *, head: bool = False) -> RawResponse:
        response = await self.read_head()
        if head or response.status in (204, 304) or 100 <= response.status < 200:
            return response
        if self._chunked:
            body = bytearray()
            while chunk := await self.read_chunk():
                body += chunk
            response.body = bytes(body)
        elif (length := response.get("Content-Length")) is not None:
            response.body = await self.stream.read_bytes(int(length)) if int(length) else b""
        else:
            response.body = await self.stream.read_until_close()
        return response


async def raw_exchange(
    port: int, head: str, body: bytes = b"", *, is_head: bool = False
) -> RawResponse:
    """One request on its own connection (``head`` as for :meth:`RawClient.send`)."""
    client = await RawClient.connect(port)
    try:
        await client.send(head, body)
        return await client.read_response(head=is_head)
    finally:
        client.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Waits until ``predicate()`` holds, re-checking on every loop turn (bounded by timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)
