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
from dataclasses import dataclass

from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler

RETRY_AFTER_SECONDS = 2


def is_navigation(request: HTTPServerRequest) -> bool:
    """A browser loading a page (as opposed to a script calling an API)."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


@dataclass(frozen=True)
class Answer:
    """A complete answer the proxy makes itself (headers in the order they are sent)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def not_ready(request: HTTPServerRequest, loading_page: Callable[[], bytes]) -> Answer:
    """What a request gets while marimo cannot take it."""
    if is_navigation(request):
        return Answer(
            200,
            (("Cache-Control", "no-store"), ("Content-Type", "text/html; charset=utf-8")),
            loading_page(),
        )
    return Answer(
        503,
        (
            ("Cache-Control", "no-store"),
            ("Retry-After", str(RETRY_AFTER_SECONDS)),
            ("Content-Type", "application/json"),
        ),
        json.dumps({"error": "marimo is not ready", "retry_after": RETRY_AFTER_SECONDS}).encode(),
    )


TOO_SLOW = Answer(
    504,
    (("Cache-Control", "no-store"), ("Content-Type", "application/json")),
    json.dumps({"error": "marimo did not answer in time"}).encode(),
)
"""What a request gets when marimo accepted it but did not start answering in time."""


SERVER_TOKEN_HEADER = "Marimo-Server-Token"

MISSING_SERVER_TOKEN = Answer(
    401,
    (("Cache-Control", "no-store"), ("Content-Type", "application/json")),
    json.dumps({"error": "Missing server token"}).encode(),
)
"""marimo's own answer to a POST without its skew-protection header."""


def lacks_server_token(request: HTTPServerRequest) -> bool:
    """A POST that marimo's skew protection would refuse for want of ``Marimo-Server-Token``.

    marimo runs without its own check (its token changes with every process, which would break
    every open tab at each restart: ``jobs.marimo_command.marimo_argv``); the proxy keeps the
    part of it that matters for safety: a cross-site form cannot set a custom header, so a
    POST without it is refused before reaching marimo. The exemptions are marimo's own
    (``SkewProtectionMiddleware``, marimo 0.25.2): its login form, the agent endpoint
    ``/api/kernel/execute`` and WebSocket paths. Any value passes: which process issued it does
    not matter to a kernel that the frontend re-instantiates anyway.
    """
    if request.method != "POST" or request.headers.get(SERVER_TOKEN_HEADER):
        return False
    path = request.path.rstrip("/")
    if path.endswith(("/auth/login", "/api/kernel/execute")):
        return False
    return not (request.path.startswith("/ws") or request.path.endswith("/ws"))


def _finish_with(handler: RequestHandler, answer: Answer) -> None:
    handler.clear()
    handler.set_status(answer.status)
    for name, value in answer.headers:
        handler.set_header(name, value)
    handler.finish(answer.body)


def answer_not_ready(handler: RequestHandler, loading_page: Callable[[], bytes]) -> None:
    """marimo cannot take this request now; finishes the response."""
    _finish_with(handler, not_ready(handler.request, loading_page))


def answer_missing_server_token(handler: RequestHandler) -> None:
    """The POST lacks marimo's skew-protection header: refused as marimo would."""
    _finish_with(handler, MISSING_SERVER_TOKEN)


def answer_too_slow(handler: RequestHandler) -> None:
    """marimo accepted the request but did not start answering in time."""
    _finish_with(handler, TOO_SLOW)


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
