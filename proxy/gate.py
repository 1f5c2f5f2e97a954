"""What the proxy answers instead of marimo.

Invariants:

* The proxy never answers 502. marimo absent, not ready, refusing connections or dropping
  the connection before answering all mean "not ready yet": 503 with ``Retry-After``, or the
  loading page (200) for a browser navigation, so a reload lands in marimo once it is up.
* marimo too slow to start answering is 504.
* Every answer made here carries ``Cache-Control: no-store``: it describes a moment, and a
  cached loading page would hide marimo once it is ready.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler

RETRY_AFTER_SECONDS = 2


def is_navigation(request: HTTPServerRequest) -> bool:
    """A browser loading a page (as opposed to a script calling an API)."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def answer_not_ready(handler: RequestHandler, loading_page: Callable[[], bytes]) -> None:
    """marimo cannot take this request now; finishes the response."""
    handler.clear()
    handler.set_header("Cache-Control", "no-store")
    if is_navigation(handler.request):
        handler.set_status(200)
        handler.set_header("Content-Type", "text/html; charset=utf-8")
        handler.finish(loading_page())
        return
    handler.set_status(503)
    handler.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps({"error": "marimo is not ready", "retry_after": RETRY_AFTER_SECONDS}))


def answer_too_slow(handler: RequestHandler) -> None:
    """marimo accepted the request but did not start answering in time."""
    handler.clear()
    handler.set_status(504)
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps({"error": "marimo did not answer in time"}))


def refuse_upgrade(
    handler: RequestHandler,
    status: int,
    message: str,
    *,
    retry: bool = False,
    location: str | None = None,
) -> None:
    """Ends a WebSocket upgrade with a plain HTTP answer; no handshake has taken place."""
    handler.clear()
    handler.set_status(status)
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    if retry:
        handler.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
    if location is not None:
        handler.set_header("Location", location)
    handler.finish(message + "\n")
