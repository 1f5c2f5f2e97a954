"""HTTP/1.1 toward marimo, written and read directly on a pooled stream.

Tornado's ``HTTP1Connection`` did this before. Profiling the proxy under load showed its client
side (header objects built and validated again, a future and a delegate call per step) to be
about as costly as the whole server side that faces the browser. What is left here is the part
of RFC 9112 a reverse proxy needs from a trusted upstream, with one regular expression checking a
whole response head instead of several per line.

Invariants:

* The request head is written as one block: request line, header lines, blank line. The target
  and every header value were decoded as latin-1 by Tornado's server (and validated by it), so
  encoding them as latin-1 again gives back the client's bytes exactly.
* A response head is relayed only if all of it matches :data:`_HEAD` (status line, header lines
  of token names and visible values, CRLF or LF line ends) within :data:`MAX_HEAD` bytes;
  anything else is :class:`Malformed` and the exchange counts as unanswered.
* Body framing (RFC 9112 section 6.3): none for a ``HEAD`` request and for 1xx, 204 and 304;
  chunked when ``Transfer-Encoding`` is ``chunked``; else ``Content-Length`` (several values
  must all agree, and are folded into one); else the body lasts until marimo closes the
  connection, which then cannot be reused. Any other transfer coding is :class:`Malformed`:
  the proxy drops ``Transfer-Encoding``, so a coded body would reach the client unannounced.
* A body is yielded in pieces of at most :data:`CHUNK` bytes, each as soon as it is read; the
  caller decides when the next one is read.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from enum import Enum

from tornado.httputil import HTTPHeaders, ResponseStartLine
from tornado.iostream import IOStream, StreamClosedError

from proxy.headers import keeps_alive, tokens

MAX_HEAD = 64 * 1024
"""Largest response head accepted (status line and headers)."""

CHUNK = 64 * 1024
"""Largest body piece read at once."""

_NAME = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
_HEAD = re.compile(
    rb"HTTP/1\.[01] [1-9][0-9][0-9](?: " + _VALUE + rb")?\r?\n"
    rb"(?:" + _NAME + rb":" + _VALUE + rb"\r?\n)*"
    rb"\r?\n"
)
_END_OF_HEAD = rb"\r?\n\r?\n"
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


class Malformed(Exception):
    """marimo's answer breaks HTTP/1.1 framing; the stream must be closed."""


class Framing(Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


@dataclass
class Response:
    start_line: ResponseStartLine
    headers: HTTPHeaders
    framing: Framing
    length: int = 0
    """The body's length when ``framing`` is ``LENGTH``."""

    @property
    def reusable(self) -> bool:
        """Whether the stream may carry another exchange once this body was read to its end."""
        return self.framing is not Framing.UNTIL_CLOSE and keeps_alive(
            self.start_line.version, self.headers
        )


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The bytes of a request line and header block (``target`` as Tornado decoded it)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def parse_head(block: bytes) -> tuple[ResponseStartLine, HTTPHeaders]:
    """Status line and headers of one response head (``block`` ends with the blank line)."""
    if not _HEAD.fullmatch(block):
        raise Malformed("response head does not parse")
    lines = block.decode("latin-1").split("\n")
    version, code, reason = (lines[0].rstrip("\r") + " ").split(" ", 2)
    headers = HTTPHeaders()
    for line in lines[1:]:
        name, _, value = line.rstrip("\r").partition(":")
        if not name:
            continue
        value = value.strip(" \t")
        if name in headers:
            headers.add(name, value)
        else:
            headers[name] = value
    return ResponseStartLine(version, int(code), reason.strip()), headers


def _framing(method: str, code: int, headers: HTTPHeaders) -> tuple[Framing, int]:
    if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
        return Framing.NONE, 0
    if "Transfer-Encoding" in headers:
        if tokens(headers, "Transfer-Encoding") != ["chunked"]:
            # Another transfer coding would reach the client still applied but unannounced.
            raise Malformed("unsupported transfer coding")
        return Framing.CHUNKED, 0
    if "Content-Length" in headers:
        values = {v.strip() for v in headers["Content-Length"].split(",")}
        if len(values) != 1:
            raise Malformed("conflicting Content-Length values")
        value = values.pop()
        if not value.isdigit() or len(value) > 18:
            raise Malformed("invalid Content-Length")
        headers["Content-Length"] = value  # one line, as the client must get it
        return Framing.LENGTH, int(value)
    return Framing.UNTIL_CLOSE, 0


async def read_response_head(stream: IOStream, method: str) -> Response:
    """Reads marimo's answer head, skipping interim (1xx) ones.

    Raises ``StreamClosedError`` when the stream ends first, :class:`Malformed` when the head is
    not HTTP/1.1 (or longer than :data:`MAX_HEAD`: Tornado then closes the stream).
    """
    while True:
        block = await stream.read_until_regex(_END_OF_HEAD, max_bytes=MAX_HEAD)
        start_line, headers = parse_head(block)
        if 100 <= start_line.code < 200:
            continue  # 100 Continue, 103 Early Hints: not relayed
        framing, length = _framing(method, start_line.code, headers)
        return Response(start_line, headers, framing, length)


async def read_body(stream: IOStream, response: Response) -> AsyncIterator[bytes]:
    """The body's pieces, as they arrive; ends normally only at the body's proper end.

    Raises ``StreamClosedError`` when marimo cuts the body short (a body delimited by the end
    of the connection ends normally there) and :class:`Malformed` on broken chunk framing.
    """
    if response.framing is Framing.LENGTH:
        remaining = response.length
        while remaining:
            piece = await stream.read_bytes(min(remaining, CHUNK), partial=True)
            remaining -= len(piece)
            yield piece
    elif response.framing is Framing.CHUNKED:
        while True:
            line = await stream.read_until(b"\r\n", max_bytes=4096)
            size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_text):
                raise Malformed("invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                # Trailer fields are not relayed (nor announced): read up to the blank line.
                while await stream.read_until(b"\r\n", max_bytes=MAX_HEAD) != b"\r\n":
                    pass
                return
            while size:
                piece = await stream.read_bytes(min(size, CHUNK), partial=True)
                size -= len(piece)
                yield piece
            if await stream.read_bytes(2) != b"\r\n":
                raise Malformed("chunk not followed by CRLF")
    elif response.framing is Framing.UNTIL_CLOSE:
        while True:
            try:
                piece = await stream.read_bytes(CHUNK, partial=True)
            except StreamClosedError:
                if stream.error is not None:
                    raise  # reset, not an orderly end: the body may be cut short
                return
            yield piece
