"""Browser caching: marimo's content-hashed assets are kept for good by the browser that was
admitted (and by no shared cache); HTML, API answers and everything else are asked for again.
Correct after a marimo upgrade (new HTML naming new hashes), across restarts, and never for a
client without a session."""

from __future__ import annotations

import gzip
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import pytest
from tornado.web import Application, RequestHandler

from proxy.caching import IMMUTABLE
from proxy.html import HtmlTransform
from tests.support.orchestrator import OrchestratorFactory
from tests.support.proxy_harness import (
    FORWARDING_PATHS,
    RawResponse,
    Switch,
    async_test,
    forwarding,
    raw_exchange,
    run_proxy,
    serve,
)
from tests.test_restart import post_restart

STATIC = Path(__import__("marimo").__file__).parent / "_static"


def varies(headers: RawResponse | dict[str, str]) -> list[str]:
    if isinstance(headers, RawResponse):
        values = headers.get_list("Vary")
    else:
        values = [headers.get("vary", "")]
    return [t.strip().lower() for v in values for t in v.split(",") if t.strip()]


def reusable(cache_control: str | None) -> bool:
    """Whether a browser may reuse the answer without asking (a max-age above zero)."""
    found = re.search(r"max-age=(\d+)", cache_control or "")
    return bool(found and int(found.group(1)) > 0) and "no-cache" not in (cache_control or "")


class _Version:
    """One marimo build: its HTML names its one script by the script's hash."""

    def __init__(self, asset: str, script: bytes) -> None:
        self.asset, self.script = asset, script


class _Page(RequestHandler):
    def initialize(self, version: _Version) -> None:
        self.version = version

    def compute_etag(self) -> None:
        return None

    def get(self) -> None:
        # As marimo: its HTML is private, no-cache; the session middleware varies on Cookie.
        self.set_header("Cache-Control", "private, no-cache")
        self.set_header("Vary", "Origin, Cookie")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f'<html><script src="./assets/{self.version.asset}"></script></html>')


class _Asset(RequestHandler):
    def initialize(self, version: _Version) -> None:
        self.version = version

    def compute_etag(self) -> None:
        return None

    def get(self, name: str) -> None:
        self.set_header("Vary", "Origin, Cookie")
        if name != self.version.asset:
            self.set_status(404)
            self.finish("not found")
            return
        self.set_header("Content-Type", "application/javascript")
        self.set_header("ETag", '"strong-1"')
        if self.request.headers.get("If-None-Match", "").removeprefix("W/") == '"strong-1"':
            self.set_status(304)
            self.finish()
            return
        self.finish(self.version.script)


class _Api(RequestHandler):
    def get(self) -> None:
        self.set_header("Vary", "Origin, Cookie")
        self.finish({"status": "ok"})


def marimo_like(version: _Version) -> Application:
    return Application(
        [
            (r"/", _Page, {"version": version}),
            (r"/assets/([^/]+)", _Asset, {"version": version}),
            (r"/api/status", _Api),
            (r"/favicon\.ico", _Api),
        ]
    )


V1 = _Version("index-Ab3_x-9Z.js", b"export const version = 1;\n" * 200)
V2 = _Version("index-Qr7-k2Lm.js", b"export const version = 2;\n" * 200)


@pytest.fixture(params=FORWARDING_PATHS)
def forwarding_path(request: pytest.FixtureRequest) -> Iterator[str]:
    with forwarding(request.param):
        yield request.param


@async_test()
async def test_hashed_assets_are_immutable_html_and_api_are_asked_again(
    forwarding_path: str,
) -> None:
    switch = Switch()
    async with serve(marimo_like(V1)) as backend, run_proxy(switch) as proxy:
        switch.point(backend.port)
        gz = "Accept-Encoding: gzip\n"
        asset = await raw_exchange(proxy.port, f"GET /assets/{V1.asset} HTTP/1.1\nHost: t\n{gz}")
        assert asset.status == 200
        assert asset.get("Cache-Control") == IMMUTABLE
        assert "cookie" not in varies(asset)
        assert "origin" in varies(asset) and "accept-encoding" in varies(asset)
        # A revalidation (a browser that kept an older copy) is confirmed as immutable too.
        again = await raw_exchange(
            proxy.port,
            f"GET /assets/{V1.asset} HTTP/1.1\nHost: t\n{gz}If-None-Match: {asset.get('ETag')}\n",
        )
        assert again.status == 304 and again.get("Cache-Control") == IMMUTABLE

        page = await raw_exchange(proxy.port, "GET / HTTP/1.1\nHost: t\nAccept: text/html\n")
        assert page.status == 200 and page.get("Cache-Control") == "private, no-cache"
        assert "cookie" in varies(page)
        for path in ("/api/status", "/favicon.ico"):
            api = await raw_exchange(proxy.port, f"GET {path} HTTP/1.1\nHost: t\n")
            assert api.status == 200 and api.get("Cache-Control") == "private, no-cache", path
        # Not an asset: a wrong hash (a 404) and a POST are never kept.
        missing = await raw_exchange(
            proxy.port, "GET /assets/index-00000000.js HTTP/1.1\nHost: t\n"
        )
        assert missing.status == 404 and not reusable(missing.get("Cache-Control"))
        post = await raw_exchange(
            proxy.port, f"POST /assets/{V1.asset} HTTP/1.1\nHost: t\nContent-Length: 0\n"
        )
        assert not reusable(post.get("Cache-Control"))


