"""The Tornado application: the guard, the routes (ours under /-/, then the proxy's) and the
per-request log hook. Built by orchestrator/server.py once this module has loaded.

Invariant: every route but the probes, sign-in and static files is given the guard as an
argument (:mod:`orchestrator.web.protected`), and the application is not built when one lacks it.

Invariant: importing this module imports Tornado and the web modules, but not marimo, requests,
prometheus_client, tenacity or the jobs' pipeline (jobs/runner.py): it is loaded while the early
responder answers probes, and Tornado takes the port over as soon as it has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import tornado.httputil
import tornado.routing
import tornado.web

from jobs.layout import StateLayout
from jobs.redact import redact
from orchestrator.actions import Actions
from orchestrator.config import Config
from orchestrator.quix.editors import WATCHED
from orchestrator.quix.portal import QuixPortal
from orchestrator.status import StatusBoard
from orchestrator.trust.auth import Guard, Verifier
from orchestrator.trust.secret_rotation import SignOut
from orchestrator.trust.signing import SigningSecret
from orchestrator.web.framing import framing_headers, framing_transform
from orchestrator.web.front_page import FrontPageVisit, OpenNotebookHandler
from orchestrator.web.handlers import (
    STATIC_DIR,
    EventsHandler,
    HealthyHandler,
    LoadingPage,
    LoadingPageHandler,
    ReadyHandler,
    StaticHandler,
    StatusHandler,
)
from orchestrator.web.login import LoginHandler, LogoutHandler
from orchestrator.web.metrics_route import MetricsHandler
from orchestrator.web.panel import panel_transform
from orchestrator.web.protected import require_guards
from orchestrator.web.requirements import PackagesHandler, RequirementsHandler
from orchestrator.web.restart import RestartHandler
from proxy.precompressed import AssetStore
from proxy.routes import proxy_rules

if TYPE_CHECKING:
    import asyncio

    from orchestrator.metrics import Metrics

log = logging.getLogger("orchestrator")
access = logging.getLogger("orchestrator.access")


def make_guard(
    config: Config,
    portal: QuixPortal | None,
    secret: SigningSecret,
    on_admit: Callable[[tornado.httputil.HTTPServerRequest], None],
    rotate: Callable[[], SignOut],
) -> Guard:
    """The sign-in cookie is a cross-site one (Secure, SameSite=None, Partitioned) wherever
    another site may frame our pages: in quix mode, and whenever ``--frame-ancestors`` names
    more than this origin (a Lax cookie would never reach us inside such a frame)."""
    verifier = Verifier(config.auth, config.token, portal)
    return Guard(
        config.auth,
        verifier,
        trust_proxy=config.trust_proxy,
        quix_recheck=config.quix_recheck,
        quix_grace=config.quix_grace,
        framed=config.frame_ancestors.strip().lower() not in ("'self'", "'none'"),
        token_generated=config.token_generated,
        secret=secret,
        on_admit=on_admit,
        rotate=rotate,
    )


def make_app(
    config: Config,
    board: StatusBoard,
    actions: Actions,
    guard: Guard,
    metrics: asyncio.Future[Metrics],
    assets: AssetStore | None = None,
) -> tornado.web.Application:
    """The routes; ``metrics`` resolves once prometheus_client has loaded (until then
    ``/-/metrics`` answers 503 and requests are not counted)."""
    page = LoadingPage(board)
    own: dict[str, object] = {"board": board}
    guarded: dict[str, object] = {"board": board, "guard": guard}
    own_rules: list[tornado.routing.Rule] = [
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/login"),
            LoginHandler,
            {"guard": guard, "portal_origins": ",".join(config.portal_origins)},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/logout"), LogoutHandler, {"guard": guard}
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/restart"),
            RestartHandler,
            {"actions": actions, "guard": guard},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/requirements"),
            RequirementsHandler,
            {"actions": actions, "guard": guard},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/packages"),
            PackagesHandler,
            {"actions": actions, "guard": guard},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/metrics"),
            MetricsHandler,
            {"public": config.metrics_public, "metrics": metrics, "guard": guard},
        ),
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/healthy"), HealthyHandler, own),
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/ready"), ReadyHandler, own),
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/status"), StatusHandler, guarded),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/events"),
            EventsHandler,
            {"board": board, "guard": guard, "keepalive": config.sse_keepalive},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/loading"),
            LoadingPageHandler,
            {"board": board, "guard": guard, "page": page},
        ),
        tornado.routing.Rule(
            tornado.routing.PathMatches(r"/-/static/(.*)"),
            StaticHandler,
            {"path": str(STATIC_DIR)},
        ),
    ]
    rules: list[tornado.routing.Rule] = [
        # One pattern decides whether a path is ours: marimo's requests, nearly all of them,
        # are not tried against each of our routes. A /-/ path none of them takes falls
        # through to marimo, as before.
        tornado.routing.Rule(tornado.routing.PathMatches(r"/-/.*"), own_rules),
        tornado.routing.Rule(
            FrontPageVisit(config.jobs.notebook_dir, config.open_notebook),
            OpenNotebookHandler,
            {"guard": guard},
        ),
        *proxy_rules(
            board.upstream,
            page,
            guard=guard.admit,
            admits_at_once=guard.admits_at_once,
            finish_headers=framing_headers(config.frame_ancestors),
            on_finished=lambda request, status: record_request(app, request, status),
            require_server_token=True,  # marimo runs with --no-skew-protection (see there)
            html_transform=(
                panel_transform(config.jobs.marimo_mode) if config.environment_panel else None
            ),
            asset_store=assets,
            hold=board.kernel_hold,
        ),
    ]
    require_guards(rules)  # a protected route without its guard fails here, at start
    app = tornado.web.Application(
        rules,
        compress_response=False,
        guard=guard,
        board=board,
        metrics=metrics,
        log_function=log_request,
    )
    app.add_transform(framing_transform(config.frame_ancestors))
    if config.jobs.state_dir.is_dir():
        guard.revocations.attach(StateLayout(config.jobs.state_dir).revoked_sessions)
    return app


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's per-request log hook (every request but the proxy's fast path's)."""
    record_request(handler.application, handler.request, handler.get_status())


def record_request(
    app: tornado.web.Application, request: tornado.httputil.HTTPServerRequest, status: int
) -> None:
    """Metrics and the access log, without secrets (a login URL carries a token) and without
    probe noise."""
    metrics: asyncio.Future[Metrics] = app.settings["metrics"]
    if metrics.done():
        metrics.result().observe_request(request, status)
    if request.path in WATCHED:  # who edits, for notebook sync
        board = app.settings.get("board")
        if board is not None:
            token = app.settings["guard"].token_of_request(request)
            board.editors.saw(request.path, request.method or "", status, token)
    if request.path in ("/-/healthy", "/-/ready") and status in (200, 503):
        level = logging.DEBUG
    elif status in (401, 429):
        level = logging.DEBUG  # failed sign-ins are summarised by orchestrator/trust/throttle.py
    elif status >= 500:
        level = logging.WARNING
    else:
        level = logging.DEBUG if status < 400 else logging.INFO
    if not access.isEnabledFor(level):
        return  # the hot path: no formatting, no redaction for a line nobody keeps
    access.log(
        level,
        "%d %s %s %.1fms",
        status,
        request.method,
        redact(request.uri or ""),
        1000 * request.request_time(),
    )
