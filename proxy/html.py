"""Which of marimo's answers an HTML transform applies to, and how its headers follow.

The proxy applies a transform it is given (the orchestrator's: its panel's tags) to marimo's
HTML documents and to nothing else: the decision is made from the status line and headers alone,
so every other response keeps the streaming path untouched.

Invariants:

* Only a complete ``200`` answer to ``GET`` whose ``Content-Type`` is ``text/html``, with a
  ``Content-Length`` of at most :data:`MAX_DOCUMENT` bytes and no ``Content-Encoding``, is
  transformed: such a document is read whole (bounded), transformed once, and sent with its new
  length. Anything else passes byte for byte.
* marimo's validators describe marimo's bytes, not ours: ``ETag`` and ``Last-Modified`` are
  dropped from a transformed document, so no cache can pair one with the other.
"""

from __future__ import annotations

from collections.abc import Callable

from tornado.httputil import HTTPHeaders

HtmlTransform = Callable[[bytes], bytes]
"""Takes a whole HTML document, returns the document to send instead."""

MAX_DOCUMENT = 4 * 1024 * 1024


def applies(method: str, status: int, headers: HTTPHeaders) -> bool:
    """Whether this answer is a marimo HTML document the transform is for."""
    if method != "GET" or status != 200 or "Content-Encoding" in headers:
        return False
    if not headers.get("Content-Type", "").lower().startswith("text/html"):
        return False
    length = headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= MAX_DOCUMENT


def transformed(transform: HtmlTransform, document: bytes, headers: HTTPHeaders) -> bytes:
    """The document to send, with ``headers`` edited in place to describe it."""
    result = transform(document)
    headers["Content-Length"] = str(len(result))
    for validator in ("Etag", "Last-Modified"):
        if validator in headers:
            del headers[validator]
    return result
