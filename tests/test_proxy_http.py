"""HTTP forwarding: what marimo receives and what the browser gets back, header by header."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.web import Application, RequestHandler

from proxy.direct import DirectExchange
from proxy.forward import Exchange, Forwarding
from proxy.html import HtmlTransform
from tests.backends import counting, echo, headers
from tests.backends.one_shot import one_shot_server
from tests.support.proxy_harness import (
    RawClient,
    Switch,
    async_test,
    each_front_end,
    front_end,  # noqa: F401 (the fixture each_front_end asks for)
    raw_exchange,
    run_proxy,
    serve,
    wait_for,
)


async def fetch(url: str, **kwargs: Any) -> HTTPResponse:
    client = SimpleAsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(HTTPRequest(url, **kwargs), raise_error=False)
    finally:
        client.close()


def echoed(response: HTTPResponse) -> dict[str, Any]:
    assert response.code == 200, response.body
    data: dict[str, Any] = json.loads(response.body)
    return data


def echoed_headers(data: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in data["headers"] if k.lower() == name.lower()]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", None),
        ("POST", os.urandom(1024 * 1024 + 17)),
        ("PUT", b"put body"),
        ("PATCH", b'{"cell": 1}'),
        ("DELETE", b"delete with a body"),
        ("DELETE", None),
        ("OPTIONS", None),
        ("POST", b""),
    ],
)
@async_test()
async def test_methods_and_bodies_reach_marimo_intact(method: str, body: bytes | None) -> None:
    switch = Switch()
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        response = await fetch(
            f"{proxy.base}/api/kernel/run",
            method=method,
            body=body,
            allow_nonstandard_methods=True,
        )
        data = echoed(response)
        assert data["method"] == method
        assert data["body_size"] == len(body or b"")
        assert data["body_sha256"] == hashlib.sha256(body or b"").hexdigest()


@async_test()
async def test_chunked_upload_without_length_is_forwarded_whole() -> None:
    """A body of unknown length (browser streams, fetch with ReadableStream) still arrives."""
    switch = Switch()
    pieces = [os.urandom(100_000) for _ in range(30)]

    async def produce(write: Any) -> None:
        for piece in pieces:
            await write(piece)

    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        data = echoed(await fetch(f"{proxy.base}/upload", method="POST", body_producer=produce))
        assert data["body_size"] == 3_000_000
        assert data["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()

        # Same for a method Tornado's client would not frame by itself.
        body = b"".join(pieces[:3])
        chunked = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces[:3]) + b"0\r\n\r\n"
        raw = await raw_exchange(
            proxy.port,
            "DELETE /x HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\nConnection: close\n",
            chunked,
        )
        data = json.loads(raw.body)
        assert (data["method"], data["body_size"]) == ("DELETE", len(body))
        assert data["body_sha256"] == hashlib.sha256(body).hexdigest()


@async_test()
async def test_target_is_forwarded_byte_for_byte() -> None:
    """Encoded slashes, spaces, empty parameters and UTF-8 escapes must not be re-encoded."""
    switch = Switch()
    targets = [
        "/a%2Fb/c?x=1&y=%20&z",
        "/caf%C3%A9/%E2%9C%93?q=%26&r=a+b&&s=%2B",
        "/ws_sync?file=%2Fhome%2Fnb%20one.py&session_id=s-1",
        "/path;param/./../x?",
    ]
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        for target in targets:
            raw = await raw_exchange(
                proxy.port, f"GET {target} HTTP/1.1\nHost: example\nConnection: close\n"
            )
            assert json.loads(raw.body)["uri"] == target


@async_test()
async def test_hop_by_hop_request_headers_are_removed_end_to_end_kept() -> None:
    switch = Switch()
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        raw = await raw_exchange(
            proxy.port,
            "GET /h HTTP/1.1\n"
            "Host: notebook.example\n"
            "Connection: close, X-Hop\n"
            "X-Hop: only for the next hop\n"
            "Keep-Alive: timeout=5\n"
            "TE: trailers\n"
            "Trailer: X-Checksum\n"
            "Upgrade: h2c\n"
            "Proxy-Authorization: Basic cHJveHk6c2VjcmV0\n"
            "Cookie: session_2718=abc; theme=dark\n"
            "Marimo-Server-Token: skew-42\n"
            "X-Kept: yes\n"
            "Accept-Encoding: gzip\n",
        )
        data = json.loads(raw.body)
        names = {k.lower() for k, _ in data["headers"]}
        for gone in (
            "connection",
            "x-hop",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
        ):
            assert gone not in names, gone
        assert echoed_headers(data, "Cookie") == ["session_2718=abc; theme=dark"]
        assert echoed_headers(data, "Marimo-Server-Token") == ["skew-42"]
        assert echoed_headers(data, "X-Kept") == ["yes"]
        assert echoed_headers(data, "Accept-Encoding") == ["gzip"]
        assert echoed_headers(data, "Host") == ["notebook.example"]


@async_test()
async def test_hop_by_hop_response_headers_are_removed_end_to_end_kept() -> None:
    switch = Switch()
    async with serve(headers.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        raw = await raw_exchange(proxy.port, "GET /hop HTTP/1.1\nHost: t\n")
        assert raw.status == 200 and raw.body == b"hop"
        names = raw.names()
        for gone in ("x-custom", "x-other", "keep-alive", "proxy-authenticate", "trailer"):
            assert gone not in names, gone
        assert raw.get("Upgrade") is None
        assert "x-custom" not in (raw.get("Connection") or "").lower()
        assert raw.get("X-Kept") == "yes"
        assert raw.get("Marimo-Server-Token") == "skew-123"


@async_test()
async def test_forwarded_headers_describe_the_original_request() -> None:
    switch = Switch()
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        data = echoed(await fetch(f"{proxy.base}/x"))
        assert echoed_headers(data, "X-Forwarded-For") == ["127.0.0.1"]
        assert echoed_headers(data, "X-Forwarded-Proto") == ["http"]
        assert echoed_headers(data, "X-Forwarded-Host") == [f"127.0.0.1:{proxy.port}"]

        # Behind the platform's ingress: the chain grows, the original scheme and host stay.
        data = echoed(
            await fetch(
                f"{proxy.base}/x",
                headers={
                    "X-Forwarded-For": "203.0.113.7",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "nb.example.com",
                },
            )
        )
        assert echoed_headers(data, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
        assert echoed_headers(data, "X-Forwarded-Proto") == ["https"]
        assert echoed_headers(data, "X-Forwarded-Host") == ["nb.example.com"]


@async_test()
async def test_authorization_is_injected_and_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    secret = "Bearer s3cr3t-t0ken-value"
    caplog.set_level(logging.DEBUG)
    switch = Switch()
    async with serve(headers.make_app(secret)) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port, authorization=secret)
        for sent in ({}, {"Authorization": "Bearer from-the-browser"}):
            response = await fetch(f"{proxy.base}/auth", headers=sent)
            assert json.loads(response.body) == {"authorized": True, "count": 1}
            assert "s3cr3t" not in str(list(response.headers.get_all()))
            assert b"s3cr3t" not in response.body
        switch.point(backend.port, authorization=None)
        response = await fetch(f"{proxy.base}/auth", headers={"Authorization": secret})
        assert json.loads(response.body)["authorized"] is True  # without injection: passes
    assert "s3cr3t" not in caplog.text


@async_test()
async def test_marimo_session_cookie_is_kept_and_sent_for_clients_without_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """marimo re-signs a cookie into every token-authenticated answer; the proxy keeps the
    newest and sends it for clients that have none, so marimo checks a signature instead.
    Clients' own cookies are never replaced, and the token still goes along."""
    caplog.set_level(logging.DEBUG)
    secret = "Bearer s3cr3t-t0ken-value"
    issued: list[str] = []
    switch = Switch()
    async with serve(headers.make_app(secret, issued)) as backend, run_proxy(switch) as proxy:
        name = f"session_{backend.port}"
        switch.point(backend.port, authorization=secret, session=True)

        async def get(path: str = "/session", **sent: str) -> tuple[dict[str, Any], list[str]]:
            response = await fetch(f"{proxy.base}{path}", headers=sent)
            assert response.code == 200, response.body
            return json.loads(response.body), response.headers.get_list("Set-Cookie")

        seen, set_cookie = await get()
        assert seen == {"cookie_lines": [], "by": "token"}
        assert [c.split(";")[0] for c in set_cookie] == [f"{name}=signed-1"]  # crosses as is

        seen, set_cookie = await get()
        assert seen == {"cookie_lines": [f"{name}=signed-1"], "by": "cookie"}
        assert set_cookie == []  # nothing re-signed

        seen, _ = await get(Cookie="theme=dark; lang=en")
        assert seen == {"cookie_lines": [f"theme=dark; lang=en; {name}=signed-1"], "by": "cookie"}

        # A client's own cookie of that name is its own: sent as it is, even when marimo
        # rejects it (the token lets the request in, and the new cookie is learnt).
        seen, set_cookie = await get(Cookie=f"{name}=forged")
        assert seen == {"cookie_lines": [f"{name}=forged"], "by": "token"}
        assert [c.split(";")[0] for c in set_cookie] == [f"{name}=signed-2"]
        seen, _ = await get()
        assert seen == {"cookie_lines": [f"{name}=signed-2"], "by": "cookie"}

        # A cleared cookie is forgotten: the token alone, then a fresh cookie.
        await get("/session/clear")
        seen, _ = await get()
        assert seen == {"cookie_lines": [], "by": "token"}

        # A new marimo (generation) starts without any cookie.
        switch.point(backend.port, generation=2, authorization=secret, session=True)
        seen, _ = await get()
        assert seen == {"cookie_lines": [], "by": "token"}

        # Without a session holder (the bare proxy) nothing is added.
        switch.point(backend.port, generation=3, authorization=secret)
        await get()
        seen, set_cookie = await get()
        assert (seen["cookie_lines"], len(set_cookie)) == ([], 1)
    for value in issued:
        assert value not in caplog.text
    assert "s3cr3t" not in caplog.text