@async_test()
async def test_an_upgraded_marimo_is_seen_at_the_next_page_load(forwarding_path: str) -> None:
    """A new marimo version (a restart onto another build) names new hashes in new HTML: the
    HTML is never reused, so the browser asks for the new asset, and the old URL, gone, is not
    kept as an error either."""
    switch = Switch()
    async with (
        serve(marimo_like(V1)) as old,
        serve(marimo_like(V2)) as new,
        run_proxy(switch) as proxy,
    ):
        switch.point(old.port, 1)
        first = await raw_exchange(proxy.port, "GET / HTTP/1.1\nHost: t\n")
        assert V1.asset.encode() in first.body and not reusable(first.get("Cache-Control"))
        switch.point(new.port, 2)
        second = await raw_exchange(proxy.port, "GET / HTTP/1.1\nHost: t\n")
        assert V2.asset.encode() in second.body and V1.asset.encode() not in second.body
        fresh = await raw_exchange(proxy.port, f"GET /assets/{V2.asset} HTTP/1.1\nHost: t\n")
        assert (fresh.status, fresh.body) == (200, V2.script)
        assert fresh.get("Cache-Control") == IMMUTABLE
        gone = await raw_exchange(proxy.port, f"GET /assets/{V1.asset} HTTP/1.1\nHost: t\n")
        assert gone.status == 404 and not reusable(gone.get("Cache-Control"))


def _editor_script() -> str:
    index = (STATIC / "index.html").read_text(encoding="utf-8")
    return sorted(set(re.findall(r'\./assets/(index-[^"\']+\.js)', index)))[0]


def test_real_marimo_through_the_orchestrator_signed_in_signed_out_and_restarted(
    orchestrator: OrchestratorFactory, notebook_dir: Path
) -> None:
    """With a real marimo behind the real orchestrator: the editor's script is immutable for a
    signed-in browser only; a client without a session gets the guard's uncacheable refusal; the
    editor's HTML (with the panel's tags) and API are asked for again, the HTML answered 304
    while it is the same; after marimo restarts, the HTML names the same content-hashed script
    with the same bytes, and the old HTML validator is confirmed only for the same page."""
    run = orchestrator(notebook_dir, quix=False)
    before = run.wait_ready()
    script = f"/assets/{_editor_script()}"

    code, headers, _ = run.get(script, signed_in=False)
    assert code == 401
    assert headers.get("Cache-Control") == "no-store"

    code, headers, body = run.get(script)
    assert code == 200 and body == (STATIC / script.lstrip("/")).read_bytes()
    assert headers["Cache-Control"] == IMMUTABLE
    assert "cookie" not in varies({k.lower(): v for k, v in headers.items()})

    # That answer was copied and compressed once, onto the state volume; later ones come from it.
    # (Until the encoder has recorded its brotli copy, the answer is the gzip copy or as is.)
    copies = notebook_dir.parent / "state" / "cache" / "marimo-assets"
    br = {"Accept-Encoding": "gzip, deflate, br, zstd"}
    deadline = time.monotonic() + 120
    while (answer := run.get(script, br))[1].get("Content-Encoding") != "br":
        assert time.monotonic() < deadline, "the editor's script is never served compressed"
        time.sleep(0.2)
    code, headers, packed = answer
    assert code == 200 and list(copies.glob(f"{script.rsplit('/', 1)[1]}.*.br"))
    assert brotli.decompress(packed) == body and headers["Cache-Control"] == IMMUTABLE
    code, _, _ = run.get(script, {**br, "If-None-Match": headers["Etag"]})
    assert code == 304
    code, headers, _ = run.get(script, br, signed_in=False)
    assert code == 401 and "Content-Encoding" not in headers

    code, headers, page = run.get("/", {"Accept": "text/html"})
    assert code == 200 and script.encode()[1:] in page
    assert not reusable(headers.get("Cache-Control"))
    # The panel's transform keeps a validator: a repeat visit downloads no HTML.
    assert b"/-/static/panel.js" in page
    # Its files are named by their content, so the browser keeps them without asking again.
    for url in re.findall(rb'"(/-/static/panel\.(?:css|js)\?v=[0-9a-f]{16})"', page):
        code, panel_headers, _ = run.get(url.decode())
        kept = re.search(r"max-age=(\d+)", panel_headers.get("Cache-Control", ""))
        assert code == 200 and kept is not None and int(kept[1]) >= 365 * 24 * 3600
    held = headers["Etag"]
    code, headers, _ = run.get("/", {"Accept": "text/html", "If-None-Match": held})
    assert code == 304 and headers["Etag"] == held
    code, headers, _ = run.get("/api/status", {"Accept": "application/json"})
    assert code == 200 and not reusable(headers.get("Cache-Control"))

    assert post_restart(run, {"scope": "marimo"})[0] == 202
    run.wait_for(
        lambda s: s["ready"] and s["marimo"]["pid"] != before["marimo"]["pid"],
        what="a new marimo",
    )
    code, _, after = run.get("/", {"Accept": "text/html"})
    assert code == 200 and script.encode()[1:] in after
    # The old validator is confirmed only if the new marimo renders the very same page.
    code, _, revalidated = run.get("/", {"Accept": "text/html", "If-None-Match": held})
    assert (code, revalidated) == ((304, b"") if after == page else (200, after))
    code, headers, again = run.get(script)
    assert (code, again) == (200, body) and headers["Cache-Control"] == IMMUTABLE
    code, headers, repacked = run.get(script, br)
    assert (code, headers["Content-Encoding"], repacked) == (200, "br", packed)


