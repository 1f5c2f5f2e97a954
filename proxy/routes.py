"""The catch-all routes that hand every remaining request to marimo.

Invariant: the routes cannot be built without a guard (``guard`` is a required argument, and
each handler requires it too): a proxy that admits everyone says so by passing
:func:`admit_everyone`, so a change of wiring can never open the door by leaving it out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.routing import AnyMatches, Matcher, Rule
from tornado.web import RequestHandler

from proxy.direct import DirectRouter, DirectSettings
from proxy.hold import KernelHold
from proxy.html import HtmlTransform
from proxy.http import HttpForwarder
from proxy.pool import ConnectionPool
from proxy.precompressed import AssetStore
from proxy.upstream import UpstreamLookup
from proxy.websocket import WebSocketRelay, is_upgrade


class WebSocketUpgradeMatcher(Matcher):
    """Matches WebSocket opening handshakes on any path."""

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        return {} if is_upgrade(request) else None


def proxy_rules(
    lookup: UpstreamLookup,
    loading_page: Callable[[], bytes],
    *,
    connect_timeout: float = 5.0,
    response_timeout: float = 300.0,
    max_message_size: int = 64 * 1024 * 1024,
    pool: ConnectionPool | None = None,
    guard: Callable[[RequestHandler], Awaitable[bool]],
    admits_at_once: Callable[[HTTPServerRequest], bool] | None = None,
    finish_headers: Callable[[HTTPHeaders], None] | None = None,
    on_finished: Callable[[HTTPServerRequest, int], None] | None = None,
    require_server_token: bool = False,
    html_transform: HtmlTransform | None = None,
    asset_store: AssetStore | None = None,
    hold: KernelHold | None = None,
) -> list[Rule]:
    """Rules matching every path, to be placed after the orchestrator's own routes.

    ``lookup`` is asked once per request (and once more when a WebSocket to marimo ends without
    a close code); ``loading_page`` renders the page a browser navigation gets while marimo is
    not ready. ``connect_timeout`` bounds the TCP connect to marimo, ``response_timeout`` the
    wait from the end of the request to marimo's status line (or WebSocket handshake answer),
    ``max_message_size`` a single WebSocket message in either direction. One ``pool`` of
    keep-alive connections serves every request made through these rules (a fresh one unless
    given). ``guard`` is awaited first on every request, WebSocket upgrades included (before the
    handshake): when it returns False it has answered the request and nothing reaches marimo.

    Body-less GET and HEAD requests take :mod:`proxy.direct`'s fast path when marimo is ready
    and the request may pass without awaiting ``guard``: when ``admits_at_once`` says so
    (without it every request is left to the guard; :func:`admits_everyone_at_once` goes with
    :func:`admit_everyone`). That
    path bypasses ``RequestHandler``, so what the application does to every response is passed
    here too: ``finish_headers`` edits the headers about to be sent (the application's output
    transforms do it for the rest), ``on_finished`` is told each request and its status.

    ``require_server_token`` refuses, as marimo's skew protection would, a POST without the
    ``Marimo-Server-Token`` header (for a marimo started without that check:
    :func:`proxy.gate.lacks_server_token`).

    ``html_transform`` rewrites marimo's HTML documents, and only those (:mod:`proxy.html`).

    ``asset_store`` answers requests for marimo's content-hashed assets from copies compressed
    once (:mod:`proxy.precompressed`), and is fed by the answers marimo gives for them.

    ``hold``, while closed, keeps WebSocket upgrades and marimo's package API waiting
    (:mod:`proxy.hold`).
    """
    pool = pool if pool is not None else ConnectionPool(connect_timeout=connect_timeout)
    if admits_at_once is None:
        admits_at_once = _never
    direct = DirectSettings(
        lookup,
        loading_page,
        pool,
        response_timeout,
        admits_at_once,
        finish_headers,
        on_finished,
        html_transform,
        asset_store,
        hold,
    )
    return [
        Rule(
            WebSocketUpgradeMatcher(),
            WebSocketRelay,
            {
                "lookup": lookup,
                "connect_timeout": connect_timeout,
                "handshake_timeout": response_timeout,
                "max_message_size": max_message_size,
                "guard": guard,
                "hold": hold,
            },
        ),
        Rule(AnyMatches(), DirectRouter(direct)),
        Rule(
            AnyMatches(),
            HttpForwarder,
            {
                "lookup": lookup,
                "loading_page": loading_page,
                "pool": pool,
                "response_timeout": response_timeout,
                "guard": guard,
                "require_server_token": require_server_token,
                "html_transform": html_transform,
                "asset_store": asset_store,
                "hold": hold,
            },
        ),
    ]


def _never(request: HTTPServerRequest) -> bool:
    return False


async def admit_everyone(handler: RequestHandler) -> bool:
    """The guard of a proxy without sign-in (benchmarks, tests of the proxy alone): chosen by
    name, never a default."""
    return True


def admits_everyone_at_once(request: HTTPServerRequest) -> bool:
    """:func:`admit_everyone`'s ``admits_at_once``: every eligible request takes the fast path."""
    return True
