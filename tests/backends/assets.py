"""Assets backend: answers the way marimo's static files do (uncompressed, strong ETags,
``If-None-Match`` compared weakly as Starlette does), plus the cases compression must leave alone.

* ``/app.js``: :data:`SCRIPT` as ``text/javascript`` with :data:`ETAG` and a ``Content-Length``;
  ``Range`` answered with 206.
* ``/typed/<type>/<size>``: ``size`` compressible bytes of that content type (``~`` for ``/``).
* ``/encoded``: a body marimo already compressed (``Content-Encoding: gzip``).
* ``/no-transform``: JSON with ``Cache-Control: no-transform``.
* ``/stream``: ``text/plain`` without a length; first chunk at once, the second only once the
  test sets ``Feed.trigger`` (so the test can prove the first was not held back).
* ``/big-text/<n>``: ``n`` bytes of text in 1 MiB writes, without holding them.
"""

from __future__ import annotations

import asyncio
import gzip

from tornado.web import Application, RequestHandler

SCRIPT = b"".join(
    b"export function f%d(x) { return x * %d + 'marimo cell output'; }\n" % (i, i)
    for i in range(2000)
)
ETAG = '"5c1f-marimo-static"'
ENCODED = gzip.compress(SCRIPT, mtime=0)
"""Fixed bytes (gzip stamps the time otherwise)."""


class _NoEtag(RequestHandler):
    def compute_etag(self) -> None:
        return None


class ScriptHandler(_NoEtag):
    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("ETag", ETAG)
        sent = [
            t.strip().removeprefix("W/")
            for t in self.request.headers.get("If-None-Match", "").split(",")
        ]
        if ETAG in sent:
            self.set_status(304)
            self.finish()
            return
        ranged = self.request.headers.get("Range")
        if ranged is not None and ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start, end = int(first), int(last)
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end}/{len(SCRIPT)}")
            self.finish(SCRIPT[start : end + 1])
            return
        self.set_header("Content-Length", str(len(SCRIPT)))
        self.finish(SCRIPT)


class TypedHandler(_NoEtag):
    def get(self, kind: str, size: str) -> None:
        self.set_header("Content-Type", kind.replace("~", "/"))
        self.finish((SCRIPT * (int(size) // len(SCRIPT) + 1))[: int(size)])


class EncodedHandler(_NoEtag):
    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript")
        self.set_header("Content-Encoding", "gzip")
        self.finish(ENCODED)


class NoTransformHandler(_NoEtag):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache, no-transform")
        self.finish(b'{"data": "' + b"x" * 4096 + b'"}')


class Feed:
    def __init__(self) -> None:
        self.trigger = asyncio.Event()
        self.produced: list[int] = []


class StreamHandler(_NoEtag):
    def initialize(self, feed: Feed) -> None:
        self.feed = feed

    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write(SCRIPT[:5000])
        self.feed.produced.append(1)
        await self.flush()
        await self.feed.trigger.wait()
        self.write(SCRIPT[5000:])
        self.feed.produced.append(2)
        self.finish()


class BigTextHandler(_NoEtag):
    async def get(self, size: str) -> None:
        remaining = int(size)
        block = (SCRIPT * (1024 * 1024 // len(SCRIPT) + 1))[: 1024 * 1024]
        self.set_header("Content-Type", "text/plain")
        self.set_header("Content-Length", size)
        while remaining > 0:
            self.write(block[: min(remaining, len(block))])
            remaining -= min(remaining, len(block))
            await self.flush()


def make_app(feed: Feed | None = None) -> Application:
    return Application(
        [
            (r"/app\.js", ScriptHandler),
            (r"/typed/([^/]+)/(\d+)", TypedHandler),
            (r"/encoded", EncodedHandler),
            (r"/no-transform", NoTransformHandler),
            (r"/stream", StreamHandler, {"feed": feed or Feed()}),
            (r"/big-text/(\d+)", BigTextHandler),
        ]
    )