class _Document(RequestHandler):
    """marimo's HTML answer: its ETag the SHA-256 of the rendered page (which carries the
    server's token), ``If-None-Match`` compared weakly, 304 when it matches."""

    def initialize(self, rendered: dict[str, bytes]) -> None:
        self.rendered = rendered

    def compute_etag(self) -> None:
        return None

    def get(self) -> None:
        page = self.rendered["page"]
        etag = f'"{hashlib.sha256(page).hexdigest()}"'
        self.set_header("Cache-Control", "private, no-cache")
        self.set_header("ETag", etag)
        sent = [
            t.strip().removeprefix("W/")
            for t in self.request.headers.get("If-None-Match", "").split(",")
        ]
        self.rendered["asked"] = self.request.headers.get("If-None-Match", "").encode()
        if etag in sent:
            self.set_status(304)
            self.finish()
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)


def _page(token: str) -> bytes:
    return (
        f'<html><head><server-token data-token="{token}"></server-token></head>'
        f"<body>{'marimo ' * 300}</body></html>"
    ).encode()


def _tags(document: bytes) -> bytes:
    return document.replace(b"</head>", b'<script src="/-/static/panel.js"></script></head>')


@pytest.mark.parametrize("accept", ["", "Accept-Encoding: gzip\n"])
@async_test()
async def test_the_transformed_html_is_revalidated_never_stale(
    forwarding_path: str, accept: str
) -> None:
    """The editor's HTML, rewritten by the panel's transform, keeps a validator: a repeat visit
    gets a 304 while marimo's page and the transform are the same, and the new page as soon as
    either changed (a marimo restart renders a new token; another panel)."""
    rendered = {"page": _page("token-1")}
    switch = Switch()
    backend_app = Application([(r"/", _Document, {"rendered": rendered})])
    panel = HtmlTransform(_tags, "panel-a")
    async with serve(backend_app) as backend, run_proxy(switch, html_transform=panel) as proxy:
        switch.point(backend.port, 1)
        visit = f"GET / HTTP/1.1\nHost: t\nAccept: text/html\n{accept}"
        first = await raw_exchange(proxy.port, visit)
        assert first.status == 200 and first.get("Cache-Control") == "private, no-cache"
        body = gzip.decompress(first.body) if accept else first.body
        assert body == _tags(_page("token-1"))
        held = first.get("ETag")
        assert held is not None and held.removeprefix("W/").endswith('~panel-a"')

        again = await raw_exchange(proxy.port, f"{visit}If-None-Match: {held}\n")
        assert (again.status, again.body, again.get("ETag")) == (304, b"", held)
        assert again.get("Cache-Control") == "private, no-cache"
        assert b"~" not in rendered["asked"], "marimo compared its own tag"

        # marimo restarted: a new token in its page. The old validator gets the new page.
        rendered["page"] = _page("token-2")
        switch.point(backend.port, 2)
        fresh = await raw_exchange(proxy.port, f"{visit}If-None-Match: {held}\n")
        assert fresh.status == 200
        assert (gzip.decompress(fresh.body) if accept else fresh.body) == _tags(_page("token-2"))
        assert fresh.get("ETag") not in (None, held)

    # Same marimo page, another transform (a new panel version): never the old validator's 304.
    other = HtmlTransform(lambda d: d.replace(b"</head>", b"<b></b></head>"), "panel-b")
    async with serve(backend_app) as backend, run_proxy(switch, html_transform=other) as proxy:
        switch.point(backend.port, 3)
        current = f'"{hashlib.sha256(rendered["page"]).hexdigest()}~panel-a"'
        changed = await raw_exchange(
            proxy.port, f"GET / HTTP/1.1\nHost: t\nIf-None-Match: {current}\n"
        )
        assert changed.status == 200 and b"<b></b></head>" in changed.body
        assert changed.get("ETag") == current.replace("panel-a", "panel-b")
