"""Protected routes fail closed: the guard is a required argument of each one, never looked up.

A protected handler registered without a guard serves nothing to anyone (its handler cannot be
built, or answers 500), and :func:`orchestrator.web.protected.require_guards` (called by
``make_app``) refuses such wiring at start. In-process: a real Tornado application, no
orchestrator, no marimo.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tornado.httpclient
import tornado.routing
import tornado.web

from orchestrator.status import StatusBoard
from orchestrator.trust.auth import Guard
from orchestrator.web.front_page import OpenNotebookHandler
from orchestrator.web.handlers import (
    EventsHandler,
    HealthyHandler,
    LoadingPage,
    LoadingPageHandler,
    StatusHandler,
)
from orchestrator.web.metrics_route import MetricsHandler
from orchestrator.web.protected import Protected, require_guards
from orchestrator.web.requirements import PackagesHandler, RequirementsHandler
from orchestrator.web.restart import RestartHandler


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _routes(board: StatusBoard) -> list[tuple[str, str, type, dict[str, Any]]]:
    """(method, path, handler, its arguments but the guard) for every protected route."""
    metrics: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    metrics.set_result(None)
    return [
        ("GET", "/-/status", StatusHandler, {"board": board}),
        ("GET", "/-/events", EventsHandler, {"board": board, "keepalive": 0.1}),
        ("GET", "/-/loading", LoadingPageHandler, {"board": board, "page": LoadingPage(board)}),
        ("POST", "/-/restart", RestartHandler, {"actions": None}),
        ("GET", "/-/requirements", RequirementsHandler, {"actions": None}),
        ("GET", "/-/packages", PackagesHandler, {"actions": None}),
        ("GET", "/-/metrics", MetricsHandler, {"public": False, "metrics": metrics}),
        ("GET", "/open/(?P<name>.*)", OpenNotebookHandler, {}),
    ]


def test_every_protected_handler_is_tried_here() -> None:
    """A new protected handler joins :func:`_routes`, so the checks below cover it."""
    serving = {
        cls
        for cls in _subclasses(Protected)
        if cls.__module__.startswith("orchestrator.")
        and ("get" in vars(cls) or "post" in vars(cls))
    }
    assert serving == {handler for _, _, handler, _ in _routes_for_listing()}


def _routes_for_listing() -> list[tuple[str, str, type, dict[str, Any]]]:
    async def listing() -> list[tuple[str, str, type, dict[str, Any]]]:
        return _routes(StatusBoard())

    return asyncio.run(listing())


async def _fetch(port: int, method: str, path: str) -> tuple[int, bytes]:
    client = tornado.httpclient.AsyncHTTPClient()
    body = b'{"scope": "marimo"}' if method == "POST" else None
    headers = {"Content-Type": "application/json", "Accept": "text/html"}
    try:
        answer = await asyncio.wait_for(
            client.fetch(
                f"http://127.0.0.1:{port}{path.replace('(?P<name>.*)', 'main.py')}",
                method=method,
                body=body,
                headers=headers,
                raise_error=False,
                request_timeout=5,
            ),
            timeout=10,
        )
    except (OSError, tornado.httpclient.HTTPClientError):
        return 599, b""
    return answer.code, answer.body or b""


def test_a_protected_route_registered_without_a_guard_serves_nobody() -> None:
    async def main() -> None:
        board = StatusBoard(boot_id="boot-secret-id")
        routes = _routes(board)
        app = tornado.web.Application(
            [(path, handler, kwargs) for _, path, handler, kwargs in routes]
            + [(r"/-/healthy", HealthyHandler, {"board": board})]
        )
        server = app.listen(0, "127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        try:
            for method, path, handler, _ in routes:
                status, body = await _fetch(port, method, path)
                assert not 200 <= status < 400, (handler.__name__, status, body[:200])
                assert b"boot-secret-id" not in body, handler.__name__
            # the public probe, on the same application, still answers
            status, body = await _fetch(port, "GET", "/-/healthy")
            assert status == 200 and b"boot-secret-id" in body
        finally:
            server.stop()

    asyncio.run(main())


def test_a_protected_handler_whose_guard_was_not_set_answers_500() -> None:
    class Forgetful(Protected):
        def initialize(self, **_: Any) -> None:
            pass  # never sets self.guard

        def get(self) -> None:
            self.write("secret")

    async def main() -> None:
        server = tornado.web.Application([(r"/x", Forgetful)]).listen(0, "127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        try:
            status, body = await _fetch(port, "GET", "/x")
            assert status == 500 and b"secret" not in body
        finally:
            server.stop()

    asyncio.run(main())


def test_wiring_a_protected_route_without_a_guard_fails_at_start() -> None:
    async def main() -> None:
        board = StatusBoard()
        for _, path, handler, kwargs in _routes(board):
            rule = tornado.routing.Rule(tornado.routing.PathMatches(path), handler, kwargs)
            with pytest.raises(ValueError, match="without a guard"):
                require_guards([rule])
            # nested under a prefix rule, as make_app nests its own routes under /-/
            outer = tornado.routing.Rule(tornado.routing.PathMatches(r"/-/.*"), [rule])
            with pytest.raises(ValueError, match="without a guard"):
                require_guards([outer])
            # a guard that is not one (None, a look-alike) does not count either
            for fake in (None, object()):
                bad = tornado.routing.Rule(
                    tornado.routing.PathMatches(path), handler, {**kwargs, "guard": fake}
                )
                with pytest.raises(ValueError, match="without a guard"):
                    require_guards([bad])
        guard = Guard.__new__(Guard)  # an instance is all require_guards looks at
        for _, path, handler, kwargs in _routes(board):
            good = tornado.routing.Rule(
                tornado.routing.PathMatches(path), handler, {**kwargs, "guard": guard}
            )
            require_guards([good])
        public = tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/healthy"), HealthyHandler, {"board": board}
        )
        require_guards([public])

    asyncio.run(main())
