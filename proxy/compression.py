"""Gzip for the text marimo sends uncompressed, one chunk at a time.

(marimo's content-hashed assets are served from copies compressed once,
:mod:`proxy.precompressed`, as soon as those exist; until then they come through here.)

marimo serves its editor (about 10 MB of JavaScript, CSS and WebAssembly) without compression.
The proxy compresses such answers on their way to a client that accepts gzip.

Invariants:

* Only a ``200`` answer to a ``GET`` is compressed, and only when the client accepts gzip (a
  ``q=0`` refuses it), the type is textual (:func:`compressible`), marimo did not encode it
  itself (no ``Content-Encoding``), it is not a range (``Content-Range``), it does not forbid
  transformation (``Cache-Control: no-transform``) and its announced length, if any, is at least
  :data:`MIN_LENGTH`. Everything else passes byte for byte.
* ``text/event-stream`` is never compressed: events are small and must not wait for anything.
* Nothing is held back: every chunk read from marimo is compressed and sync-flushed
  (``Z_SYNC_FLUSH``) before the next one is read, so the client can decode everything marimo
  sent so far. The encoder holds only zlib's own window, never the body.
* A compressed answer loses ``Content-Length`` (the length is not known in advance), gets
  ``Content-Encoding: gzip``, and its strong ETag ``"x"`` becomes the weak ``W/"x"``: the two
  representations must not share a strong validator (RFC 9110 section 8.8.3). A client that
  revalidates sends ``If-None-Match: W/"x"``; ``If-None-Match`` is compared weakly (RFC 9110
  section 13.1.2), and marimo does so (Starlette strips ``W/``), so marimo still answers 304.
  That 304 carries the ETag in the form the client sent, so it refreshes the stored entry.
* ``Vary: Accept-Encoding`` goes on every answer whose body would be compressed for a client
  that accepts gzip, compressed or not, so a shared cache never hands gzip to a client that
  cannot read it.
"""

from __future__ import annotations

import zlib

from tornado.httputil import HTTPHeaders, HTTPServerRequest

from proxy import caching
from proxy.headers import tokens

MIN_LENGTH = 1024
"""Bodies announced shorter than this pass as they are: gzip's header and trailer would eat
most of the gain."""

LEVEL = 5
"""zlib level: the size/CPU trade-off chosen on marimo's largest editor bundle (the figures are
in bench/RESULTS.md, "Compression"); a level above buys little size for much more CPU."""

_TEXT_TYPES = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/wasm",
        "application/x-ndjson",
        "image/svg+xml",
    }
)


def media_type(content_type: str | None) -> str:
    """``type/subtype`` of a ``Content-Type`` value, lower-cased, parameters dropped."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def compressible(content_type: str | None) -> bool:
    """Whether a body of this type is worth compressing.

    Text (``text/*`` except event streams), JavaScript, JSON (source maps included), XML, SVG
    and WebAssembly. Images, fonts, archives and wheels are already compressed.
    """
    kind = media_type(content_type)
    if kind == "text/event-stream":
        return False
    return (
        kind.startswith("text/")
        or kind in _TEXT_TYPES
        or kind.endswith("+json")
        or kind.endswith("+xml")
    )


def encoding_weights(request_headers: HTTPHeaders) -> dict[str, float]:
    """``Accept-Encoding`` as coding → weight (``q``, 1 when absent, 0 when unreadable)."""
    weights: dict[str, float] = {}
    for item in tokens(request_headers, "Accept-Encoding"):
        coding, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.strip()] = weight
    return weights


def accepts_gzip(request_headers: HTTPHeaders) -> bool:
    """Whether ``Accept-Encoding`` admits gzip (by name or ``*``) with a non-zero weight."""
    weights = encoding_weights(request_headers)
    if "gzip" in weights:
        return weights["gzip"] > 0
    if "x-gzip" in weights:
        return weights["x-gzip"] > 0
    return weights.get("*", 0.0) > 0


def weak(etag: str) -> str:
    """The weak form of an entity tag (unchanged if already weak)."""
    return etag if etag.startswith("W/") else "W/" + etag


class Gzip:
    """One gzip stream, fed chunk by chunk; each call returns bytes that end on a flush point."""

    def __init__(self, level: int = LEVEL) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, chunk: bytes) -> bytes:
        """The compressed form of ``chunk``, complete enough for the client to decode it."""
        return self._zlib.compress(chunk) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """The end of the stream (final block and gzip trailer)."""
        return self._zlib.flush(zlib.Z_FINISH)


def _add_vary(headers: HTTPHeaders) -> None:
    varies = tokens(headers, "Vary")
    if "*" not in varies and "accept-encoding" not in varies:
        headers.add("Vary", "Accept-Encoding")


def _eligible(headers: HTTPHeaders) -> bool:
    """Whether this 200 answer's body would be compressed for a client accepting gzip."""
    if "Content-Encoding" in headers or "Content-Range" in headers:
        return False
    if not compressible(headers.get("Content-Type")):
        return False
    if "no-transform" in tokens(headers, "Cache-Control"):
        return False
    length = headers.get("Content-Length")
    if length is not None:
        try:
            if int(length) < MIN_LENGTH:
                return False
        except ValueError:
            return False
    return True


def negotiate(
    request: HTTPServerRequest, status: int, response_headers: HTTPHeaders
) -> Gzip | None:
    """Decides whether this answer is compressed, adjusting ``response_headers`` to match.

    Returns the encoder to pass every body chunk through, or None when the body passes as is.
    ``response_headers`` are the ones about to reach the client (hop-by-hop headers gone).
    Both forwarding paths call this once per answer, so it also sets the answer's caching
    headers (:mod:`proxy.caching`).
    HTTP/1.0 clients get the body as it is, with its length: they have no chunking, so a
    compressed body could only end with their connection.
    """
    caching.apply(request, status, response_headers)
    request_headers = request.headers
    if status == 304:
        etag = response_headers.get("Etag")
        if etag and not etag.startswith("W/"):
            sent = [t.strip() for t in request_headers.get("If-None-Match", "").split(",")]
            if weak(etag) in sent and etag not in sent:
                # The client holds the compressed representation: confirm it in its own terms.
                response_headers["Etag"] = weak(etag)
                _add_vary(response_headers)
        return None
    if status != 200 or request.method != "GET" or not _eligible(response_headers):
        return None
    _add_vary(response_headers)
    if request.version != "HTTP/1.1" or not accepts_gzip(request_headers):
        return None
    if "Content-Length" in response_headers:
        del response_headers["Content-Length"]
    response_headers["Content-Encoding"] = "gzip"
    etag = response_headers.get("Etag")
    if etag:
        response_headers["Etag"] = weak(etag)
    return Gzip()
