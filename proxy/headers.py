"""Which headers cross the proxy, and what the proxy adds on the way to marimo.

Invariants:

* Hop-by-hop headers (RFC 9110 section 7.6.1) never cross, in either direction: the fixed list
  below plus every header *named* in the message's own ``Connection`` header.
* Every other header crosses untouched, in order, repeated headers kept as separate lines
  (``Set-Cookie`` above all), except the few the proxy owns: ``Authorization`` toward marimo
  when an injected value is configured, marimo's own session cookie appended to ``Cookie``
  when the client sent none of that name, and ``X-Forwarded-*``.
* The injected ``Authorization`` value only ever lands in headers sent to marimo, and so does
  marimo's session cookie the proxy adds for a client that sent none (``proxy.upstream``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from tornado.httputil import HTTPHeaders, HTTPServerRequest

from proxy.upstream import Upstream

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

WEBSOCKET_HANDSHAKE = frozenset(
    {
        # The proxy writes its own key, version and subprotocol list toward marimo; it
        # speaks no extension (no permessage-deflate) on either leg.
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)


def tokens(headers: HTTPHeaders, name: str) -> list[str]:
    """Lower-cased comma-separated tokens of every ``name`` header line."""
    found: list[str] = []
    for value in headers.get_list(name):
        found.extend(t.strip().lower() for t in value.split(",") if t.strip())
    return found


@functools.lru_cache(maxsize=8)
def _hop_by_hop_and(drop: tuple[str, ...]) -> frozenset[str]:
    """The fixed hop-by-hop names plus ``drop``, lower-cased. Callers pass fixed lists (a
    handful of call sites), so a small cache holds them all; it stays bounded whatever is
    passed."""
    return HOP_BY_HOP | {name.lower() for name in drop}


def end_to_end(headers: HTTPHeaders, *, drop: Iterable[str] = ()) -> HTTPHeaders:
    """A copy of ``headers`` without hop-by-hop headers (nor those in ``drop``).

    ``headers`` come from Tornado's parser, which validated every line: they are copied as they
    are, not validated again (this runs twice per proxied request). Only a repeated name goes
    through :meth:`HTTPHeaders.add`.
    """
    dropped = _hop_by_hop_and(tuple(drop)) if drop else HOP_BY_HOP
    if "Connection" in headers:
        dropped = dropped | set(tokens(headers, "Connection"))
    kept = HTTPHeaders()
    for name, value in headers.get_all():
        if name.lower() in dropped:
            continue
        if name in kept:
            kept.add(name, value)
        else:
            kept[name] = value
    return kept


def toward_marimo(
    request: HTTPServerRequest, upstream: Upstream, *, drop: Iterable[str] = ()
) -> HTTPHeaders:
    """Headers for the request (or WebSocket upgrade) the proxy sends to marimo.

    ``X-Forwarded-For`` gets the client's address appended to any chain an outer proxy built.
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` describe the original request: kept when an
    outer proxy (the platform's ingress) already set them, else set from this request. The
    client's ``Host`` passes unchanged, so marimo builds URLs for the public address.
    """
    headers = end_to_end(request.headers, drop=drop)
    chain = [v.strip() for v in request.headers.get_list("X-Forwarded-For") if v.strip()]
    if request.remote_ip:
        chain.append(request.remote_ip)
    if chain:
        headers["X-Forwarded-For"] = ", ".join(chain)
    if "X-Forwarded-Proto" not in headers:
        headers["X-Forwarded-Proto"] = request.protocol
    if "X-Forwarded-Host" not in headers:
        headers["X-Forwarded-Host"] = request.host
    if "Host" not in headers:
        headers["Host"] = upstream.netloc
    if upstream.authorization is not None:
        headers["Authorization"] = upstream.authorization
    session = upstream.session
    if session is not None and session.cookie is not None:
        sent = headers.get_list("Cookie")
        if not sent:
            headers["Cookie"] = session.cookie
        elif len(sent) == 1 and f"{session.name}=" not in sent[0]:
            headers["Cookie"] = f"{sent[0]}; {session.cookie}"
        # Several Cookie lines (which RFC 6265 forbids a browser to send) stay as they are:
        # the token alone authenticates that request.
    return headers


def learn_session(upstream: Upstream, headers: HTTPHeaders) -> None:
    """Keeps the session cookie marimo set in this response, if any (see MarimoSession).

    A cookie marimo clears (``null``, or empty) is forgotten, so the token is sent alone.
    """
    session = upstream.session
    if session is None or "Set-Cookie" not in headers:
        return
    prefix = f"{session.name}="
    for value in headers.get_list("Set-Cookie"):
        if value.startswith(prefix):
            pair = value.split(";", 1)[0].strip()
            session.cookie = None if pair[len(prefix) :] in ("", "null", '""') else pair


def toward_client(headers: HTTPHeaders) -> HTTPHeaders:
    """Headers of marimo's response as the client must see them.

    A message framed with ``Transfer-Encoding`` must not also carry ``Content-Length``
    (RFC 9112 section 6.3): the proxy re-frames it, so the length is dropped with it.
    """
    kept = end_to_end(headers)
    if "Transfer-Encoding" in headers and "Content-Length" in kept:
        del kept["Content-Length"]
    return kept


def keeps_alive(version: str, headers: HTTPHeaders) -> bool:
    """Whether the connection that carried this response may carry another request."""
    connection = tokens(headers, "Connection")
    if "close" in connection:
        return False
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return True
