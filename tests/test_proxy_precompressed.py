"""Compressed once: marimo's content-hashed assets are compressed at the best level once, kept on
disk, and served from there (brotli or gzip) with a strong validator; the bytes are marimo's
after any restart, upgrade or damaged file, and only clients the guard admits get them."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]
import psutil
import pytest
from tornado.httputil import HTTPServerRequest
from tornado.web import Application, RequestHandler

from jobs.atomic import write_atomically
from proxy.caching import IMMUTABLE
from proxy.precompressed import AssetStore
from tests.support.proxy_harness import (
    FORWARDING_PATHS,
    Proxy,
    RawResponse,
    Switch,
    async_test,
    forwarding,
    raw_exchange,
    run_proxy,
    serve,
    wait_for,
)

CHROMIUM = "Accept-Encoding: gzip, deflate, br, zstd\n"
GZIP_ONLY = "Accept-Encoding: gzip\n"


def _script(version: int) -> bytes:
    return b"".join(
        b"export const f%d = (x) => x * %d + 'marimo %d';\n" % (i, i, version) for i in range(3000)
    )


class _Marimo:
    """marimo's static files as it serves them: identity, strong ETag, ``Vary: Origin``; counts
    the requests for each asset."""

    def __init__(self, assets: dict[str, bytes]) -> None:
        self.assets = assets
        self.asked: dict[str, int] = {}

    def app(self) -> Application:
        return Application([(r"/assets/([^/]+)", _Asset, {"marimo": self})])


class _Asset(RequestHandler):
    def initialize(self, marimo: _Marimo) -> None:
        self.marimo = marimo

    def compute_etag(self) -> None:
        return None

    def get(self, name: str) -> None:
        self.marimo.asked[name] = self.marimo.asked.get(name, 0) + 1
        self.set_header("Vary", "Origin")
        if name not in self.marimo.assets:
            self.set_status(404)
            self.finish("not found")
            return
        self.set_header("Content-Type", "application/javascript")
        self.set_header("ETag", '"marimo-etag"')
        self.finish(self.marimo.assets[name])


V1 = "index-Ab3_x-9Z.js"
V2 = "index-Qr7-k2Lm.js"


@pytest.fixture(params=FORWARDING_PATHS)
def forwarding_path(request: pytest.FixtureRequest) -> Iterator[str]:
    with forwarding(request.param):
        yield request.param


def decoded(response: RawResponse) -> bytes:
    encoding = response.get("Content-Encoding")
    if encoding == "br":
        return bytes(brotli.decompress(response.body))
    if encoding == "gzip":
        return gzip.decompress(response.body)
    assert encoding is None, encoding
    return response.body


async def get(proxy: Proxy, name: str, extra: str = CHROMIUM) -> RawResponse:
    return await raw_exchange(proxy.port, f"GET /assets/{name} HTTP/1.1\nHost: t\n{extra}")


@asynccontextmanager
async def stack(
    marimo: _Marimo, folder: Path, **options: Any
) -> AsyncIterator[tuple[Proxy, AssetStore, Switch]]:
    store = AssetStore(write_atomically)
    switch = Switch()
    async with (
        serve(marimo.app()) as backend,
        run_proxy(switch, asset_store=store, **options) as proxy,
    ):
        switch.point(backend.port)
        store.attach(folder)
        await wait_for(lambda: store.ready)
        try:
            yield proxy, store, switch
        finally:
            store.close()


@async_test(timeout=60)
async def test_an_asset_is_compressed_once_then_served_from_disk(
    forwarding_path: str, tmp_path: Path
) -> None:
    marimo = _Marimo({V1: _script(1)})
    async with stack(marimo, tmp_path) as (proxy, store, _):
        # First request: marimo answers (gzipped on the way); a copy is compressed meanwhile.
        first = await get(proxy, V1)
        assert first.status == 200 and decoded(first) == _script(1)
        await wait_for(lambda: store.compressions == 2, timeout=30)  # brotli and gzip
        assert marimo.asked[V1] == 1

        served = []
        for _ in range(3):
            brotli_copy = await get(proxy, V1)
            gzip_copy = await get(proxy, V1, GZIP_ONLY)
            served += [brotli_copy, gzip_copy]
            assert brotli_copy.get("Content-Encoding") == "br"
            assert gzip_copy.get("Content-Encoding") == "gzip"
        for response in served:
            assert response.status == 200 and decoded(response) == _script(1)
            assert response.get("Content-Length") == str(len(response.body))
            assert response.get("Cache-Control") == IMMUTABLE
            assert "accept-encoding" in (response.get("Vary") or "").lower()
            assert not (response.get("ETag") or "W/").startswith("W/"), "a strong validator"
        assert marimo.asked[V1] == 1, "served from the copies, marimo not asked"
        assert store.compressions == 2, "no compression per request"
        assert len(served[0].body) < len(gzip.compress(_script(1), 5))

        # Revalidation: the strong tag (or its weak form) gets a 304 without a body.
        for held in (served[0].get("ETag"), f"W/{served[0].get('ETag')}"):
            again = await get(proxy, V1, f"{CHROMIUM}If-None-Match: {held}\n")
            assert (again.status, again.body) == (304, b"")
            assert again.get("ETag") is not None
        other = await get(proxy, V1, f"{GZIP_ONLY}If-None-Match: {served[0].get('ETag')}\n")
        assert other.status == 200 and decoded(other) == _script(1), "the gzip copy's tag differs"

        # Identity clients get marimo's own bytes; a range goes to marimo too (this one
        # ignores ranges, so the whole body comes back, gzipped on the way as before).
        for extra in ("", "Accept-Encoding: identity\n", f"{CHROMIUM}Range: bytes=0-99\n"):
            plain = await get(proxy, V1, extra)
            assert decoded(plain) == _script(1), extra
            assert plain.get("Content-Encoding") in (
                (None,) if "Range" not in extra else (None, "gzip")
            )
        assert marimo.asked[V1] == 4
        assert sorted(p.name.rsplit(".", 2)[-1] for p in tmp_path.glob(f"{V1}.*")) == ["br", "gz"]


@async_test(timeout=120)
async def test_compressing_stops_while_marimo_restarts_and_goes_on_after(tmp_path: Path) -> None:
    big = b"".join(_script(n) for n in range(25))  # several seconds of brotli at quality 11
    async with stack(_Marimo({V1: big}), tmp_path) as (proxy, store, _):
        assert decoded(await get(proxy, V1)) == big
        await wait_for(lambda: store.encoder_pid is not None, timeout=30)
        encoder = psutil.Process(store.encoder_pid)
        store.hold()  # marimo went down: its start must not compete with the compressing
        await wait_for(lambda: encoder.status() == psutil.STATUS_STOPPED, timeout=10)
        assert store.compressions == 0
        store.resume()
        await wait_for(lambda: store.compressions == 2, timeout=90)
        assert decoded(await get(proxy, V1)) == big
        assert (await get(proxy, V1)).get("Content-Encoding") == "br"


async def _refuse_without_cookie(handler: RequestHandler) -> bool:
    if "Cookie" in handler.request.headers:
        return True
    handler.set_status(401)
    handler.set_header("Cache-Control", "no-store")
    handler.finish("sign in")
    return False


def _has_cookie(request: HTTPServerRequest) -> bool:
    return "Cookie" in request.headers


@async_test(timeout=60)
async def test_a_client_without_a_session_gets_nothing_from_the_copies(tmp_path: Path) -> None:
    marimo = _Marimo({V1: _script(1)})
    async with stack(
        marimo, tmp_path, guard=_refuse_without_cookie, admits_at_once=_has_cookie
    ) as (proxy, store, _):
        signed_in = f"{CHROMIUM}Cookie: s=1\n"
        assert decoded(await get(proxy, V1, signed_in)) == _script(1)
        await wait_for(lambda: store.compressions == 2, timeout=30)
        assert (await get(proxy, V1, signed_in)).get("Content-Encoding") == "br"
        refused = await get(proxy, V1)
        assert refused.status == 401 and refused.body == b"sign in"
        assert refused.get("Content-Encoding") is None


@async_test(timeout=60)
async def test_copies_survive_a_restart_and_an_upgrade_names_new_ones(tmp_path: Path) -> None:
    async with stack(_Marimo({V1: _script(1)}), tmp_path) as (proxy, store, _):
        await get(proxy, V1)
        await wait_for(lambda: store.compressions == 2, timeout=30)

    # The orchestrator restarts onto an upgraded marimo (new hashes), same state volume.
    upgraded = _Marimo({V2: _script(2)})
    async with stack(upgraded, tmp_path) as (proxy, store, _):
        kept = await get(proxy, V1)
        assert kept.get("Content-Encoding") == "br" and decoded(kept) == _script(1)
        assert store.compressions == 0, "the copy made before the restart is used as it is"
        assert V1 not in upgraded.asked

        new = await get(proxy, V2)
        assert new.status == 200 and decoded(new) == _script(2)
        await wait_for(lambda: store.compressions == 2, timeout=30)
        served = await get(proxy, V2)
        assert served.get("Content-Encoding") == "br" and decoded(served) == _script(2)
        assert served.get("ETag") != kept.get("ETag")
        assert upgraded.asked[V2] == 1


@async_test(timeout=60)
async def test_a_damaged_copy_is_never_served(tmp_path: Path) -> None:
    marimo = _Marimo({V1: _script(1)})
    async with stack(marimo, tmp_path) as (proxy, store, _):
        await get(proxy, V1)
        await wait_for(lambda: store.compressions == 2, timeout=30)
        (copy,) = tmp_path.glob(f"{V1}.*.br")
        # Cut short while served from: marimo answers instead, and the copy is dropped.
        copy.write_bytes(copy.read_bytes()[:100])
        cut = await get(proxy, V1)
        assert cut.status == 200 and decoded(cut) == _script(1)
        assert marimo.asked[V1] == 2 and not copy.exists()
        await wait_for(lambda: store.compressions == 3, timeout=30)  # the brotli copy, again
        assert decoded(await get(proxy, V1)) == _script(1)

    # Damaged while the orchestrator was down (same length, other bytes): found at the start.
    (gz,) = tmp_path.glob(f"{V1}.*.gz")
    data = bytearray(gz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gz.write_bytes(bytes(data))
    marimo = _Marimo({V1: _script(1)})
    async with stack(marimo, tmp_path) as (proxy, store, _):
        assert not gz.exists()
        first = await get(proxy, V1, GZIP_ONLY)
        assert decoded(first) == _script(1) and marimo.asked[V1] == 1
        await wait_for(lambda: store.compressions == 1, timeout=30)  # only the gzip copy
        for extra, encoding in ((GZIP_ONLY, "gzip"), (CHROMIUM, "br")):
            again = await get(proxy, V1, extra)
            assert again.get("Content-Encoding") == encoding
            assert decoded(again) == _script(1)
        assert marimo.asked[V1] == 1
        assert len(list(tmp_path.glob(f"{V1}.*"))) == 2
