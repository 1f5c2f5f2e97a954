"""HTTP/1.1 framing of marimo's answers as :mod:`proxy.wire` reads them, byte for byte."""

from __future__ import annotations

import pytest

from proxy import wire
from tests.backends.scripted import scripted_server
from tests.support.proxy_harness import RawClient, Switch, async_test, raw_exchange, run_proxy

GET = "GET /x HTTP/1.1\nHost: t\nAccept: application/json\n"


@pytest.mark.parametrize(
    ("answer", "body", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n6 \r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n",
            b"hello world",
            True,
        ),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", b"ok", True),  # bare LF line ends
        (b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", b"ok", True),  # empty reason
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", b"ok", True),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"ok",
            True,
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
    ],
    ids=[
        "length",
        "chunked-ext-trailer",
        "lf",
        "no-reason",
        "repeated-length",
        "interim",
        "close",
        "http10",
        "http10-keepalive",
    ],
)
@async_test()
async def test_framings_relay_the_body_and_reuse_only_what_may_be(
    answer: bytes, body: bytes, reusable: bool
) -> None:
    switch = Switch()
    async with scripted_server(answer) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        response = await raw_exchange(proxy.port, GET)
        assert (response.status, response.body) == (200, body)
        assert response.get("Link") is None  # interim answers are not relayed
        assert response.get("X-Checksum") is None  # nor trailers
        assert proxy.pool.idle_count() == (1 if reusable else 0)


@async_test()
async def test_body_until_close_is_relayed_and_the_connection_not_reused() -> None:
    switch = Switch()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 300_000
    async with scripted_server(answer, close=True) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        for expected_connections in (1, 2):
            response = await raw_exchange(proxy.port, GET)
            assert (response.status, response.body) == (200, b"z" * 300_000)
            assert backend.connections == expected_connections
        assert proxy.pool.idle_count() == 0


@async_test()
async def test_http10_client_gets_an_unknown_length_body_ended_by_close() -> None:
    """No chunking for HTTP/1.0: the proxy closes the connection at the body's end, even when
    the client asked for keep-alive (else it would wait forever for more)."""
    switch = Switch()
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    async with scripted_server(answer) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send("GET /x HTTP/1.0\nHost: t\nConnection: keep-alive\n")
            data = await client.stream.read_until_close()
        finally:
            client.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length" not in head
        assert body == b"hello"
        assert proxy.pool.idle_count() == 1  # marimo's side was complete and reusable


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (wire.MAX_HEAD + 10) + b"\r\n\r\n",
    ],
    ids=[
        "two-lengths",
        "negative-length",
        "space-in-name",
        "no-colon",
        "nul",
        "short-status",
        "http2",
        "transfer-coding",
        "too-large",
    ],
)
@async_test()
async def test_malformed_answers_are_not_relayed(answer: bytes) -> None:
    """An answer that breaks HTTP/1.1 is treated as no answer: the gate speaks, never a 502."""
    switch = Switch()
    async with scripted_server(answer) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        response = await raw_exchange(proxy.port, GET)
        assert response.status == 503
        assert proxy.pool.idle_count() == 0


@async_test()
async def test_broken_chunk_framing_cuts_the_client_connection() -> None:
    switch = Switch()
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
    async with scripted_server(answer) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(GET)
            head = await client.read_head()
            assert head.status == 200
            assert await client.read_chunk() == b"hello"
            assert await client.stream.read_until_close() == b""  # no terminating chunk
        finally:
            client.close()
        assert proxy.pool.idle_count() == 0


def test_request_head_is_the_clients_bytes() -> None:
    head = wire.request_head("GET", "/caf\xc3\xa9?q=%20", [("Host", "h"), ("X-Latin", "\xe9t\xe9")])
    assert head == b"GET /caf\xc3\xa9?q=%20 HTTP/1.1\r\nHost: h\r\nX-Latin: \xe9t\xe9\r\n\r\n"