@each_front_end
@async_test()
async def test_multiple_set_cookie_headers_survive() -> None:
    switch = Switch()
    async with serve(headers.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        response = await fetch(f"{proxy.base}/cookies")
        assert response.headers.get_list("Set-Cookie") == list(headers.COOKIES)


@async_test()
async def test_etag_and_conditional_get_pass_through() -> None:
    switch = Switch()
    async with serve(headers.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        first = await raw_exchange(proxy.port, "GET /etag HTTP/1.1\nHost: t\n")
        assert first.status == 200
        assert first.get("ETag") == headers.ETAG
        assert first.get("Content-Type") == "text/javascript"
        again = await raw_exchange(
            proxy.port, f"GET /etag HTTP/1.1\nHost: t\nIf-None-Match: {headers.ETAG}\n"
        )
        assert (again.status, again.body) == (304, b"")
        assert again.get("ETag") == headers.ETAG


@each_front_end
@async_test()
async def test_response_headers_are_marimos_not_tornados() -> None:
    """No Content-Type, Server or Etag invented by the proxy's own framework."""
    switch = Switch()
    async with serve(headers.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        raw = await raw_exchange(proxy.port, "GET /bare HTTP/1.1\nHost: t\nAccept-Encoding: gzip\n")
        assert raw.body == b"\x00\x01bare"
        assert raw.get("Content-Type") is None
        assert raw.get("Server") is None
        assert raw.get("Etag") is None
        assert raw.get("Content-Encoding") is None


@each_front_end
@async_test()
async def test_marimo_statuses_pass_untouched() -> None:
    """marimo's own redirects and errors are not followed, rewritten or turned into 502s."""
    switch = Switch()
    async with serve(headers.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            for code in (204, 303, 404, 500, 503):
                await client.send(f"GET /status/{code} HTTP/1.1\nHost: t\n")
                response = await client.read_response()
                assert response.status == code
                assert response.body == (b"" if code == 204 else b"status %d" % code)
                if code == 303:
                    assert response.get("Location") == "/auth/login?next=%2Fnb"
        finally:
            client.close()
        assert proxy.pool.connections_opened == 1


@each_front_end
@async_test()
async def test_head_gets_headers_without_body() -> None:
    switch = Switch()
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        try:
            await client.send("HEAD /download/123456 HTTP/1.1\nHost: t\n")
            head = await client.read_response(head=True)
            assert head.status == 200
            assert head.get("Content-Length") == "123456"
            # The connection is still in sync: no body bytes were sent after the HEAD answer.
            await client.send("GET /download/10 HTTP/1.1\nHost: t\n")
            after = await client.read_response()
            assert (after.status, after.body) == (200, bytes(range(10)))
        finally:
            client.close()


@async_test()
async def test_keep_alive_one_upstream_connection_for_fifty_requests() -> None:
    switch = Switch()
    app = counting.make_app()
    async with serve(app, counting.CountingServer) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = AsyncHTTPClient(force_instance=True)
        try:
            for i in range(50):
                if i % 2:
                    response = await client.fetch(f"{proxy.base}/n{i}", method="POST", body=b"x")
                    assert response.body == b"posted 1"
                else:
                    response = await client.fetch(f"{proxy.base}/n{i}")
                    assert response.body == b"ok"
        finally:
            client.close()
        assert backend.connections == 1


@async_test()
async def test_new_generation_never_reuses_old_connections() -> None:
    switch = Switch()
    app = counting.make_app()
    async with serve(app, counting.CountingServer) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port, generation=1)
        assert (await fetch(f"{proxy.base}/")).body == b"ok"
        assert proxy.pool.idle_count() == 1
        switch.point(backend.port, generation=2)
        assert (await fetch(f"{proxy.base}/")).body == b"ok"
        assert backend.connections == 2
        assert proxy.pool.idle_count() == 1  # only generation 2's connection is kept


@async_test()
async def test_idle_connections_expire_and_are_never_handed_out_stale() -> None:
    switch = Switch()
    app = counting.make_app()
    async with (
        serve(app, counting.CountingServer) as backend,
        run_proxy(switch, idle_timeout=0.3) as proxy,
    ):
        switch.point(backend.port)
        for _ in range(3):
            assert (await fetch(f"{proxy.base}/")).body == b"ok"
        assert (proxy.pool.idle_count(), backend.connections) == (1, 1)
        await wait_for(lambda: proxy.pool.idle_count() == 0)  # the sweep closed it
        assert (await fetch(f"{proxy.base}/")).body == b"ok"
        assert backend.connections == 2


@async_test()
async def test_pooled_connection_closed_by_marimo_is_not_an_error() -> None:
    """marimo restarted on the same port (same generation): the stale idle connection is
    detected and the request still succeeds on a fresh one."""
    switch = Switch()
    app = counting.make_app()
    async with serve(app, counting.CountingServer) as first, run_proxy(switch) as proxy:
        switch.point(first.port)
        assert (await fetch(f"{proxy.base}/")).code == 200
        port = first.port
        first.stop()
        await first.close_all_connections()
        second = counting.CountingServer(app)
        second.listen(port, "127.0.0.1")
        try:
            for _ in range(3):
                response = await fetch(f"{proxy.base}/")
                assert (response.code, response.body) == (200, b"ok")
        finally:
            second.stop()
            await second.close_all_connections()


@each_front_end
@async_test()
async def test_dead_reused_connection_is_retried_only_when_replayable() -> None:
    switch = Switch()
    async with one_shot_server() as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        assert (await fetch(f"{proxy.base}/first")).body == b"answered"
        # Reused connection dies on this GET: replayed once on a fresh connection.
        response = await fetch(f"{proxy.base}/second", headers={"Accept": "application/json"})
        assert (response.code, response.body) == (200, b"answered")
        assert backend.connections == 2
        # A POST whose body already went out is not replayed: marimo might have acted on it.
        response = await fetch(
            f"{proxy.base}/api/run", method="POST", body=b"{}", headers={"Accept": "*/*"}
        )
        assert response.code == 503
        assert backend.connections == 2


@async_test()
async def test_a_post_without_marimos_server_token_header_is_refused_as_marimo_would() -> None:
    """marimo runs without its skew check (so open tabs survive its restarts); the proxy keeps
    the header's presence required, which a cross-site form cannot satisfy."""
    switch = Switch()
    async with (
        serve(counting.make_app(), server_class=counting.CountingServer) as backend,
        run_proxy(switch, require_server_token=True) as proxy,
    ):
        switch.point(backend.port)
        refused = await fetch(f"{proxy.base}/api/kernel/run", method="POST", body=b"{}")
        assert refused.code == 401
        assert json.loads(refused.body) == {"error": "Missing server token"}
        assert backend.connections == 0, "nothing reached marimo"

        # Any value passes (an open tab keeps the one an earlier marimo gave it)...
        old = await fetch(
            f"{proxy.base}/api/kernel/run",
            method="POST",
            body=b"{}",
            headers={"Marimo-Server-Token": "from-an-earlier-marimo"},
        )
        assert (old.code, old.body) == (200, b"posted 2")
        # ... and marimo's own exemptions stay exempt; other methods are not concerned.
        for path in ("/api/kernel/execute", "/auth/login"):
            exempt = await fetch(f"{proxy.base}{path}", method="POST", body=b"{}")
            assert exempt.code == 200, path
        assert (await fetch(f"{proxy.base}/api/status")).code == 200


class _Pages(RequestHandler):
    """marimo's kinds of answers: an HTML document (with validators), a script, a 304."""

    def compute_etag(self) -> str | None:
        return None

    def get(self, name: str) -> None:
        if name == "page":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("ETag", '"marimo-page"')
            self.finish(b"<!doctype html><html><head><title>m</title></head><body>x</body></html>")
        elif name == "script":
            self.set_header("Content-Type", "text/javascript")
            self.finish(b"console.log('</head>')")
        else:
            self.set_status(304)
            self.set_header("Content-Type", "text/html")
            self.finish()

    head = get


@each_front_end
@async_test()
async def test_the_html_transform_applies_to_marimos_html_documents_only() -> None:
    switch = Switch()
    seen: list[bytes] = []

    def transform(document: bytes) -> bytes:
        seen.append(document)
        return document.replace(b"</head>", b"<script src=/-/static/p.js></script></head>")

    async with (
        serve(Application([(r"/(\w+)", _Pages)])) as backend,
        run_proxy(switch, html_transform=HtmlTransform(transform, "t1")) as proxy,
    ):
        switch.point(backend.port)
        page = await fetch(f"{proxy.base}/page", headers={"Accept-Encoding": "identity"})
        assert page.code == 200
        assert b"<script src=/-/static/p.js></script></head>" in page.body
        assert page.headers["Content-Length"] == str(len(page.body))
        # marimo's validator does not describe our bytes: ours is derived from it and the key.
        assert page.headers["Etag"] == '"marimo-page~t1"'
        gzipped = await fetch(
            f"{proxy.base}/page", headers={"Accept-Encoding": "gzip"}, decompress_response=True
        )
        assert b"/-/static/p.js" in gzipped.body

        script = await fetch(f"{proxy.base}/script")
        assert script.body == b"console.log('</head>')"
        head = await fetch(f"{proxy.base}/page", method="HEAD")
        assert head.code == 200 and head.body == b""
        assert (await fetch(f"{proxy.base}/unchanged")).code == 304
        assert len(seen) == 2, "only the two GETs of the HTML document went through it"


@async_test()
async def test_a_finished_request_is_freed_at_once_not_by_the_cycle_collector() -> None:
    """Nothing of a body-less request's forwarding outlives its answer: with Python's cyclic
    collector off, the exchange, its forwarding and its ``Exchange`` are gone once the answer is
    out (a cycle between them would keep each request's objects, Tornado's among them, for the
    collector)."""
    switch = Switch()
    kinds = (DirectExchange, Forwarding, Exchange)

    def alive() -> int:
        return sum(isinstance(o, kinds) for o in gc.get_objects())

    size = 64 * 1024 * 1024  # more than the sockets between can hold: still in flight below
    async with serve(echo.make_app()) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        client = await RawClient.connect(proxy.port)
        gc.collect()
        gc.disable()
        try:
            await client.send(f"GET /download/{size} HTTP/1.1\nHost: 127.0.0.1\n")
            head = await client.read_head()
            assert head.status == 200
            assert alive() == 3, "the fast path's objects, while the body is in flight"
            assert len(await client.stream.read_bytes(size)) == size
            for _ in range(20):
                await client.send("GET /health HTTP/1.1\nHost: 127.0.0.1\n")
                assert (await client.read_response()).status == 200
            await wait_for(lambda: alive() == 0)
        finally:
            gc.enable()
            client.close()
