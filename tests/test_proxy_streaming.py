"""Bodies flow through the proxy as streams: events arrive one by one, memory stays flat."""

from __future__ import annotations

import asyncio
import hashlib
import json
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest
from tornado.iostream import StreamClosedError

from tests.backends import echo, sse
from tests.support.proxy_harness import (
    RawClient,
    Switch,
    async_test,
    each_front_end,
    front_end,  # noqa: F401 (the fixture each_front_end asks for)
    run_proxy,
    serve,
)

MiB = 1024 * 1024


def rss() -> int:
    return psutil.Process().memory_info().rss


@contextmanager
def python_heap_peak() -> Iterator[list[int]]:
    """Peak of Python allocations inside the block (independent of what the C allocator keeps
    from earlier tests, which can hide growth from RSS); yields a list receiving it."""
    peak: list[int] = []
    tracemalloc.start(1)
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@async_test()
async def test_sse_events_arrive_one_by_one() -> None:
    feed = sse.Feed()
    switch = Switch()
    async with serve(sse.make_app(feed)) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send("GET /events HTTP/1.1\nHost: t\nAccept: text/event-stream\n")
            head = await client.read_head()
            assert head.status == 200
            assert head.get("Content-Type") == "text/event-stream"
            assert await client.read_chunk() == b'data: {"n": 1}\n\n'
            # Event 1 reached the client while event 2 did not even exist yet.
            assert feed.produced == ["1"]
            feed.trigger.set()
            assert await client.read_chunk() == b'data: {"n": 2}\n\n'
            assert await client.read_chunk() == b""
        finally:
            client.close()


@each_front_end
@async_test()
async def test_stream_opens_before_its_first_event() -> None:
    """The status line and headers are not held back waiting for body bytes."""
    feed = sse.Feed()
    switch = Switch()
    async with serve(sse.make_app(feed)) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send("GET /quiet HTTP/1.1\nHost: t\nAccept: text/event-stream\n")
            head = await client.read_head()
            assert (head.status, feed.produced) == (200, [])
            feed.trigger.set()
            assert await client.read_chunk() == b'data: {"n": 1}\n\n'
        finally:
            client.close()


@each_front_end
@async_test()
async def test_client_leaving_mid_stream_closes_the_upstream_connection() -> None:
    feed = sse.Feed()
    switch = Switch()
    async with serve(sse.make_app(feed)) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        await client.send("GET /events HTTP/1.1\nHost: t\n")
        await client.read_head()
        await client.read_chunk()
        client.close()
        await asyncio.wait_for(feed.disconnected.wait(), 5)
        assert proxy.pool.idle_count() == 0


@each_front_end
@async_test()
async def test_body_cut_short_by_marimo_is_not_passed_off_as_complete() -> None:
    switch = Switch()
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send("GET /truncated HTTP/1.1\nHost: t\n")
            head = await client.read_head()
            assert (head.status, head.get("Content-Length")) == (200, "1000")
            assert await client.stream.read_bytes(500) == b"x" * 500
            with pytest.raises(StreamClosedError):
                await client.stream.read_bytes(500)
        finally:
            client.close()
        assert proxy.pool.idle_count() == 0


@async_test(timeout=60)
async def test_200_mb_upload_streams_through_with_flat_memory() -> None:
    size, block = 200 * MiB, bytes(range(256)) * 4096
    switch = Switch()
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(f"POST /upload HTTP/1.1\nHost: t\nContent-Length: {size}\n")
            baseline, peak, expected = rss(), 0, hashlib.sha256()
            with python_heap_peak() as heap:
                for i in range(size // len(block)):
                    await client.stream.write(block)
                    expected.update(block)
                    if i % 8 == 0:
                        peak = max(peak, rss())
                response = await client.read_response()
        finally:
            client.close()
        data = json.loads(response.body)
        assert response.status == 200
        assert (data["body_size"], data["body_sha256"]) == (size, expected.hexdigest())
        assert heap[0] < 40 * MiB, f"Python heap peaked at {heap[0] / MiB:.0f} MiB"
        assert peak - baseline < 40 * MiB, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"


@async_test(timeout=60)
async def test_200_mb_download_streams_through_with_flat_memory() -> None:
    size = 200 * MiB
    switch = Switch()
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send(f"GET /download/{size} HTTP/1.1\nHost: t\n")
            head = await client.read_head()
            assert (head.status, head.get("Content-Length")) == (200, str(size))
            baseline, peak, received, digest = rss(), 0, 0, hashlib.sha256()
            with python_heap_peak() as heap:
                while received < size:
                    data = await client.stream.read_bytes(min(MiB, size - received), partial=True)
                    received += len(data)
                    digest.update(data)
                    peak = max(peak, rss()) if received % (8 * MiB) < len(data) else peak
        finally:
            client.close()
        block = bytes(range(256)) * 4096
        assert digest.hexdigest() == hashlib.sha256(block * (size // len(block))).hexdigest()
        assert heap[0] < 40 * MiB, f"Python heap peaked at {heap[0] / MiB:.0f} MiB"
        assert peak - baseline < 40 * MiB, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"
