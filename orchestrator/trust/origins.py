"""Where a request comes from and where a redirect may go: the scheme it came over, whether a
browser's ``Origin`` names this very site, and which ``next`` targets are safe.

Invariants: everything here fails closed (an ``Origin`` that names no origin is not ours, a
``next`` that is not a plain path on this server becomes ``/``); forwarded headers
(``X-Forwarded-Proto``, ``X-Forwarded-Host``) count only with ``trust_proxy``; nothing here
answers a request or raises into a handler.
"""

from __future__ import annotations

import string
from urllib.parse import quote, urlsplit

import tornado.web
from tornado.httputil import HTTPServerRequest


def is_https(request: HTTPServerRequest, trust_proxy: bool) -> bool:
    """Came over https: directly, or per ``X-Forwarded-Proto`` from a trusted proxy."""
    if request.protocol == "https":
        return True
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-Proto", "")
        return forwarded.split(",")[-1].strip().lower() == "https"
    return False


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """None for what names no origin (an unbalanced ``[``, a port out of range, no host)."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(handler: tornado.web.RequestHandler, trust_proxy: bool) -> bool:
    """No Origin header (not a browser's cross-site request) or one naming this very site:
    the same scheme, host and port (the scheme and host as a trusted proxy in front saw them)."""
    request = handler.request
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[": no origin at all, so not ours (fails closed)
        return False
    claimed = _origin_tuple(parts.scheme.lower(), parts.netloc)
    if claimed is None:
        return False
    scheme = "https" if is_https(request, trust_proxy) else "http"
    hosts = [request.host]
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded and trust_proxy:
        hosts.append(forwarded.split(",")[-1].strip())
    return any(_origin_tuple(scheme, host) == claimed for host in hosts)


def wants_html(handler: tornado.web.RequestHandler) -> bool:
    request = handler.request
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def safe_next(value: str | None) -> str:
    """Only a path on this server: never another host (open redirect), never a scheme."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value:
        return "/"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return "/"  # no header injection through a redirect
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    # A Location header is Latin-1 on the wire: other characters (and spaces) go percent-encoded.
    return quote(value, safe=string.punctuation)
