"""The HTTP side of marimo's compressed assets (:mod:`proxy.precompressed`): which requests a
stored copy may answer, which of marimo's answers may be copied, and how a copy is served.

Invariants:

* A copy is offered only for an HTTP/1.1 ``GET`` without a body or ``Range`` for a
  content-hashed asset (:data:`proxy.caching.HASHED_ASSET`, a name of ``[A-Za-z0-9._-]`` with
  a type of :data:`TYPES`) whose ``Accept-Encoding`` admits the encoding (``br`` preferred,
  then ``gzip``).
* An answer is copied only when it is marimo's own complete ``200`` identity answer to a
  ``GET`` (no ``Content-Encoding``, no range, a compressible type that is the one the name's
  extension is served with, a ``Content-Length`` of at most :data:`MAX_ASSET`).
* A served copy carries ``Content-Encoding``, its ``Content-Length``, a strong ``ETag`` (its
  digest, so a client holding it revalidates to ``304`` without a body), ``Vary:
  Accept-Encoding``, and :mod:`proxy.caching`'s immutable caching; a copy that is not on disk as
  recorded is forgotten before anything is sent (the request then goes to marimo); a copy is
  opened and read in the executor, never on the loop (the state volume may be a slow network
  disk).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tornado.httputil import HTTPHeaders, HTTPServerRequest, ResponseStartLine
from tornado.iostream import StreamClosedError

from proxy import caching, wire
from proxy.compression import compressible, encoding_weights, media_type
from proxy.front import Front

if TYPE_CHECKING:
    from proxy.precompressed import AssetStore

log = logging.getLogger("proxy.assets")

MAX_ASSET = 32 * 1024 * 1024
"""Largest asset copied (marimo's largest, a plotting bundle, is under 5 MB)."""
CHUNK = 256 * 1024
"""Bytes read at a time from a copy (serving) or an asset (compressing)."""
ENCODINGS = ("br", "gzip")
"""Preference order when the client accepts several."""
SUFFIX = {"br": "br", "gzip": "gz"}
"""The file suffix of each encoding's copies."""
_NAME = re.compile(r"[A-Za-z0-9._-]+")
TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
}
"""The type each kept extension is served with (marimo's types for them)."""


@dataclass(frozen=True)
class Copy:
    """One encoding of one asset on disk."""

    name: str
    encoding: str
    digest: str
    size: int
    path: Path

    @property
    def etag(self) -> str:
        return f'"{self.digest}.{SUFFIX[self.encoding]}"'

    def headers(self) -> HTTPHeaders:
        headers = HTTPHeaders()
        headers["Content-Type"] = TYPES[Path(self.name).suffix]
        headers["Content-Encoding"] = self.encoding
        headers["Content-Length"] = str(self.size)
        headers["ETag"] = self.etag
        headers["Cache-Control"] = caching.IMMUTABLE
        headers["Vary"] = "Accept-Encoding"
        return headers


def accepted(request_headers: HTTPHeaders) -> list[str]:
    """The encodings of :data:`ENCODINGS` the client admits with a non-zero weight, in order."""
    weights = encoding_weights(request_headers)
    star = weights.get("*", 0.0)
    return [e for e in ENCODINGS if weights.get(e, star) > 0]


def asset_name(request: HTTPServerRequest) -> str | None:
    """The file name of a content-hashed asset request, None for anything else."""
    path = request.path
    if caching.HASHED_ASSET.fullmatch(path) is None:
        return None
    name = path.rsplit("/", 1)[1]
    if _NAME.fullmatch(name) is None or Path(name).suffix not in TYPES:
        return None
    return name


def servable(request: HTTPServerRequest) -> str | None:
    """The asset a stored copy may answer this request with (see the invariants), or None."""
    if request.method != "GET" or request.version != "HTTP/1.1":
        return None
    headers = request.headers
    if "Range" in headers or "Transfer-Encoding" in headers:
        return None
    if headers.get("Content-Length", "0").strip() != "0":
        return None
    return asset_name(request)


def copyable(
    request: HTTPServerRequest, status: int, headers: HTTPHeaders
) -> tuple[str, int] | None:
    """The asset's name and length when marimo's answer may be copied (see the invariants),
    else None."""
    if status != 200 or request.method != "GET" or "Range" in request.headers:
        return None
    name = asset_name(request)
    if name is None or "Content-Encoding" in headers or "Content-Range" in headers:
        return None
    if not compressible(headers.get("Content-Type")):
        return None
    if media_type(headers.get("Content-Type")) != TYPES[Path(name).suffix]:
        return None
    length = headers.get("Content-Length", "")
    if not length.isdigit() or not 0 < int(length) <= MAX_ASSET:
        return None
    return name, int(length)


def not_modified(request: HTTPServerRequest, copy: Copy) -> bool:
    """Whether ``If-None-Match`` names this copy (compared weakly, as RFC 9110 says)."""
    for value in request.headers.get_list("If-None-Match"):
        for tag in value.split(","):
            tag = tag.strip().removeprefix("W/")
            if tag == "*" or tag == copy.etag:
                return True
    return False


async def serve_copy(
    front: Front, store: AssetStore, request: HTTPServerRequest, copy: Copy
) -> bool:
    """Answers ``request`` from ``copy`` through ``front``; False (nothing sent, the copy
    forgotten) when it is not on disk as recorded."""
    # The state volume may be slow (a network disk): its reads never run on the loop.
    loop = asyncio.get_running_loop()
    try:
        handle = await loop.run_in_executor(None, copy.path.open, "rb")
    except OSError:
        store.forget(copy)
        return False
    with handle:
        if os.fstat(handle.fileno()).st_size != copy.size:
            log.warning("proxy.assets.size-mismatch path=%s", request.path)
            store.forget(copy)
            return False
        headers = copy.headers()
        unchanged = not_modified(request, copy)
        if unchanged:
            del headers["Content-Length"]
        code = 304 if unchanged else 200
        response = wire.Response(
            ResponseStartLine("HTTP/1.1", code, "Not Modified" if unchanged else "OK"),
            headers,
            wire.Framing.NONE if unchanged else wire.Framing.LENGTH,
            0 if unchanged else copy.size,
        )
        front.start(response)
        head = True
        try:
            while not unchanged and (chunk := await loop.run_in_executor(None, handle.read, CHUNK)):
                await front.send(chunk, head=head)
                head = False
            await front.end(response, head=head)
        except StreamClosedError:
            pass
    return True
