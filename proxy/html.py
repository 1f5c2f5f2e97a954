"""Which of marimo's answers an HTML transform applies to, and how its headers follow.

The proxy applies a transform it is given (the orchestrator's: its panel's tags) to marimo's
HTML documents and to nothing else: the decision is made from the status line and headers alone,
so every other response keeps the streaming path untouched.

Invariants:

* Only a complete ``200`` answer to ``GET`` whose ``Content-Type`` is ``text/html``, with a
  ``Content-Length`` of at most :data:`MAX_DOCUMENT` bytes and no ``Content-Encoding``, is
  transformed: such a document is read whole (bounded), transformed once, and sent with its new
  length. Anything else passes byte for byte.
* marimo's validator describes marimo's bytes, not ours: a transformed document's ``ETag`` is
  marimo's with the transform's :attr:`HtmlTransform.key` appended (:func:`validator`), so a
  change on either side (a marimo restart renders a new token into its HTML, another marimo
  version, another panel or mode) changes it. ``Last-Modified`` is dropped. A document marimo
  sent without an ETag gets none.
* Revalidation goes through marimo: an ``If-None-Match`` tag carrying the current key is sent to
  marimo as marimo's own tag (:func:`toward_marimo`), and marimo's ``304`` for it is confirmed
  with the client's form (:func:`confirmed`). A tag with another key (an older transform)
  reaches marimo unchanged and so never matches: the client gets the new document. Nothing is
  ever answered 304 without marimo having compared its current document.
* Caching stays marimo's (its HTML: ``private, no-cache``): every use asks again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tornado.httputil import HTTPHeaders

MAX_DOCUMENT = 4 * 1024 * 1024

_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SEPARATOR = "~"


@dataclass(frozen=True)
class HtmlTransform:
    """Takes a whole HTML document, returns the document to send instead.

    ``key`` names everything the result depends on besides the document (the tags and their
    inputs, a version): two transforms with one key must rewrite every document alike.
    """

    rewrite: Callable[[bytes], bytes]
    key: str

    def __post_init__(self) -> None:
        if _KEY.fullmatch(self.key) is None:
            raise ValueError(f"HTML transform key {self.key!r} is not 1-64 of [A-Za-z0-9_.-]")

    def __call__(self, document: bytes) -> bytes:
        return self.rewrite(document)


def applies(method: str, status: int, headers: HTTPHeaders) -> bool:
    """Whether this answer is a marimo HTML document the transform is for."""
    if method != "GET" or status != 200 or "Content-Encoding" in headers:
        return False
    if not headers.get("Content-Type", "").lower().startswith("text/html"):
        return False
    length = headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= MAX_DOCUMENT


def _split(etag: str) -> tuple[str, str] | None:
    """``(weak prefix, opaque tag without quotes)`` of one entity tag, None if malformed."""
    etag = etag.strip()
    prefix = "W/" if etag.startswith("W/") else ""
    quoted = etag[len(prefix) :]
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        return None
    return prefix, quoted[1:-1]


def validator(etag: str, key: str) -> str | None:
    """The transformed document's entity tag for marimo's ``etag`` (None if malformed)."""
    parts = _split(etag)
    if parts is None:
        return None
    return f'{parts[0]}"{parts[1]}{_SEPARATOR}{key}"'


def toward_marimo(headers: HTTPHeaders, key: str) -> frozenset[str]:
    """Rewrites ``If-None-Match`` (headers about to go to marimo) in place: each tag carrying
    ``key`` becomes marimo's own tag. Returns marimo's tags so rewritten (quoted, not weak)."""
    if "If-None-Match" not in headers:
        return frozenset()
    suffix = _SEPARATOR + key
    sent: list[str] = []
    ours: set[str] = set()
    for value in headers.get_list("If-None-Match"):
        for tag in value.split(","):
            parts = _split(tag)
            if parts is not None and parts[1].endswith(suffix):
                inner = parts[1][: -len(suffix)]
                ours.add(f'"{inner}"')
                sent.append(f'{parts[0]}"{inner}"')
            elif tag.strip():
                sent.append(tag.strip())
    if ours:
        headers["If-None-Match"] = ", ".join(sent)
    return frozenset(ours)


def confirmed(status: int, headers: HTTPHeaders, rewritten: frozenset[str], key: str) -> None:
    """marimo's ``304`` for a tag :func:`toward_marimo` rewrote: its ETag in our form, in place."""
    if status != 304 or not rewritten:
        return
    etag = headers.get("Etag")
    parts = _split(etag) if etag else None
    if parts is not None and f'"{parts[1]}"' in rewritten:
        headers["Etag"] = f'"{parts[1]}{_SEPARATOR}{key}"'
        if "Last-Modified" in headers:
            del headers["Last-Modified"]


def transformed(transform: HtmlTransform, document: bytes, headers: HTTPHeaders) -> bytes:
    """The document to send, with ``headers`` edited in place to describe it."""
    result = transform(document)
    headers["Content-Length"] = str(len(result))
    etag = headers.get("Etag")
    if etag is not None:
        del headers["Etag"]
        ours = validator(etag, transform.key)
        if ours is not None:
            headers["Etag"] = ours
    if "Last-Modified" in headers:
        del headers["Last-Modified"]
    return result
