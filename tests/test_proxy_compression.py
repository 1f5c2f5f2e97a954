"""Gzip on the way out: text marimo sends uncompressed is compressed chunk by chunk for clients
that accept it; validators, streams and everything already compressed stay correct."""

from __future__ import annotations

import gzip
import hashlib
import zlib

import pytest
from tornado.httputil import HTTPHeaders

from proxy import compression
from tests.backends import assets, sse
from tests.support.proxy_harness import (
    RawClient,
    RawResponse,
    Switch,
    async_test,
    each_front_end,
    front_end,  # noqa: F401 (the fixture each_front_end asks for)
    raw_exchange,
    run_proxy,
    serve,
)
from tests.test_proxy_streaming import MiB, python_heap_peak, rss

GZIP = "Accept-Encoding: gzip, deflate, br\n"


def vary(response: RawResponse) -> list[str]:
    values = response.get_list("Vary")
    return [t.strip().lower() for v in values for t in v.split(",")]


@each_front_end
@async_test()
async def test_text_is_compressed_for_clients_that_accept_gzip() -> None:
    switch = Switch()
    async with serve(assets.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        zipped = await raw_exchange(proxy.port, f"GET /app.js HTTP/1.1\nHost: t\n{GZIP}")
        assert zipped.status == 200
        assert zipped.get("Content-Encoding") == "gzip"
        assert zipped.get("Content-Length") is None
        assert zipped.get("Transfer-Encoding") == "chunked"
        assert zipped.get("ETag") == f"W/{assets.ETAG}"
        assert vary(zipped) == ["accept-encoding"]
        assert zipped.get("Content-Type") == "text/javascript; charset=utf-8"
        assert gzip.decompress(zipped.body) == assets.SCRIPT
        assert len(zipped.body) < len(assets.SCRIPT) / 4

        # No Accept-Encoding, or gzip refused with q=0: identity, strong ETag, exact length.
        for accept in ("", "Accept-Encoding: gzip;q=0, identity\n", "Accept-Encoding: br\n"):
            plain = await raw_exchange(proxy.port, f"GET /app.js HTTP/1.1\nHost: t\n{accept}")
            assert plain.get("Content-Encoding") is None, accept
            assert plain.get("Content-Length") == str(len(assets.SCRIPT))
            assert plain.get("ETag") == assets.ETAG
            assert vary(plain) == ["accept-encoding"]  # a cache must not serve it to gzip clients
            assert plain.body == assets.SCRIPT

        # A wildcard accepts gzip too.
        star = await raw_exchange(proxy.port, "GET /app.js HTTP/1.1\nHost: t\nAccept-Encoding: *\n")
        assert star.get("Content-Encoding") == "gzip"


@async_test()
async def test_revalidating_either_representation_still_gets_304() -> None:
    """The browser sends back the ETag it holds; marimo compares weakly and answers 304, which
    carries the ETag in the form the client holds."""
    switch = Switch()
    async with serve(assets.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(f"GET /app.js HTTP/1.1\nHost: t\n{GZIP}")
            first = await client.read_response()
            held = first.get("ETag")
            assert held == f"W/{assets.ETAG}"
            await client.send(f"GET /app.js HTTP/1.1\nHost: t\n{GZIP}If-None-Match: {held}\n")
            again = await client.read_response()
            assert (again.status, again.body, again.get("ETag")) == (304, b"", held)
            assert again.get("Content-Encoding") is None
            assert vary(again) == ["accept-encoding"]
            # A client holding the identity representation revalidates it as it is.
            await client.send(f"GET /app.js HTTP/1.1\nHost: t\nIf-None-Match: {assets.ETAG}\n")
            identity = await client.read_response()
            assert (identity.status, identity.get("ETag")) == (304, assets.ETAG)
        finally:
            client.close()


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/typed/application~json/1000", "shorter than MIN_LENGTH"),
        ("/typed/image~png/50000", "images are compressed already"),
        ("/typed/font~woff2/50000", "fonts are compressed already"),
        ("/typed/application~zip/50000", "archives"),
        ("/typed/application~octet-stream/50000", "wheels and other binaries"),
        ("/encoded", "marimo compressed it itself"),
        ("/no-transform", "Cache-Control: no-transform"),
    ],
)
@async_test()
async def test_what_must_not_be_compressed_passes_byte_for_byte(path: str, why: str) -> None:
    switch = Switch()
    async with serve(assets.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        direct = await raw_exchange(backend.port, f"GET {path} HTTP/1.1\nHost: t\n{GZIP}")
        proxied = await raw_exchange(proxy.port, f"GET {path} HTTP/1.1\nHost: t\n{GZIP}")
        assert proxied.body == direct.body, why
        assert proxied.get("Content-Encoding") == direct.get("Content-Encoding"), why
        assert proxied.get("Content-Length") == direct.get("Content-Length"), why
        assert "accept-encoding" not in vary(proxied), why


@async_test()
async def test_head_and_range_requests_are_not_compressed() -> None:
    switch = Switch()
    async with serve(assets.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        ranged = await raw_exchange(
            proxy.port, f"GET /app.js HTTP/1.1\nHost: t\n{GZIP}Range: bytes=10-99\n"
        )
        assert ranged.status == 206
        assert ranged.get("Content-Encoding") is None
        assert ranged.body == assets.SCRIPT[10:100]
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(f"HEAD /typed/text~css/5000 HTTP/1.1\nHost: t\n{GZIP}")
            head = await client.read_response(head=True)
            assert head.get("Content-Encoding") is None
        finally:
            client.close()


@each_front_end
@async_test()
async def test_compressed_stream_is_flushed_chunk_by_chunk() -> None:
    """What marimo sent so far can be decoded by the client before marimo sends more."""
    feed = assets.Feed()
    switch = Switch()
    async with serve(assets.make_app(feed)) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(f"GET /stream HTTP/1.1\nHost: t\n{GZIP}")
            head = await client.read_head()
            assert head.get("Content-Encoding") == "gzip"
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            decoded = b""
            while len(decoded) < 5000:
                decoded += decoder.decompress(await client.read_chunk())
            assert decoded == assets.SCRIPT[:5000]
            assert feed.produced == [1]  # all of it decoded while chunk 2 did not exist yet
            feed.trigger.set()
            while chunk := await client.read_chunk():
                decoded += decoder.decompress(chunk)
            assert decoder.eof and decoded == assets.SCRIPT
        finally:
            client.close()


@async_test()
async def test_event_streams_are_never_compressed() -> None:
    feed = sse.Feed()
    switch = Switch()
    async with serve(sse.make_app(feed)) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(f"GET /events HTTP/1.1\nHost: t\nAccept: text/event-stream\n{GZIP}")
            head = await client.read_head()
            assert head.get("Content-Encoding") is None
            assert await client.read_chunk() == b'data: {"n": 1}\n\n'
            assert feed.produced == ["1"]
            feed.trigger.set()
            assert await client.read_chunk() == b'data: {"n": 2}\n\n'
        finally:
            client.close()


@async_test(timeout=90)
async def test_large_compressed_download_keeps_memory_flat() -> None:
    size = 48 * MiB
    switch = Switch()
    async with serve(assets.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(f"GET /big-text/{size} HTTP/1.1\nHost: t\n{GZIP}")
            head = await client.read_head()
            assert head.get("Content-Encoding") == "gzip"
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            digest, received, wire = hashlib.sha256(), 0, 0
            baseline, peak = rss(), 0
            with python_heap_peak() as heap:
                while chunk := await client.read_chunk():
                    wire += len(chunk)
                    data = decoder.decompress(chunk)
                    received += len(data)
                    digest.update(data)
                    peak = max(peak, rss())
        finally:
            client.close()
        block = (assets.SCRIPT * (MiB // len(assets.SCRIPT) + 1))[:MiB]
        assert received == size and decoder.eof
        assert digest.hexdigest() == hashlib.sha256(block * (size // MiB)).hexdigest()
        assert wire < size / 4
        assert heap[0] < 40 * MiB, f"Python heap peaked at {heap[0] / MiB:.0f} MiB"
        assert peak - baseline < 40 * MiB, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0, *", False),
        ("br, *;q=0.1", True),
        ("*;q=0", False),
        ("identity", False),
        ("x-gzip", True),
        ("gzip;q=bogus", False),
        ("", False),
    ],
)
def test_accept_encoding_weights(accept: str, expected: bool) -> None:
    headers = HTTPHeaders({"Accept-Encoding": accept} if accept else {})
    assert compression.accepts_gzip(headers) is expected


@async_test()
async def test_http10_clients_get_the_body_as_it_is() -> None:
    """HTTP/1.0 has no chunking: a compressed body (of unknown length) could only end with the
    connection, so the body passes with its length and the connection stays usable."""
    switch = Switch()
    async with serve(assets.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        old = await raw_exchange(
            proxy.port, "GET /app.js HTTP/1.0\nHost: t\nAccept-Encoding: gzip\n"
        )
        assert old.get("Content-Encoding") is None
        assert old.body == assets.SCRIPT
